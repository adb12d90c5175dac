//! Running one command: argv without a shell, in its own process group, output capped
//! at [`OUTPUT_CAP`] per stream (the rest is read and dropped, so the command never
//! blocks on a full pipe), and at the timeout or when it exits the whole group is
//! killed, so no child outlives it. Commands do not inherit the agent's ambient
//! capabilities.

use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use watchgrid_api::dto::{CommandError, CommandErrorKind, CommandOrder, CommandReport};

/// The most of each stream that is kept (what the hub stores).
pub const OUTPUT_CAP: usize = 64 * 1024;

/// Runs the command to its end or its timeout.
pub async fn run(order: &CommandOrder, started_at: u64) -> CommandReport {
    let began = Instant::now();
    let mut report = CommandReport {
        id: order.id.clone(),
        exit_code: None,
        error: None,
        stdout: String::new(),
        stderr: String::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        started_at,
        duration_ms: 0,
    };
    let Some((program, args)) = order.argv.split_first() else {
        report.error = Some(error(CommandErrorKind::Spawn, "empty argv".into()));
        return report;
    };
    let mut command = Command::new(program);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            // The agent's service grants it CAP_NET_ADMIN as an ambient capability for its
            // TUN device; commands do not inherit it.
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    let mut child = match command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(error(CommandErrorKind::Spawn, format!("{program}: {e}")));
            return report;
        }
    };
    let group = child.id().map(|pid| pid as libc::pid_t);
    let out = tokio::spawn(read_capped(child.stdout.take()));
    let err = tokio::spawn(read_capped(child.stderr.take()));
    let timeout = Duration::from_secs(u64::from(order.timeout_s));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // Whatever is left of the group goes, finished or timed out: children that
    // linger would hold the pipes open and outlive the command.
    if let Some(pgid) = group {
        kill_group(pgid);
    }
    match waited {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            // Killed by a signal: the shell's convention, 128 + the signal number.
            report.exit_code = status.code().or(status.signal().map(|s| 128 + s));
        }
        Ok(Err(e)) => report.error = Some(error(CommandErrorKind::Spawn, e.to_string())),
        Err(_) => {
            let _ = child.wait().await;
            let message = format!("killed after its timeout of {} s", order.timeout_s);
            report.error = Some(error(CommandErrorKind::Timeout, message));
        }
    }
    (report.stdout, report.stdout_truncated) = out.await.unwrap_or_default();
    (report.stderr, report.stderr_truncated) = err.await.unwrap_or_default();
    report.duration_ms = began.elapsed().as_millis() as u64;
    report
}

fn error(kind: CommandErrorKind, message: String) -> CommandError {
    CommandError { kind, message }
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
    // The group is the child's own (process_group(0)), never ours.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Reads a stream to its end, keeping the first [`OUTPUT_CAP`] bytes as text.
async fn read_capped(stream: Option<impl AsyncRead + Unpin>) -> (String, bool) {
    let Some(mut stream) = stream else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (text_within_cap(&kept), truncated)
}

/// UTF-8 text of at most [`OUTPUT_CAP`] bytes: invalid bytes become U+FFFD, which can
/// lengthen it, so it is cut again at a character boundary.
fn text_within_cap(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > OUTPUT_CAP {
        let mut end = OUTPUT_CAP;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(argv: &[&str], timeout_s: u32) -> CommandOrder {
        CommandOrder {
            id: "cmd-1".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout_s,
        }
    }

    #[tokio::test]
    async fn output_and_exit_codes_come_back_without_a_shell() {
        let r = run(&order(&["echo", "a;b", "$HOME"], 10), 0).await;
        assert_eq!((r.exit_code, r.stdout.as_str()), (Some(0), "a;b $HOME\n"));
        let r = run(&order(&["sh", "-c", "echo oops >&2; exit 3"], 10), 0).await;
        assert_eq!((r.exit_code, r.stderr.as_str()), (Some(3), "oops\n"));
        let r = run(&order(&["/nonexistent/program"], 10), 0).await;
        assert_eq!(r.error.map(|e| e.kind), Some(CommandErrorKind::Spawn));
    }

    #[tokio::test]
    async fn long_output_is_cut_at_the_cap_and_flagged() {
        let r = run(&order(&["head", "-c", "1000000", "/dev/zero"], 30), 0).await;
        assert_eq!(r.exit_code, Some(0));
        assert!(r.stdout_truncated);
        assert_eq!(r.stdout.len(), OUTPUT_CAP);
        let bad = vec![0xffu8; OUTPUT_CAP];
        assert!(text_within_cap(&bad).len() <= OUTPUT_CAP);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_command_and_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let r = run(&order(&["sh", "-c", &script], 1), 0).await;
        assert_eq!(r.error.map(|e| e.kind), Some(CommandErrorKind::Timeout));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        // SIGKILL is delivered asynchronously: the child is gone (or a zombie of
        // init's) once the kernel has processed it, which takes a moment.
        let alive = || {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            state.split(' ').nth(2).is_some_and(|s| s != "Z")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !alive(),
            "child {pid} survived the timeout's SIGKILL of its group"
        );
    }
}
