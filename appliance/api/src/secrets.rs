//! Random tokens, their stored hashes, and constant-time comparison.

use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh 256-bit token, base64url without padding (43 characters).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What the store keeps instead of a token: hex SHA-256. Tokens carry 256 bits of
/// entropy, so a fast hash is enough (no dictionary to guess from).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets without leaking where they differ.
pub fn ct_eq(a: &str, b: &str) -> bool {
    // Hash first so unequal lengths take the same time as equal ones.
    let (ha, hb) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    ha.as_slice().ct_eq(hb.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 64);
        assert!(ct_eq(&a, &a.clone()));
        assert!(!ct_eq(&a, &b));
        assert!(!ct_eq(&a, &a[..42]));
    }
}
