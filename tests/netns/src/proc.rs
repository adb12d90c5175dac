//! A child process (usually started inside a namespace) that is stopped and reaped on drop.

use crate::{format_cmd, run_output};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running child whose stdout and stderr go to a log file.
///
/// Drop sends SIGTERM, waits up to two seconds, then SIGKILLs and reaps it. When the drop
/// happens during a panic the tail of the log is printed, so a failing test shows what the
/// program said.
pub struct Proc {
    child: Child,
    label: String,
    cmdline: String,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `args` with stdin closed and output appended to `log`.
    pub fn spawn<S: AsRef<str>>(label: &str, args: &[S], log: &Path) -> Result<Proc> {
        let Some((prog, rest)) = args.split_first() else {
            bail!("empty command line for {label}");
        };
        let cmdline = format_cmd(args);
        let out = File::create(log).with_context(|| format!("creating log {}", log.display()))?;
        let err = out.try_clone().context("dup log fd")?;
        let child = Command::new(prog.as_ref())
            .args(rest.iter().map(|a| a.as_ref()))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("cannot start `{cmdline}`"))?;
        Ok(Proc {
            child,
            label: label.to_owned(),
            cmdline,
            log: log.to_owned(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process wrote so far (stdout and stderr interleaved).
    /// Reads the output so far each time it is called (no borrow of the process).
    pub fn output_reader(&self) -> impl Fn() -> String {
        let log = self.log.clone();
        move || {
            std::fs::read(&log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        }
    }

    pub fn output(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("try_wait on {}", self.label))?;
        }
        Ok(self.status)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Fails with the process log if it has already exited: for "must still be serving" checks.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_status()? {
            bail!(
                "{} (`{}`) exited unexpectedly with {status}; its output:\n{}",
                self.label,
                self.cmdline,
                self.output()
            );
        }
        Ok(())
    }

    /// Sends a signal by name (`TERM`, `KILL`, `INT`, ...). Sending to an exited process is a
    /// no-op.
    pub fn signal(&mut self, sig: &str) -> Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        let pid = self.pid().to_string();
        let out = run_output(&["kill", &format!("-{sig}"), &pid], None)?;
        // The child may exit between try_wait and kill; only complain if it is still there.
        if !out.status.success() && self.try_status()?.is_none() {
            bail!(
                "kill -{sig} {pid} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Waits for the process to exit by itself, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                bail!(
                    "{} (`{}`) still running after {timeout:?}; its output so far:\n{}",
                    self.label,
                    self.cmdline,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait up to `timeout` for a clean exit (no SIGKILL fallback here: a process
    /// that ignores SIGTERM is an error the caller wants to see; drop still kills it).
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal("TERM")?;
        self.wait_timeout(timeout)
            .with_context(|| format!("{} did not exit on SIGTERM", self.label))
    }

    fn log_tail(&self, lines: usize) -> String {
        let out = self.output();
        let all: Vec<&str> = out.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} (`{}`, pid {}) output tail, full log {} ----\n{}\n----",
                self.label,
                self.cmdline,
                self.pid(),
                self.log.display(),
                self.log_tail(40)
            );
        }
        if self.status.is_some() {
            return;
        }
        if self.signal("TERM").is_ok() && self.wait_timeout(Duration::from_secs(2)).is_ok() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
