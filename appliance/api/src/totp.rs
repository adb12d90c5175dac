//! TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of skew) with
//! single-use codes and recovery codes.

use crate::error::ApiError;
use crate::secrets::{ct_eq, token_hash};
use rand_core::{OsRng, RngCore};
use totp_rs::{Algorithm, Secret, TOTP};

const STEP: u64 = 30;
pub const RECOVERY_CODES: usize = 10;

/// A fresh 160-bit secret, base32.
pub fn new_secret() -> String {
    let mut b = [0u8; 20];
    OsRng.fill_bytes(&mut b);
    match Secret::Raw(b.to_vec()).to_encoded() {
        Secret::Encoded(s) => s,
        Secret::Raw(_) => String::new(),
    }
}

fn totp(secret_b32: &str) -> Result<TOTP, ApiError> {
    let bytes = Secret::Encoded(secret_b32.to_string())
        .to_bytes()
        .map_err(|_| ApiError::internal("stored TOTP secret is not base32"))?;
    TOTP::new(Algorithm::SHA1, 6, 1, STEP, bytes).map_err(ApiError::internal)
}

/// The time step a code matches (now, or one step either side), if any.
pub fn matching_step(secret_b32: &str, code: &str, unix_now: u64) -> Result<Option<u64>, ApiError> {
    let t = totp(secret_b32)?;
    let now = unix_now / STEP;
    for step in [now.saturating_sub(1), now, now + 1] {
        if ct_eq(&t.generate(step * STEP), code.trim()) {
            return Ok(Some(step));
        }
    }
    Ok(None)
}

/// The current code (tests and tools).
pub fn code_at(secret_b32: &str, unix_time: u64) -> Result<String, ApiError> {
    Ok(totp(secret_b32)?.generate(unix_time))
}

/// `otpauth://` URL for authenticator apps.
pub fn otpauth_url(secret_b32: &str, account: &str) -> String {
    format!(
        "otpauth://totp/Watchgrid:{account}?secret={secret_b32}&issuer=Watchgrid&algorithm=SHA1&digits=6&period=30"
    )
}

/// The URL as an SVG QR code (shown inline; no script, no external image).
pub fn qr_svg(data: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::new(data.as_bytes()).map_err(ApiError::internal)?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build())
}

/// Ten recovery codes and their hashes.
pub fn recovery_codes() -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| {
            let mut b = [0u8; 10];
            OsRng.fill_bytes(&mut b);
            let h = hex::encode(b);
            format!("{}-{}-{}-{}", &h[0..5], &h[5..10], &h[10..15], &h[15..20])
        })
        .collect();
    let hashes = codes.iter().map(|c| token_hash(c)).collect();
    (codes, hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s -> 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let secret = match Secret::Raw(b"12345678901234567890".to_vec()).to_encoded() {
            Secret::Encoded(s) => s,
            Secret::Raw(_) => unreachable!(),
        };
        assert_eq!(code_at(&secret, 59).expect("code"), "287082");
        assert_eq!(matching_step(&secret, "287082", 59).expect("m"), Some(1));
        assert_eq!(
            matching_step(&secret, "287082", 59 + 3600).expect("m"),
            None
        );
    }

    #[test]
    fn qr_is_svg() {
        let svg = qr_svg("otpauth://totp/x").expect("svg");
        assert!(svg.contains("<svg") && !svg.contains("<script"));
    }
}
