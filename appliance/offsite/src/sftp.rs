//! One SSH connection per copy: connect, check the host key, sign in with the
//! appliance's key, then SFTP.

use crate::host_key::fingerprint;
use crate::{ClientKey, OffsiteError, PinnedHostKey, Target};
use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::OpenFlags;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

const CONNECT: Duration = Duration::from_secs(10);
/// Key exchange, host key check and sign-in.
const HANDSHAKE: Duration = Duration::from_secs(20);
/// Each SFTP request's answer.
const SFTP_REQUEST_SECS: u64 = 30;

/// A copy that reached the server whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The file's path on the server.
    pub path: String,
    pub bytes: u64,
}

/// Writes `bytes` as `dir/name` on the target: under a temporary name first, then
/// renamed once the server holds all of it.
pub async fn upload(
    target: &Target,
    key: &ClientKey,
    name: &str,
    bytes: &[u8],
) -> Result<Uploaded, OffsiteError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(OffsiteError::Invalid(format!("file name {name:?}")));
    }
    let conn = Connection::open(target, key).await?;
    conn.remote_dir().await?;
    let partial = target.remote_path(&format!(".{name}.partial"));
    let path = target.remote_path(name);
    let written = conn.write_whole(&partial, bytes).await;
    let moved = match written {
        Ok(()) => conn.replace(&partial, &path).await,
        Err(e) => Err(e),
    };
    if moved.is_err() {
        let _ = conn.sftp.remove_file(partial).await;
    }
    conn.close().await;
    moved?;
    Ok(Uploaded {
        path,
        bytes: bytes.len() as u64,
    })
}

/// Signs in and writes and removes a small file in the remote directory: what a real
/// copy needs, without one. Says who the server knows the appliance as.
pub async fn probe(target: &Target, key: &ClientKey) -> Result<String, OffsiteError> {
    let conn = Connection::open(target, key).await?;
    let dir = conn.remote_dir().await;
    let probe = target.remote_path(".watchgrid-probe");
    let written = match dir {
        Ok(()) => conn.write_whole(&probe, b"watchgrid\n").await,
        Err(e) => Err(e),
    };
    let removed = match written {
        Ok(()) => conn
            .sftp
            .remove_file(probe.clone())
            .await
            .map_err(|e| OffsiteError::Sftp {
                step: format!("removing {probe}"),
                detail: e.to_string(),
            }),
        Err(e) => Err(e),
    };
    conn.close().await;
    removed?;
    Ok(format!(
        "signed in to {} as {} and wrote to {}",
        target.addr(),
        target.user,
        target.dir
    ))
}

struct Connection<'a> {
    target: &'a Target,
    ssh: Handle<PinnedServer>,
    sftp: SftpSession,
}

impl<'a> Connection<'a> {
    async fn open(target: &'a Target, key: &ClientKey) -> Result<Connection<'a>, OffsiteError> {
        target.check()?;
        let addr = target.addr();
        let tcp = timeout(
            CONNECT,
            tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| OffsiteError::Timeout {
            addr: addr.clone(),
            secs: CONNECT.as_secs(),
            step: "connecting",
        })?
        .map_err(|source| OffsiteError::Connect {
            addr: addr.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let presented = Arc::new(Mutex::new(None));
        let server = PinnedServer {
            pin: target.host_key.clone(),
            refused: presented.clone(),
        };
        let ssh = timeout(HANDSHAKE, sign_in(tcp, server, target, key))
            .await
            .map_err(|_| OffsiteError::Timeout {
                addr: addr.clone(),
                secs: HANDSHAKE.as_secs(),
                step: "key exchange and sign-in",
            })?
            .map_err(|e| match presented.lock().map(|p| p.clone()) {
                Ok(Some(presented)) => OffsiteError::HostKeyMismatch {
                    addr: addr.clone(),
                    presented,
                    pinned: target.host_key.fingerprints().join(", "),
                },
                _ => e,
            })?;
        let sftp = timeout(HANDSHAKE, start_sftp(&ssh, &addr))
            .await
            .map_err(|_| OffsiteError::Timeout {
                addr: addr.clone(),
                secs: HANDSHAKE.as_secs(),
                step: "starting SFTP",
            })??;
        sftp.set_timeout(SFTP_REQUEST_SECS);
        Ok(Connection { target, ssh, sftp })
    }

    /// The remote directory must exist: a typo should fail, not scatter backups.
    async fn remote_dir(&self) -> Result<(), OffsiteError> {
        let dir = &self.target.dir;
        let meta = self
            .sftp
            .metadata(dir.clone())
            .await
            .map_err(|e| OffsiteError::Sftp {
                step: format!("the remote directory {dir}"),
                detail: e.to_string(),
            })?;
        if !meta.is_dir() {
            return Err(OffsiteError::Sftp {
                step: format!("the remote directory {dir}"),
                detail: "not a directory".into(),
            });
        }
        Ok(())
    }

    /// Writes all of `bytes` to `path`, asks the server to flush it to disk, and checks
    /// the size the server reports.
    async fn write_whole(&self, path: &str, bytes: &[u8]) -> Result<(), OffsiteError> {
        let failed = |step: &str, e: &dyn std::fmt::Display| OffsiteError::Sftp {
            step: format!("{step} {path}"),
            detail: e.to_string(),
        };
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        let mut file = self
            .sftp
            .open_with_flags(path.to_string(), flags)
            .await
            .map_err(|e| failed("creating", &e))?;
        file.write_all(bytes)
            .await
            .map_err(|e| failed("writing", &e))?;
        file.flush().await.map_err(|e| failed("writing", &e))?;
        file.sync_all().await.map_err(|e| failed("flushing", &e))?;
        file.close().await.map_err(|e| failed("closing", &e))?;
        let size = self
            .sftp
            .metadata(path.to_string())
            .await
            .map_err(|e| failed("checking", &e))?
            .size;
        if size != Some(bytes.len() as u64) {
            return Err(failed(
                "checking",
                &format!("the server holds {size:?} bytes, {} were sent", bytes.len()),
            ));
        }
        Ok(())
    }

    /// Renames `from` to `to`, replacing an earlier copy of the same name (SFTP's rename
    /// refuses an existing target).
    async fn replace(&self, from: &str, to: &str) -> Result<(), OffsiteError> {
        if self.sftp.try_exists(to.to_string()).await.unwrap_or(false) {
            let _ = self.sftp.remove_file(to.to_string()).await;
        }
        self.sftp
            .rename(from.to_string(), to.to_string())
            .await
            .map_err(|e| OffsiteError::Sftp {
                step: format!("renaming {from} to {to}"),
                detail: e.to_string(),
            })
    }

    async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = self
            .ssh
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

async fn sign_in(
    tcp: tokio::net::TcpStream,
    server: PinnedServer,
    target: &Target,
    key: &ClientKey,
) -> Result<Handle<PinnedServer>, OffsiteError> {
    let addr = target.addr();
    let ssh_failed = |e: russh::Error| OffsiteError::Ssh {
        addr: addr.clone(),
        detail: e.to_string(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    let mut ssh = client::connect_stream(config, tcp, server)
        .await
        .map_err(|e| match e {
            OffsiteError::Ssh { detail, .. } => OffsiteError::Ssh {
                addr: addr.clone(),
                detail,
            },
            other => other,
        })?;
    let signer = PrivateKeyWithHashAlg::new(Arc::new(key.private().clone()), None);
    let auth = ssh
        .authenticate_publickey(target.user.clone(), signer)
        .await
        .map_err(ssh_failed)?;
    if !auth.success() {
        return Err(OffsiteError::AuthRefused {
            user: target.user.clone(),
            addr,
            fingerprint: key.fingerprint(),
        });
    }
    Ok(ssh)
}

async fn start_sftp(ssh: &Handle<PinnedServer>, addr: &str) -> Result<SftpSession, OffsiteError> {
    let failed = |e: &dyn std::fmt::Display| OffsiteError::Ssh {
        addr: addr.to_string(),
        detail: format!("starting SFTP: {e}"),
    };
    let channel = ssh.channel_open_session().await.map_err(|e| failed(&e))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| failed(&e))?;
    SftpSession::new(channel.into_stream())
        .await
        .map_err(|e| failed(&e))
}

/// Accepts only a pinned host key; remembers what else a server presented.
struct PinnedServer {
    pin: PinnedHostKey,
    refused: Arc<Mutex<Option<String>>>,
}

impl client::Handler for PinnedServer {
    type Error = OffsiteError;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match presented {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        if self.pin.accepts(&key) {
            return Ok(true);
        }
        if let Ok(mut slot) = self.refused.lock() {
            *slot = Some(fingerprint(&key));
        }
        Ok(false)
    }
}

/// russh's handler errors must come from its own; the address is filled in where the
/// connection's context is known (`sign_in`).
impl From<russh::Error> for OffsiteError {
    fn from(e: russh::Error) -> Self {
        OffsiteError::Ssh {
            addr: String::new(),
            detail: e.to_string(),
        }
    }
}
