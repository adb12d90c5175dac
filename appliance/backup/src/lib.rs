//! Encrypted backups of a watchgrid data dir.
//!
//! A backup is an [age] file encrypted to a passphrase (age's scrypt recipient). Inside
//! is a tar archive: `manifest.json` first (format, watchgrid version, schema, hub
//! public key, creation time, and the size and SHA-256 of every part), then the parts:
//! `store.bin`, a consistent snapshot of the store ([`watchgrid_store::StoreSnapshot`]),
//! and `files/…`, the data dir's key, TLS, ACME and CA files. An operator can open one
//! by hand with `age -d backup.wgbackup | tar t`.
//!
//! Reading a backup ([`open`]) checks everything before anything is written: the
//! passphrase, age's authentication of every chunk and of the end of the file (so a cut
//! file is refused), the manifest's version, and every part against its checksum.
//!
//! [age]: https://age-encryption.org/v1

mod archive;
mod data_dir;
mod error;

pub use archive::{open, seal, FilePart, Manifest, Opened, PartSum, FORMAT};
pub use data_dir::{restore, take, Contents};
pub use error::BackupError;

/// The watchgrid version this build writes into manifests and compares on restore.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
