//! sshd on an agent's machine, trusted through the hub's SSH CA (README: "SSH
//! certificates"). With `--ssh-host-cert` the agent sends sshd's host public keys and
//! installs the host certificates the hub signs, renewing each at half its validity;
//! with `--ssh-user-ca` it installs the hub's user CA keys and its KRL, fetched again
//! whenever a heartbeat's `ssh_etag` changes. One drop-in points sshd at what is
//! present, and sshd is reloaded when its host certificates or the drop-in change
//! (it reads the CA keys and the KRL at every sign-in by itself).
//!
//! Everything is driven by heartbeats: a failed step is logged and tried again at the
//! next one.

pub mod files;

use crate::client::{ClientError, HubClient};
use files::{HostKey, DROPIN, KRL_FILE, USER_CA_FILE};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// What enrollment chose (saved in `enrollment.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// sshd's directory: host keys, and where the certificates and drop-in go.
    pub dir: PathBuf,
    pub host_certs: bool,
    pub user_ca: bool,
    /// The command that makes sshd load new host certificates.
    pub reload: Vec<String>,
}

/// The default reload: systemd's, which does nothing when sshd is not running.
pub const DEFAULT_RELOAD: &str = "systemctl try-reload-or-restart sshd.service";

/// The longest a reload may take before it counts as failed.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SshdError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no sshd host keys (ssh_host_*_key.pub) in {0}")]
    NoHostKeys(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the hub sent {what} this agent does not accept: {why}")]
    BadDownload { what: &'static str, why: String },
    #[error("the hub has no SSH CA")]
    NoCa,
    #[error("reloading sshd ({command}): {why}")]
    Reload { command: String, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SshdError + '_ {
    move |source| SshdError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl SshSettings {
    /// Checks at enrollment what running will need: host keys to certify.
    pub fn check(&self) -> Result<(), SshdError> {
        let dir = self.dir.display().to_string();
        if self.host_certs
            && files::host_keys(&self.dir)
                .map_err(io(&self.dir))?
                .is_empty()
        {
            return Err(SshdError::NoHostKeys(dir));
        }
        Ok(())
    }
}

/// The agent's side of the SSH CA.
pub struct Sshd {
    settings: SshSettings,
    /// The `ssh_etag` whose CA keys and KRL are installed.
    installed_etag: Mutex<Option<String>>,
    summary: Mutex<String>,
}

impl Sshd {
    pub fn new(settings: SshSettings) -> Sshd {
        Sshd {
            settings,
            installed_etag: Mutex::new(None),
            summary: Mutex::new("not set up yet".into()),
        }
    }

    /// One line for `agent status`.
    pub fn summary(&self) -> String {
        lock(&self.summary).clone()
    }

    /// After a heartbeat: renew due host certificates, refresh the CA keys and KRL when
    /// `etag` changed, rewrite the drop-in and reload sshd if anything it loads changed.
    pub async fn follow(&self, client: &HubClient, etag: Option<&str>, now: u64) {
        let mut notes = Vec::new();
        if self.settings.user_ca {
            match self.refresh_trust(client, etag).await {
                Ok(()) => notes.push("user CA and KRL installed".to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, "fetching the hub's SSH CA keys and KRL");
                    notes.push(format!("user CA: {e}"));
                }
            }
        }
        let mut reload = false;
        if self.settings.host_certs {
            match self.renew_host_certs(client, now).await {
                Ok((changed, renew)) => {
                    reload |= changed;
                    let wait = renew.saturating_sub(now);
                    notes.push(format!(
                        "host certificates installed, renewed in {} h",
                        wait.div_ceil(3600)
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing sshd host certificates");
                    notes.push(format!("host certificates: {e}"));
                }
            }
        }
        match self.write_dropin() {
            Ok(changed) => reload |= changed,
            Err(e) => {
                tracing::warn!(error = %e, "writing the sshd drop-in");
                notes.push(e.to_string());
            }
        }
        if reload {
            match self.reload().await {
                Ok(()) => tracing::info!("sshd reloaded with the hub's certificates"),
                Err(e) => {
                    tracing::warn!(error = %e, "reloading sshd");
                    notes.push(e.to_string());
                }
            }
        }
        *lock(&self.summary) = notes.join("; ");
    }

    /// The CA keys and KRL, fetched when the hub says they changed since the last
    /// install. Both are checked before either is written.
    async fn refresh_trust(&self, client: &HubClient, etag: Option<&str>) -> Result<(), SshdError> {
        let Some(etag) = etag else {
            return Err(SshdError::NoCa);
        };
        if lock(&self.installed_etag).as_deref() == Some(etag) {
            return Ok(());
        }
        let keys = download(client, "/downloads/ssh-ca.pub", "the SSH CA keys").await?;
        check_ca_keys(&keys)?;
        let krl = download(client, "/downloads/ssh-revoked.krl", "the KRL").await?;
        if !krl.starts_with(b"SSHKRL\n\0") {
            return Err(SshdError::BadDownload {
                what: "the KRL",
                why: "not an OpenSSH KRL".into(),
            });
        }
        let dir = &self.settings.dir;
        let krl_path = dir.join(KRL_FILE);
        files::replace(&krl_path, &krl).map_err(io(&krl_path))?;
        let ca_path = dir.join(USER_CA_FILE);
        files::replace(&ca_path, &keys).map_err(io(&ca_path))?;
        *lock(&self.installed_etag) = Some(etag.to_string());
        Ok(())
    }

    /// Asks the hub for certificates of the host keys whose own is missing, stale or
    /// past half-life; whether any changed, and the earliest renewal time after that.
    async fn renew_host_certs(
        &self,
        client: &HubClient,
        now: u64,
    ) -> Result<(bool, u64), SshdError> {
        let dir = &self.settings.dir;
        let keys = files::host_keys(dir).map_err(io(dir))?;
        if keys.is_empty() {
            return Err(SshdError::NoHostKeys(dir.display().to_string()));
        }
        let due: Vec<&HostKey> = keys
            .iter()
            .filter(|k| files::renew_at(k).is_none_or(|at| now >= at))
            .collect();
        if !due.is_empty() {
            let lines: Vec<String> = due.iter().map(|k| k.line.clone()).collect();
            let answer = client.ssh_host_certs(&lines).await?;
            if answer.certificates.len() != due.len() {
                return Err(SshdError::BadDownload {
                    what: "host certificates",
                    why: format!("{} for {} keys", answer.certificates.len(), due.len()),
                });
            }
            for (key, cert) in due.iter().zip(&answer.certificates) {
                let text = format!("{}\n", cert.certificate.trim());
                files::replace(&key.cert_path, text.as_bytes()).map_err(io(&key.cert_path))?;
                tracing::info!(serial = cert.serial, principals = ?cert.principals,
                    valid_before = cert.valid_before, "installed an sshd host certificate");
            }
        }
        let next = keys.iter().filter_map(files::renew_at).min().unwrap_or(now);
        Ok((!due.is_empty(), next))
    }

    /// The drop-in for what is installed now; true when it changed.
    fn write_dropin(&self) -> Result<bool, SshdError> {
        let dir = &self.settings.dir;
        let certs: Vec<PathBuf> = if self.settings.host_certs {
            files::host_keys(dir)
                .map_err(io(dir))?
                .into_iter()
                .map(|k| k.cert_path)
                .filter(|p| p.is_file())
                .collect()
        } else {
            Vec::new()
        };
        let trust = self.settings.user_ca
            && dir.join(USER_CA_FILE).is_file()
            && dir.join(KRL_FILE).is_file();
        let text = files::dropin(dir, &certs, trust);
        let path = dir.join(DROPIN);
        files::replace(&path, text.as_bytes()).map_err(io(&path))
    }

    async fn reload(&self) -> Result<(), SshdError> {
        let argv = &self.settings.reload;
        let command = argv.join(" ");
        let fail = |why: String| SshdError::Reload {
            command: command.clone(),
            why,
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| fail("no command".into()))?;
        let run = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(RELOAD_TIMEOUT, run)
            .await
            .map_err(|_| fail(format!("no answer within {RELOAD_TIMEOUT:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(fail(format!("{}: {}", out.status, stderr.trim())));
        }
        Ok(())
    }
}

async fn download(
    client: &HubClient,
    path: &str,
    what: &'static str,
) -> Result<Vec<u8>, SshdError> {
    let (status, bytes) = client.get_bytes(path).await?;
    if !status.is_success() {
        return Err(SshdError::BadDownload {
            what,
            why: format!("HTTP {status}"),
        });
    }
    Ok(bytes.to_vec())
}

/// Every line an OpenSSH public key, and at least one.
fn check_ca_keys(text: &[u8]) -> Result<(), SshdError> {
    let bad = |why: String| SshdError::BadDownload {
        what: "the SSH CA keys",
        why,
    };
    let text = std::str::from_utf8(text).map_err(|e| bad(e.to_string()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err(bad("no key".into()));
    }
    for line in lines {
        ssh_key::PublicKey::from_openssh(line.trim()).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    // Whole values only: nothing to repair after a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
