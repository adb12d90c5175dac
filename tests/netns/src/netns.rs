//! Network namespaces and veth links.

use crate::{python3, retry_until, run, run_output, unique_name, Proc, SCRATCH_ROOT};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// A network namespace owned by the test, with its loopback up and a scratch directory for
/// keys, configuration files and process logs.
///
/// Drop kills every process still inside the namespace (SIGTERM, then SIGKILL) and deletes the
/// namespace. The scratch directory is left to [`crate::scenario`], which removes it after a
/// passing test and keeps it after a failing one.
pub struct Netns {
    name: String,
    dir: PathBuf,
}

impl Netns {
    /// Creates a namespace named `wt<pid>n<k>-<tag>`.
    pub fn new(tag: &str) -> Result<Netns> {
        let name = format!("{}-{tag}", unique_name("wt"));
        let dir = Path::new(SCRATCH_ROOT).join(&name);
        run(&["ip", "netns", "add", &name])?;
        // From here on the guard owns the namespace, so an error below still cleans up.
        let ns = Netns { name, dir };
        std::fs::create_dir_all(&ns.dir)
            .with_context(|| format!("creating {}", ns.dir.display()))?;
        crate::register_scratch(ns.dir.clone());
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scratch directory of this namespace.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ip netns exec NAME args...` as an argv.
    pub fn argv<S: AsRef<str>>(&self, args: &[S]) -> Vec<String> {
        let mut v: Vec<String> = ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(args.iter().map(|a| a.as_ref().to_owned()));
        v
    }

    /// Runs a command inside the namespace; non-zero exit is an error with its stderr.
    pub fn exec<S: AsRef<str>>(&self, args: &[S]) -> Result<String> {
        run(&self.argv(args))
    }

    /// Runs a command inside the namespace and returns its raw output whatever the status.
    pub fn exec_output<S: AsRef<str>>(&self, args: &[S]) -> Result<Output> {
        run_output(&self.argv(args), None)
    }

    /// Starts a long-running command inside the namespace; its output goes to
    /// `<dir>/<label>.log`.
    pub fn spawn<S: AsRef<str>>(&self, label: &str, args: &[S]) -> Result<Proc> {
        let log = self.dir.join(format!("{label}.log"));
        Proc::spawn(label, &self.argv(args), &log)
    }

    /// Starts an embedded python script (`python3 -u -c SCRIPT args...`) in the namespace.
    pub fn spawn_python(&self, label: &str, script: &str, args: &[&str]) -> Result<Proc> {
        let mut argv = vec![python3(), "-u", "-c", script];
        argv.extend_from_slice(args);
        self.spawn(label, &argv)
    }

    /// Runs an embedded python script to completion in the namespace and returns its stdout.
    pub fn run_python(&self, script: &str, args: &[&str]) -> Result<String> {
        let mut argv = vec![python3(), "-c", script];
        argv.extend_from_slice(args);
        self.exec(&argv)
    }

    /// Writes a file into the scratch directory (mode 0600) and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(contents.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Creates a subdirectory of the scratch directory with mode 0700 (as a data directory
    /// holding keys must be) and returns its path.
    pub fn private_dir(&self, name: &str) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let path = self.dir.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }

    /// `sysctl -q -w key=value ...` inside the namespace.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        let mut argv = vec!["sysctl", "-q", "-w"];
        argv.extend_from_slice(settings);
        self.exec(&argv).map(drop)
    }

    /// Adds an address to a device; IPv6 addresses get `nodad` so they are usable at once.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<()> {
        let mut argv = vec!["ip", "addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            argv.push("nodad");
        }
        self.exec(&argv).map(drop)
    }

    pub fn del_addr(&self, dev: &str, cidr: &str) -> Result<()> {
        self.exec(&["ip", "addr", "del", cidr, "dev", dev])
            .map(drop)
    }

    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.exec(&["ip", "link", "set", dev, "up"]).map(drop)
    }

    /// `ip route add ROUTE...` inside the namespace, e.g. `&["default", "via", "10.0.1.1"]`.
    pub fn route_add(&self, route: &[&str]) -> Result<()> {
        let mut argv = vec!["ip", "route", "add"];
        argv.extend_from_slice(route);
        self.exec(&argv).map(drop)
    }

    /// One echo request with a one-second timeout: `ping -c1 -W1 ADDR`.
    pub fn ping(&self, addr: &str) -> bool {
        self.ping_args(addr, &[]).is_ok()
    }

    /// `ping -c1 -W1 EXTRA... ADDR`; the error carries ping's output.
    pub fn ping_args(&self, addr: &str, extra: &[&str]) -> Result<()> {
        let mut argv = vec!["ping", "-n", "-c1", "-W1"];
        argv.extend_from_slice(extra);
        argv.push(addr);
        self.exec(&argv).map(drop)
    }

    /// Pings (one second per attempt) until a reply arrives; returns the time it took.
    pub fn ping_within(&self, addr: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        retry_until(
            timeout,
            &format!("a ping reply from {addr} in {}", self.name),
            || self.ping_args(addr, &[]),
        )?;
        Ok(start.elapsed())
    }

    /// Process ids currently inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        run(&["ip", "netns", "pids", &self.name])
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills everything inside the namespace (SIGTERM, up to 2 s grace, then SIGKILL).
    pub fn kill_all(&self) {
        let pids = self.pids();
        if pids.is_empty() {
            return;
        }
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let mut argv = vec!["kill".to_owned(), "-TERM".to_owned()];
        argv.extend(list.iter().cloned());
        let _ = run_output(&argv, None);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if self.pids().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut argv = vec!["kill".to_owned(), "-KILL".to_owned()];
        argv.extend(self.pids().iter().map(u32::to_string));
        let _ = run_output(&argv, None);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        if let Err(e) = run(&["ip", "netns", "del", &self.name]) {
            eprintln!("warning: deleting namespace {}: {e:#}", self.name);
        }
        // The scratch directory outlives the namespace: `scenario` removes it once the test
        // has passed, and keeps it (printing the logs) when it failed.
        if std::thread::panicking() {
            eprintln!(
                "scratch files of {} kept in {}",
                self.name,
                self.dir.display()
            );
        }
    }
}

/// Creates a veth pair with one end `a_if` in `a` and the other `b_if` in `b`, both up.
/// The pair is created directly inside the namespaces, so the names need only be unique there.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    if a.name() == b.name() {
        bail!("veth ends must be in different namespaces");
    }
    run(&[
        "ip",
        "-n",
        a.name(),
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.link_up(a_if)?;
    b.link_up(b_if)?;
    Ok(())
}

/// [`veth`] with an address on each end (`a_cidr`, `b_cidr`, e.g. `172.30.1.1/24`).
pub fn veth_addressed(
    a: &Netns,
    a_if: &str,
    a_cidr: &str,
    b: &Netns,
    b_if: &str,
    b_cidr: &str,
) -> Result<()> {
    veth(a, a_if, b, b_if)?;
    a.add_addr(a_if, a_cidr)?;
    b.add_addr(b_if, b_cidr)
}
