//! The SSH CA as agents see it: an agent enrolled with `--ssh-host-cert` sends its
//! sshd host keys and gets host certificates for the names the hub knows it by, never
//! names it asks for. Heartbeats carry an `ssh_etag` so that agents fetch the CA keys
//! and the KRL again only when they changed.

use super::ssh::{ca, issue, CertBody, CertIssued};
use crate::agent_auth::AgentDevice;
use crate::dto::{ErrorBody, HostCert, HostCerts};
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;
use watchgrid_sshca::CertKind;
use watchgrid_store::Device;

/// sshd has one host key per algorithm; a few more leaves room for odd setups.
const MAX_HOST_KEYS: usize = 8;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/agent/ssh-host-certs", post(host_certs))
}

/// Marks the CA keys or the revocation list changed: the next heartbeats tell agents.
pub(crate) fn changed(state: &AppState) {
    state.ssh_revision.fetch_add(1, Ordering::Relaxed);
}

/// Changes whenever what agents keep of the CA does; `None` without a CA.
pub(crate) fn ssh_etag(state: &AppState) -> Option<String> {
    let ca = state.ssh_ca.get()?;
    let mut h = Sha256::new();
    h.update(state.ssh_nonce.to_le_bytes());
    h.update(state.ssh_revision.load(Ordering::Relaxed).to_le_bytes());
    h.update(ca.authorized_lines());
    Some(hex::encode(&h.finalize()[..16]))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostKeys {
    /// The machine's sshd host public keys, one OpenSSH line each.
    #[schema(min_items = 1, max_items = 8)]
    pub host_keys: Vec<String>,
}

impl From<CertIssued> for HostCert {
    fn from(c: CertIssued) -> HostCert {
        HostCert {
            certificate: c.certificate,
            serial: c.serial,
            principals: c.principals,
            valid_after: c.valid_after,
            valid_before: c.valid_before,
        }
    }
}

/// Signs host certificates for the calling agent's machine (30 days; agents renew at
/// half-life). Principals: the device's name and `NAME.wg` (unless another device
/// has the same name) and its VPN addresses.
#[utoipa::path(post, path = "/api/agent/ssh-host-certs", tag = "agents", request_body = HostKeys,
    responses((status = 200, body = HostCerts), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("agent_key" = [])))]
pub(crate) async fn host_certs(
    State(state): State<AppState>,
    AgentDevice(device): AgentDevice,
    StrictJson(req): StrictJson<HostKeys>,
) -> Result<Json<HostCerts>, ApiError> {
    if req.host_keys.is_empty() || req.host_keys.len() > MAX_HOST_KEYS {
        return Err(ApiError::Invalid("host_keys: 1 to 8 keys".into()));
    }
    ca(&state)?;
    let principals = principals(&state, &device)?;
    let issued_by = format!("agent:{}", device.id);
    let mut certificates = Vec::with_capacity(req.host_keys.len());
    for key in req.host_keys {
        let body = CertBody {
            public_key: key,
            principals: principals.clone(),
            validity_secs: None,
            valid_after: None,
            key_id: Some(format!("watchgrid-host-{}", device.id)),
        };
        certificates.push(issue(&state, &issued_by, CertKind::Host, body)?.into());
    }
    Ok(Json(HostCerts { certificates }))
}

/// The names a host certificate vouches for. A device name is the agent's own claim
/// at enrollment and names are not unique, so a name another device also carries is
/// left out: one machine's certificate must never vouch for another.
fn principals(state: &AppState, device: &Device) -> Result<Vec<String>, ApiError> {
    let mut names = Vec::new();
    let shared = state
        .store
        .devices
        .list()?
        .iter()
        .any(|d| d.id != device.id && d.name.eq_ignore_ascii_case(&device.name));
    let plain = !device.name.is_empty()
        && device.name.len() <= 250
        && device
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if plain && !shared {
        let name = device.name.to_ascii_lowercase();
        names.push(format!("{name}.wg"));
        names.push(name);
    }
    names.push(device.address_v4.to_string());
    if let Some(v6) = device.address_v6 {
        names.push(v6.to_string());
    }
    Ok(names)
}
