//! Test harness: network namespaces, veth links and peer processes that clean up on drop.
//!
//! Everything here shells out to the same tools an operator would use (`ip`, `wg`, `ping`,
//! `iperf3`, `nft`, `python3`), so a failure message names the exact command and its stderr.
//!
//! Resources are owned by guards: [`Netns`] deletes its namespace (and kills whatever still runs
//! in it) on drop, [`Proc`] terminates and reaps its child, [`WgDevice`] stops the WireGuard
//! implementation (which removes its TUN interface and UAPI socket). A panicking test therefore
//! leaves nothing behind, and its log files are kept under [`SCRATCH_ROOT`] for inspection.
//!
//! Which program plays "our" side is decided by [`Impl::Ours`]: the binary named by
//! `WATCHGRID_BIN` (default [`DEFAULT_WATCHGRID_BIN`]), or wireguard-go when
//! `WATCHGRID_NETNS_OURS=wireguard-go` is set, which validates the harness itself with the
//! reference implementation on every side.

pub mod appliance;
pub mod fleet;
mod iperf;
mod netns;
mod proc;
pub mod python;
pub mod sshd;
mod topo;
mod wg;

pub use appliance::{api_token, start_serve, test_ca_and_leaf};
pub use iperf::{iperf3_client, iperf3_server, IperfResult};
pub use netns::{veth, veth_addressed, Netns};
pub use proc::Proc;
pub use topo::{Outer, Pair};
pub use wg::{
    genpsk, uapi_socket, Dump, Impl, InterfaceDump, KeyPair, PeerConfig, PeerDump, WgDevice,
};

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the release build of the binary under test lives unless `WATCHGRID_BIN` says otherwise:
/// the workspace's own static release build.
pub const DEFAULT_WATCHGRID_BIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../target/x86_64-unknown-linux-gnu/release/watchgrid"
);

/// Every program the scenarios run, with the Debian package that provides it.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("wg", "wireguard-tools"),
    ("wireguard-go", "wireguard-go"),
    ("ping", "iputils-ping"),
    ("iperf3", "iperf3"),
    ("nft", "nftables"),
    ("python3", "python3"),
    ("timeout", "coreutils"),
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("pebble", "pebble"),
    ("pebble-challtestsrv", "pebble"),
    ("promtool", "prometheus"),
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("mkfs.ext4", "e2fsprogs"),
    ("truncate", "coreutils"),
    ("sshd", "openssh-server"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("sshpass", "sshpass"),
    ("journalctl", "systemd"),
    ("zbarimg", "zbar-tools"),
];

/// axe-core's browser bundle (npm), which `scripts/setup` unpacks here.
pub const AXE_JS: &str = "/opt/watchgrid-axe/axe.min.js";

/// Writes journal files from journald's export format (the journald source's test).
pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// Path of the schemathesis CLI (a PyPI venv that `scripts/setup` creates).
pub fn schemathesis_path() -> String {
    std::env::var("WATCHGRID_SCHEMATHESIS")
        .unwrap_or_else(|_| "/opt/watchgrid-schemathesis/bin/schemathesis".into())
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
    })
}

/// The programs of [`TOOLS`] (and schemathesis) that are missing, as "program (package)".
fn missing_tools() -> Vec<String> {
    let mut missing: Vec<String> = TOOLS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(program, package)| format!("{program} (Debian package {package})"))
        .collect();
    let selenium = Command::new(python3())
        .args(["-c", "import selenium"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !selenium.is_ok_and(|s| s.success()) {
        missing.push("python3 selenium (Debian package python3-selenium)".into());
    }
    if !std::path::Path::new(JOURNAL_REMOTE).is_file() {
        missing.push(format!(
            "{JOURNAL_REMOTE} (Debian package systemd-journal-remote)"
        ));
    }
    if !std::path::Path::new(AXE_JS).is_file() {
        missing.push(format!("{AXE_JS} (axe-core from npm)"));
    }
    let st = schemathesis_path();
    if !std::path::Path::new(&st).is_file() {
        missing.push(format!("{st} (a PyPI venv)"));
    }
    missing
}

/// Panics at once, naming every missing program and the command that installs them all, so a
/// machine without the tools fails in a second instead of in a string of timeouts.
pub fn require_tools() {
    static CHECKED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let missing = CHECKED.get_or_init(missing_tools);
    if !missing.is_empty() {
        panic!(
            "the netns tests need programs that are not installed:\n  {}\n\
             install them all with: scripts/setup (as root)",
            missing.join("\n  ")
        );
    }
}

/// Per-namespace scratch directories (keys, configs, process logs) live below this.
pub const SCRATCH_ROOT: &str = "/tmp/watchgrid-netns";

/// Directory of the WireGuard cross-platform UAPI sockets (shared by all namespaces).
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// Panics with a clear message unless the effective uid is 0. Call it first in every test.
pub fn require_root() {
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|euid| euid.parse::<u32>().ok());
    if euid != Some(0) {
        panic!(
            "the netns end-to-end tests must run as root (they create network namespaces, \
             TUN devices and veth links); effective uid is {euid:?}. Run them through \
             scripts/test as root."
        );
    }
}

/// A short name that is unique machine-wide among live test processes: `<prefix><pid>n<k>`.
///
/// With pid_max <= 4194304 (7 digits) and a 2-character prefix this stays within the
/// 15-character interface name limit for the first thousand names a process takes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}n{n}", std::process::id())
}

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%[]".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Renders an argv the way a shell user would type it (for error messages).
pub fn format_cmd<S: AsRef<str>>(args: &[S]) -> String {
    let mut s = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let a = a.as_ref();
        // Embedded scripts are long; keep error messages readable.
        if a.len() > 120 {
            let head: String = a.chars().take(60).collect();
            s.push_str(&quote(&format!("{head}...")));
        } else {
            s.push_str(&quote(a));
        }
    }
    s
}

/// Runs a command to completion: whether it succeeded, and its stdout then stderr.
pub fn run_combined<S: AsRef<str>>(args: &[S]) -> Result<(bool, String)> {
    let out = run_output(args, None)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Runs a command to completion without judging its exit status.
pub fn run_output<S: AsRef<str>>(args: &[S], stdin: Option<&[u8]>) -> Result<Output> {
    let Some((prog, rest)) = args.split_first() else {
        bail!("empty command line");
    };
    let mut cmd = Command::new(prog.as_ref());
    cmd.args(rest.iter().map(|a| a.as_ref()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", format_cmd(args)))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("child stdin")?;
        pipe.write_all(input)
            .with_context(|| format!("writing stdin of `{}`", format_cmd(args)))?;
    }
    child
        .wait_with_output()
        .with_context(|| format!("waiting for `{}`", format_cmd(args)))
}

fn check_output<S: AsRef<str>>(args: &[S], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): stderr: {} stdout: {}",
            format_cmd(args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command and returns its stdout; a non-zero exit is an error naming the command and
/// carrying its stderr.
pub fn run<S: AsRef<str>>(args: &[S]) -> Result<String> {
    let out = run_output(args, None)?;
    check_output(args, out)
}

/// Like [`run`] with `input` fed to the command's stdin.
pub fn run_with_input<S: AsRef<str>>(args: &[S], input: &[u8]) -> Result<String> {
    let out = run_output(args, Some(input))?;
    check_output(args, out)
}

/// Polls `cond` every 50 ms until it holds; returns how long that took, or an error after
/// `timeout` that names `what`.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An error that makes [`retry_until`] give up at once (e.g. the process it waits for died).
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fatal {}

/// Marks an error as [`Fatal`] for [`retry_until`].
pub fn fatal(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Fatal(format!("{e:#}")))
}

/// Polls a fallible probe every 50 ms until it returns `Ok`; after `timeout` the error carries
/// the probe's last failure. An error wrapping [`Fatal`] ends the wait immediately.
pub fn retry_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(e) if e.downcast_ref::<Fatal>().is_some() => {
                return Err(e.context(format!("gave up waiting for {what}")));
            }
            Err(e) if start.elapsed() >= timeout => {
                return Err(e.context(format!("timed out after {timeout:?} waiting for {what}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A small xorshift generator: random moments that vary per run, repeatable from the
/// seed a test prints.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The seed in environment variable `var`, or one from the clock (odd, never 0).
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

/// The number in environment variable `var`, or `default` when it is unset or not a number.
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The python interpreter used for the embedded helper scripts (the system one: no shims).
pub fn python3() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

static SCRATCH_DIRS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Records a scratch directory created by this process, for [`scenario`] to clean up.
pub(crate) fn register_scratch(dir: std::path::PathBuf) {
    SCRATCH_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir);
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a test body: checks for root and the tools, then runs `body`. All resources are released by their
/// guards when `body` returns; afterwards, on success the scratch directories of the
/// namespaces it created are removed, on failure every process log in them is printed (tail)
/// and they are kept for inspection (also kept with `WATCHGRID_NETNS_KEEP=1`).
pub fn scenario(body: impl FnOnce() -> Result<()>) -> Result<()> {
    require_root();
    require_tools();
    let result = body();
    let dirs = std::mem::take(&mut *SCRATCH_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    let keep = std::env::var_os("WATCHGRID_NETNS_KEEP").is_some();
    for dir in dirs {
        if result.is_err() {
            let mut logs: Vec<_> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "log"))
                        .collect()
                })
                .unwrap_or_default();
            logs.sort();
            for log in logs {
                let text = std::fs::read(&log)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                eprintln!("---- tail of {} ----\n{}", log.display(), tail(&text, 60));
            }
        }
        if result.is_err() || keep {
            eprintln!("scratch files kept in {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    result
}

/// Declares one `#[test]` per implementation pairing of a two-sided scenario
/// `fn scenario(a: Impl, b: Impl) -> anyhow::Result<()>`, each run through [`scenario`].
///
/// ```ignore
/// variants!(ping_scenario {
///     ping_ours_wggo => (Impl::Ours, Impl::WireguardGo),
///     ping_ours_ours => (Impl::Ours, Impl::Ours),
/// });
/// ```
#[macro_export]
macro_rules! variants {
    ($scenario:ident { $($name:ident => ($a:expr, $b:expr)),+ $(,)? }) => {
        $(
            #[test]
            fn $name() -> ::anyhow::Result<()> {
                $crate::scenario(|| {
                    eprintln!(
                        "{}: side A = {}, side B = {}",
                        stringify!($name),
                        $crate::Impl::describe($a),
                        $crate::Impl::describe($b)
                    );
                    $scenario($a, $b)
                })
            }
        )+
    };
}
