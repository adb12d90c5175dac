//! One error type for every handler; turned into a response in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input (SPEC §6: 422, nothing processed).
    #[error("{0}")]
    Invalid(String),
    #[error("request body too large")]
    TooLarge,
    /// Deliberately generic: never says which part of a credential was wrong.
    #[error("unauthorized")]
    Unauthorized,
    /// The password was right and the account has 2FA: ask for the code.
    #[error("two-factor code required")]
    TwoFactorRequired,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// A dependency (the firewall) could not apply a change; nothing changed.
    #[error("{0}")]
    Unavailable(String),
    /// The server is saturated (password hashing); try again after the delay.
    #[error("busy: try again shortly")]
    Busy { retry_after_secs: u64 },
    #[error("setup is not complete: finish it in the setup wizard first")]
    SetupRequired,
    /// No firewall ruleset is in force: everything but `/healthz` stays shut.
    #[error("the firewall is not applied: until it is, this appliance answers only /healthz (the journal and the metrics say why)")]
    Unprotected,
    /// Logged in full, answered with generic text.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized | ApiError::TwoFactorRequired => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::SetupRequired
            | ApiError::Unprotected
            | ApiError::Unavailable(_)
            | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<watchgrid_store::StoreError> for ApiError {
    fn from(e: watchgrid_store::StoreError) -> Self {
        match e {
            // A duplicate key or a full subnet: the request's, not the server's, problem.
            watchgrid_store::StoreError::Conflict(m) => ApiError::Conflict(m),
            e => ApiError::Internal(format!("store: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let status = self.status();
        let mut resp = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if let ApiError::TooManyRequests { retry_after_secs }
        | ApiError::Busy { retry_after_secs } = self
        {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
