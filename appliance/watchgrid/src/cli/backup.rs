//! `watchgrid admin backup | restore | verify-backup`.
//!
//! A backup is taken from the running daemon through its local socket (the daemon
//! holds the store), or straight from the data dir when the daemon is stopped. A
//! restore needs the daemon stopped and an empty data dir; it checks the whole file
//! before it writes anything.

use crate::control::backup::{ERROR_PREFIX, SOCKET};
use anyhow::{bail, Context};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use watchgrid_store::{Store, StoreError};

#[derive(clap::Args)]
pub struct BackupArgs {
    #[arg(long, env = "WATCHGRID_DATA_DIR", default_value = "/var/lib/watchgrid")]
    data_dir: PathBuf,
    #[arg(long, env = "WATCHGRID_RUNTIME_DIR", default_value = "/run/watchgrid")]
    runtime_dir: PathBuf,
    /// Where the encrypted backup is written (replaced whole, mode 0600).
    #[arg(
        long,
        required_unless_present = "scheduled",
        conflicts_with = "scheduled"
    )]
    out: Option<PathBuf>,
    /// Have the running daemon take its scheduled backup (the daily timer's run): kept in
    /// DATA_DIR/backups with the schedule's passphrase and retention.
    #[arg(long)]
    scheduled: bool,
    #[command(flatten)]
    passphrase: Passphrase,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// An empty (or new) data dir; the daemon must be stopped.
    #[arg(long, env = "WATCHGRID_DATA_DIR", default_value = "/var/lib/watchgrid")]
    data_dir: PathBuf,
    #[command(flatten)]
    passphrase: Passphrase,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The backup file.
    file: PathBuf,
    #[command(flatten)]
    passphrase: Passphrase,
}

#[derive(clap::Args)]
struct Passphrase {
    /// Read the passphrase from this file's first line instead of stdin.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

impl Passphrase {
    fn read(&self) -> anyhow::Result<String> {
        let mut line = String::new();
        match &self.passphrase_file {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                std::io::BufReader::new(file)
                    .read_line(&mut line)
                    .with_context(|| format!("reading {}", path.display()))?;
            }
            None => {
                eprintln!("Backup passphrase (at least 12 characters), then Enter:");
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the passphrase from stdin")?;
            }
        }
        let passphrase = line.trim_end_matches(['\n', '\r']).to_string();
        if passphrase.is_empty() {
            bail!("no passphrase given");
        }
        Ok(passphrase)
    }
}

pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let Some(out) = &args.out else {
        let name = ask_daemon(&args.runtime_dir, "scheduled")?;
        println!(
            "scheduled backup stored: {}",
            args.data_dir
                .join(crate::control::backup::BACKUP_DIR)
                .join(String::from_utf8_lossy(&name).trim())
                .display()
        );
        return Ok(());
    };
    let passphrase = args.passphrase.read()?;
    let bytes = match Store::open(&args.data_dir) {
        Ok(store) => crate::control::backup::take(&store, &args.data_dir, &passphrase)?.0,
        Err(StoreError::Locked(_)) => {
            ask_daemon(&args.runtime_dir, &format!("backup {passphrase}"))?
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", args.data_dir.display())),
    };
    watchgrid_store::durable::write_file(out, &bytes, 0o600)
        .with_context(|| format!("writing {}", out.display()))?;
    let opened = watchgrid_backup::open(bytes.as_slice(), &passphrase)
        .context("reading back the backup just written")?;
    println!(
        "backup written to {} ({} bytes, {} store records, {} files); keep the passphrase apart from it",
        out.display(),
        bytes.len(),
        opened.store.records(),
        opened.files.len()
    );
    Ok(())
}

/// Sends one request line to the running daemon's backup socket; its answer.
pub(crate) fn ask_daemon(runtime_dir: &Path, request: &str) -> anyhow::Result<Vec<u8>> {
    let path = runtime_dir.join(SOCKET);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "the data dir is in use by a running watchgrid, and its backup socket {} does not answer",
            path.display()
        )
    })?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .context("sending the request")?;
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .context("reading the backup")?;
    if let Some(message) = reply.strip_prefix(ERROR_PREFIX.as_bytes()) {
        bail!("{}", String::from_utf8_lossy(message).trim_end());
    }
    Ok(reply)
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let passphrase = args.passphrase.read()?;
    let opened = open(&args.file, &passphrase)?;
    let m = &opened.manifest;
    println!("backup {}: every part checks out", args.file.display());
    println!(
        "  made by watchgrid {} at {} (unix)",
        m.watchgrid_version, m.created_at
    );
    println!("  hub public key    {}", m.hub_public_key);
    println!(
        "  store schema {}, {} records",
        m.schema,
        opened.store.records()
    );
    for part in &m.parts {
        println!(
            "  {:>10} bytes  {}  {}",
            part.size,
            &part.sha256[..16],
            part.name
        );
    }
    Ok(())
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let passphrase = args.passphrase.read()?;
    let opened = open(&args.file, &passphrase)?;
    watchgrid_backup::restore(&opened, &args.data_dir)
        .with_context(|| format!("restoring into {}", args.data_dir.display()))?;
    println!(
        "restored {} into {}: hub public key {}, {} store records; start watchgrid",
        args.file.display(),
        args.data_dir.display(),
        opened.manifest.hub_public_key,
        opened.store.records()
    );
    Ok(())
}

fn open(file: &Path, passphrase: &str) -> anyhow::Result<watchgrid_backup::Opened> {
    let input = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    watchgrid_backup::open(std::io::BufReader::new(input), passphrase)
        .with_context(|| format!("{}", file.display()))
}
