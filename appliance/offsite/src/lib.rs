//! Copies of the appliance's backups off the box, over SFTP.
//!
//! The appliance authenticates with an ed25519 key of its own ([`ClientKey`]) and talks
//! only to a server whose host key the operator pinned ([`PinnedHostKey`]): a server
//! presenting any other key is refused before anything is sent. An upload is written
//! under a temporary name, flushed to the server's disk when it offers
//! `fsync@openssh.com`, checked for size, and then renamed, so the remote directory never
//! holds half a backup under a backup's name.

mod client_key;
mod error;
mod host_key;
mod sftp;
mod target;

pub use client_key::ClientKey;
pub use error::OffsiteError;
pub use host_key::PinnedHostKey;
pub use sftp::{probe, upload, Uploaded};
pub use target::Target;
