//! The SSH certificate authority: admins sign user and host certificates, list and
//! revoke them, rotate the CA; anyone fetches the CA's public keys, the `known_hosts`
//! line and the revocation list (none of them secret). Every issued certificate is in
//! the store and the audit log with its serial, key fingerprint, principals and window.

use super::audit;
use crate::auth::Admin;
use crate::dto::ErrorBody;
use crate::error::ApiError;
use crate::json::StrictJson;
use crate::state::{unix_now, AppState};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use watchgrid_sshca::{CertKind, CertRequest, SshCa, SshCaError};
use watchgrid_store::{ssh_cert_key, SshCertRecord};

/// A user certificate's validity when none is asked for: one working day.
const DEFAULT_USER_VALIDITY: u64 = 16 * 3600;
/// A host certificate's: 30 days (renewed at half-life).
const DEFAULT_HOST_VALIDITY: u64 = 30 * 86_400;
/// Clock skew allowed for a certificate that starts now.
const SKEW: u64 = 60;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/ssh/ca", get(show_ca))
        .route("/api/ssh/ca/rotate", post(rotate))
        .route("/api/ssh/ca/retire", post(retire))
        .route("/api/ssh/user-certs", post(sign_user))
        .route("/api/ssh/host-certs", post(sign_host))
        .route("/api/ssh/certs", get(list))
        .route("/api/ssh/certs/{serial}/revoke", post(revoke))
}

/// The public downloads.
pub fn public_router() -> Router<AppState> {
    Router::new()
        .route("/downloads/ssh-ca.pub", get(ca_pub))
        .route("/downloads/ssh-known-hosts", get(known_hosts))
        .route("/downloads/ssh-revoked.krl", get(krl))
}

pub(crate) fn ca(state: &AppState) -> Result<Arc<SshCa>, ApiError> {
    state
        .ssh_ca
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Unavailable("this appliance has no SSH CA".into()))
}

fn ca_error(e: SshCaError) -> ApiError {
    match e {
        SshCaError::Invalid(m) => ApiError::Invalid(m),
        SshCaError::Conflict(m) => ApiError::Conflict(m),
        e => ApiError::internal(format!("SSH CA: {e}")),
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CaKeyBody {
    pub public_key: String,
    pub fingerprint: String,
    pub created: u64,
    pub signing: bool,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CaView {
    /// Oldest first; the last one signs.
    pub keys: Vec<CaKeyBody>,
    /// For clients' `known_hosts`: trusts host certificates from every key.
    pub known_hosts: String,
}

fn view(ca: &SshCa) -> CaView {
    CaView {
        keys: ca
            .keys()
            .into_iter()
            .map(|k| CaKeyBody {
                public_key: k.public_key,
                fingerprint: k.fingerprint,
                created: k.created,
                signing: k.signing,
            })
            .collect(),
        known_hosts: ca.known_hosts_lines(),
    }
}

/// The CA's keys.
#[utoipa::path(get, path = "/api/ssh/ca", tag = "ssh",
    responses((status = 200, body = CaView), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show_ca(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<CaView>, ApiError> {
    let ca = ca(&state)?;
    Ok(Json(view(&ca)))
}

/// Introduces a new signing key next to the old ones (all stay trusted until retired).
#[utoipa::path(post, path = "/api/ssh/ca/rotate", tag = "ssh",
    responses((status = 200, body = CaView), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Json<CaView>, ApiError> {
    let ca = ca(&state)?;
    let new = ca.rotate(unix_now()).map_err(ca_error)?;
    super::ssh_agent::changed(&state);
    audit(&state, &admin.username, "ssh.ca.rotate", &new.fingerprint)?;
    Ok(Json(view(&ca)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetireRequest {
    /// The old key's SHA-256 fingerprint (`SHA256:…`).
    pub fingerprint: String,
}

/// Stops trusting an old CA key.
#[utoipa::path(post, path = "/api/ssh/ca/retire", tag = "ssh", request_body = RetireRequest,
    responses((status = 200, body = CaView), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn retire(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(req): StrictJson<RetireRequest>,
) -> Result<Json<CaView>, ApiError> {
    let ca = ca(&state)?;
    ca.retire(&req.fingerprint).map_err(ca_error)?;
    super::ssh_agent::changed(&state);
    audit(&state, &admin.username, "ssh.ca.retire", &req.fingerprint)?;
    Ok(Json(view(&ca)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertBody {
    /// The key to certify, one OpenSSH line (`ssh-ed25519 AAAA… comment`).
    #[schema(min_length = 1, max_length = 4096)]
    pub public_key: String,
    /// User names (user certificates) or host names (host certificates).
    #[schema(min_items = 1, max_items = 32)]
    pub principals: Vec<String>,
    /// Seconds the certificate is valid (60 to 31536000); default 16 h for users, 30 days
    /// for hosts.
    #[schema(minimum = 60, maximum = 31536000)]
    pub validity_secs: Option<u64>,
    /// Unix seconds it starts (at most 30 days back); default a minute ago.
    pub valid_after: Option<u64>,
    /// Shown in sshd's log when the certificate is used.
    #[schema(max_length = 255)]
    pub key_id: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CertIssued {
    /// One OpenSSH line: save as `KEY-cert.pub` next to the key.
    pub certificate: String,
    pub serial: u64,
    pub key_fingerprint: String,
    pub ca_fingerprint: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
}

/// Signs, stores and audits one certificate; `issued_by` is the admin, or `agent:ID`
/// for a host certificate an agent asked for.
pub(crate) fn issue(
    state: &AppState,
    issued_by: &str,
    kind: CertKind,
    body: CertBody,
) -> Result<CertIssued, ApiError> {
    if body.public_key.len() > 4096 {
        return Err(ApiError::Invalid(
            "public_key: at most 4096 characters".into(),
        ));
    }
    let ca = ca(state)?;
    let now = unix_now();
    let default = match kind {
        CertKind::User => DEFAULT_USER_VALIDITY,
        CertKind::Host => DEFAULT_HOST_VALIDITY,
    };
    let validity = body.validity_secs.unwrap_or(default);
    if !(60..=watchgrid_sshca::MAX_VALIDITY_SECS).contains(&validity) {
        return Err(ApiError::Invalid("validity_secs: 60 to 31536000".into()));
    }
    let valid_after = body.valid_after.unwrap_or(now.saturating_sub(SKEW));
    let serial = state.store.next_id()?;
    let request = CertRequest {
        kind,
        public_key: body.public_key,
        principals: body.principals,
        valid_after,
        valid_before: valid_after.saturating_add(validity),
        serial,
        key_id: body
            .key_id
            .unwrap_or_else(|| format!("watchgrid-{}-{serial}", kind.as_str())),
    };
    let issued = ca.sign(&request, now).map_err(ca_error)?;
    let record = SshCertRecord {
        serial,
        kind: kind.as_str().into(),
        key_id: request.key_id.clone(),
        key_fingerprint: issued.key_fingerprint.clone(),
        ca_fingerprint: issued.ca_fingerprint.clone(),
        principals: issued.principals.clone(),
        valid_after: issued.valid_after,
        valid_before: issued.valid_before,
        issued_at: now,
        issued_by: issued_by.to_string(),
        revoked_at: None,
    };
    state.store.ssh_certs.put(&ssh_cert_key(serial), &record)?;
    audit(
        state,
        issued_by,
        &format!("ssh.cert.{}", kind.as_str()),
        &format!(
            "serial {serial} key {} principals {} valid {}..{}",
            issued.key_fingerprint,
            issued.principals.join(","),
            issued.valid_after,
            issued.valid_before
        ),
    )?;
    Ok(CertIssued {
        certificate: issued.certificate,
        serial,
        key_fingerprint: issued.key_fingerprint,
        ca_fingerprint: issued.ca_fingerprint,
        principals: issued.principals,
        valid_after: issued.valid_after,
        valid_before: issued.valid_before,
    })
}

/// Signs a user's public key for the given principals (login names).
#[utoipa::path(post, path = "/api/ssh/user-certs", tag = "ssh", request_body = CertBody,
    responses((status = 200, body = CertIssued), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn sign_user(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(body): StrictJson<CertBody>,
) -> Result<Json<CertIssued>, ApiError> {
    issue(&state, &admin.username, CertKind::User, body).map(Json)
}

/// Signs a host's public key for the given host names.
#[utoipa::path(post, path = "/api/ssh/host-certs", tag = "ssh", request_body = CertBody,
    responses((status = 200, body = CertIssued), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn sign_host(
    State(state): State<AppState>,
    admin: Admin,
    StrictJson(body): StrictJson<CertBody>,
) -> Result<Json<CertIssued>, ApiError> {
    issue(&state, &admin.username, CertKind::Host, body).map(Json)
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CertView {
    pub serial: u64,
    pub kind: String,
    pub key_id: String,
    pub key_fingerprint: String,
    pub ca_fingerprint: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub issued_at: u64,
    pub issued_by: String,
    pub revoked_at: Option<u64>,
}

impl From<SshCertRecord> for CertView {
    fn from(r: SshCertRecord) -> CertView {
        CertView {
            serial: r.serial,
            kind: r.kind,
            key_id: r.key_id,
            key_fingerprint: r.key_fingerprint,
            ca_fingerprint: r.ca_fingerprint,
            principals: r.principals,
            valid_after: r.valid_after,
            valid_before: r.valid_before,
            issued_at: r.issued_at,
            issued_by: r.issued_by,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CertList {
    /// Newest first.
    pub certs: Vec<CertView>,
}

/// Every certificate issued, newest first.
#[utoipa::path(get, path = "/api/ssh/certs", tag = "ssh",
    responses((status = 200, body = CertList), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<CertList>, ApiError> {
    let certs = newest_first(&state)?;
    Ok(Json(CertList { certs }))
}

/// Every issued certificate, newest first (serials only grow).
pub(crate) fn newest_first(state: &AppState) -> Result<Vec<CertView>, ApiError> {
    let mut certs: Vec<CertView> = state
        .store
        .ssh_certs
        .list()?
        .into_iter()
        .map(Into::into)
        .collect();
    certs.reverse();
    Ok(certs)
}

/// Revokes a certificate: it is in the KRL (`/downloads/ssh-revoked.krl`) from now on.
#[utoipa::path(post, path = "/api/ssh/certs/{serial}/revoke", tag = "ssh",
    params(("serial" = String, Path, description = "the certificate's serial")),
    responses((status = 200, body = CertView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    admin: Admin,
    Path(serial): Path<String>,
) -> Result<Json<CertView>, ApiError> {
    let serial: u64 = serial.parse().map_err(|_| ApiError::NotFound)?;
    let now = unix_now();
    let updated = state
        .store
        .ssh_certs
        .update(&ssh_cert_key(serial), |cur| match cur {
            Some(r) => Ok(Some(SshCertRecord {
                revoked_at: r.revoked_at.or(Some(now)),
                ..r
            })),
            None => Err(()),
        })?;
    let Ok(Some(record)) = updated else {
        return Err(ApiError::NotFound);
    };
    super::ssh_agent::changed(&state);
    audit(
        &state,
        &admin.username,
        "ssh.cert.revoke",
        &format!("serial {serial}"),
    )?;
    Ok(Json(record.into()))
}

async fn ca_pub(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        ca(&state)?.authorized_lines(),
    ))
}

async fn known_hosts(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        ca(&state)?.known_hosts_lines(),
    ))
}

/// The KRL of every revoked serial; its version is the newest revocation's time.
async fn krl(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let revoked: Vec<SshCertRecord> = state
        .store
        .ssh_certs
        .list()?
        .into_iter()
        .filter(|r| r.revoked_at.is_some())
        .collect();
    let serials: Vec<u64> = revoked.iter().map(|r| r.serial).collect();
    let version = revoked
        .iter()
        .filter_map(|r| r.revoked_at)
        .max()
        .unwrap_or(0);
    let bytes = ca(&state)?
        .krl(&serials, version, unix_now())
        .map_err(ca_error)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}
