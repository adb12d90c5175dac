//! Syslog-like lines, deterministic: a few message shapes with users, addresses, ports,
//! pids and ids drawn from pools of different sizes, so some words are everywhere and
//! some are rare.

use watchgrid_logstore::LogLine;

/// The clock the bench pretends it is.
pub const NOW: u64 = 1_700_000_000_000_000;
const HOUR: u64 = 3600 * 1_000_000;
/// The lines cover this much time, ending an hour before `NOW`.
const SPAN: u64 = 7 * 24 * HOUR;

/// splitmix64: small, fast, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

pub fn device(d: u64) -> String {
    format!("dev-{d:03}")
}

pub fn user(r: &mut Rng) -> String {
    format!("user{:04}", r.below(5000))
}

pub fn ip(r: &mut Rng) -> String {
    format!("10.{}.{}.{}", r.below(4), r.below(256), r.below(256))
}

/// One line's unit and message.
fn message(r: &mut Rng) -> (&'static str, String) {
    let port = 1024 + r.below(60000);
    let pid = 100 + r.below(400_000);
    match r.below(10) {
        kind @ 0..=2 => sshd_message(r, kind, port),
        kind @ 3..=4 => system_message(r, kind, pid),
        kind => service_message(r, kind, port, pid),
    }
}

/// Sign-in lines, the kinds the login-event parser looks for.
fn sshd_message(r: &mut Rng, kind: u64, port: u64) -> (&'static str, String) {
    match kind {
        0 => (
            "sshd.service",
            format!(
                "Failed password for {} from {} port {port} ssh2",
                user(r),
                ip(r)
            ),
        ),
        1 => {
            (
                "sshd.service",
                format!(
            "Accepted publickey for {} from {} port {port} ssh2: ED25519 SHA256:{:016x}{:016x}",
            user(r), ip(r), r.next(), r.next()
        ),
            )
        }
        _ => (
            "sshd.service",
            format!(
                "pam_unix(sshd:session): session opened for user {}(uid={}) by (uid=0)",
                user(r),
                1000 + r.below(5000)
            ),
        ),
    }
}

/// Kernel and systemd lines.
fn system_message(r: &mut Rng, kind: u64, pid: u64) -> (&'static str, String) {
    match kind {
        3 => (
            "kernel",
            format!(
                "{}: link becomes ready; carrier on after {} ms",
                r.pick(&["eth0", "eth1", "wlan0", "wg0", "enp3s0"]),
                r.below(5000)
            ),
        ),
        _ => (
            "systemd",
            format!(
                "Started {}.service - {} (pid {pid}).",
                r.pick(&[
                    "nginx",
                    "postgresql",
                    "cron",
                    "docker",
                    "containerd",
                    "redis"
                ]),
                r.pick(&[
                    "Web server",
                    "Database",
                    "Scheduler",
                    "Container runtime",
                    "Cache"
                ])
            ),
        ),
    }
}

/// Application and daemon lines.
fn service_message(r: &mut Rng, kind: u64, port: u64, pid: u64) -> (&'static str, String) {
    match kind {
        5 => (
            "nginx.service",
            format!(
                "{} - - \"GET /api/v1/{}/{} HTTP/1.1\" {} {} \"-\" \"{}\"",
                ip(r),
                r.pick(&["devices", "users", "orders", "metrics", "health"]),
                r.below(1_000_000),
                r.pick(&["200", "200", "200", "404", "500", "302"]),
                r.below(100_000),
                r.pick(&[
                    "curl/8.5.0",
                    "Mozilla/5.0 (X11; Linux x86_64)",
                    "Go-http-client/1.1"
                ])
            ),
        ),
        6 => (
            "cron.service",
            format!(
                "CRON[{pid}]: ({}) CMD (run-parts /etc/cron.{})",
                user(r),
                r.pick(&["hourly", "daily", "weekly"])
            ),
        ),
        7 => (
            "app.service",
            format!(
            "error: connection to {}:{port} refused after {} ms (attempt {}) request_id={:016x}",
            ip(r), r.below(30_000), 1 + r.below(5), r.next()
        ),
        ),
        8 => (
            "kernel",
            format!(
                "Out of memory: Killed process {pid} ({}) total-vm:{}kB, anon-rss:{}kB",
                r.pick(&["java", "python3", "node", "postgres"]),
                r.below(8_000_000),
                r.below(4_000_000)
            ),
        ),
        _ => (
            "systemd-networkd.service",
            format!(
                "dhcp4: lease of {} renewed for {} seconds on {}",
                ip(r),
                600 + r.below(86_400),
                r.pick(&["eth0", "eth1", "wlan0"])
            ),
        ),
    }
}

/// Which lines each device ships.
pub struct Plan {
    devices: u64,
    batch: u64,
    per_device: u64,
}

impl Plan {
    pub fn new(lines: u64, devices: u64, batch: u64) -> Plan {
        Plan {
            devices,
            batch,
            per_device: lines.div_ceil(devices),
        }
    }

    pub fn span(&self) -> (u64, u64) {
        (NOW - HOUR - SPAN, NOW - HOUR)
    }

    fn line(&self, d: u64, seq: u64) -> LogLine {
        let mut r = Rng(d << 40 ^ seq);
        let (unit, message) = message(&mut r);
        // Evenly over the span, each device a few microseconds apart.
        let ts = self.span().0 + (seq - 1) * (SPAN / self.per_device.max(1)) + d * 7;
        LogLine {
            seq,
            ts_us: ts,
            source: "journal".into(),
            unit: Some(unit.into()),
            priority: Some(if message.starts_with("error") { 3 } else { 6 }),
            message,
            truncated: false,
        }
    }

    /// Every batch, round-robin over the devices so each device's batches stay in order
    /// and the devices advance together (like live agents).
    pub fn batches(&self) -> Vec<(String, Vec<LogLine>)> {
        let rounds = self.per_device.div_ceil(self.batch);
        let mut out = Vec::new();
        for round in 0..rounds {
            for d in 0..self.devices {
                let first = round * self.batch + 1;
                let last = ((round + 1) * self.batch).min(self.per_device);
                let lines = (first..=last).map(|s| self.line(d, s)).collect();
                out.push((device(d), lines));
            }
        }
        out
    }
}
