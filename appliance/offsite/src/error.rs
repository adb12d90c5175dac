/// Why a copy off the box failed; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OffsiteError {
    /// The target or a key is malformed.
    #[error("{0}")]
    Invalid(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "{addr} presented the host key {presented}, not the pinned {pinned}; nothing was \
         sent. If the server's key really changed, pin the new one."
    )]
    HostKeyMismatch {
        addr: String,
        presented: String,
        pinned: String,
    },
    #[error(
        "{user}@{addr} refused the appliance's key {fingerprint}: add its public key to \
         that account's authorized_keys"
    )]
    AuthRefused {
        user: String,
        addr: String,
        fingerprint: String,
    },
    #[error("SSH with {addr}: {detail}")]
    Ssh { addr: String, detail: String },
    #[error("SFTP, {step}: {detail}")]
    Sftp { step: String, detail: String },
    #[error("no answer from {addr} within {secs} s ({step})")]
    Timeout {
        addr: String,
        secs: u64,
        step: &'static str,
    },
}
