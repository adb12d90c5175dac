//! Release keys: the ed25519 key a build signs bundles with, and the public keys an image
//! trusts (one file each in `/usr/lib/watchgrid/update-keys`, so a release can ship the
//! next key beside the current one before it switches).
//!
//! Both files are one line of base64: the 32-byte seed for the signing key, the 32-byte
//! public key for a trusted key. A trusted key's file may carry `#` comment lines.

use crate::UpdateError;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where the image keeps the public keys it trusts.
pub const TRUSTED_DIR: &str = "/usr/lib/watchgrid/update-keys";

/// The signing key of a build.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

/// A public key an image trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The first 16 hex digits of the key's SHA-256: names the key in a manifest.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(message, signature)
            .is_ok()
    }

    fn parse(text: &str, path: &Path) -> Result<Self, UpdateError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_default();
        Ok(PublicKey(decode_32(line, path)?))
    }
}

fn decode_32(line: &str, path: &Path) -> Result<[u8; 32], UpdateError> {
    let bad = |reason: String| UpdateError::BadKey {
        path: path.display().to_string(),
        reason,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|e| bad(format!("not base64: {e}")))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("{} bytes, expected 32", b.len())))
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, UpdateError> {
        Self::from_seed(&random_seed()?, Path::new("(new key)"))
    }

    fn from_seed(seed: &[u8; 32], path: &Path) -> Result<Self, UpdateError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| UpdateError::BadKey {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(SigningKey { pair })
    }

    /// Reads a key file; it must not be readable by group or others.
    pub fn load(path: &Path) -> Result<Self, UpdateError> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(UpdateError::io(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(UpdateError::BadKey {
                path: path.display().to_string(),
                reason: format!(
                    "mode {:o} lets others read it; chmod 600 it",
                    meta.permissions().mode() & 0o777
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(UpdateError::io(path))?;
        Self::from_seed(&decode_32(&text, path)?, path)
    }

    /// Writes a new key to `path` (mode 0600, never over an existing file).
    pub fn create(path: &Path) -> Result<Self, UpdateError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let seed = random_seed()?;
        let key = Self::from_seed(&seed, path)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(UpdateError::io(path))?;
        let line = base64::engine::general_purpose::STANDARD.encode(seed) + "\n";
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(UpdateError::io(path))?;
        Ok(key)
    }

    pub fn public(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(self.pair.sign(message).as_ref());
        sig
    }
}

fn random_seed() -> Result<[u8; 32], UpdateError> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).map_err(|_| {
        UpdateError::BadKey {
            path: "(new key)".into(),
            reason: "the system's random source failed".into(),
        }
    })?;
    Ok(seed)
}

/// The public keys an image trusts.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
    source: PathBuf,
}

impl TrustedKeys {
    /// Every `*.pub` file in `dir`. A missing directory trusts nothing; an unreadable or
    /// invalid key file is an error, so a broken image never silently trusts less.
    pub fn load(dir: &Path) -> Result<Self, UpdateError> {
        let mut keys = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TrustedKeys {
                    keys,
                    source: dir.into(),
                })
            }
            Err(e) => return Err(UpdateError::io(dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(UpdateError::io(dir))?.path();
            if path.extension().is_some_and(|e| e == "pub") {
                let text = std::fs::read_to_string(&path).map_err(UpdateError::io(&path))?;
                keys.push(PublicKey::parse(&text, &path)?);
            }
        }
        keys.sort_by_key(PublicKey::id);
        keys.dedup();
        Ok(TrustedKeys {
            keys,
            source: dir.into(),
        })
    }

    pub fn from_keys(keys: Vec<PublicKey>) -> Self {
        TrustedKeys {
            keys,
            source: PathBuf::from("(given)"),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that made `signature` over `message`, if any trusted one did.
    pub fn verifying(&self, message: &[u8], signature: &[u8]) -> Result<&PublicKey, UpdateError> {
        if self.keys.is_empty() {
            return Err(UpdateError::NoTrustedKeys(
                self.source.display().to_string(),
            ));
        }
        self.keys
            .iter()
            .find(|k| k.verify(message, signature))
            .ok_or(UpdateError::BadSignature {
                trusted: self.keys.len(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_must_be_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("release.key");
        let key = SigningKey::create(&path).expect("create");
        let loaded = SigningKey::load(&path).expect("load");
        assert_eq!(key.public(), loaded.public());
        assert!(
            SigningKey::create(&path).is_err(),
            "never over an existing key"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SigningKey::load(&path).err().expect("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn trusted_keys_come_from_pub_files_and_a_bad_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SigningKey::generate().expect("key");
        let b = SigningKey::generate().expect("key");
        let write =
            |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write");
        write(
            "a.pub",
            format!("# release 2026\n{}\n", a.public().to_base64()),
        );
        write("b.pub", b.public().to_base64());
        write("notes.txt", "not a key".into());
        let trusted = TrustedKeys::load(dir.path()).expect("load");
        assert_eq!(trusted.len(), 2);
        let sig = b.sign(b"message");
        assert_eq!(
            trusted
                .verifying(b"message", &sig)
                .expect("b verifies")
                .id(),
            b.public().id()
        );
        assert!(matches!(
            trusted.verifying(b"other", &sig),
            Err(UpdateError::BadSignature { trusted: 2 })
        ));
        write("c.pub", "AAAA".into());
        assert!(matches!(
            TrustedKeys::load(dir.path()),
            Err(UpdateError::BadKey { .. })
        ));
        let none = TrustedKeys::load(&dir.path().join("missing")).expect("missing dir");
        assert!(matches!(
            none.verifying(b"m", &sig),
            Err(UpdateError::NoTrustedKeys(_))
        ));
    }
}
