//! Key material. Secrets are wrapped so that `Debug` never prints them.
//!
//! Keys are written as wg(8) writes them: standard base64 of the 32 bytes. This module
//! is the one place that encodes and decodes that form.

use base64::Engine as _;
use boringtun::x25519;
use rand_core::{OsRng, RngCore};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a WireGuard key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a base64 WireGuard key")]
    NotBase64,
    #[error("a WireGuard key is 32 bytes, this one is {0}")]
    WrongLength(usize),
}

/// Decodes wg(8)'s base64 form (surrounding whitespace ignored, as `wg` does).
fn decode_base64_key(s: &str) -> Result<[u8; 32], KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| KeyError::NotBase64)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::WrongLength(len))
}

fn encode_base64_key(k: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(k)
}

/// A Curve25519 public key (32 bytes), used as a peer's identity.
///
/// `Display`, `FromStr` and serde use base64, so stored records and JSON answers carry
/// the same string `wg pubkey` prints.
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

impl PublicKey {
    /// True for keys no honest peer has: points of small order (the all-zero key among
    /// them). Every Diffie-Hellman with one gives the same all-zero secret whatever our
    /// private key is, so a "peer" with such a key contributes nothing to the session.
    /// X25519 clamps scalars to multiples of the cofactor 8, which sends exactly these
    /// points to zero: one multiplication with any clamped scalar tells them apart.
    pub fn is_low_order(&self) -> bool {
        let probe = x25519::StaticSecret::from([0x5a; 32]);
        !probe
            .diffie_hellman(&x25519::PublicKey::from(self.0))
            .was_contributory()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_base64_key(&self.0))
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_base64_key(s).map(PublicKey)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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

    /// Parses wg(8)'s base64 form (`wg genkey`, `PrivateKey =`, `PresharedKey =`).
    pub fn from_base64(s: &str) -> Result<Secret, KeyError> {
        decode_base64_key(s).map(Secret)
    }

    /// The key in wg(8)'s base64 form. Deliberately not `Display`: writing a secret
    /// out must be a visible decision at the call site.
    pub fn to_base64(&self) -> String {
        encode_base64_key(&self.0)
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

#[cfg(test)]
mod tests {
    #[test]
    fn low_order_points_are_told_apart_from_real_keys() {
        // The canonical small-order points of Curve25519 (x = 0, 1, the two of order 8,
        // p-1, p, p+1) as listed by Bernstein's "cr.yp.to/ecdh.html#validate".
        let hex = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        for h in hex {
            let mut k = [0u8; 32];
            for (i, b) in k.iter_mut().enumerate() {
                *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex");
            }
            assert!(PublicKey(k).is_low_order(), "{h}");
        }
        for _ in 0..16 {
            assert!(!Secret::generate_private().public_key().is_low_order());
        }
    }

    use super::*;

    // RFC 7748 §6.1: Alice's private and public key.
    const PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

    #[test]
    fn public_keys_round_trip_through_base64() {
        let key: PublicKey = PUBLIC.parse().expect("parse");
        assert_eq!(key.to_string(), PUBLIC);
        assert_eq!(format!(" {PUBLIC}\n").parse::<PublicKey>(), Ok(key));
        let secret = Secret::from_base64(PRIVATE).expect("secret");
        assert_eq!(secret.public_key(), key);
        assert_eq!(secret.to_base64(), PRIVATE);
    }

    #[test]
    fn bad_keys_say_what_is_wrong() {
        assert_eq!("not a key!".parse::<PublicKey>(), Err(KeyError::NotBase64));
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyError::WrongLength(3)));
        assert_eq!(
            KeyError::WrongLength(3).to_string(),
            "a WireGuard key is 32 bytes, this one is 3"
        );
    }

    #[test]
    fn serde_uses_the_base64_string() {
        let key: PublicKey = PUBLIC.parse().expect("parse");
        let json = serde_json::to_string(&key).expect("encode");
        assert_eq!(json, format!("\"{PUBLIC}\""));
        assert_eq!(
            serde_json::from_str::<PublicKey>(&json).expect("decode"),
            key
        );
        let bad = serde_json::from_str::<PublicKey>("\"AAAA\"").expect_err("short key");
        assert!(bad.to_string().contains("32 bytes"), "{bad}");
    }

    #[test]
    fn debug_never_prints_secret_bytes() {
        let secret = Secret::from_base64(PRIVATE).expect("secret");
        let shown = format!("{secret:?}");
        assert!(!shown.contains(PRIVATE) && !shown.contains("77"), "{shown}");
    }
}
