//! ACME certificates for a public domain (SPEC §3 `FRONTEND_HOST`), with TLS-ALPN-01
//! answered on the HTTPS listener itself, via `rustls-acme`. Certificates and the
//! account key are cached in the data dir, so restarts reuse them. Until the first
//! certificate arrives, the internal CA's keeps being served, so a failing order never
//! leaves the appliance without HTTPS; its progress and last error are kept for the
//! admin ([`AcmeProgress`]).

use crate::control::acme_cache::DurableDirCache;
use crate::control::tls::CertSwap;
use anyhow::{anyhow, Context};
use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_acme::AcmeConfig;
use rustls_acme::ResolvesServerCertAcme;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use watchgrid_api::hub::AcmeStatus;

pub struct AcmeSettings {
    pub domain: String,
    pub email: Option<String>,
    pub directory: String,
    /// Extra trust root for the ACME server's own HTTPS (a private CA or a test CA).
    pub ca_root: Option<PathBuf>,
}

/// The system's trust store (ca-certificates), plus an optional extra root.
fn client_config(extra_root: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let system = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if system.exists() {
        for cert in CertificateDer::pem_file_iter(system)
            .map_err(|e| anyhow!("reading {}: {e:?}", system.display()))?
        {
            let cert = cert.map_err(|e| anyhow!("parsing {}: {e:?}", system.display()))?;
            // A bundle may hold certificates rustls cannot use; skip those, keep the rest.
            let _ = roots.add(cert);
        }
    }
    if let Some(path) = extra_root {
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow!("reading {}: {e:?}", path.display()))?
        {
            let cert = cert.map_err(|e| anyhow!("parsing {}: {e:?}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("adding {} as a trust root", path.display()))?;
        }
    }
    if roots.is_empty() {
        anyhow::bail!("no trust roots to reach the ACME server (install ca-certificates or pass --acme-ca-root)");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// How an order is going, as the event stream of rustls-acme tells it.
pub struct AcmeProgress {
    domain: String,
    status: Mutex<AcmeStatus>,
}

impl AcmeProgress {
    fn new(domain: &str) -> Arc<AcmeProgress> {
        Arc::new(AcmeProgress {
            domain: domain.to_string(),
            status: Mutex::new(AcmeStatus {
                domain: domain.to_string(),
                certificate_since: None,
                last_error: None,
                last_error_at: None,
            }),
        })
    }

    pub fn status(&self) -> AcmeStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self, event: Result<&rustls_acme::EventOk, String>) {
        let now = watchgrid_api::state::unix_now();
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Ok(ok) => {
                tracing::info!(domain = %self.domain, event = ?ok, "ACME");
                if matches!(
                    ok,
                    rustls_acme::EventOk::DeployedCachedCert
                        | rustls_acme::EventOk::DeployedNewCert
                ) {
                    s.certificate_since = Some(now);
                }
            }
            Err(error) => {
                tracing::error!(domain = %self.domain, %error, "ACME certificate order failed; retrying");
                s.last_error = Some(error);
                s.last_error_at = Some(now);
            }
        }
    }
}

/// The ACME certificate once there is one, the fallback until then. TLS-ALPN-01
/// challenges always go to ACME.
#[derive(Debug)]
struct AcmeOrFallback {
    acme: Arc<ResolvesServerCertAcme>,
    fallback: Option<Arc<CertSwap>>,
}

impl ResolvesServerCert for AcmeOrFallback {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let challenge = rustls_acme::is_tls_alpn_challenge(&hello);
        let issued = self.acme.resolve(hello);
        if challenge {
            return issued;
        }
        issued.or_else(|| self.fallback.as_ref().and_then(|f| f.current()))
    }
}

/// Starts the ACME state machine; returns the server TLS config that serves its
/// certificate, `fallback` until it is issued, and its TLS-ALPN-01 challenges. The
/// order runs in the background and is retried by rustls-acme.
pub fn start(
    settings: &AcmeSettings,
    data_dir: &Path,
    fallback: Option<Arc<CertSwap>>,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<AcmeProgress>)> {
    let client = client_config(settings.ca_root.as_deref())?;
    let mut config = AcmeConfig::new_with_client_config([settings.domain.as_str()], client)
        .directory(&settings.directory)
        .cache(DurableDirCache::new(data_dir.join("acme")));
    if let Some(email) = &settings.email {
        config = config.contact_push(format!("mailto:{email}"));
    }
    let mut state = config.state();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(AcmeOrFallback {
            acme: state.resolver(),
            fallback,
        }));
    server.alpn_protocols = vec![
        b"http/1.1".to_vec(),
        rustls_acme::acme::ACME_TLS_ALPN_NAME.to_vec(),
    ];
    let progress = AcmeProgress::new(&settings.domain);
    let recorder = progress.clone();
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            recorder.record(event.as_ref().map_err(|e| format!("{e}")));
        }
    });
    Ok((Arc::new(server), progress))
}
