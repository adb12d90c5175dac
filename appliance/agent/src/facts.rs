//! What a heartbeat reports about the machine, read from /proc and statvfs. Anything
//! the platform cannot tell is left out rather than guessed.

use watchgrid_api::dto::Heartbeat;

/// The agent's own tunnel, as the heartbeat reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TunnelCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub last_handshake_s: Option<u64>,
}

/// The machine's facts; `log_lines_dropped` is the spool's total of dropped entries.
pub fn collect(tunnel: TunnelCounters, log_lines_dropped: Option<u64>) -> Heartbeat {
    let (mem_total, mem_available) = meminfo();
    let (disk_total, disk_available) = disk("/");
    Heartbeat {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: read_trimmed("/proc/sys/kernel/hostname").map(|h| clip(&h, 253)),
        os: os_name().map(|o| clip(&o, 256)),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").map(|k| clip(&k, 256)),
        uptime_s: read_trimmed("/proc/uptime")
            .and_then(|u| u.split('.').next().and_then(|s| s.parse().ok())),
        load: read_trimmed("/proc/loadavg").map(|l| {
            l.split_whitespace()
                .take(3)
                .filter_map(|v| v.parse().ok())
                .collect()
        }),
        memory_total_bytes: mem_total,
        memory_available_bytes: mem_available,
        disk_total_bytes: disk_total,
        disk_available_bytes: disk_available,
        tunnel_rx_bytes: Some(tunnel.rx_bytes),
        tunnel_tx_bytes: Some(tunnel.tx_bytes),
        last_handshake_s: tunnel.last_handshake_s,
        log_lines_dropped,
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// At most `max` characters and no control characters (the hub refuses both).
fn clip(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn os_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

fn meminfo() -> (Option<u64>, Option<u64>) {
    let Some(text) = read_trimmed("/proc/meminfo") else {
        return (None, None);
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

fn disk(path: &str) -> (Option<u64>, Option<u64>) {
    let Ok(c) = std::ffi::CString::new(path) else {
        return (None, None);
    };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid C string and `st` a writable statvfs; statvfs(3) fills it
    // or fails without touching anything else.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return (None, None);
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    let frag = st.f_frsize;
    (
        Some(st.f_blocks.saturating_mul(frag)),
        Some(st.f_bavail.saturating_mul(frag)),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn facts_are_read_from_this_machine_and_fit_what_the_hub_takes() {
        let h = super::collect(super::TunnelCounters::default(), None);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
        assert_eq!(h.kernel.as_deref(), Some(kernel.trim()));
        assert!(h.memory_total_bytes.is_some_and(|m| m > 0));
        assert!(h.disk_total_bytes.is_some_and(|d| d > 0));
        assert_eq!(h.load.map(|l| l.len()), Some(3));
    }
}
