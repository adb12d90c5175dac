//! Backups from the running daemon: the API's download, and a local socket through
//! which `watchgrid admin backup` gets one while the daemon holds the store.
//!
//! The socket lives in the runtime dir, mode 0600, and answers only a peer of our own
//! uid or root. The client writes one line: `backup PASSPHRASE` (the
//! answer is the backup file) or `scheduled` (the daily timer's run: the answer is the
//! stored file's name) or `health` (the boot check's question after an update: the answer
//! is `healthy`, or why not) or `update-decided` (it recorded the update's outcome: the
//! daemon audits it). A failure is answered with one line `watchgrid-error: …`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use watchgrid_api::hub::{BackupRefused, BackupSource};
use watchgrid_api::state::AppState;
use watchgrid_backup::BackupError;
use watchgrid_store::Store;

/// The socket's name in the runtime dir.
pub const SOCKET: &str = "backup.sock";

/// What starts an error answer on the socket.
pub const ERROR_PREFIX: &str = "watchgrid-error: ";

/// The longest passphrase line read from the socket.
const MAX_LINE: u64 = 1032;

/// Backups of the daemon's store and data dir.
pub struct DataDirBackup {
    pub store: Arc<Store>,
    pub data_dir: PathBuf,
    pub restart: Arc<Restart>,
    /// One backup at a time: each costs a second of CPU and 128 MiB of scrypt.
    pub busy: std::sync::Mutex<()>,
}

/// A restart of the daemon in place, asked for by a first-boot restore.
#[derive(Default)]
pub struct Restart {
    bell: tokio::sync::Notify,
    asked: std::sync::atomic::AtomicBool,
}

impl Restart {
    pub fn ask(&self) {
        self.asked.store(true, std::sync::atomic::Ordering::SeqCst);
        self.bell.notify_one();
    }

    /// Resolves once a restart is asked for.
    pub async fn asked(&self) {
        self.bell.notified().await;
    }

    pub fn was_asked(&self) -> bool {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Where a checked backup waits, inside the data dir, for the next start to apply it.
pub const PENDING: &str = ".restore-pending";
const STAGING: &str = ".restore-staging";

/// The file name a backup taken at `at` (unix seconds) is offered under.
pub fn file_name(at: u64) -> String {
    format!("watchgrid-{at}.wgbackup")
}

/// Takes and encrypts a backup of `store` and `data_dir`.
pub fn take(
    store: &Store,
    data_dir: &Path,
    passphrase: &str,
) -> Result<(Vec<u8>, String), BackupError> {
    let now = watchgrid_api::state::unix_now();
    let contents = watchgrid_backup::take(store, data_dir, now)?;
    let bytes = contents.seal(passphrase, Vec::new())?;
    Ok((bytes, file_name(now)))
}

/// What `verify-backup` and the dashboard say about a good backup.
pub fn summary(opened: &watchgrid_backup::Opened) -> String {
    let m = &opened.manifest;
    format!(
        "watchgrid {}, taken at {}, hub key {}, {} store records, {} files",
        m.watchgrid_version,
        m.created_at,
        m.hub_public_key,
        opened.store.records(),
        opened.files.len()
    )
}

fn refused(e: BackupError) -> BackupRefused {
    match e {
        BackupError::WeakPassphrase(_) => BackupRefused::Invalid(e.to_string()),
        e => BackupRefused::Failed(e.to_string()),
    }
}

impl BackupSource for DataDirBackup {
    fn take(&self, passphrase: &str) -> Result<(Vec<u8>, String), BackupRefused> {
        let _one = self.busy.try_lock().map_err(|_| BackupRefused::Busy)?;
        take(&self.store, &self.data_dir, passphrase).map_err(refused)
    }

    fn verify(&self, file: &Path, passphrase: &str) -> Result<String, BackupRefused> {
        let input = std::fs::File::open(file)
            .map_err(|e| BackupRefused::Failed(format!("{}: {e}", file.display())))?;
        let opened =
            watchgrid_backup::open(std::io::BufReader::new(input), passphrase).map_err(refused)?;
        Ok(summary(&opened))
    }

    fn dir(&self) -> PathBuf {
        self.data_dir.join(BACKUP_DIR)
    }

    fn stage_restore(&self, backup: &[u8], passphrase: &str) -> Result<String, BackupRefused> {
        let opened = watchgrid_backup::open(backup, passphrase).map_err(|e| match e {
            BackupError::Io { .. } => BackupRefused::Failed(e.to_string()),
            e => BackupRefused::Invalid(e.to_string()),
        })?;
        let failed = |e: &dyn std::fmt::Display| BackupRefused::Failed(e.to_string());
        let staging = self.data_dir.join(STAGING);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| failed(&e))?;
        }
        watchgrid_backup::restore(&opened, &staging).map_err(|e| failed(&e))?;
        // Complete, so it becomes the pending restore in one rename.
        std::fs::rename(&staging, self.data_dir.join(PENDING)).map_err(|e| failed(&e))?;
        watchgrid_store::durable::sync_dir(&self.data_dir).map_err(|e| failed(&e))?;
        Ok(summary(&opened))
    }

    fn restart(&self) {
        self.restart.ask();
    }
}

/// At start, before the store opens: a pending restore replaces the data dir's contents
/// (those of an appliance that was never set up). True when one was applied.
pub fn apply_pending_restore(data_dir: &Path) -> anyhow::Result<bool> {
    use anyhow::Context;
    let pending = data_dir.join(PENDING);
    if !pending.is_dir() {
        return Ok(false);
    }
    let names = |dir: &Path| -> anyhow::Result<Vec<std::ffi::OsString>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            v.push(e?.file_name());
        }
        Ok(v)
    };
    for name in names(data_dir)? {
        if name == PENDING || name == "lost+found" {
            continue;
        }
        let path = data_dir.join(&name);
        let removed = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("clearing {} for the restore", path.display()))?;
    }
    for name in names(&pending)? {
        std::fs::rename(pending.join(&name), data_dir.join(&name)).with_context(|| {
            format!("moving the restored {} into place", name.to_string_lossy())
        })?;
    }
    std::fs::remove_dir(&pending).with_context(|| format!("removing {}", pending.display()))?;
    watchgrid_store::durable::sync_dir(data_dir)
        .with_context(|| format!("syncing {}", data_dir.display()))?;
    Ok(true)
}

/// Scheduled backups' directory in the data dir (never inside a backup itself).
pub const BACKUP_DIR: &str = "backups";

/// Binds the socket (replacing a stale one) and serves it for the life of the runtime.
pub fn serve_socket(
    runtime_dir: &Path,
    state: AppState,
    https: std::net::SocketAddr,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(runtime_dir)
        .with_context(|| format!("creating {}", runtime_dir.display()))?;
    let path = runtime_dir.join(SOCKET);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => {}
    }
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, state.clone(), https));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backup socket accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(())
}

async fn answer(stream: UnixStream, state: AppState, https: std::net::SocketAddr) {
    // SAFETY: geteuid(2) cannot fail.
    let ours = unsafe { libc::geteuid() };
    // The daemon's own user (the timer's service) or root (the console).
    if !stream
        .peer_cred()
        .is_ok_and(|c| c.uid() == ours || c.uid() == 0)
    {
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE))
        .read_line(&mut line)
        .await;
    let request = match read {
        Ok(_) if line.ends_with('\n') => line.trim_end_matches(['\n', '\r']).to_string(),
        _ => String::new(),
    };
    let reply = if request == "scheduled" {
        scheduled(&state).await
    } else if request == "health" {
        format!("{}\n", health(&state, https).await).into_bytes()
    } else if request == "update-decided" {
        watchgrid_api::update::decided(&state);
        b"ok\n".to_vec()
    } else {
        tokio::task::spawn_blocking(move || reply(&state, &request))
            .await
            .unwrap_or_else(|e| format!("{ERROR_PREFIX}the backup task failed: {e}\n").into_bytes())
    };
    if let Err(e) = write.write_all(&reply).await {
        tracing::warn!(error = %e, "answering the backup socket");
    }
    let _ = write.shutdown().await;
}

/// The daily timer's run: the stored file's name, or an error when the backup or its
/// copy off the box failed (so the timer's unit fails and shows in `systemctl --failed`).
async fn scheduled(state: &AppState) -> Vec<u8> {
    match watchgrid_api::backups::run_and_copy(state).await {
        Ok(run) => {
            tracing::info!(file = %run.name, "scheduled backup stored");
            match run.offsite {
                Some(Err(e)) => format!(
                    "{ERROR_PREFIX}{} is stored on the appliance, but copying it off the box failed: {e}\n",
                    run.name
                )
                .into_bytes(),
                _ => format!("{}\n", run.name).into_bytes(),
            }
        }
        Err(e) => format!("{ERROR_PREFIX}{e}\n").into_bytes(),
    }
}

/// `healthy` when the store answers (so it opened and its migrations ran), the firewall
/// protects, and the HTTPS listener accepts a connection; otherwise what is wrong.
async fn health(state: &AppState, https: std::net::SocketAddr) -> String {
    if let Err(e) = state.setup_done() {
        return format!("the store does not answer: {e}");
    }
    let firewall = state.firewall_status();
    if !firewall.protects() {
        return format!("the firewall is not applied ({firewall:?})");
    }
    let ip = match https.ip() {
        std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(a) if a.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let target = std::net::SocketAddr::new(ip, https.port());
    let connect = tokio::net::TcpStream::connect(target);
    match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => "healthy".into(),
        Ok(Err(e)) => format!("the HTTPS listener {target} refuses connections: {e}"),
        Err(_) => format!("the HTTPS listener {target} does not answer"),
    }
}

/// The answer to one request line (blocking: scrypt and the snapshot).
fn reply(state: &AppState, request: &str) -> Vec<u8> {
    let failed = |e: &dyn std::fmt::Display| format!("{ERROR_PREFIX}{e}\n").into_bytes();
    let Some(passphrase) = request.strip_prefix("backup ") else {
        return failed(
            &"send `backup PASSPHRASE`, `scheduled` or `health` and a newline (at most 1024 bytes)",
        );
    };
    let Some(source) = state.backup.get() else {
        return failed(&"backups are not set up in this daemon");
    };
    match source.take(passphrase) {
        Ok((bytes, name)) => {
            tracing::info!(file = %name, bytes = bytes.len(), "backup taken for the local console");
            bytes
        }
        Err(e) => failed(&e),
    }
}
