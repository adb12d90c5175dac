//! What a certificate is asked for, checked before anything is signed.

use crate::SshCaError;

/// The longest validity a certificate may be given: one year.
pub const MAX_VALIDITY_SECS: u64 = 365 * 86_400;

/// How far back a certificate's start may be set (for clock skew, or a test of expiry).
pub const MAX_BACKDATE_SECS: u64 = 30 * 86_400;

const MAX_PRINCIPALS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    User,
    Host,
}

impl CertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::User => "user",
            CertKind::Host => "host",
        }
    }
}

/// A certificate to sign.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub kind: CertKind,
    /// The subject's public key, one OpenSSH line (`ssh-ed25519 AAAA… comment`).
    pub public_key: String,
    /// User names (user certificates) or host names (host certificates).
    pub principals: Vec<String>,
    /// Unix seconds.
    pub valid_after: u64,
    pub valid_before: u64,
    pub serial: u64,
    /// Shown in sshd's log when the certificate is used.
    pub key_id: String,
}

/// A signed certificate and what the audit log records of it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// One OpenSSH line (`ssh-ed25519-cert-v01@openssh.com AAAA…`).
    pub certificate: String,
    pub serial: u64,
    /// SHA-256 fingerprint of the subject's key.
    pub key_fingerprint: String,
    /// SHA-256 fingerprint of the CA key that signed.
    pub ca_fingerprint: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
}

impl CertRequest {
    /// Refuses what no certificate should carry: no principals (a "golden ticket"),
    /// odd principal names, a window backwards, too long or too far back.
    pub fn check(&self, now: u64) -> Result<ssh_key::PublicKey, SshCaError> {
        let bad = |m: &str| Err(SshCaError::Invalid(m.to_string()));
        if self.principals.is_empty() || self.principals.len() > MAX_PRINCIPALS {
            return bad("principals: 1 to 32 names");
        }
        for p in &self.principals {
            let plain = !p.is_empty()
                && p.len() <= 255
                && p.chars()
                    .all(|c| c.is_ascii_graphic() && c != ',' && c != '*' && c != '?');
            if !plain {
                return Err(SshCaError::Invalid(format!(
                    "principal {p:?}: 1 to 255 printable characters, no commas or wildcards"
                )));
            }
        }
        if self.valid_before <= self.valid_after {
            return bad("the certificate must end after it starts");
        }
        if self.valid_before - self.valid_after > MAX_VALIDITY_SECS {
            return bad("validity: at most 365 days");
        }
        if self.valid_after + MAX_BACKDATE_SECS < now {
            return bad("valid_after: at most 30 days in the past");
        }
        if self.key_id.len() > 255 || self.key_id.chars().any(char::is_control) {
            return bad("key_id: at most 255 printable characters");
        }
        let key = ssh_key::PublicKey::from_openssh(self.public_key.trim()).map_err(|e| {
            SshCaError::Invalid(format!("public_key: not an OpenSSH public key ({e})"))
        })?;
        Ok(key)
    }
}
