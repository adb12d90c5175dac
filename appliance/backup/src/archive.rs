//! The file format: age (scrypt) around a tar of the manifest and the parts.

use crate::BackupError;
use age::secrecy::SecretString;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use watchgrid_store::StoreSnapshot;

/// The container's format number; a reader refuses a higher one.
pub const FORMAT: u32 = 1;

/// scrypt work written into backups: 2^17 (128 MiB, well under a second here), fixed
/// rather than calibrated, so a backup from a fast machine restores on a small one.
const LOG_N: u8 = 17;

/// The most scrypt work a backup may ask of us (256 MiB): an uploaded file cannot make
/// the appliance spend minutes and gigabytes before the passphrase is even checked.
pub(crate) const MAX_LOG_N: u8 = 18;

/// The largest part read into memory (a fleet's store is megabytes).
const MAX_PART: u64 = 1 << 30;

/// Passphrases shorter than this are refused when a backup is made.
pub const MIN_PASSPHRASE: usize = 12;

/// An archive entry: its name and bytes.
type NamedBytes = (String, Vec<u8>);

const MANIFEST: &str = "manifest.json";
const STORE: &str = "store.bin";
const FILES: &str = "files/";

/// One file of the data dir, by its path relative to the data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub watchgrid_version: String,
    /// The store's schema version.
    pub schema: u32,
    /// The hub's WireGuard public key: what peers are configured with.
    pub hub_public_key: String,
    /// Unix seconds when the store snapshot was taken.
    pub created_at: u64,
    pub parts: Vec<PartSum>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartSum {
    pub name: String,
    pub size: u64,
    /// Hex SHA-256 of the part's bytes.
    pub sha256: String,
}

/// A backup read and checked in full.
#[derive(Debug)]
pub struct Opened {
    pub manifest: Manifest,
    pub store: StoreSnapshot,
    pub files: Vec<FilePart>,
}

/// Writes an encrypted backup of `store` and `files` to `out`.
pub fn seal<W: Write>(
    manifest_of: impl FnOnce(Vec<PartSum>) -> Manifest,
    store: &StoreSnapshot,
    files: &[FilePart],
    passphrase: &str,
    out: W,
) -> Result<W, BackupError> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(BackupError::WeakPassphrase(MIN_PASSPHRASE));
    }
    let store_bytes = store.encode();
    let mut parts: Vec<(String, &[u8])> = vec![(STORE.to_string(), &store_bytes)];
    parts.extend(
        files
            .iter()
            .map(|f| (format!("{FILES}{}", f.path), f.bytes.as_slice())),
    );
    let sums = parts
        .iter()
        .map(|(name, bytes)| PartSum {
            name: name.clone(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        })
        .collect();
    let manifest = manifest_of(sums);
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Damaged(format!("encoding the manifest: {e}")))?;

    let mut recipient = age::scrypt::Recipient::new(SecretString::from(passphrase.to_string()));
    recipient.set_work_factor(LOG_N);
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
        .map_err(|e| BackupError::Damaged(format!("age: {e}")))?;
    let write_err = |e: io::Error| BackupError::Io {
        path: "the backup output".into(),
        source: e,
    };
    let encrypted = encryptor.wrap_output(out).map_err(write_err)?;
    let mut tar = tar::Builder::new(encrypted);
    append(&mut tar, MANIFEST, &manifest_bytes, manifest.created_at).map_err(write_err)?;
    for (name, bytes) in &parts {
        append(&mut tar, name, bytes, manifest.created_at).map_err(write_err)?;
    }
    let encrypted = tar.into_inner().map_err(write_err)?;
    encrypted.finish().map_err(write_err)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    at: u64,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(at);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, bytes)
}

/// Decrypts and checks a whole backup: nothing is written anywhere.
pub fn open<R: Read>(input: R, passphrase: &str) -> Result<Opened, BackupError> {
    let plaintext = decrypt(input, passphrase)?;
    let mut tar = tar::Archive::new(plaintext);
    let (manifest, parts) = read_entries(&mut tar)?;
    // tar stops at its end marker; age checks the file's last chunk only when it is
    // read, and that check is what refuses a file cut after the marker.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(damaged)?;
    let (store, files) = check_parts(&manifest, parts)?;
    store.check_schema()?;
    Ok(Opened {
        manifest,
        store,
        files,
    })
}

fn decrypt<R: Read>(input: R, passphrase: &str) -> Result<impl Read, BackupError> {
    let decryptor = match age::Decryptor::new(input) {
        Ok(d) => d,
        Err(age::DecryptError::Io(e)) if e.kind() != io::ErrorKind::UnexpectedEof => {
            return Err(BackupError::Io {
                path: "the backup".into(),
                source: e,
            })
        }
        Err(_) => return Err(BackupError::NotAge),
    };
    if !decryptor.is_scrypt() {
        return Err(BackupError::NotPassphrase);
    }
    let mut identity = age::scrypt::Identity::new(SecretString::from(passphrase.to_string()));
    identity.set_max_work_factor(MAX_LOG_N);
    decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::ExcessiveWork { required, .. } => {
                BackupError::ExcessiveWork(required)
            }
            age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys => {
                BackupError::WrongPassphrase
            }
            other => BackupError::Damaged(other.to_string()),
        })
}

fn damaged(e: io::Error) -> BackupError {
    BackupError::Damaged(e.to_string())
}

/// Reads the manifest (the first entry) and every part, refusing a newer format or
/// version before the parts are read.
fn read_entries<R: Read>(
    tar: &mut tar::Archive<R>,
) -> Result<(Manifest, Vec<NamedBytes>), BackupError> {
    let mut entries = tar.entries().map_err(damaged)?;
    let first = entries
        .next()
        .ok_or_else(|| BackupError::Damaged("it holds no manifest".into()))?
        .map_err(damaged)?;
    let (name, bytes) = read_entry(first)?;
    if name != MANIFEST {
        return Err(BackupError::Damaged(format!(
            "the first entry is {name:?}, not the manifest"
        )));
    }
    let manifest = parse_manifest(&bytes)?;
    let mut parts = Vec::new();
    for entry in entries {
        parts.push(read_entry(entry.map_err(damaged)?)?);
    }
    Ok((manifest, parts))
}

fn read_entry<R: Read>(entry: tar::Entry<'_, R>) -> Result<NamedBytes, BackupError> {
    let name = String::from_utf8(entry.path_bytes().into_owned())
        .map_err(|_| BackupError::Damaged("an entry name is not UTF-8".into()))?;
    if entry.size() > MAX_PART {
        return Err(BackupError::Damaged(format!("{name} is larger than 1 GiB")));
    }
    let mut bytes = Vec::new();
    entry
        .take(MAX_PART)
        .read_to_end(&mut bytes)
        .map_err(damaged)?;
    Ok((name, bytes))
}

/// The manifest, after its format and version are known to be ours or older.
fn parse_manifest(bytes: &[u8]) -> Result<Manifest, BackupError> {
    #[derive(serde::Deserialize)]
    struct Versions {
        format: u32,
        watchgrid_version: String,
    }
    let v: Versions = serde_json::from_slice(bytes)
        .map_err(|e| BackupError::Damaged(format!("the manifest: {e}")))?;
    if v.format > FORMAT || newer(&v.watchgrid_version, crate::VERSION) {
        return Err(BackupError::Newer {
            found: v.watchgrid_version,
            format: v.format,
            ours: crate::VERSION,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| BackupError::Damaged(format!("the manifest: {e}")))
}

/// Whether version `a` is newer than `b` (numeric `MAJOR.MINOR.PATCH`, pre-release
/// suffixes ignored). An unreadable version counts as newer: refused, not guessed.
pub(crate) fn newer(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Option<Vec<u64>> {
        v.split(['-', '+'])
            .next()?
            .split('.')
            .map(|n| n.parse().ok())
            .collect()
    };
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a > b,
        _ => true,
    }
}

/// Every part the manifest lists, present once, of its size and checksum; nothing else.
fn check_parts(
    manifest: &Manifest,
    parts: Vec<NamedBytes>,
) -> Result<(StoreSnapshot, Vec<FilePart>), BackupError> {
    if parts.len() != manifest.parts.len() {
        return Err(BackupError::Damaged(format!(
            "{} parts, the manifest lists {}",
            parts.len(),
            manifest.parts.len()
        )));
    }
    let mut store = None;
    let mut files = Vec::new();
    for ((name, bytes), sum) in parts.into_iter().zip(&manifest.parts) {
        if name != sum.name
            || bytes.len() as u64 != sum.size
            || hex::encode(Sha256::digest(&bytes)) != sum.sha256
        {
            return Err(BackupError::Damaged(format!(
                "{} does not match its checksum",
                sum.name
            )));
        }
        if name == STORE {
            store = Some(StoreSnapshot::decode(&bytes)?);
        } else if let Some(path) = name.strip_prefix(FILES) {
            files.push(FilePart {
                path: safe_path(path)?,
                bytes,
            });
        } else {
            return Err(BackupError::Damaged(format!("unknown part {name:?}")));
        }
    }
    let store = store.ok_or_else(|| BackupError::Damaged("it holds no store".into()))?;
    Ok((store, files))
}

/// A relative path of plain components: a part can never be written outside the data
/// dir, whatever the archive says.
fn safe_path(path: &str) -> Result<String, BackupError> {
    let plain = !path.is_empty()
        && std::path::Path::new(path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(path.to_string())
    } else {
        Err(BackupError::Damaged(format!(
            "part path {path:?} leaves the data dir"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically_and_unreadable_ones_are_newer() {
        assert!(newer("0.10.0", "0.9.9"));
        assert!(!newer("0.1.0", "0.1.0"));
        assert!(!newer("0.1.0-rc1", "0.1.0"));
        assert!(newer("1.0", "0.9.0"));
        assert!(newer("x", "0.1.0"));
    }

    #[test]
    fn part_paths_stay_inside_the_data_dir() {
        assert!(safe_path("tls/ca.key").is_ok());
        for bad in ["", "../etc/passwd", "/etc/shadow", "tls/../../x", "./a"] {
            assert!(safe_path(bad).is_err(), "{bad}");
        }
    }
}
