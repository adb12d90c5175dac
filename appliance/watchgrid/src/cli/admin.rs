//! `watchgrid admin`: local maintenance on a data dir, with the daemon stopped (a
//! backup also works while it runs).

use anyhow::{bail, Context};
use std::io::BufRead;
use std::path::PathBuf;
use watchgrid_store::{AuditEntry, Store, StoreError, SETTINGS_KEY};

#[derive(clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(clap::Subcommand)]
enum AdminCommand {
    /// Set a new admin password (read from stdin) and sign out all of that admin's sessions.
    ResetPassword {
        #[arg(long, env = "WATCHGRID_DATA_DIR", default_value = "/var/lib/watchgrid")]
        data_dir: PathBuf,
        /// The admin whose password is reset.
        #[arg(long, default_value = "admin")]
        username: String,
    },
    /// Retire the internal CA (kept under tls/retired-TIME/); the next start makes a new
    /// one, constrained to the appliance's names then.
    RotateCa {
        #[arg(long, env = "WATCHGRID_DATA_DIR", default_value = "/var/lib/watchgrid")]
        data_dir: PathBuf,
    },
    /// Write an encrypted backup of the whole appliance (works while watchgrid runs).
    Backup(super::backup::BackupArgs),
    /// Restore a backup into an empty data dir, with watchgrid stopped.
    Restore(super::backup::RestoreArgs),
    /// Decrypt a backup and check every part, without restoring it.
    VerifyBackup(super::backup::VerifyArgs),
    /// Show the state of a data dir: schema, setup, admins, devices, tokens.
    Status {
        #[arg(long, env = "WATCHGRID_DATA_DIR", default_value = "/var/lib/watchgrid")]
        data_dir: PathBuf,
    },
}

fn open(dir: &std::path::Path) -> anyhow::Result<Store> {
    match Store::open(dir) {
        Ok(s) => Ok(s),
        Err(StoreError::Locked(_)) => bail!(
            "{} is in use by a running watchgrid; stop it first (systemctl stop watchgrid)",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("opening {}", dir.display())),
    }
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    // What admin writes into a data dir (a restored store, a retired CA) is as private
    // as what the daemon writes, whatever the shell's umask.
    super::serve::secret_files::private_umask();
    match args.command {
        AdminCommand::ResetPassword { data_dir, username } => reset_password(&data_dir, &username),
        AdminCommand::Status { data_dir } => status(&data_dir),
        AdminCommand::RotateCa { data_dir } => rotate_ca(&data_dir),
        AdminCommand::Backup(a) => super::backup::backup(a),
        AdminCommand::Restore(a) => super::backup::restore(a),
        AdminCommand::VerifyBackup(a) => super::backup::verify(a),
    }
}

fn reset_password(dir: &std::path::Path, username: &str) -> anyhow::Result<()> {
    if !dir.exists() {
        bail!("{} does not exist", dir.display());
    }
    let store = open(dir)?;
    if store.admins.get(username)?.is_none() {
        let known: Vec<String> = store
            .admins
            .list()?
            .into_iter()
            .map(|a| a.username)
            .collect();
        bail!("no admin named {username:?} (admins: {})", known.join(", "));
    }
    eprintln!("New password for {username} (at least 12 characters), then Enter:");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    watchgrid_api::routes::setup::validate_password(password)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = watchgrid_api::auth::hash_password_blocking(password)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = watchgrid_api::state::unix_now();
    // Every session and API token issued so far stops working.
    store.change_admin_password(username, hash)?;
    store.audit(&AuditEntry {
        at: now,
        actor: "local-console".into(),
        action: "admin.reset_password".into(),
        target: username.into(),
    })?;
    println!(
        "password of {username} changed; its sessions are signed out and its API tokens revoked"
    );
    Ok(())
}

/// The internal CA's files; moved together, so the next start finds none of them.
const CA_FILES: &[&str] = &[
    "ca.key",
    "ca.crt",
    crate::control::tls::CA_SCOPE_FILE,
    "leaf.key",
    "leaf.crt",
    "leaf.json",
];

fn rotate_ca(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.exists() {
        bail!("{} does not exist", dir.display());
    }
    // Holding the store's lock proves the daemon is not running (it would keep
    // serving the old leaf and write a new one on its next renewal).
    let _store = open(dir)?;
    let tls = dir.join("tls");
    if !tls.join("ca.key").exists() {
        bail!("{} holds no internal CA (nothing to rotate)", tls.display());
    }
    let now = watchgrid_api::state::unix_now();
    let retired = tls.join(format!("retired-{now}"));
    std::fs::create_dir(&retired).with_context(|| format!("creating {}", retired.display()))?;
    for file in CA_FILES {
        let from = tls.join(file);
        if from.exists() {
            std::fs::rename(&from, retired.join(file))
                .with_context(|| format!("moving {} to {}", from.display(), retired.display()))?;
        }
    }
    watchgrid_store::durable::sync_dir(&tls)
        .with_context(|| format!("syncing {}", tls.display()))?;
    _store.audit(&AuditEntry {
        at: now,
        actor: "local-console".into(),
        action: "admin.rotate_ca".into(),
        target: retired.display().to_string(),
    })?;
    println!(
        "the internal CA is retired to {}; start watchgrid to make a new one.\n\
         Then: browsers and devices that trusted the old ca.crt need the new one \
         (/downloads/ca.crt), and agents pin the CA, so re-enroll each agent with \
         the new fingerprint from the console banner.",
        retired.display()
    );
    Ok(())
}

fn status(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.exists() {
        bail!("{} does not exist (nothing set up yet)", dir.display());
    }
    let store = open(dir)?;
    let settings = store.settings.get(SETTINGS_KEY)?;
    let devices = store.devices.list()?;
    let enabled = devices.iter().filter(|d| d.enabled).count();
    println!("data dir:          {}", dir.display());
    println!("schema version:    {}", store.schema_version()?);
    match &settings {
        Some(s) => {
            println!("setup:             complete");
            println!("endpoint:          {}", s.endpoint);
            println!("VPN subnet:        {}/{}", s.vpn_subnet_v4, s.vpn_prefix_v4);
        }
        None => println!("setup:             not done (open the setup wizard)"),
    }
    let admins: Vec<String> = store
        .admins
        .list()?
        .into_iter()
        .map(|a| a.username)
        .collect();
    println!(
        "admins:            {}",
        if admins.is_empty() {
            "none".into()
        } else {
            admins.join(", ")
        }
    );
    println!("devices:           {} ({} enabled)", devices.len(), enabled);
    println!(
        "enrollment tokens: {}",
        store.enrollment_tokens.list()?.len()
    );
    println!("API tokens:        {}", store.api_tokens.list()?.len());
    println!("store size:        {} bytes", store.size_on_disk()?);
    Ok(())
}
