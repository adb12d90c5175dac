//! Certificates the SSH CA issued: the audit of each, and its revocation.

use serde::{Deserialize, Serialize};

/// One issued certificate, keyed by its zero-padded serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshCertRecord {
    pub serial: u64,
    /// `user` or `host`.
    pub kind: String,
    pub key_id: String,
    /// SHA-256 of the subject's key.
    pub key_fingerprint: String,
    pub ca_fingerprint: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub issued_at: u64,
    pub issued_by: String,
    pub revoked_at: Option<u64>,
}

/// The key a certificate's record is stored under.
pub fn ssh_cert_key(serial: u64) -> String {
    format!("{serial:020}")
}
