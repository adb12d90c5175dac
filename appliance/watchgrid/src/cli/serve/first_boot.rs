//! First start of `watchgrid serve`: headless provisioning from the environment, or the
//! one-time setup token for the wizard, and the console banner (SPEC §4).

use crate::control::tls::TlsMaterial;
use anyhow::{bail, Context};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use watchgrid_api::ApiConfig;
use watchgrid_store::Store;

/// Headless provisioning from the environment (SPEC §3).
pub struct Provisioning {
    pub admin_username: String,
    pub admin_password: Option<String>,
    pub endpoint: Option<String>,
    pub jwt_secret: Option<String>,
    pub frontend_host: Option<String>,
    pub acme_email: Option<String>,
}

impl Provisioning {
    pub fn from_env() -> anyhow::Result<Provisioning> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let jwt_secret = var("JWT_SECRET");
        if jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            bail!("JWT_SECRET must be at least 32 characters (try: openssl rand -hex 32)");
        }
        Ok(Provisioning {
            admin_username: var("ADMIN_USERNAME").unwrap_or_else(|| "admin".into()),
            admin_password: var("ADMIN_PASSWORD"),
            endpoint: var("WG_SERVER_ENDPOINT"),
            jwt_secret,
            frontend_host: var("FRONTEND_HOST"),
            acme_email: var("WATCHGRID_ACME_EMAIL"),
        })
    }
}

/// Completes setup from the environment, or creates the setup token for the wizard.
pub async fn first_boot(
    store: &Store,
    p: &Provisioning,
    runtime_dir: &Path,
    config: &ApiConfig,
) -> anyhow::Result<Option<String>> {
    let token_path = runtime_dir.join("setup-token");
    if store.settings.get(watchgrid_store::SETTINGS_KEY)?.is_some() {
        let _ = fs::remove_file(&token_path);
        return Ok(None);
    }
    if let Some(password) = &p.admin_password {
        let endpoint = p.endpoint.as_deref().context(
            "ADMIN_PASSWORD is set, so WG_SERVER_ENDPOINT (HOST:PORT devices dial) must be set too",
        )?;
        watchgrid_api::routes::setup::provision(
            store,
            &p.admin_username,
            password,
            endpoint,
            p.jwt_secret.as_deref(),
            (config.vpn_subnet, config.vpn_prefix),
            match &p.frontend_host {
                Some(domain) => watchgrid_store::TlsChoice::Acme {
                    domain: domain.clone(),
                    email: p.acme_email.clone(),
                },
                None => watchgrid_store::TlsChoice::Internal,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("headless setup from ADMIN_PASSWORD: {e}"))?;
        tracing::info!(admin = %p.admin_username, "setup completed from the environment");
        return Ok(None);
    }
    let token = watchgrid_api::secrets::new_token();
    fs::create_dir_all(runtime_dir)
        .with_context(|| format!("creating {}", runtime_dir.display()))?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&token_path)
        .with_context(|| format!("creating {}", token_path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", token_path.display()))?;
    Ok(Some(token))
}

/// What the console shows once the daemon is ready.
pub struct Banner<'a> {
    pub https_port: u16,
    pub runtime_dir: &'a Path,
    pub acme_directory: &'a str,
    pub tls: &'a TlsMaterial,
    pub token: Option<&'a str>,
    pub names: &'a [String],
}

pub fn print_banner(b: &Banner) {
    let (tls, token, names) = (b.tls, b.token, b.names);
    let port = b.https_port;
    let suffix = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let mut out = String::from("\n==== Watchgrid ====\n");
    for n in names {
        let host = if n.contains(':') {
            format!("[{n}]")
        } else {
            n.clone()
        };
        let path = if token.is_some() { "/setup" } else { "/" };
        out.push_str(&format!("  open      https://{host}{suffix}{path}\n"));
    }
    if let Some(t) = token {
        out.push_str(&format!(
            "  setup token   {t}\n  (also in {})\n",
            b.runtime_dir.join("setup-token").display()
        ));
    } else {
        out.push_str("  setup is complete; sign in as the admin\n");
    }
    match &tls.leaf_fingerprint {
        Some(f) => out.push_str(&format!("  TLS certificate SHA-256  {f}\n")),
        None => out.push_str(&format!(
            "  TLS certificate: ACME, ordered from {}\n",
            b.acme_directory
        )),
    }
    if let Some(f) = &tls.ca_fingerprint {
        out.push_str(&format!(
            "  internal CA SHA-256      {f}  (https://HOST{suffix}/downloads/ca.crt)\n"
        ));
    }
    out.push_str("watchgrid: ready\n");
    print!("{out}");
    let _ = std::io::stdout().flush();
}
