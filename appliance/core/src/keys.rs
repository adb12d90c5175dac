//! Key material. Secrets are wrapped so that `Debug` never prints them.

use boringtun::x25519;
use rand_core::{OsRng, RngCore};
use std::fmt;

/// A Curve25519 public key (32 bytes), used as a peer's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Public keys are not secret; a short prefix is enough to tell peers apart in logs.
        write!(
            f,
            "PublicKey({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// 32 secret bytes: a private key or a preshared key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// A fresh private key from the OS random source, clamped as `wg genkey` does.
    pub fn generate_private() -> Secret {
        let mut b = [0u8; 32];
        OsRng.fill_bytes(&mut b);
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        Secret(b)
    }

    /// True for the all-zero key, which UAPI uses to mean "no key".
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    pub(crate) fn static_secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }

    /// The public key belonging to this private key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.static_secret()).to_bytes())
    }
}
