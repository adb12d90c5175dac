//! The HTTPS listener's certificate source, replaceable at run time: setup may switch
//! from the internal CA to an uploaded certificate or to ACME without a restart.

use crate::control::acme::{self, AcmeProgress, AcmeSettings};
use crate::control::tls::{CertSwap, TlsMaterial};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use watchgrid_api::hub::{TlsServing, TlsStatus, TlsSwitch, TlsSwitchError};
use watchgrid_store::durable;

/// The server config new connections use.
pub type LiveTls = Arc<RwLock<Arc<rustls::ServerConfig>>>;

pub fn live(config: Arc<rustls::ServerConfig>) -> LiveTls {
    Arc::new(RwLock::new(config))
}

/// The current config; a poisoned lock still holds a usable one.
pub fn current(live: &LiveTls) -> Arc<rustls::ServerConfig> {
    match live.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

fn replace(live: &LiveTls, config: Arc<rustls::ServerConfig>) {
    match live.write() {
        Ok(mut g) => *g = config,
        Err(p) => *p.into_inner() = config,
    }
}

/// Where an uploaded certificate and key are kept in the data dir.
pub fn uploaded_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let tls = data_dir.join("tls");
    (tls.join("uploaded.crt"), tls.join("uploaded.key"))
}

pub struct ListenerTls {
    pub live: LiveTls,
    pub data_dir: PathBuf,
    pub acme_directory: String,
    pub acme_ca_root: Option<PathBuf>,
    /// The internal CA's leaf, served while an ACME certificate is on its way.
    pub internal: Option<Arc<CertSwap>>,
    pub mode: Mutex<Mode>,
}

/// Where the served certificate comes from.
pub enum Mode {
    Internal,
    Uploaded,
    Acme(Arc<AcmeProgress>),
}

impl Mode {
    pub fn of(tls: &TlsMaterial) -> Mode {
        match (&tls.acme, &tls.ca_pem) {
            (Some(progress), _) => Mode::Acme(progress.clone()),
            (None, Some(_)) => Mode::Internal,
            (None, None) => Mode::Uploaded,
        }
    }
}

impl ListenerTls {
    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    durable::write_file(path, contents.as_bytes(), 0o600)
}

impl TlsSwitch for ListenerTls {
    fn use_uploaded(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsSwitchError> {
        let (cert, key) = uploaded_paths(&self.data_dir);
        let dir = cert.parent().map(Path::to_path_buf).unwrap_or_default();
        fs::create_dir_all(&dir).map_err(|source| TlsSwitchError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
        // Checked from temporary files; the real ones are only replaced once it loads.
        let (tmp_cert, tmp_key) = (
            cert.with_extension("crt.new"),
            key.with_extension("key.new"),
        );
        let staged = write_private(&tmp_cert, cert_pem)
            .and_then(|_| write_private(&tmp_key, key_pem))
            .map_err(TlsSwitchError::Save);
        let loaded = staged.and_then(|()| {
            crate::control::tls::uploaded(&tmp_cert, &tmp_key)
                .map_err(|e| TlsSwitchError::Unusable(format!("{e:#}")))
        });
        let material = match loaded {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_file(&tmp_cert);
                let _ = fs::remove_file(&tmp_key);
                return Err(e);
            }
        };
        fs::rename(&tmp_cert, &cert)
            .and_then(|_| fs::rename(&tmp_key, &key))
            .and_then(|_| durable::sync_dir(&dir))
            .map_err(TlsSwitchError::Install)?;
        replace(&self.live, material.config);
        self.set_mode(Mode::Uploaded);
        tracing::info!(fingerprint = ?material.leaf_fingerprint, "serving the uploaded certificate");
        Ok(())
    }

    fn use_acme(&self, domain: &str, email: Option<&str>) -> Result<(), TlsSwitchError> {
        let settings = AcmeSettings {
            domain: domain.to_string(),
            email: email.map(str::to_string),
            directory: self.acme_directory.clone(),
            ca_root: self.acme_ca_root.clone(),
        };
        let (config, progress) = acme::start(&settings, &self.data_dir, self.internal.clone())
            .map_err(|e| TlsSwitchError::Acme(format!("{e:#}")))?;
        replace(&self.live, config);
        self.set_mode(Mode::Acme(progress));
        tracing::info!(
            domain,
            "ordering an ACME certificate; the internal one is served until it arrives"
        );
        Ok(())
    }

    fn status(&self) -> TlsStatus {
        match &*self.mode.lock().unwrap_or_else(|p| p.into_inner()) {
            Mode::Internal => TlsStatus {
                serving: TlsServing::Internal,
                acme: None,
            },
            Mode::Uploaded => TlsStatus {
                serving: TlsServing::Uploaded,
                acme: None,
            },
            Mode::Acme(progress) => {
                let acme = progress.status();
                TlsStatus {
                    serving: if acme.certificate_since.is_some() {
                        TlsServing::Acme
                    } else {
                        TlsServing::Internal
                    },
                    acme: Some(acme),
                }
            }
        }
    }
}
