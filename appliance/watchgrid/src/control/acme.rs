//! ACME certificates for a public domain (SPEC §3 `FRONTEND_HOST`), with TLS-ALPN-01
//! answered on the HTTPS listener itself, via `rustls-acme`. Certificates and the
//! account key are cached in the data dir, so restarts reuse them.

use crate::control::acme_cache::DurableDirCache;
use anyhow::{anyhow, Context};
use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls_acme::AcmeConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Starts the ACME state machine; returns the server TLS config that serves its
/// certificate (and its TLS-ALPN-01 challenges). The order runs in the background and
/// is retried by rustls-acme; progress and failures go to the log.
pub fn start(
    settings: &AcmeSettings,
    data_dir: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
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
        .with_cert_resolver(state.resolver());
    server.alpn_protocols = vec![
        b"http/1.1".to_vec(),
        rustls_acme::acme::ACME_TLS_ALPN_NAME.to_vec(),
    ];
    let domain = settings.domain.clone();
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(domain = %domain, event = ?ok, "ACME"),
                Err(err) => {
                    tracing::error!(domain = %domain, error = ?err, "ACME certificate order failed; retrying")
                }
            }
        }
    });
    Ok(Arc::new(server))
}
