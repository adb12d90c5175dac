//! Which certificate the HTTPS listener serves. Flags and environment come first
//! (--tls-cert, FRONTEND_HOST), then the choice made at setup, else the internal CA.

use super::args::ServeArgs;
use super::first_boot::Provisioning;
use crate::control::acme::{self, AcmeSettings};
use crate::control::tls::{self, TlsMaterial};
use crate::control::tls_switch;
use anyhow::Context;
use watchgrid_store::{Store, TlsChoice, SETTINGS_KEY};

/// Where the certificate comes from.
pub enum CertSource {
    /// Loaded (or made) at start: an uploaded chain or the internal CA.
    Ready(TlsMaterial),
    /// Ordered from the ACME directory once the runtime is up.
    Acme {
        domain: String,
        email: Option<String>,
    },
}

pub fn choose_tls(
    args: &ServeArgs,
    p: &Provisioning,
    store: &Store,
    names: &[String],
) -> anyhow::Result<CertSource> {
    let chosen = store
        .settings
        .get(SETTINGS_KEY)?
        .map(|s| s.tls)
        .unwrap_or_default();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let material = tls::uploaded(cert, key).context("--tls-cert/--tls-key")?;
        return Ok(CertSource::Ready(material));
    }
    if let Some(domain) = &p.frontend_host {
        return Ok(CertSource::Acme {
            domain: domain.clone(),
            email: p.acme_email.clone(),
        });
    }
    let material = match chosen {
        TlsChoice::Acme { domain, email } => return Ok(CertSource::Acme { domain, email }),
        TlsChoice::Uploaded => {
            let (cert, key) = tls_switch::uploaded_paths(&args.data_dir);
            tls::uploaded(&cert, &key).context("the certificate uploaded at setup")?
        }
        TlsChoice::Internal => tls::internal_ca(&args.data_dir, names).context("setting up TLS")?,
    };
    Ok(CertSource::Ready(material))
}

impl CertSource {
    /// The certificate to serve now; ACME starts here (it needs the runtime), with the
    /// internal CA's leaf for `names` served until its certificate arrives.
    pub fn start(self, args: &ServeArgs, names: &[String]) -> anyhow::Result<TlsMaterial> {
        let (domain, email) = match self {
            CertSource::Ready(material) => return Ok(material),
            CertSource::Acme { domain, email } => (domain, email),
        };
        let settings = AcmeSettings {
            domain,
            email,
            directory: args.acme_directory.clone(),
            ca_root: args.acme_ca_root.clone(),
        };
        let internal = tls::internal_ca(&args.data_dir, names)
            .context("the internal certificate served until ACME's arrives")?;
        let (config, progress) =
            acme::start(&settings, &args.data_dir, internal.certs).context("starting ACME")?;
        Ok(TlsMaterial {
            config,
            certs: None,
            ca_pem: None,
            leaf_fingerprint: None,
            ca_fingerprint: None,
            acme: Some(progress),
        })
    }

    /// The names the banner offers: the ACME domain, else every certificate name.
    pub fn shown_names(&self, names: &[String]) -> Vec<String> {
        match self {
            CertSource::Acme { domain, .. } => vec![domain.clone()],
            CertSource::Ready(_) => names.to_vec(),
        }
    }
}
