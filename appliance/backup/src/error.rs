/// Why a backup could not be made, read or restored; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a watchgrid backup: it is not an age-encrypted file")]
    NotAge,
    #[error("this age file is not encrypted to a passphrase, so it is not a watchgrid backup")]
    NotPassphrase,
    #[error("wrong passphrase (or the backup's header is damaged)")]
    WrongPassphrase,
    #[error("the backup needs more scrypt work (2^{0}) than this appliance accepts (2^{max}); it was not made by watchgrid", max = crate::archive::MAX_LOG_N)]
    ExcessiveWork(u8),
    #[error("the backup is damaged or cut short: {0}")]
    Damaged(String),
    #[error("the backup was made by watchgrid {found} (backup format {format}); this is watchgrid {ours}: update this appliance first, then restore")]
    Newer {
        found: String,
        format: u32,
        ours: &'static str,
    },
    #[error("the passphrase is too short: at least {0} characters")]
    WeakPassphrase(usize),
    #[error("{0} is not empty; restore into a new or empty directory (stop watchgrid and move the old one aside)")]
    NotEmpty(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] watchgrid_store::SnapshotError),
    #[error(transparent)]
    Store(#[from] watchgrid_store::StoreError),
}

impl BackupError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
        move |source| BackupError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
