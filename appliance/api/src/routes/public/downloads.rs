//! What a machine needs to become an agent, served by the hub itself: its own binary
//! (one static binary is hub and agent), the install script and the agent's systemd unit.
//! The script pins the internal CA by its fingerprint, so the binary it fetches from here
//! is authenticated by that CA.

use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::io::Read;
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;

/// `dist/install-agent.sh`: kept as a file so that it can be linted and run on its own.
pub(crate) const INSTALL_SCRIPT: &str = include_str!("../../../../../dist/install-agent.sh");
/// `dist/watchgrid-agent.service`: the hardened unit the script installs.
pub(crate) const AGENT_UNIT: &str = include_str!("../../../../../dist/watchgrid-agent.service");

/// The running executable, whatever path it was started from.
const EXE: &str = "/proc/self/exe";
/// Read size for hashing and streaming: the binary is tens of MB, never held whole.
const CHUNK: usize = 64 * 1024;

/// The executable's SHA-256, computed once. The file behind `/proc/self/exe` cannot change
/// while the process runs: the kernel refuses writes to a running executable (ETXTBSY),
/// and replacing it on disk makes a new inode while this link keeps the old one.
static EXE_SHA256: OnceCell<String> = OnceCell::const_new();

/// Hex SHA-256 of the running executable. The first call hashes it on a blocking thread
/// (tens of MB); concurrent first calls wait for that one computation.
pub(crate) async fn exe_sha256() -> Result<&'static str, ApiError> {
    let sum = EXE_SHA256
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(hash_exe)
                .await
                .map_err(|e| ApiError::internal(format!("hashing {EXE}: {e}")))?
                .map_err(|e| ApiError::internal(format!("hashing {EXE}: {e}")))
        })
        .await?;
    Ok(sum.as_str())
}

fn hash_exe() -> std::io::Result<String> {
    let mut file = std::fs::File::open(EXE)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// `GET /downloads/watchgrid`: the running executable, streamed from disk, with its
/// SHA-256 in `X-Checksum-Sha256`.
pub(crate) async fn binary() -> Result<Response, ApiError> {
    let sum = exe_sha256().await?;
    let file = tokio::fs::File::open(EXE)
        .await
        .map_err(|e| ApiError::internal(format!("opening {EXE}: {e}")))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(format!("reading {EXE}: {e}")))?
        .len();
    let chunks = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"watchgrid\"".to_string(),
            ),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::HeaderName::from_static("x-checksum-sha256"),
                sum.to_string(),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// `GET /downloads/watchgrid.sha256`: the `sha256sum` line for the binary.
pub(crate) async fn binary_sha256() -> Result<Response, ApiError> {
    let sum = exe_sha256().await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{sum}  watchgrid\n"),
    )
        .into_response())
}

/// `GET /downloads/install-agent.sh`. Plain text, so that a browser shows it to read.
pub(crate) async fn install_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        INSTALL_SCRIPT,
    )
}

/// `GET /downloads/watchgrid-agent.service`.
pub(crate) async fn agent_unit() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        AGENT_UNIT,
    )
}

/// The SHA-256 of a PEM certificate's DER, as `watchgrid serve` prints it (colon-separated
/// uppercase hex); `None` unless `pem` holds a certificate.
pub(crate) fn ca_fingerprint(pem: &str) -> Option<String> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let len = pem.get(start..)?.find(END)?;
    let b64: String = pem
        .get(start..start + len)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|d| !d.is_empty())?;
    let hex: Vec<String> = Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    Some(hex.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_of_the_der_in_colon_hex() {
        use base64::Engine as _;
        let der = b"not really DER, but any bytes hash";
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n{}\n-----END CERTIFICATE-----\n",
            &b64[..20],
            &b64[20..]
        );
        let want: Vec<String> = Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(ca_fingerprint(&pem), Some(want.join(":")));
        assert_eq!(ca_fingerprint("PEM"), None);
        assert_eq!(
            ca_fingerprint("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
    }

    /// The installer rewrites this exact ExecStart line when it installs elsewhere.
    #[test]
    fn the_served_files_are_the_ones_in_dist() {
        assert!(INSTALL_SCRIPT.starts_with("#!/bin/sh\n"));
        assert!(AGENT_UNIT.contains(
            "ExecStart=/usr/local/bin/watchgrid agent run --state-dir /var/lib/watchgrid-agent\n"
        ));
    }
}
