//! What the tests that run a real OpenSSH server share.

use anyhow::{Context, Result};
use std::path::Path;

/// The full path of a system program (sshd refuses to start from a relative path).
pub fn which(program: &str) -> Result<String> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| format!("{d}/{program}"))
        .find(|p| Path::new(p).is_file())
        .with_context(|| format!("{program} not found"))
}

/// sshd's privilege-separation directory (`/run/sshd`, root-owned, 0755), as
/// openssh-server's unit creates it. It is left in place: tests run side by side, and
/// one removing it would break another's sshd.
pub struct PrivsepDir;

impl PrivsepDir {
    pub fn ensure() -> Result<PrivsepDir> {
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        Ok(PrivsepDir)
    }
}

/// Starts `sshd -D` with `config` in `ns`, logging to `log`, and waits until it listens
/// on `addr:port`.
pub fn spawn(
    ns: &crate::Netns,
    config: &Path,
    log: &Path,
    addr: &str,
    port: &str,
) -> Result<crate::Proc> {
    let sshd = which("sshd")?;
    let proc = ns.spawn(
        "sshd",
        &[
            sshd.as_str(),
            "-D",
            "-E",
            &log.to_string_lossy(),
            "-f",
            &config.to_string_lossy(),
        ],
    )?;
    wait_listening(ns, addr, port)?;
    Ok(proc)
}

/// Waits until a socket listens on `addr:port` in `ns` (sshd binds again after a reload).
pub fn wait_listening(ns: &crate::Netns, addr: &str, port: &str) -> Result<()> {
    let listening = format!("{addr}:{port}");
    crate::wait_until(std::time::Duration::from_secs(10), "sshd listening", || {
        ns.exec(&["ss", "-Htln", &format!("sport = :{port}")])
            .is_ok_and(|o| o.contains(&listening))
    })
    .map(drop)
}
