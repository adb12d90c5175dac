//! Logs and sign-ins end to end: a real sshd in a machine's namespace writes its log
//! (`sshd -E FILE`), the agent follows the file, finds the sign-ins and ships lines and
//! events; the hub stores them, raises alerts and signs the webhook it sends them to. Log
//! lines arrive exactly once through SIGKILLs of the hub and of the agent and a rotation,
//! the spool stays within its cap while the hub is away (dropping the oldest and saying
//! so), and a disabled device's lines wait in the spool until it is enabled.

use anyhow::{ensure, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use watchgrid_netns_tests::appliance::json::{field, obj, Json};
use watchgrid_netns_tests::fleet::{enrolled, Hub, Machine};
use watchgrid_netns_tests::sshd::PrivsepDir;
use watchgrid_netns_tests::{retry_until, scenario, wait_until, Impl, Netns, Proc, JOURNAL_REMOTE};

const MACHINE: &str = "172.31.1.2";
const SSH_PORT: &str = "2222";
const WEBHOOK_PORT: &str = "8099";
/// The webhook receiver's address (machine 9's namespace).
const HOOK: &str = "172.31.9.2";

/// Receives webhook POSTs and appends one JSON line per request to OUT: whether the
/// `X-Watchgrid-Signature` is the HMAC-SHA256 of the body under SECRET, and the body.
/// `webhook.py ADDR PORT SECRET OUT`
const WEBHOOK_RECEIVER: &str = r#"
import hashlib, hmac, http.server, json, sys
addr, port, secret, out = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        got = self.headers.get("X-Watchgrid-Signature", "")
        with open(out, "a") as f:
            f.write(json.dumps({"valid": hmac.compare_digest(want, got),
                                "body": json.loads(body)}) + "\n")
        self.send_response(200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer((addr, port), H).serve_forever()
"#;

/// Pages through `GET /api/logs?device=D` (newest first, 1000 a page) and prints the
/// numbers of the `PREFIX NNNNNNNN` messages: how many, how many twice, the lowest and
/// highest, and whether they form one unbroken range.
/// `pages.py CA BEARER DEVICE PREFIX`
const LOG_PAGES: &str = r#"
import json, ssl, sys, urllib.parse, urllib.request
ca, bearer, device, prefix = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
seen, dups, cursor = set(), 0, None
while True:
    q = {"device": device, "limit": "1000"}
    if cursor:
        q["cursor"] = cursor
    url = "https://127.0.0.1/api/logs?" + urllib.parse.urlencode(q)
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + bearer})
    page = json.loads(urllib.request.urlopen(req, context=ctx, timeout=30).read())
    for line in page["lines"]:
        words = line["message"].split()
        if len(words) >= 2 and words[0] == prefix:
            n = int(words[1])
            dups += n in seen
            seen.add(n)
    cursor = page["next_cursor"]
    if not cursor:
        break
lo, hi = (min(seen), max(seen)) if seen else (-1, -1)
print(json.dumps({"count": len(seen), "dups": dups, "lo": lo, "hi": hi,
                  "unbroken": len(seen) == hi - lo + 1}))
"#;

#[test]
fn sshd_sign_ins_become_events_and_signed_alerts_ours() -> Result<()> {
    scenario(sign_ins)
}

#[test]
fn every_line_arrives_once_through_kills_and_rotation_ours() -> Result<()> {
    scenario(exactly_once)
}

#[test]
fn journal_entries_ship_once_from_their_cursor_ours() -> Result<()> {
    scenario(journal)
}

#[test]
fn spool_keeps_its_cap_while_the_hub_is_away_and_waits_while_disabled_ours() -> Result<()> {
    scenario(spool_bound_and_disabled)
}

/// A machine enrolled with the hub whose agent follows `log` only (never the host's
/// journal).
fn machine_following(hub: &Hub, log: &Path, extra: &[&str]) -> Result<Machine> {
    let mut m = Machine::new(hub, 1)?;
    enrolled(&mut m, hub, &[])?;
    let log = log.to_string_lossy().into_owned();
    let mut args = vec!["--journal", "off", "--log-file", &log];
    args.extend_from_slice(extra);
    m.run_with(&hub.bin, &args)?;
    Ok(m)
}

fn sign_ins() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Hub::start(&bin)?;
    let mut m = Machine::new(&hub, 1)?;
    enrolled(&mut m, &hub, &[])?;
    let sshd = Sshd::start(&m.ns)?;
    let log = sshd.log.to_string_lossy().into_owned();
    m.run_with(&bin, &["--journal", "off", "--log-file", &log])?;

    // The webhook's receiver in a namespace of its own, routed through the hub's.
    let hook = Machine::new(&hub, 9)?;
    let created = hub.client().ok(
        "PUT",
        "/api/alerts/webhook",
        Some(obj(&[(
            "url",
            &format!("http://{HOOK}:{WEBHOOK_PORT}/hook"),
        )])),
    )?;
    let secret = field(&created, "secret").context("the webhook's secret")?;
    let received = hook.ns.dir().join("webhook.jsonl");
    let _receiver = hook.ns.spawn_python(
        "webhook",
        WEBHOOK_RECEIVER,
        &[HOOK, WEBHOOK_PORT, &secret, &received.to_string_lossy()],
    )?;
    wait_until(Duration::from_secs(10), "the webhook receiver", || {
        hook.ns
            .exec(&["ss", "-Htln", &format!("sport = :{WEBHOOK_PORT}")])
            .is_ok_and(|o| !o.trim().is_empty())
    })?;
    let shown = hub.client().ok("GET", "/api/logs/settings", None)?;
    ensure!(
        !shown.contains(&secret),
        "the webhook secret is shown again: {shown}"
    );

    // From the hub's namespace: three unknown users and three wrong root passwords (a
    // burst of at least the default five failures), a user name that is markup, then a
    // key login as root.
    for _ in 0..3 {
        sshd.password_attempt(&hub.ns, "nosuch")?;
        sshd.password_attempt(&hub.ns, "root")?;
    }
    sshd.key_login(&hub.ns)?;
    // Markup and a terminal escape in lines of the log (the ssh client itself refuses
    // such user names): the device page must show them as text.
    let hostile = "<script>alert(1)</script>";
    let mut f = std::fs::OpenOptions::new().append(true).open(&sshd.log)?;
    writeln!(f, "Invalid user {hostile} from 172.31.1.1 port 1")?;
    writeln!(
        f,
        "hostile-escape a terminal escape \x1b[2J and a NUL \0 in it"
    )?;
    f.write_all(b"hostile-utf8 invalid \xff\xfe bytes\n")?;
    writeln!(f, "hostile-long {}", "A".repeat(1 << 20))?;
    writeln!(f, "hostile-after the long line")?;
    drop(f);

    let events = retry_until(Duration::from_secs(60), "the sign-ins on the hub", || {
        let out = hub.query(
            &format!("/api/login-events?device={}", m.device),
            "[(e['outcome'], e['user'], e['source_ip'], e['method'], e['raw']) for e in j['events']]",
        )?;
        ensure!(
            out.contains("publickey") && out.contains("script"),
            "not every sign-in yet: {out}"
        );
        Ok(out)
    })?;
    eprintln!("login events: {events}");
    for want in [
        r#"["invalid_user", "nosuch", "172.31.1.1", null, null]"#,
        r#"["failed", "root", "172.31.1.1", "password", null]"#,
        r#"["root_session", "root", "172.31.1.1", "publickey", null]"#,
        r#"["invalid_user", "<script>alert(1)</script>", "172.31.1.1", null, null]"#,
    ] {
        ensure!(events.contains(want), "no {want} among {events}");
    }

    let alerts = retry_until(Duration::from_secs(60), "signed webhook deliveries", || {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        let kinds: Vec<String> = text
            .lines()
            .filter_map(|l| field(l, "kind"))
            .collect::<Vec<_>>();
        ensure!(
            kinds.iter().any(|k| k == "failed_login_burst")
                && kinds.iter().any(|k| k == "root_login"),
            "webhook so far: {text}"
        );
        Ok(text)
    })?;
    ensure!(
        alerts.lines().all(|l| l.starts_with(r#"{"valid": true"#)),
        "a delivery without a valid signature: {alerts}"
    );
    let listed = hub.query(
        "/api/alerts",
        "sorted({a['kind'] + ':' + a['delivery'] for a in j['alerts']})",
    )?;
    ensure!(
        listed.contains("failed_login_burst:delivered") && listed.contains("root_login:delivered"),
        "GET /api/alerts: {listed}"
    );

    let (status, page) = hub
        .client()
        .call("GET", &format!("/devices/{}", m.device), None)?;
    ensure!(status == 200, "device page: {status}");
    ensure!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !page.contains(hostile),
        "the markup in a log line is not escaped on the device page"
    );
    ensure!(
        page.contains("\\x1b[2J") && !page.contains('\x1b'),
        "the terminal escape reached the device page"
    );
    eprintln!("alerts: {listed}");
    hostile_lines_are_stored_and_found(&hub, &m.device)?;
    metrics_count_it(&hub)
}

/// Control characters, invalid UTF-8 and a 1 MiB line are stored (the long one cut and
/// marked), and a text search still finds each, the line after the long one too.
fn hostile_lines_are_stored_and_found(hub: &Hub, device: &str) -> Result<()> {
    let found = hub.query(
        &format!("/api/logs?device={device}&q=hostile-"),
        "[(l['message'][:60], len(l['message']), l['truncated']) for l in j['lines']]",
    )?;
    eprintln!("hostile lines: {found}");
    for want in [
        r#"["hostile-after the long line", 27, false]"#,
        r#"["hostile-utf8 invalid \ufffd\ufffd bytes", 29, false]"#,
    ] {
        ensure!(found.contains(want), "no {want} in {found}");
    }
    ensure!(
        found.contains(r#""hostile-long AAAA"#) && found.contains(", 65536, true]"),
        "the 1 MiB line should be kept cut to 64 KiB and marked: {found}"
    );
    ensure!(
        found.contains("hostile-escape a terminal escape \\u001b[2J and a NUL \\u0000"),
        "control characters: {found}"
    );
    Ok(())
}

/// The login, ingest and alert metrics moved (on the hub's metrics listener).
fn metrics_count_it(hub: &Hub) -> Result<()> {
    let text = hub
        .ns
        .exec(&["curl", "-fsS", "http://127.0.0.1:9100/metrics"])?;
    for want in [
        "watchgrid_login_events_total{outcome=\"invalid_user\"}",
        "watchgrid_login_events_total{outcome=\"failed\"}",
        "watchgrid_alerts_sent_total{result=\"delivered\"}",
        "watchgrid_log_lines_ingested_total",
        "watchgrid_log_store_bytes",
    ] {
        let value = text
            .lines()
            .find(|l| l.starts_with(want))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("{want} not in /metrics"))?;
        ensure!(value > 0.0, "{want} is {value}");
    }
    Ok(())
}

/// A real OpenSSH server in a namespace, logging to its own file.
struct Sshd {
    addr: String,
    key: PathBuf,
    log: PathBuf,
    _proc: Proc,
    _privsep: PrivsepDir,
}

impl Sshd {
    fn start(ns: &Netns) -> Result<Sshd> {
        let privsep = PrivsepDir::ensure()?;
        let dir = ns.dir();
        let host_key = dir.join("ssh_host_ed25519_key");
        let key = dir.join("client_key");
        for path in [&host_key, &key] {
            let path = path.to_string_lossy();
            ns.exec(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", &path])?;
        }
        let public = std::fs::read_to_string(dir.join("client_key.pub"))?;
        let authorized = ns.write_file("authorized_keys", &public)?;
        let config = ns.write_file(
            "sshd_config",
            &format!(
                "ListenAddress {MACHINE}\nPort {SSH_PORT}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\nPidFile none\nLogLevel INFO\n",
                host_key.display(),
                authorized.display()
            ),
        )?;
        let log = dir.join("sshd.log");
        let proc = watchgrid_netns_tests::sshd::spawn(ns, &config, &log, MACHINE, SSH_PORT)?;
        Ok(Sshd {
            addr: MACHINE.into(),
            key,
            log,
            _proc: proc,
            _privsep: privsep,
        })
    }

    fn client_args<'a>(&'a self, user: &'a str) -> Vec<&'a str> {
        vec![
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-p",
            SSH_PORT,
            "-l",
            user,
            &self.addr,
        ]
    }

    /// One wrong password for `user` (refused, as it must be).
    fn password_attempt(&self, from: &Netns, user: &str) -> Result<()> {
        let mut argv = vec![
            "sshpass",
            "-p",
            "wrong password",
            "ssh",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ];
        argv.extend(self.client_args(user));
        argv.push("true");
        let out = from.exec_output(&argv)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.contains("Permission denied"),
            "a wrong password for {user}: {stderr}"
        );
        Ok(())
    }

    fn key_login(&self, from: &Netns) -> Result<()> {
        let key = self.key.to_string_lossy();
        let mut argv = vec![
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-i",
            &key,
        ];
        argv.extend(self.client_args("root"));
        argv.push("true");
        let out = from.exec_output(&argv)?;
        ensure!(
            out.status.success(),
            "key login as root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

/// Appends `wgline NNNNNNNN` lines (numbers `from..to`, padded to `width` bytes) to `path`.
fn append_lines(path: &Path, from: u64, to: u64, width: usize) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut buf = String::new();
    for n in from..to {
        let line = format!("wgline {n:08} ");
        buf.push_str(&line);
        buf.push_str(&"x".repeat(width.saturating_sub(line.len() + 1)));
        buf.push('\n');
        if buf.len() > 1 << 16 {
            f.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    f.write_all(buf.as_bytes())?;
    Ok(())
}

#[derive(Debug)]
struct Stored {
    count: u64,
    dups: u64,
    lo: i64,
    hi: i64,
    unbroken: bool,
}

fn stored(hub: &Hub, device: &str) -> Result<Stored> {
    stored_with(hub, device, "wgline")
}

fn stored_with(hub: &Hub, device: &str, prefix: &str) -> Result<Stored> {
    let ca = hub.ca.to_string_lossy();
    let out = hub
        .ns
        .run_python(LOG_PAGES, &[&ca, &hub.admin, device, prefix])?;
    let num = |k: &str| -> Result<i64> {
        field(&out, k)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{k} in {out}"))
    };
    Ok(Stored {
        count: num("count")? as u64,
        dups: num("dups")? as u64,
        lo: num("lo")?,
        hi: num("hi")?,
        unbroken: out.contains(r#""unbroken": true"#),
    })
}

/// The newest stored line's message for the device (or empty).
fn newest(hub: &Hub, device: &str) -> String {
    hub.query(
        &format!("/api/logs?device={device}&limit=1"),
        "j['lines'][0]['message'] if j['lines'] else ''",
    )
    .unwrap_or_default()
}

fn wait_for_line(hub: &Hub, device: &str, n: u64, timeout: Duration) -> Result<()> {
    let want = format!("wgline {n:08}");
    wait_until(timeout, &format!("line {n} on the hub"), || {
        newest(hub, device).contains(&want)
    })?;
    Ok(())
}

fn dropped_on_hub(hub: &Hub, device: &str) -> Result<u64> {
    let out = hub.query(
        "/api/devices",
        &format!("[(d.get('agent') or {{}}).get('log_lines_dropped') for d in j['devices'] if d['id'] == '{device}']"),
    )?;
    Ok(out
        .trim_matches(|c| c == '[' || c == ']')
        .trim()
        .parse()
        .unwrap_or(0))
}

fn exactly_once() -> Result<()> {
    const TOTAL: u64 = 200_000;
    const CHUNK: u64 = 50_000;
    let bin = Impl::required_watchgrid_binary()?;
    let mut hub = Hub::start(&bin)?;
    let log = hub.ns.dir().join("machine-app.log");
    let mut m = machine_following(&hub, &log, &[])?;
    let log_arg = log.to_string_lossy().into_owned();

    // Each kill lands while the agent is still reading, spooling and shipping the chunk
    // just written.
    append_lines(&log, 0, CHUNK, 64)?;
    hub.kill_and_restart()?;
    append_lines(&log, CHUNK, 2 * CHUNK, 64)?;
    m.agent()?.signal("KILL")?;
    m.agent()?.wait_timeout(Duration::from_secs(10))?;
    m.run_with(&bin, &["--journal", "off", "--log-file", &log_arg])?;
    // Rotation as logrotate does it: rename, then a new file under the old name.
    append_lines(&log, 2 * CHUNK, 3 * CHUNK, 64)?;
    std::fs::rename(&log, log.with_extension("log.1"))?;
    append_lines(&log, 3 * CHUNK, TOTAL, 64)?;
    hub.kill_and_restart()?;

    wait_for_line(&hub, &m.device, TOTAL - 1, Duration::from_secs(240))?;
    let s = stored(&hub, &m.device)?;
    eprintln!("stored after two hub kills, one agent kill and a rotation: {s:?}");
    ensure!(
        s.count == TOTAL && s.dups == 0 && s.lo == 0 && s.hi == (TOTAL - 1) as i64,
        "not every line exactly once: {s:?}"
    );
    ensure!(dropped_on_hub(&hub, &m.device)? == 0, "lines were dropped");
    Ok(())
}

/// Spooled and dropped counts from `agent status`: `N lines waiting, D dropped …`.
fn spool_counts(m: &Machine, bin: &str) -> Option<(u64, u64)> {
    let status = m.status(bin).ok()?;
    let line = status.lines().find(|l| l.contains("lines waiting"))?;
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    Some((*nums.first()?, *nums.get(1)?))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|md| md.len())
                .sum()
        })
        .unwrap_or(0)
}

fn spool_bound_and_disabled() -> Result<()> {
    const TOTAL: u64 = 30_000;
    const CAP: u64 = 1 << 20;
    let bin = Impl::required_watchgrid_binary()?;
    let mut hub = Hub::start(&bin)?;
    let log = hub.ns.dir().join("machine-app.log");
    let m = machine_following(&hub, &log, &["--spool-max-bytes", &CAP.to_string()])?;
    let spool = m.state.join("log-spool");

    // The hub away: 30,000 lines of 128 bytes (3.8 MB) against a 1 MiB spool.
    hub.proc.terminate(Duration::from_secs(20))?;
    append_lines(&log, 0, TOTAL, 128)?;
    wait_until(
        Duration::from_secs(60),
        "the agent to drop the oldest lines",
        || spool_counts(&m, &bin).is_some_and(|(waiting, dropped)| waiting + dropped == TOTAL),
    )?;
    let (waiting, dropped) = spool_counts(&m, &bin).context("agent status")?;
    let on_disk = dir_bytes(&spool);
    eprintln!("hub away: {waiting} waiting, {dropped} dropped, spool {on_disk} bytes on disk");
    ensure!(dropped > 0, "a 3.8 MB backlog fit a 1 MiB spool");
    ensure!(
        on_disk <= CAP + CAP / 4,
        "the spool holds {on_disk} bytes against a cap of {CAP}"
    );

    hub.proc = Hub::start_proc(&hub.ns, &hub.bin, &hub.data, &hub.runtime)?;
    wait_for_line(&hub, &m.device, TOTAL - 1, Duration::from_secs(120))?;
    wait_until(
        Duration::from_secs(30),
        "the dropped count on the hub",
        || dropped_on_hub(&hub, &m.device).is_ok_and(|d| d == dropped),
    )?;
    let s = stored(&hub, &m.device)?;
    eprintln!("after the hub came back: {s:?}");
    ensure!(
        s.dups == 0 && s.unbroken && s.hi == (TOTAL - 1) as i64 && s.count + dropped == TOTAL,
        "the newest lines should be kept, the oldest dropped: {s:?}, dropped {dropped}"
    );

    // Disabled: the hub refuses the agent, the lines wait in the spool.
    let path = |what: &str| format!("/api/devices/{}/{what}", m.device);
    hub.client()
        .ok("POST", &path("disable"), Some(Json("{}".into())))?;
    wait_until(
        Duration::from_secs(30),
        "the agent to see the refusal",
        || {
            m.status(&bin)
                .is_ok_and(|s| s.contains("stopped: the hub refused"))
        },
    )?;
    append_lines(&log, TOTAL, TOTAL + 100, 128)?;
    wait_until(
        Duration::from_secs(30),
        "100 lines waiting in the spool",
        || spool_counts(&m, &bin).is_some_and(|(waiting, _)| waiting == 100),
    )?;
    ensure!(
        !newest(&hub, &m.device).contains("wgline 0003"),
        "a disabled device's lines were stored"
    );
    hub.client()
        .ok("POST", &path("enable"), Some(Json("{}".into())))?;
    wait_for_line(&hub, &m.device, TOTAL + 99, Duration::from_secs(120))?;
    let after = stored(&hub, &m.device)?;
    ensure!(
        after.dups == 0 && after.count == s.count + 100 && after.unbroken,
        "after enabling: {after:?}"
    );
    Ok(())
}

/// Journal files written by systemd-journal-remote from journald's export format: real
/// journal files that the agent's journalctl follows (`--journal-directory`).
struct Journal {
    dir: PathBuf,
}

/// One journal entry: its trusted fields (`_UID`, `_EXE`, `_SYSTEMD_UNIT`, as journald
/// would record them) and message.
struct Entry<'a> {
    unit: &'a str,
    uid: u32,
    exe: &'a str,
    identifier: &'a str,
    priority: u8,
    message: String,
}

impl Entry<'_> {
    fn app(message: String) -> Entry<'static> {
        Entry {
            unit: "app.service",
            uid: 990,
            exe: "/usr/bin/app",
            identifier: "app",
            priority: 6,
            message,
        }
    }
}

impl Journal {
    fn new(ns: &Netns) -> Result<Journal> {
        let dir = ns.dir().join("journal");
        std::fs::create_dir(&dir)?;
        Ok(Journal { dir })
    }

    fn write(&self, entries: &[Entry]) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros();
        let mut export = String::new();
        for (i, e) in entries.iter().enumerate() {
            export.push_str(&format!(
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n\
                 _BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=machine1\n\
                 _SYSTEMD_UNIT={}\n_UID={}\n_EXE={}\nSYSLOG_IDENTIFIER={}\nPRIORITY={}\n\
                 MESSAGE={}\n\n",
                now + i as u128,
                now + i as u128,
                e.unit,
                e.uid,
                e.exe,
                e.identifier,
                e.priority,
                e.message
            ));
        }
        let output = format!("--output={}", self.dir.join("remote.journal").display());
        let mut child = std::process::Command::new(JOURNAL_REMOTE)
            .args([output.as_str(), "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("systemd-journal-remote")?;
        child
            .stdin
            .take()
            .context("journal-remote stdin")?
            .write_all(export.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "systemd-journal-remote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

fn jlines(from: u64, to: u64) -> Vec<Entry<'static>> {
    (from..to)
        .map(|n| Entry::app(format!("jline {n:08} from app")))
        .collect()
}

fn journal() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Hub::start(&bin)?;
    let mut m = Machine::new(&hub, 1)?;
    enrolled(&mut m, &hub, &[])?;
    let journal = Journal::new(&m.ns)?;
    // Written before the agent's first run: not shipped (a first run starts from now).
    journal.write(&[Entry::app("jbefore the agent started".into())])?;
    let dir = journal.dir.to_string_lossy().into_owned();
    let args = [
        "--journal-directory",
        dir.as_str(),
        "--journal-exclude-unit",
        "chatty*",
    ];
    m.run_with(&bin, &args)?;
    wait_until(Duration::from_secs(20), "the agent's journalctl", || {
        m.ns.exec(&["pgrep", "-f", &format!("directory={dir}")])
            .is_ok()
    })?;

    let mut first = jlines(0, 500);
    first.extend([
        Entry {
            priority: 7,
            ..Entry::app("jdebug is below the default priority".into())
        },
        Entry {
            unit: "chatty-cron.service",
            ..Entry::app("jchatty is an excluded unit".into())
        },
        Entry {
            unit: "ssh.service",
            uid: 0,
            exe: "/usr/sbin/sshd",
            identifier: "sshd",
            priority: 6,
            message: "Failed password for root from 172.31.1.1 port 40000 ssh2".into(),
        },
        // A user's `logger -t sshd`: journald records the writer, which is not sshd.
        Entry {
            unit: "user@1000.service",
            uid: 1000,
            exe: "/usr/bin/logger",
            identifier: "sshd",
            priority: 6,
            message: "Accepted password for root from 198.51.100.66 port 1 ssh2".into(),
        },
    ]);
    journal.write(&first)?;
    wait_for_prefix(&hub, &m.device, "jline", 499)?;

    // A SIGKILLed agent resumes after its saved cursor.
    m.agent()?.signal("KILL")?;
    m.agent()?.wait_timeout(Duration::from_secs(10))?;
    journal.write(&jlines(500, 1000))?;
    m.run_with(&bin, &args)?;
    journal.write(&jlines(1000, 1200))?;
    wait_for_prefix(&hub, &m.device, "jline", 1199)?;

    let s = stored_with(&hub, &m.device, "jline")?;
    eprintln!("journal lines on the hub: {s:?}");
    ensure!(
        s.count == 1200 && s.dups == 0 && s.lo == 0 && s.unbroken,
        "journal lines: {s:?}"
    );
    for (word, why) in [
        ("jbefore", "an entry from before the first run"),
        ("jdebug", "a debug entry"),
        ("jchatty", "an excluded unit's entry"),
    ] {
        let found = hub.query(
            &format!("/api/logs?device={}&q={word}", m.device),
            "len(j['lines'])",
        )?;
        ensure!(found == "0", "{why} was shipped ({found})");
    }
    let events = hub.query(
        &format!("/api/login-events?device={}", m.device),
        "[(e['outcome'], e['user'], e['source_ip'], e['service']) for e in j['events']]",
    )?;
    eprintln!("journal login events: {events}");
    ensure!(
        events == r#"[["failed", "root", "172.31.1.1", "sshd"]]"#,
        "login events from the journal: {events}"
    );
    Ok(())
}

fn wait_for_prefix(hub: &Hub, device: &str, prefix: &str, n: u64) -> Result<()> {
    let want = format!("{prefix} {n:08}");
    wait_until(
        Duration::from_secs(60),
        &format!("{want} on the hub"),
        || {
            hub.query(
                &format!("/api/logs?device={device}&q={prefix}&limit=1"),
                "j['lines'][0]['message'] if j['lines'] else ''",
            )
            .is_ok_and(|m| m.contains(&want))
        },
    )?;
    Ok(())
}
