//! The UAPI socket at `/var/run/wireguard/IFNAME.sock`, as `wg(8)` expects it.
//!
//! Each connection carries `get=1` / `set=1` requests terminated by a blank line. Requests
//! become [`Command`]s for the dataplane task, which owns all engine state; its answers
//! are rendered back into the protocol here.

use super::protocol::{parse_set, render_get, UapiError, EINVAL};
use crate::dataplane::{ask, Command, Stopped};
use anyhow::{bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// A request line longer than this is not a UAPI request.
const MAX_LINE: usize = 4096;

/// The listening socket; removes its file when dropped.
pub struct UapiSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for UapiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl UapiSocket {
    /// Binds the socket, refusing to steal one that a live process still answers on.
    pub fn bind(ifname: &str) -> anyhow::Result<UapiSocket> {
        UapiSocket::bind_in(Path::new(SOCKET_DIR), ifname)
    }

    /// As [`UapiSocket::bind`], in `dir`. A missing `dir` is created owner-only; an
    /// existing one keeps its mode (systemd's RuntimeDirectory makes it 0700, and the
    /// sockets in it carry private keys).
    fn bind_in(dir: &Path, ifname: &str) -> anyhow::Result<UapiSocket> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{ifname}.sock"));
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                bail!(
                    "{} is in use by another running process; stop it first",
                    path.display()
                );
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        // Configuration carries private keys: owner only.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting permissions of {}", path.display()))?;
        Ok(UapiSocket { listener, path })
    }

    /// Accepts connections until the dataplane goes away.
    pub async fn serve(self, commands: mpsc::Sender<Command>) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "UAPI accept failed");
                    continue;
                }
            };
            let commands = commands.clone();
            tokio::spawn(async move {
                if let Err(e) = handle_connection(stream, commands).await {
                    tracing::debug!(error = %e, "UAPI connection ended");
                }
            });
        }
    }
}

async fn handle_connection(
    stream: UnixStream,
    commands: mpsc::Sender<Command>,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Some(op) = read_line(&mut reader).await? else {
            return Ok(());
        };
        let mut body = Vec::new();
        loop {
            match read_line(&mut reader).await? {
                Some(line) if line.is_empty() => break,
                Some(line) => body.push(line),
                // A request cut short by EOF is not applied.
                None => return Ok(()),
            }
        }
        let reply = match op.as_str() {
            "get=1" if body.is_empty() => render_get(&ask(&commands, Command::Status).await?),
            "set=1" => match set(&commands, &body).await? {
                Ok(()) => "errno=0\n\n".to_string(),
                Err(e) => {
                    tracing::warn!(error = %e, "UAPI set rejected");
                    format!("errno={}\n\n", e.errno())
                }
            },
            "get=1" => format!("errno={EINVAL}\n\n"),
            _ => {
                let e = UapiError::UnknownOperation(op.len());
                tracing::warn!(error = %e, "UAPI request rejected");
                format!("errno={}\n\n", e.errno())
            }
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// A `set=1` body as one [`Command::Configure`]: parsed completely first, so a
/// malformed request reaches nothing.
async fn set(
    commands: &mpsc::Sender<Command>,
    body: &[String],
) -> Result<Result<(), UapiError>, Stopped> {
    let config = match parse_set(body.iter().map(String::as_str)) {
        Ok(config) => config,
        Err(e) => return Ok(Err(e)),
    };
    let applied = ask(commands, |reply| {
        Command::Configure(Box::new(config), reply)
    })
    .await?;
    Ok(applied.map_err(UapiError::from))
}

/// One line without its newline; `None` at end of stream.
async fn read_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> anyhow::Result<Option<String>> {
    let mut line = String::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_line(&mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with('\n') {
        bail!("UAPI line too long or cut short");
    }
    line.pop();
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o7777)
    }

    /// Finding 14: binding keeps the runtime directory's mode instead of opening it to
    /// 0755, and creates a missing one owner-only.
    #[tokio::test]
    async fn uapi_runtime_dir_keeps_its_mode() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let existing = tmp.path().join("wireguard");
        std::fs::create_dir(&existing)?;
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o700))?;
        let socket = UapiSocket::bind_in(&existing, "wg0")?;
        assert_eq!(mode(&existing), 0o700);
        assert_eq!(mode(&existing.join("wg0.sock")), 0o600);
        drop(socket);
        assert!(
            !existing.join("wg0.sock").exists(),
            "the socket is removed on drop"
        );

        let missing = tmp.path().join("run").join("wireguard");
        let _socket = UapiSocket::bind_in(&missing, "wg1")?;
        assert_eq!(mode(&missing), 0o700);
        Ok(())
    }
}
