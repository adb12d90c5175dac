//! The UAPI socket at `/var/run/wireguard/IFNAME.sock`, as `wg(8)` expects it.
//!
//! Each connection carries `get=1` / `set=1` requests terminated by a blank line. Requests
//! become [`Command`]s for the dataplane task, which owns all engine state; its answers
//! are rendered back into the protocol here.

use super::protocol::{parse_set, render_get, ParseError, UapiError, EINVAL};
use crate::dataplane::{ask, Command, Stopped};
use anyhow::{bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

pub const SOCKET_DIR: &str = "/var/run/wireguard";

// Bounds on one request, so that a client of the socket cannot make the daemon read and
// hold text without end (hardening finding 7). A request over a bound is answered
// `errno=-22` (EINVAL, as for any malformed request), nothing of it is applied, and the
// connection is closed without reading the rest.
//
// wg(8) writes one short line per setting: the longest real line is a key
// (`preshared_key=` and 64 hex digits, 78 bytes) or an `endpoint=` with a scoped IPv6
// address (under 80 bytes), so a line of 4 KiB is not a UAPI line. The totals leave room
// for a `wg setconf` of tens of thousands of peers (about 6 lines and 250 bytes each)
// while one connection pins at most about 8 MiB of text plus its per-line bookkeeping.
/// The longest line, without its newline.
const MAX_LINE: usize = 4096;
/// The most lines in one request's body.
const MAX_REQUEST_LINES: usize = 1 << 18;
/// The most bytes in one request, its operation line and newlines included.
const MAX_REQUEST_BYTES: usize = 8 << 20;

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
        let (op, body) = match read_request(&mut reader).await? {
            Next::Request { op, body } => (op, body),
            // A request cut short by EOF is not applied.
            Next::End => return Ok(()),
            Next::Refused(why) => {
                tracing::warn!(reason = why, "UAPI request refused unread");
                write
                    .write_all(format!("errno={EINVAL}\n\n").as_bytes())
                    .await?;
                // Dropping both halves closes the connection; the rest is never read.
                return Ok(());
            }
        };
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
                let e = UapiError::from(ParseError::UnknownOperation(op.len()));
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

/// What the next request on a connection is.
enum Next {
    /// The operation line and the body, up to (not with) the blank line.
    Request { op: String, body: Vec<String> },
    /// The stream ended, between requests or within one.
    End,
    /// The request broke a bound or is not text; says which, for the log.
    Refused(&'static str),
}

/// One line as read: its text without the newline, the end of the stream, or a refusal.
enum Line {
    Text(String),
    End,
    Refused(&'static str),
}

/// Reads one request within the bounds above; stops reading at the first one broken.
async fn read_request(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Next> {
    let op = match read_line(reader).await? {
        Line::Text(op) => op,
        Line::End => return Ok(Next::End),
        Line::Refused(why) => return Ok(Next::Refused(why)),
    };
    let mut bytes = op.len() + 1;
    let mut body = Vec::new();
    loop {
        let line = match read_line(reader).await? {
            Line::Text(line) => line,
            Line::End => return Ok(Next::End),
            Line::Refused(why) => return Ok(Next::Refused(why)),
        };
        if line.is_empty() {
            return Ok(Next::Request { op, body });
        }
        bytes += line.len() + 1;
        if body.len() >= MAX_REQUEST_LINES {
            return Ok(Next::Refused("more lines than a request may have"));
        }
        if bytes > MAX_REQUEST_BYTES {
            return Ok(Next::Refused("more bytes than a request may have"));
        }
        body.push(line);
    }
}

/// One line without its newline, reading at most one byte past [`MAX_LINE`].
async fn read_line(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(Line::End);
    }
    if line.pop() != Some(b'\n') {
        return Ok(if n > MAX_LINE {
            Line::Refused("a line longer than a request line may be")
        } else {
            // Cut short by the end of the stream.
            Line::End
        });
    }
    Ok(match String::from_utf8(line) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::Refused("a line that is not UTF-8"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{DeviceConfig, DeviceStatus};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A dataplane that applies nothing but remembers every configuration it was given.
    fn fake_dataplane() -> (mpsc::Sender<Command>, Arc<Mutex<Vec<DeviceConfig>>>) {
        let (tx, mut rx) = mpsc::channel(4);
        let applied = Arc::new(Mutex::new(Vec::new()));
        let seen = applied.clone();
        tokio::spawn(async move {
            while let Some(command) = rx.recv().await {
                match command {
                    Command::Configure(config, reply) => {
                        seen.lock().expect("lock").push(*config);
                        let _ = reply.send(Ok(()));
                    }
                    Command::Status(reply) => {
                        let _ = reply.send(DeviceStatus {
                            private_key: None,
                            listen_port: 51820,
                            fwmark: 0,
                            peers: Vec::new(),
                            unix_now: Duration::ZERO,
                        });
                    }
                    _ => {}
                }
            }
        });
        (tx, applied)
    }

    /// Sends `request` on a fresh connection (then closes the sending side) and returns
    /// everything the server answered before it closed the connection.
    async fn exchange(commands: mpsc::Sender<Command>, request: impl Into<Vec<u8>>) -> String {
        let request = request.into();
        let (client, server) = UnixStream::pair().expect("socket pair");
        let served = tokio::spawn(handle_connection(server, commands));
        let (mut read, mut write) = client.into_split();
        // The server may stop reading (and close) long before the request is all sent.
        let sender = tokio::spawn(async move {
            let _ = write.write_all(&request).await;
            let _ = write.shutdown().await;
        });
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        let read_all = async {
            loop {
                match read.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(n) => reply.extend_from_slice(&chunk[..n]),
                    // Closing with the request partly unread resets the connection; what
                    // was sent before that is still read first.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                    Err(e) => panic!("reading the reply: {e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read_all)
            .await
            .expect("the server closes the connection");
        let _ = sender.await;
        let _ = served.await;
        String::from_utf8(reply).expect("text reply")
    }

    fn set_request(body: impl IntoIterator<Item = String>) -> String {
        let mut request = String::from("set=1\n");
        for line in body {
            request.push_str(&line);
            request.push('\n');
        }
        request.push('\n');
        request
    }

    /// A distinct, well-formed peer key per `i`.
    fn peer_line(i: usize) -> String {
        let mut key = [7u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        format!("public_key={}", hex::encode(key))
    }

    /// Finding 7: a UAPI request's lines, line count and size are bounded. Over a bound the
    /// request is answered EINVAL, nothing of it is applied, and the connection is closed;
    /// requests right at the bounds are still applied.
    #[tokio::test]
    async fn finding_07_uapi_request_lines_are_capped() {
        let (commands, applied) = fake_dataplane();
        let count = || applied.lock().expect("lock").len();
        let ok = "errno=0\n\n";
        let einval = format!("errno={EINVAL}\n\n");

        // At the bounds: applied and answered, and the connection goes on.
        let prefix = "listen_port=";
        let longest = format!("{prefix}{}1", "0".repeat(MAX_LINE - prefix.len() - 1));
        assert_eq!(longest.len(), MAX_LINE);
        let then_another =
            |request: String| format!("{request}{}", set_request(["fwmark=7".into()]));
        let reply = exchange(commands.clone(), then_another(set_request([longest]))).await;
        assert_eq!(reply, format!("{ok}{ok}"));
        assert_eq!(applied.lock().expect("lock")[0].listen_port, Some(1));
        let most_lines = set_request((0..MAX_REQUEST_LINES).map(|_| "listen_port=1".into()));
        assert_eq!(exchange(commands.clone(), most_lines).await, ok);
        let peers_within = MAX_REQUEST_BYTES / (peer_line(0).len() + 1) - 1;
        let within = set_request((0..peers_within).map(peer_line));
        assert!(within.len() <= MAX_REQUEST_BYTES);
        assert_eq!(exchange(commands.clone(), within).await, ok);
        assert_eq!(count(), 4);

        // Over a bound: EINVAL, nothing applied, and the connection closed (the `get=1`
        // after each request would be answered on an open one).
        let get = "get=1\n\n";
        assert_eq!(
            exchange(commands.clone(), get).await,
            "listen_port=51820\nerrno=0\n\n"
        );
        let too_long_line = format!(
            "{}{get}",
            set_request([format!("{prefix}{}1", "0".repeat(MAX_LINE - prefix.len()))])
        );
        let too_long_op = format!("set=1{}\n\n{get}", " ".repeat(MAX_LINE));
        let too_many_lines = format!(
            "{}{get}",
            set_request((0..=MAX_REQUEST_LINES).map(|_| "listen_port=1".into()))
        );
        let peers_over = MAX_REQUEST_BYTES / (peer_line(0).len() + 1) + 1;
        assert!(
            peers_over < MAX_REQUEST_LINES,
            "the byte bound is what is broken"
        );
        let too_many_bytes = format!("{}{get}", set_request((0..peers_over).map(peer_line)));
        let mut not_utf8 = b"set=1\nlisten_port=1".to_vec();
        not_utf8.extend_from_slice(b"\xff\n\nget=1\n\n");
        for (name, request) in [
            ("an over-long line", too_long_line.into_bytes()),
            ("an over-long operation", too_long_op.into_bytes()),
            ("too many lines", too_many_lines.into_bytes()),
            ("too many bytes", too_many_bytes.into_bytes()),
            ("a line that is not UTF-8", not_utf8),
        ] {
            let reply = exchange(commands.clone(), request).await;
            assert_eq!(reply, einval, "{name}");
            assert_eq!(count(), 4, "{name}: nothing applied");
        }
    }

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
