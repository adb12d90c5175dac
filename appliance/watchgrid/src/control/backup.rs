//! Backups from the running daemon: the API's download, and a local socket through
//! which `watchgrid admin backup` gets one while the daemon holds the store.
//!
//! The socket lives in the runtime dir, mode 0600, and answers only a peer of our own
//! uid (root on the appliance). The client writes the passphrase and a newline; the
//! answer is the backup file, or one line `watchgrid-error: …`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use watchgrid_api::hub::{BackupRefused, BackupSource};
use watchgrid_backup::BackupError;
use watchgrid_store::Store;

/// The socket's name in the runtime dir.
pub const SOCKET: &str = "backup.sock";

/// What starts an error answer on the socket.
pub const ERROR_PREFIX: &str = "watchgrid-error: ";

/// The longest passphrase line read from the socket.
const MAX_LINE: u64 = 1025;

/// Backups of the daemon's store and data dir.
pub struct DataDirBackup {
    pub store: Arc<Store>,
    pub data_dir: PathBuf,
}

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

impl BackupSource for DataDirBackup {
    fn take(&self, passphrase: &str) -> Result<(Vec<u8>, String), BackupRefused> {
        take(&self.store, &self.data_dir, passphrase).map_err(|e| match e {
            BackupError::WeakPassphrase(_) => BackupRefused::Invalid(e.to_string()),
            e => BackupRefused::Failed(e.to_string()),
        })
    }
}

/// Binds the socket (replacing a stale one) and serves it for the life of the runtime.
pub fn serve_socket(runtime_dir: &Path, source: Arc<DataDirBackup>) -> anyhow::Result<()> {
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
                    tokio::spawn(answer(stream, source.clone()));
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

async fn answer(stream: UnixStream, source: Arc<DataDirBackup>) {
    // SAFETY: geteuid(2) cannot fail.
    let ours = unsafe { libc::geteuid() };
    if !stream.peer_cred().is_ok_and(|c| c.uid() == ours) {
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let reply = match BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE))
        .read_line(&mut line)
        .await
    {
        Ok(_) if line.ends_with('\n') => {
            let passphrase = line.trim_end_matches(['\n', '\r']).to_string();
            let taken = tokio::task::spawn_blocking(move || {
                take(&source.store, &source.data_dir, &passphrase)
            })
            .await;
            match taken {
                Ok(Ok((bytes, name))) => {
                    tracing::info!(file = %name, bytes = bytes.len(), "backup taken for the local console");
                    bytes
                }
                Ok(Err(e)) => format!("{ERROR_PREFIX}{e}\n").into_bytes(),
                Err(e) => format!("{ERROR_PREFIX}the backup task failed: {e}\n").into_bytes(),
            }
        }
        _ => format!("{ERROR_PREFIX}send the passphrase and a newline (at most 1024 bytes)\n")
            .into_bytes(),
    };
    if let Err(e) = write.write_all(&reply).await {
        tracing::warn!(error = %e, "answering the backup socket");
    }
    let _ = write.shutdown().await;
}
