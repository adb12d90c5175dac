//! First start of `watchgrid serve`: headless provisioning from the environment (or its
//! flags), or the one-time setup token for the wizard, and the console banner (SPEC §4).

use crate::control::tls::TlsMaterial;
use anyhow::{bail, Context};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use watchgrid_api::ApiConfig;
use watchgrid_store::{Sensitive, Store};

/// The setup token's file name in the runtime directory (the console reads it).
pub const TOKEN_FILE: &str = "setup-token";

/// Headless provisioning from the environment (SPEC §3). An empty variable counts as
/// unset, as a blank line in an env file means "not given".
#[derive(clap::Args)]
pub struct Provisioning {
    /// The first admin's name (headless setup).
    #[arg(long, env = "ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,
    /// The first admin's password; with it, setup completes at start (headless).
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true, value_parser = sensitive)]
    pub admin_password: Option<Sensitive<String>>,
    /// HOST:PORT devices dial (headless setup).
    #[arg(long = "wg-server-endpoint", env = "WG_SERVER_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Secret that signs admin sessions (at least 32 characters); random if unset.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, value_parser = sensitive)]
    pub jwt_secret: Option<Sensitive<String>>,
    /// The appliance's public DNS name; serves an ACME certificate for it.
    #[arg(long, env = "FRONTEND_HOST")]
    pub frontend_host: Option<String>,
    /// Contact address for the ACME account.
    #[arg(long, env = "WATCHGRID_ACME_EMAIL")]
    pub acme_email: Option<String>,
}

impl Provisioning {
    /// Treats empty values as unset and checks the JWT secret's length.
    pub fn validated(&self) -> anyhow::Result<Provisioning> {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let secret = |v: &Option<Sensitive<String>>| v.clone().filter(|v| !v.expose().is_empty());
        let jwt_secret = secret(&self.jwt_secret);
        if jwt_secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
            bail!("JWT_SECRET must be at least 32 characters (try: openssl rand -hex 32)");
        }
        Ok(Provisioning {
            admin_username: Some(self.admin_username.clone())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "admin".into()),
            admin_password: secret(&self.admin_password),
            endpoint: given(&self.endpoint),
            jwt_secret,
            frontend_host: given(&self.frontend_host),
            acme_email: given(&self.acme_email),
        })
    }
}

/// Parses a secret flag or variable straight into its wrapper, so it never sits in a
/// plain `String` that a `Debug` could print.
fn sensitive(value: &str) -> Result<Sensitive<String>, std::convert::Infallible> {
    Ok(Sensitive::new(value.to_owned()))
}

/// Completes setup from the environment, or creates the setup token for the wizard.
pub async fn first_boot(
    store: &Store,
    p: &Provisioning,
    runtime_dir: &Path,
    config: &ApiConfig,
) -> anyhow::Result<Option<String>> {
    let token_path = runtime_dir.join(TOKEN_FILE);
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
            password.expose(),
            endpoint,
            p.jwt_secret.as_ref().map(|s| s.expose().as_str()),
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
    write_token_file(runtime_dir, &token_path, &token)?;
    Ok(Some(token))
}

/// The setup token's file is made fresh on every start: whatever sits at its path is
/// removed (a symlink itself, never its target), then the file is created exclusively
/// (`O_EXCL|O_NOFOLLOW`) with 0600, so nothing planted there can redirect the secret
/// or widen its mode.
pub fn write_token_file(runtime_dir: &Path, path: &Path, token: &str) -> anyhow::Result<()> {
    fs::create_dir_all(runtime_dir)
        .with_context(|| format!("creating {}", runtime_dir.display()))?;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the old {}", path.display())),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // The umask can only take bits away from 0600; this makes the mode exact.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
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
            b.runtime_dir.join(TOKEN_FILE).display()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn finding_03_setup_token_file_never_follows_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep me\n").expect("write");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).expect("chmod");
        let path = dir.path().join(TOKEN_FILE);
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        write_token_file(dir.path(), &path, "tok").expect("token file");
        assert_eq!(fs::read_to_string(&victim).expect("read"), "keep me\n");
        assert_eq!(mode(&victim), 0o644, "the symlink's target is untouched");
        assert!(fs::symlink_metadata(&path).expect("stat").is_file());
        assert_eq!(fs::read_to_string(&path).expect("read"), "tok\n");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn finding_03_setup_token_file_is_0600_even_when_one_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(TOKEN_FILE);
        fs::write(&path, "an old, longer token\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_token_file(dir.path(), &path, "new").expect("token file");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).expect("read"), "new\n");
    }
}
