//! The agent's state dir (`/var/lib/watchgrid-agent` by default): 0700, every file
//! 0600 and written durably. `enrollment.json` (hub, pin, credential, config),
//! `wg-private.key` (generated here, never sent), `status.json` (what `agent status`
//! shows) and `commands/` (the command journal).

use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use watchgrid_api::dto::AgentConfig;
use watchgrid_core::Secret;
use watchgrid_store::{durable, Sensitive};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/watchgrid-agent";
const ENROLLMENT: &str = "enrollment.json";
const PRIVATE_KEY: &str = "wg-private.key";
const STATUS: &str = "status.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not enrolled: run `watchgrid agent enroll` first")]
    NotEnrolled(String),
    #[error("{path} is unreadable: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path} is accessible to group or others (mode {mode:o}); run `chmod go-rwx {path}`")]
    Permissions { path: String, mode: u32 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What enrollment established.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// `https://HOST[:PORT]`
    pub server: String,
    /// DER (hex) of the certificate the agent trusts the hub by: its CA, or its leaf.
    pub pinned_cert_hex: String,
    pub agent_key: Sensitive<String>,
    pub allow_commands: bool,
    pub enrolled_at: u64,
    /// The latest WireGuard config from the hub.
    pub config: AgentConfig,
    #[serde(default)]
    pub config_etag: Option<String>,
    /// sshd trusted through the hub's SSH CA (`--ssh-host-cert`, `--ssh-user-ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<crate::sshd::SshSettings>,
}

/// What `agent run` last saw, for `agent status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub updated_at: u64,
    /// `up` (handshake within the last 3 minutes), `connecting`, or `stopped: <why>`.
    pub tunnel: String,
    pub last_handshake_s: Option<u64>,
    pub endpoint: Option<String>,
    pub last_heartbeat_at: Option<u64>,
    /// The hub's last answer, or why there was none.
    pub last_heartbeat: Option<String>,
    /// Log shipping: lines waiting in the spool and lines dropped when it was full
    /// (`None`: shipping is off, or a status from an older agent).
    #[serde(default)]
    pub logs: Option<String>,
    /// The SSH CA's state on this machine (`None`: sshd is not managed).
    #[serde(default)]
    pub ssh: Option<String>,
}

pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn is_enrolled(&self) -> bool {
        self.file(ENROLLMENT).exists()
    }

    /// Creates the dir 0700 if missing; true if this call created it.
    pub fn create(&self) -> Result<bool, StateError> {
        if self.path.exists() {
            self.check_private()?;
            return Ok(false);
        }
        fs::create_dir_all(&self.path).map_err(io(&self.path))?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700))
            .map_err(io(&self.path))?;
        Ok(true)
    }

    fn check_private(&self) -> Result<(), StateError> {
        let mode = fs::metadata(&self.path)
            .map_err(io(&self.path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StateError::Permissions {
                path: self.path.display().to_string(),
                mode: mode & 0o777,
            });
        }
        Ok(())
    }

    pub fn write_private_key(&self, key: &Secret) -> Result<(), StateError> {
        let path = self.file(PRIVATE_KEY);
        let text = format!("{}\n", key.to_base64());
        durable::write_file(&path, text.as_bytes(), 0o600).map_err(io(&path))
    }

    pub fn private_key(&self) -> Result<Secret, StateError> {
        let path = self.file(PRIVATE_KEY);
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        Secret::from_base64(text.trim()).map_err(|e| StateError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn save_enrollment(&self, e: &Enrollment) -> Result<(), StateError> {
        self.write_json(ENROLLMENT, e)
    }

    pub fn enrollment(&self) -> Result<Enrollment, StateError> {
        if !self.is_enrolled() {
            return Err(StateError::NotEnrolled(self.path.display().to_string()));
        }
        self.check_private()?;
        self.read_json(ENROLLMENT)
    }

    /// The pinned certificate.
    pub fn pinned(
        e: &Enrollment,
    ) -> Result<rustls::pki_types::CertificateDer<'static>, StateError> {
        hex::decode(&e.pinned_cert_hex)
            .map(rustls::pki_types::CertificateDer::from)
            .map_err(|err| StateError::Corrupt {
                path: "enrollment.json (pinned_cert_hex)".into(),
                reason: err.to_string(),
            })
    }

    pub fn save_status(&self, s: &Status) -> Result<(), StateError> {
        self.write_json(STATUS, s)
    }

    pub fn status(&self) -> Result<Option<Status>, StateError> {
        if !self.file(STATUS).exists() {
            return Ok(None);
        }
        self.read_json(STATUS).map(Some)
    }

    /// Removes what a failed enrollment left (the key), and the dir if it made it.
    pub fn undo_enrollment(&self, created_dir: bool) {
        let _ = durable::remove_file(&self.file(PRIVATE_KEY));
        if created_dir {
            let _ = fs::remove_dir(&self.path);
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.file(name);
        let json = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        durable::write_file(&path, &json, 0o600).map_err(io(&path))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, StateError> {
        let path = self.file(name);
        let bytes = fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}
