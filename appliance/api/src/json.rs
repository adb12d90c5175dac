//! A JSON body extractor with the SPEC §6 answers: any malformed body (bad syntax, wrong
//! types, unknown fields, wrong content type) is 422 and nothing is processed; a body
//! over the limit is 413.

use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

pub struct StrictJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(StrictJson(v)),
            Err(rejection) => Err(map_rejection(rejection)),
        }
    }
}

fn map_rejection(r: JsonRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge
    } else {
        ApiError::Invalid(r.body_text())
    }
}

/// A body that is JSON (API clients) or an HTML form post (the server-rendered pages);
/// both get the same strict parsing. `from_form` tells the handler to answer with a page.
pub struct JsonOrForm<T> {
    pub value: T,
    pub from_form: bool,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            let StrictJson(value) = StrictJson::from_request(req, state).await?;
            return Ok(JsonOrForm {
                value,
                from_form: false,
            });
        }
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(JsonOrForm {
                value,
                from_form: true,
            }),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge),
            Err(r) => Err(ApiError::Invalid(r.body_text())),
        }
    }
}

/// A query-string extractor with the same answer as a bad body: unknown parameters and
/// values of the wrong type are 422 (axum's own `Query` answers 400).
pub struct StrictQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(StrictQuery(v)),
            Err(r) => Err(ApiError::Invalid(r.body_text())),
        }
    }
}
