//! The appliance's SSH certificate authority.
//!
//! CA keys are ed25519, one OpenSSH private key file each in the CA directory
//! (`DATA_DIR/ssh/ca-CREATED.key`, mode 0600, so every backup carries them). The newest
//! signs; every key present is trusted, which is how a rotation overlaps: a new CA is
//! introduced next to the old one, devices and clients learn both, then the old one is
//! retired. Certificates and the revocation list are OpenSSH's own formats, made with
//! the RustCrypto `ssh-key` crate, so `sshd` and `ssh` read them as they are.

mod ca;
mod krl;
mod request;

pub use ca::{CaKeyView, SshCa};
pub use krl::Revoked;
pub use request::{CertKind, CertRequest, Issued, MAX_BACKDATE_SECS, MAX_VALIDITY_SECS};

/// Why the CA could not do what was asked; each says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SshCaError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("SSH key format: {0}")]
    Key(#[from] ssh_key::Error),
    #[error("{0}")]
    Conflict(String),
}

impl SshCaError {
    fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SshCaError + '_ {
        move |source| SshCaError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
