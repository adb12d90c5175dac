//! CSRF tokens for the dashboard's forms. The session cookie is `SameSite=Strict` and
//! the admin API checks `Origin`, but a page on a sibling subdomain is "same-site", and
//! some clients omit `Origin`: a form post authenticated by the cookie must also carry
//! a token only our own pages know.
//!
//! The token is an HMAC of the session's id under the session-signing secret, so it
//! needs no storage, differs per session and dies with it. Requests a cross-site page
//! can send without a CORS preflight are the ones checked: a cookie-authenticated POST
//! with a body that is not JSON (form-urlencoded, multipart, text/plain, or none).
//! PUT, PATCH, DELETE and JSON bodies need a preflight, which the Origin check refuses. The token comes in the `csrf` form field, which is removed before the
//! handler reads the form, or in the `x-csrf-token` header (scripts).

use crate::auth::Claims;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The form field and the header that carry the token.
pub const FIELD: &str = "csrf";
pub const HEADER: &str = "x-csrf-token";

/// The largest form the check buffers: what any request body may be.
const FORM_LIMIT: usize = crate::BODY_LIMIT;

/// The token for one session.
pub fn token(secret: &[u8], session: &Claims) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(b"watchgrid csrf v1\0");
    mac.update(session.jti.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The hidden form field our pages put in every form they post with the session.
pub fn hidden_field(token: &str) -> String {
    format!("<input type=\"hidden\" name=\"{FIELD}\" value=\"{token}\">")
}

/// Whether a request needs the token: a POST sent with the cookie whose body a
/// cross-site form or a no-CORS fetch could have produced.
pub fn required(req: &Request, by_cookie: bool) -> bool {
    let post = req.method() == Method::POST;
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    by_cookie && post && !json
}

/// Checks the token and hands the request on with the `csrf` field removed from its
/// form; refuses with 403 (nothing processed) when it is missing or wrong.
pub async fn verify(req: Request, expected: &str) -> Result<Request, ApiError> {
    if let Some(sent) = req.headers().get(HEADER).and_then(|v| v.to_str().ok()) {
        return if same(sent, expected) {
            Ok(req)
        } else {
            Err(refused())
        };
    }
    let urlencoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !urlencoded {
        return Err(refused());
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| ApiError::TooLarge)?;
    let (sent, rest) = split_token(&bytes);
    if !sent.is_some_and(|s| same(&s, expected)) {
        return Err(refused());
    }
    Ok(Request::from_parts(parts, Body::from(rest)))
}

/// The form's `csrf` value (the first, if several) and the form without any of them.
fn split_token(form: &[u8]) -> (Option<String>, String) {
    let mut token = None;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(form) {
        if k == FIELD {
            token.get_or_insert_with(|| v.into_owned());
        } else {
            rest.append_pair(&k, &v);
        }
    }
    (token, rest.finish())
}

fn same(sent: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

fn refused() -> ApiError {
    ApiError::Forbidden(
        "the form's security token is missing or stale: reload the page and try again",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str) -> Claims {
        Claims {
            sub: "admin".into(),
            jti: jti.into(),
            iat: 0,
            exp: 0,
            epoch: 0,
        }
    }

    #[test]
    fn tokens_differ_per_session_and_per_secret() {
        let a = token(b"secret", &claims("one"));
        assert_eq!(a.len(), 43, "256 bits, base64url");
        assert_eq!(a, token(b"secret", &claims("one")));
        assert_ne!(a, token(b"secret", &claims("two")));
        assert_ne!(a, token(b"other", &claims("one")));
    }

    #[test]
    fn the_token_field_is_taken_out_of_the_form() {
        let (t, rest) = split_token(b"name=a+b&csrf=T0K&uses=1&csrf=again");
        assert_eq!(t.as_deref(), Some("T0K"));
        assert_eq!(rest, "name=a+b&uses=1");
        assert_eq!(split_token(b"name=x"), (None, "name=x".to_string()));
    }

    #[test]
    fn an_empty_expected_token_matches_nothing() {
        assert!(!same("", ""));
        assert!(same("abc", "abc"));
        assert!(!same("abd", "abc"));
    }
}
