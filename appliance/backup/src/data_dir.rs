//! What a backup takes from a data dir, and how a restore puts it back.

use crate::archive::{FilePart, Manifest, Opened, PartSum, FORMAT};
use crate::BackupError;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use watchgrid_store::{durable, Store, StoreSnapshot};

/// Single files of the data dir a backup carries: the hub's WireGuard key, static
/// peers, the operator's environment file.
const FILES: &[&str] = &["wg-private.key", "peers.conf", "watchgrid.env"];

/// Directories carried whole: TLS (internal CA, leaf, uploaded certificate, retired
/// CAs), the ACME account and certificate cache, the SSH CA.
const DIRS: &[&str] = &["tls", "acme", "ssh"];

/// How deep the carried directories are walked.
const MAX_DEPTH: usize = 4;

/// The hub key file, for the manifest's public key.
const KEY_FILE: &str = "wg-private.key";

/// A backup's contents, taken from a running (or stopped) appliance.
pub struct Contents {
    pub store: StoreSnapshot,
    pub files: Vec<FilePart>,
    pub created_at: u64,
    pub hub_public_key: String,
}

/// Takes the store's snapshot and the data dir's files. The files change only at setup,
/// on a certificate renewal or a CA rotation, each written whole by rename.
pub fn take(store: &Store, data_dir: &Path, now: u64) -> Result<Contents, BackupError> {
    let snapshot = store.snapshot()?;
    let mut files = Vec::new();
    for name in FILES {
        let path = data_dir.join(name);
        if path.is_file() {
            files.push(read_part(data_dir, &path)?);
        }
    }
    for dir in DIRS {
        walk(data_dir, &data_dir.join(dir), MAX_DEPTH, &mut files)?;
    }
    let hub_public_key = files
        .iter()
        .find(|f| f.path == KEY_FILE)
        .and_then(|f| std::str::from_utf8(&f.bytes).ok())
        .and_then(|text| watchgrid_core::Secret::from_base64(text.trim()).ok())
        .map(|key| key.public_key().to_string())
        .unwrap_or_default();
    Ok(Contents {
        store: snapshot,
        files,
        created_at: now,
        hub_public_key,
    })
}

impl Contents {
    /// Encrypts the contents to `passphrase` into `out`.
    pub fn seal<W: Write>(&self, passphrase: &str, out: W) -> Result<W, BackupError> {
        let manifest = |parts: Vec<PartSum>| Manifest {
            format: FORMAT,
            watchgrid_version: crate::VERSION.to_string(),
            schema: self.store.schema,
            hub_public_key: self.hub_public_key.clone(),
            created_at: self.created_at,
            parts,
        };
        crate::seal(manifest, &self.store, &self.files, passphrase, out)
    }
}

fn read_part(data_dir: &Path, path: &Path) -> Result<FilePart, BackupError> {
    let bytes = fs::read(path).map_err(BackupError::io(path))?;
    let rel = path
        .strip_prefix(data_dir)
        .map_err(|_| BackupError::Damaged(format!("{} is outside the data dir", path.display())))?;
    Ok(FilePart {
        path: rel.to_string_lossy().into_owned(),
        bytes,
    })
}

/// Regular files under `dir`, in name order; symlinks are not followed and temporary
/// files of an interrupted write are left out.
fn walk(
    data_dir: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<FilePart>,
) -> Result<(), BackupError> {
    if depth == 0 || !dir.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(BackupError::io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(BackupError::io(dir))?;
    entries.sort();
    for path in entries {
        let kind = fs::symlink_metadata(&path)
            .map_err(BackupError::io(&path))?
            .file_type();
        if kind.is_dir() {
            walk(data_dir, &path, depth - 1, out)?;
        } else if kind.is_file() && path.extension().is_none_or(|e| e != "tmp") {
            out.push(read_part(data_dir, &path)?);
        }
    }
    Ok(())
}

/// Restores a checked backup into `data_dir`, which must be absent or empty (an ext4
/// root's `lost+found` aside). Everything is written into a staging directory inside
/// it first and moved into place last, so an interrupted restore leaves only the
/// staging directory, which the next restore replaces.
pub fn restore(opened: &Opened, data_dir: &Path) -> Result<(), BackupError> {
    ensure_empty(data_dir)?;
    let staging = data_dir.join(STAGING);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(BackupError::io(&staging))?;
    }
    private_dir(&staging)?;
    Store::restore(&staging, &opened.store)?;
    // The store's open lock stays behind; it is taken again at the next open.
    for file in &opened.files {
        let path = staging.join(&file.path);
        if let Some(parent) = path.parent() {
            private_dir(parent)?;
        }
        durable::write_file(&path, &file.bytes, 0o600).map_err(BackupError::io(&path))?;
    }
    let mut names: Vec<_> = fs::read_dir(&staging)
        .map_err(BackupError::io(&staging))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(BackupError::io(&staging))?;
    names.sort();
    for name in names {
        let (from, to) = (staging.join(&name), data_dir.join(&name));
        fs::rename(&from, &to).map_err(BackupError::io(&to))?;
    }
    fs::remove_dir(&staging).map_err(BackupError::io(&staging))?;
    durable::sync_dir(data_dir).map_err(BackupError::io(data_dir))
}

/// The staging directory's name inside the data dir.
const STAGING: &str = ".restoring";

fn ensure_empty(data_dir: &Path) -> Result<(), BackupError> {
    if !data_dir.exists() {
        return private_dir(data_dir);
    }
    let busy = fs::read_dir(data_dir)
        .map_err(BackupError::io(data_dir))?
        .filter_map(Result::ok)
        .any(|e| e.file_name() != "lost+found" && e.file_name() != STAGING);
    if busy {
        return Err(BackupError::NotEmpty(data_dir.display().to_string()));
    }
    Ok(())
}

/// Creates `dir` (and its parents) private to the owner, as the daemon requires.
fn private_dir(dir: &Path) -> Result<(), BackupError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(BackupError::io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(BackupError::io(dir))
}
