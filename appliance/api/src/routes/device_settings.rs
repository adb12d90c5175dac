//! The device page's settings: groups, the monthly quota and the expiry, each a form
//! that goes through the same API handler a script would call.

use super::fleet_pages::{refused, render_device, time};
use super::pages::esc;
use super::ui::Frame;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::{unix_now, AppState};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::{Form, Router};
use serde::Deserialize;

/// The settings forms, for the admin API's protection (session, CSRF token, Origin, fence).
pub fn forms_router() -> Router<AppState> {
    Router::new()
        .route("/forms/devices/{id}/groups", post(set_groups))
        .route("/forms/devices/{id}/quota", post(set_quota))
        .route("/forms/devices/{id}/quota/remove", post(remove_quota))
        .route("/forms/devices/{id}/expiry", post(set_expiry))
        .route("/forms/devices/{id}/expiry/clear", post(clear_expiry))
}

/// Groups and the monthly quota: the forms that change them.
pub(crate) fn settings_forms(
    state: &AppState,
    frame: &Frame,
    d: &watchgrid_store::Device,
) -> Result<String, ApiError> {
    let id = esc(&d.id);
    let quota = super::traffic::quota_view(state, &d.id, unix_now())?;
    let (limit, action) = quota.as_ref().map_or((String::new(), "alert"), |q| {
        let gib = q.monthly_bytes as f64 / f64::from(1u32 << 30);
        let action = match q.action {
            watchgrid_store::QuotaAction::Disable => "disable",
            watchgrid_store::QuotaAction::Alert => "alert",
        };
        (format!("{gib}"), action)
    });
    let state_line = quota.as_ref().map_or(
        "<p class=\"muted\" id=\"quota-state\">No monthly quota.</p>".to_string(),
        |q| {
            format!(
                "<p id=\"quota-state\">{} of {} used this month{}{}.</p>",
                super::pages::bytes(q.used_bytes),
                super::pages::bytes(q.monthly_bytes),
                if q.crossed { " · crossed" } else { "" },
                if q.disabled_by_quota {
                    " · disabled until the month turns"
                } else {
                    ""
                }
            )
        },
    );
    let option = |v: &str, label: &str| {
        let selected = if v == action { " selected" } else { "" };
        format!("<option value=\"{v}\"{selected}>{label}</option>")
    };
    let remove = if quota.is_some() {
        frame.button(
            &format!("/forms/devices/{id}/quota/remove"),
            "Remove the quota",
            "quota-remove",
        )
    } else {
        String::new()
    };
    Ok(format!(
        "<h2>Groups</h2><form method=\"post\" action=\"/forms/devices/{id}/groups\">{f}\
         <label for=\"groups\">Groups (comma separated; firewall rules refer to them)</label>\
         <input id=\"groups\" name=\"groups\" value=\"{}\" maxlength=\"600\">\
         <button type=\"submit\" id=\"groups-save\">Save the groups</button></form>\
         <h2>Monthly quota</h2>{state_line}<form method=\"post\" action=\"/forms/devices/{id}/quota\">{f}\
         <label for=\"quota-gib\">GiB a month, received plus sent</label>\
         <input id=\"quota-gib\" name=\"gib\" type=\"number\" min=\"0.001\" step=\"any\" value=\"{limit}\" required>\
         <label for=\"quota-action\">When crossed</label><select id=\"quota-action\" name=\"action\">{}{}</select>\
         <button type=\"submit\" id=\"quota-save\">Save the quota</button></form>{remove}{}",
        esc(&d.groups.join(", ")),
        option("alert", "send an alert"),
        option("disable", "disable the device until the month turns"),
        expiry_form(frame, d),
        f = frame.field(),
    ))
}

/// The expiry: when it is, a form to set it as days from now, and one to clear it.
fn expiry_form(frame: &Frame, d: &watchgrid_store::Device) -> String {
    let id = esc(&d.id);
    let (state_line, clear) = match d.expires_at {
        Some(at) => (
            format!(
                "<p id=\"expiry-state\">{} {}.</p>",
                if d.is_expired(unix_now()) {
                    "Expired"
                } else {
                    "Expires"
                },
                time(at * 1_000_000)
            ),
            frame.button(
                &format!("/forms/devices/{id}/expiry/clear"),
                "Never expire",
                "expiry-clear",
            ),
        ),
        None => (
            "<p class=\"muted\" id=\"expiry-state\">Never expires.</p>".to_string(),
            String::new(),
        ),
    };
    format!(
        "<h2>Expiry</h2>{state_line}<form method=\"post\" action=\"/forms/devices/{id}/expiry\">{}\
         <label for=\"expiry-days\">Disable automatically in this many days (decimals allowed; 1 minute to 10 years)</label>\
         <input id=\"expiry-days\" name=\"days\" type=\"number\" min=\"0.0007\" max=\"3650\" step=\"any\" required>\
         <button type=\"submit\" id=\"expiry-save\">Save the expiry</button></form>{clear}\
         <p class=\"muted\">A device its expiry disabled stays disabled until you enable it.</p>",
        frame.field()
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupsForm {
    #[serde(default)]
    groups: String,
}

async fn set_groups(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    form: Result<Form<GroupsForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let Form(f) = form.map_err(|r| ApiError::Invalid(r.body_text()))?;
        let groups = super::device_pages::list(&f.groups);
        let body = crate::json::StrictJson(super::firewall::GroupsBody { groups });
        super::firewall::set_groups(State(state.clone()), admin.clone(), Path(id.clone()), body)
            .await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/devices/{id}?done=groups")).into_response()),
        Err(e @ ApiError::Unavailable(_)) => {
            let message = e.to_string();
            render_device(&state, &admin, &id, None, None, Some(&message), e.status()).await
        }
        Err(e) => refused(&state, &admin, &id, e).await,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaForm {
    #[serde(default)]
    gib: String,
    #[serde(default)]
    action: String,
}

impl QuotaForm {
    /// GiB (decimals allowed) as the API's byte count; its range is the API's to check.
    fn body(&self) -> Result<serde_json::Value, ApiError> {
        let gib: f64 = self
            .gib
            .trim()
            .parse()
            .ok()
            .filter(|g: &f64| g.is_finite() && *g > 0.0)
            .ok_or_else(|| ApiError::Invalid("quota: a number of GiB above 0".into()))?;
        let bytes = (gib * f64::from(1u32 << 30)).round();
        if bytes > u64::MAX as f64 {
            return Err(ApiError::Invalid("quota: at most 1 EiB".into()));
        }
        Ok(serde_json::json!({"monthly_bytes": bytes as u64, "action": self.action.trim()}))
    }
}

async fn set_quota(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    form: Result<Form<QuotaForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let Form(f) = form.map_err(|r| ApiError::Invalid(r.body_text()))?;
        let body = serde_json::from_value(f.body()?)
            .map(crate::json::StrictJson)
            .map_err(|e| ApiError::Invalid(format!("quota: {e}")))?;
        super::traffic::set_quota(State(state.clone()), admin.clone(), Path(id.clone()), body).await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/devices/{id}?done=quota")).into_response()),
        Err(e) => refused(&state, &admin, &id, e).await,
    }
}

async fn remove_quota(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let _removed =
        super::traffic::remove_quota(State(state.clone()), admin, Path(id.clone())).await?;
    Ok(Redirect::to(&format!("/devices/{id}?done=quota-removed")).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiryForm {
    #[serde(default)]
    days: String,
}

impl ExpiryForm {
    /// Days (decimals allowed) as the API's seconds; its range is the API's to check.
    fn body(&self) -> Result<super::devices::ExpiryBody, ApiError> {
        let days: f64 = self
            .days
            .trim()
            .parse()
            .ok()
            .filter(|d: &f64| d.is_finite() && *d > 0.0 && *d <= 3650.0)
            .ok_or_else(|| {
                ApiError::Invalid("expiry: a number of days above 0, at most 3650".into())
            })?;
        Ok(super::devices::ExpiryBody {
            expires_in_secs: Some((days * 86_400.0).round() as u64),
        })
    }
}

async fn set_expiry(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    form: Result<Form<ExpiryForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let Form(f) = form.map_err(|r| ApiError::Invalid(r.body_text()))?;
        let body = crate::json::StrictJson(f.body()?);
        super::devices::set_expiry(State(state.clone()), admin.clone(), Path(id.clone()), body)
            .await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/devices/{id}?done=expiry")).into_response()),
        Err(e) => refused(&state, &admin, &id, e).await,
    }
}

async fn clear_expiry(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let body = crate::json::StrictJson(super::devices::ExpiryBody {
        expires_in_secs: None,
    });
    let _cleared =
        super::devices::set_expiry(State(state.clone()), admin, Path(id.clone()), body).await?;
    Ok(Redirect::to(&format!("/devices/{id}?done=expiry-cleared")).into_response())
}
