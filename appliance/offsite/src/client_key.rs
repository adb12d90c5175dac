use crate::OffsiteError;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

/// The appliance's own SSH key for copies off the box (ed25519).
#[derive(Clone)]
pub struct ClientKey {
    key: PrivateKey,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({})", self.fingerprint())
    }
}

impl ClientKey {
    /// A key from 32 random bytes (the caller's CSPRNG).
    pub fn from_seed(seed: &[u8; 32], comment: &str) -> ClientKey {
        let mut key = PrivateKey::from(Ed25519Keypair::from_seed(seed));
        key.set_comment(comment);
        ClientKey { key }
    }

    /// Reads the stored form (OpenSSH private key, unencrypted).
    pub fn from_openssh(text: &str) -> Result<ClientKey, OffsiteError> {
        let key = PrivateKey::from_openssh(text)
            .map_err(|e| OffsiteError::Invalid(format!("the stored SFTP client key: {e}")))?;
        if key.is_encrypted() {
            return Err(OffsiteError::Invalid(
                "the stored SFTP client key is encrypted".into(),
            ));
        }
        Ok(ClientKey { key })
    }

    /// The stored form; it is a secret.
    pub fn to_openssh(&self) -> Result<String, OffsiteError> {
        self.key
            .to_openssh(LineEnding::LF)
            .map(|s| s.to_string())
            .map_err(|e| OffsiteError::Invalid(format!("encoding the SFTP client key: {e}")))
    }

    /// The `authorized_keys` line the operator installs on the server.
    pub fn authorized_line(&self) -> String {
        self.key
            .public_key()
            .to_openssh()
            .unwrap_or_else(|e| format!("(unencodable key: {e})"))
    }

    pub fn fingerprint(&self) -> String {
        crate::host_key::fingerprint(self.key.public_key())
    }

    pub(crate) fn private(&self) -> &PrivateKey {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_reads_back_to_the_same_key() {
        let key = ClientKey::from_seed(&[7; 32], "watchgrid-backup@hub");
        let stored = key.to_openssh().expect("encodes");
        assert!(stored.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let back = ClientKey::from_openssh(&stored).expect("decodes");
        assert_eq!(back.authorized_line(), key.authorized_line());
        assert!(key
            .authorized_line()
            .starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));
        assert!(key.authorized_line().ends_with(" watchgrid-backup@hub"));
        assert_ne!(
            ClientKey::from_seed(&[8; 32], "x").fingerprint(),
            key.fingerprint()
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            ClientKey::from_openssh("not a key"),
            Err(OffsiteError::Invalid(_))
        ));
    }
}
