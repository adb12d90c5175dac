//! First boot (SPEC §4): the setup token, `/api/setup`, and headless provisioning.

use super::{audit, limit};
use crate::auth::{hash_password, ClientIp};
use crate::dto::{ErrorBody, Status};
use crate::error::ApiError;
use crate::json::JsonOrForm;
use crate::limits::SETUP;
use crate::routes::pages::{page, setup_form};
use crate::secrets::ct_eq;
use crate::state::{unix_now, AppState};
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use watchgrid_store::{AdminUser, Sensitive, Settings, Store, TlsChoice, SETTINGS_KEY};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/setup", post(setup))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    #[schema(min_length = 1)]
    pub setup_token: String,
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub admin_username: String,
    #[schema(min_length = 12, max_length = 1024)]
    pub admin_password: String,
    /// `host:port` devices dial.
    #[schema(
        example = "vpn.example.com:51820",
        pattern = "^[A-Za-z0-9.:\\[\\]-]+:[1-9][0-9]{0,4}$"
    )]
    pub endpoint: String,
    /// The VPN's IPv4 subnet (default 10.100.0.0/16); the hub takes its first address.
    #[schema(example = "10.100.0.0/16")]
    pub vpn_subnet: Option<String>,
    /// `internal` (default), `acme` or `uploaded`.
    #[schema(example = "internal")]
    pub tls_mode: Option<String>,
    /// For `acme`: the public domain that resolves to this appliance.
    pub acme_domain: Option<String>,
    pub acme_email: Option<String>,
    /// For `uploaded`: the certificate chain and its private key, PEM.
    pub tls_cert_pem: Option<String>,
    pub tls_key_pem: Option<String>,
}

/// The TLS choice of a setup request, checked.
fn tls_choice(req: &SetupRequest) -> Result<TlsChoice, ApiError> {
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    match req
        .tls_mode
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        None | Some("internal") => Ok(TlsChoice::Internal),
        Some("acme") => {
            let domain = nonempty(&req.acme_domain).ok_or_else(|| {
                ApiError::Invalid("acme_domain: required for tls_mode acme".into())
            })?;
            let ok = domain.len() <= 253
                && domain.contains('.')
                && domain.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(ApiError::Invalid("acme_domain: not a domain name".into()));
            }
            let email = nonempty(&req.acme_email);
            if email
                .as_deref()
                .is_some_and(|e| !e.contains('@') || e.chars().any(char::is_whitespace))
            {
                return Err(ApiError::Invalid("acme_email: not an email address".into()));
            }
            Ok(TlsChoice::Acme { domain, email })
        }
        Some("uploaded") => {
            if nonempty(&req.tls_cert_pem).is_none() || nonempty(&req.tls_key_pem).is_none() {
                return Err(ApiError::Invalid(
                    "tls_cert_pem and tls_key_pem: required for tls_mode uploaded".into(),
                ));
            }
            Ok(TlsChoice::Uploaded)
        }
        Some(_) => Err(ApiError::Invalid(
            "tls_mode: internal, acme or uploaded".into(),
        )),
    }
}

/// An IPv4 subnet for the VPN: a network address, /8 to /29, in a private range.
pub fn parse_vpn_subnet(s: &str) -> Result<(std::net::Ipv4Addr, u8), ApiError> {
    let bad = |why: &str| ApiError::Invalid(format!("vpn_subnet: {why}, e.g. 10.100.0.0/16"));
    let (addr, len) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
    let len: u8 = len.parse().map_err(|_| bad("bad prefix length"))?;
    if !(8..=29).contains(&len) {
        return Err(bad("prefix length must be 8 to 29"));
    }
    if !addr.is_private() {
        return Err(bad(
            "must be in a private range (10/8, 172.16/12, 192.168/16)",
        ));
    }
    let mask = u32::MAX << (32 - u32::from(len));
    if u32::from(addr) & !mask != 0 {
        return Err(bad("host bits set; give the network address"));
    }
    Ok((addr, len))
}

pub fn validate_username(u: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&u.len())
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "admin_username: 1 to 64 letters, digits, '.', '_' or '-'".into(),
        ))
    }
}

pub fn validate_password(p: &str) -> Result<(), ApiError> {
    if p.chars().count() < 12 || p.len() > 1024 {
        return Err(ApiError::Invalid(
            "admin_password: at least 12 characters".into(),
        ));
    }
    Ok(())
}

pub fn validate_endpoint(e: &str) -> Result<(), ApiError> {
    let bad =
        || ApiError::Invalid("endpoint: expected HOST:PORT, e.g. vpn.example.com:51820".into());
    let (host, port) = e.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty()
        || host.len() > 253
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
        || port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(bad());
    }
    Ok(())
}

/// Creates the admin and the settings; the settings record marks setup complete, so it
/// is written last and only if absent (a second, concurrent setup gets 409).
pub async fn provision(
    store: &Store,
    username: &str,
    password: &str,
    endpoint: &str,
    jwt_secret: Option<&str>,
    subnet: (std::net::Ipv4Addr, u8),
    tls: TlsChoice,
) -> Result<(), ApiError> {
    validate_username(username)?;
    validate_password(password)?;
    validate_endpoint(endpoint)?;
    let now = unix_now();
    let password_hash = hash_password(password.to_string()).await?;
    let secret = match jwt_secret {
        Some(s) => s.to_string(),
        None => {
            let mut b = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
            hex::encode(b)
        }
    };
    store.admins.put(
        username,
        &AdminUser {
            username: username.to_string(),
            password_hash: Sensitive::new(password_hash),
            sessions_valid_after: 0,
            created_at: now,
            totp_secret: None,
            totp_pending: None,
            totp_last_step: 0,
            recovery_code_hashes: Vec::new(),
            credential_epoch: 0,
        },
    )?;
    let created = store.settings.put_new(
        SETTINGS_KEY,
        &Settings {
            endpoint: endpoint.to_string(),
            vpn_subnet_v4: subnet.0,
            vpn_prefix_v4: subnet.1,
            jwt_secret: Sensitive::new(secret),
            setup_completed_at: now,
            tls,
        },
    )?;
    if !created {
        return Err(ApiError::Conflict(
            "setup has already been completed".into(),
        ));
    }
    Ok(())
}

/// Completes first-boot setup with the one-time token (also accepts an HTML form post).
#[utoipa::path(post, path = "/api/setup", tag = "setup", request_body = SetupRequest,
    responses((status = 200, body = Status), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn setup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    body: Result<JsonOrForm<SetupRequest>, ApiError>,
) -> Response {
    let from_form = body.as_ref().is_ok_and(|b| b.from_form);
    let result = match body {
        Ok(b) => run_setup(&state, ip, b.value).await,
        Err(e) => Err(e),
    };
    match (result, from_form) {
        (Ok(()), false) => Json(Status::new("ok")).into_response(),
        (Ok(()), true) => Redirect::to("/login").into_response(),
        (Err(e), true) => (
            e.status(),
            page("Set up", &setup_form(Some(&e.to_string()))),
        )
            .into_response(),
        (Err(e), false) => e.into_response(),
    }
}

/// Switches the HTTPS certificate as chosen; the internal CA needs nothing.
fn apply_tls(state: &AppState, tls: &TlsChoice, req: &SetupRequest) -> Result<(), ApiError> {
    if *tls == TlsChoice::Internal {
        return Ok(());
    }
    let switch = state.tls.get().ok_or_else(|| {
        ApiError::internal("this appliance cannot change its certificate at run time")
    })?;
    match tls {
        TlsChoice::Internal => Ok(()),
        TlsChoice::Uploaded => switch
            .use_uploaded(
                req.tls_cert_pem.as_deref().unwrap_or_default(),
                req.tls_key_pem.as_deref().unwrap_or_default(),
            )
            .map_err(|e| ApiError::Invalid(format!("uploaded certificate: {e}"))),
        TlsChoice::Acme { domain, email } => switch
            .use_acme(domain, email.as_deref())
            .map_err(|e| ApiError::internal(format!("starting ACME: {e}"))),
    }
}

async fn run_setup(
    state: &AppState,
    ip: std::net::IpAddr,
    req: SetupRequest,
) -> Result<(), ApiError> {
    limit(state, SETUP, ip)?;
    if state.setup_done()? {
        return Err(ApiError::Conflict(
            "setup has already been completed".into(),
        ));
    }
    validate_username(&req.admin_username)?;
    validate_password(&req.admin_password)?;
    validate_endpoint(&req.endpoint)?;
    let tls = tls_choice(&req)?;
    let subnet = match req.vpn_subnet.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => parse_vpn_subnet(s)?,
        None => (state.config.vpn_subnet, state.config.vpn_prefix),
    };
    // Claim the token: a concurrent second request with the same token finds none.
    let token = {
        let mut slot = state
            .setup_token
            .lock()
            .map_err(|_| ApiError::internal("setup token lock poisoned"))?;
        match slot.as_deref() {
            Some(t) if ct_eq(t, &req.setup_token) => slot.take(),
            _ => None,
        }
    };
    let Some(token) = token else {
        return Err(ApiError::Forbidden("invalid setup token"));
    };
    // The hub moves into the chosen subnet before setup is recorded as complete.
    let moved =
        if subnet != (state.config.vpn_subnet, state.config.vpn_prefix) {
            let hub = std::net::Ipv4Addr::from(u32::from(subnet.0) | 1);
            state.hub.set_hub_address(hub, subnet.1).await.map_err(|e| {
                ApiError::internal(format!("moving the hub to {hub}/{}: {e}", subnet.1))
            })
        } else {
            Ok(())
        };
    // Then the certificate: a bad upload is refused before anything is recorded.
    let moved = moved.and_then(|()| apply_tls(state, &tls, &req));
    let result = match moved {
        Err(e) => Err(e),
        Ok(()) => {
            provision(
                &state.store,
                &req.admin_username,
                &req.admin_password,
                &req.endpoint,
                state
                    .config
                    .jwt_secret
                    .as_ref()
                    .map(|s| s.expose().as_str()),
                subnet,
                tls.clone(),
            )
            .await
        }
    };
    if let Err(e) = result {
        // Nothing was completed: the token stays valid for the next attempt.
        if let Ok(mut slot) = state.setup_token.lock() {
            if !state.setup_done().unwrap_or(true) {
                *slot = Some(token);
            }
        }
        return Err(e);
    }
    forget_token_file(state);
    audit(state, &req.admin_username, "setup.complete", &req.endpoint)?;
    // The VPN subnet may have moved: the default fence and the masquerade follow it.
    super::firewall::refresh_fence(state)?;
    state.firewall_changed().await;
    Ok(())
}

/// The token is dead once setup completes: its file goes, so the console stops showing
/// it. A failure is logged, not returned: setup has already been recorded.
fn forget_token_file(state: &AppState) {
    let Some(path) = &state.config.setup_token_file else {
        return;
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "removing the setup token file")
        }
    }
}
