//! The dashboard's Firewall page: the applied state, and the policy editor (forward
//! rules by group, network, protocol and ports; egress; the admin fence). Saving goes
//! through `PUT /api/firewall`'s handler, so the page shows the API's own validation
//! messages and a policy the kernel refuses changes nothing.

use super::firewall::{FirewallView, RuleBody};
use super::pages::esc;
use super::ui::{notice, DoneQuery, Frame, Nav};
use crate::auth::{Admin, ClientIp};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new().route("/firewall", get(firewall_page))
}

/// The editor's form, for the admin API's protection (session, CSRF token, Origin, fence).
pub fn forms_router() -> Router<AppState> {
    Router::new().route("/forms/firewall", post(save))
}

/// Empty rows the editor offers for new rules.
const NEW_ROWS: usize = 2;

async fn firewall_page(
    State(state): State<AppState>,
    admin: Result<Admin, ApiError>,
    q: Result<Query<DoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Some(admin) = super::fleet_pages::signed_in(admin)? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let saved = q.ok().and_then(|Query(q)| q.done).as_deref() == Some("saved");
    let ok = saved.then_some("The policy is saved and applied.");
    render(&state, &admin, ok, None, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    admin: &Admin,
    ok: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let frame = Frame::of(state, admin)?;
    let Json(view) = super::firewall::show(State(state.clone()), admin.clone()).await?;
    let body = format!(
        "<h1>Firewall</h1>{}{}{}",
        notice(ok, error),
        super::pages::firewall_section(state)?,
        editor(&frame, &view)
    );
    Ok((status, frame.page("Firewall", Nav::Firewall, &body)).into_response())
}

fn rule_row(i: usize, r: Option<&RuleBody>) -> String {
    let value = |s: Option<&str>| esc(s.unwrap_or(""));
    let to = r.and_then(|r| r.to_group.as_deref().or(r.to_cidr.as_deref()));
    let protocol = r.map_or("tcp", |r| r.protocol.as_str());
    let options: String = ["tcp", "udp", "icmp", "any"]
        .iter()
        .map(|p| {
            let selected = if *p == protocol { " selected" } else { "" };
            format!("<option{selected}>{p}</option>")
        })
        .collect();
    let remove = if r.is_some() {
        format!(
            "<label><input type=\"checkbox\" name=\"remove_{i}\" value=\"on\" id=\"remove-{i}\">Remove</label>"
        )
    } else {
        String::new()
    };
    format!(
        "<tr><td><input name=\"from_{i}\" id=\"from-{i}\" aria-label=\"Rule {n}: from group\" value=\"{}\"></td>\
         <td><input name=\"to_{i}\" id=\"to-{i}\" aria-label=\"Rule {n}: to group or network\" value=\"{}\"></td>\
         <td><select name=\"protocol_{i}\" id=\"protocol-{i}\" aria-label=\"Rule {n}: protocol\">{options}</select></td>\
         <td><input name=\"ports_{i}\" id=\"ports-{i}\" aria-label=\"Rule {n}: ports\" value=\"{}\"></td><td>{remove}</td></tr>",
        value(r.map(|r| r.from_group.as_str())),
        value(to),
        esc(&r.map(|r| r.ports.join(", ")).unwrap_or_default()),
        n = i + 1,
    )
}

fn editor(frame: &Frame, view: &FirewallView) -> String {
    let rows: String = view
        .rules
        .iter()
        .map(Some)
        .chain(std::iter::repeat_n(None, NEW_ROWS))
        .enumerate()
        .map(|(i, r)| rule_row(i, r))
        .collect();
    let fence = if view.admin_cidrs_default {
        String::new()
    } else {
        view.admin_cidrs.join("\n")
    };
    let fixed = if view.admin_cidrs_fixed {
        " disabled aria-describedby=\"fence-fixed\""
    } else {
        ""
    };
    format!(
        "<h2 id=\"policy\">Change the policy</h2><form method=\"post\" action=\"/forms/firewall\">{}\
         <p class=\"note\">A rule lets devices of a group reach a group or a network (<code>192.168.1.0/24</code>). \
         Ports: <code>22</code> or <code>9000-9100</code>, comma separated, TCP and UDP only; empty: all. \
         Empty rows are ignored.</p>\
         <div class=\"scroll\"><table id=\"rules-editor\"><tr><th>From group</th><th>To</th><th>Protocol</th>\
         <th>Ports</th><th></th></tr>{rows}</table></div>\
         <label><input type=\"checkbox\" name=\"egress\" value=\"on\" id=\"egress\"{}>Let peers reach networks \
         behind the hub (masqueraded)</label>\
         <label for=\"admin-cidrs\">Admin access from (one network per line; empty: loopback, the VPN and private LANs)</label>\
         <textarea id=\"admin-cidrs\" name=\"admin_cidrs\" rows=\"3\"{fixed}>{}</textarea>{}\
         <button type=\"submit\" id=\"firewall-save\">Save and apply</button></form>",
        frame.field(),
        if view.egress { " checked" } else { "" },
        esc(&fence),
        if view.admin_cidrs_fixed {
            "<p class=\"note\" id=\"fence-fixed\">Set with --admin-cidrs on the command line.</p>"
        } else {
            ""
        },
    )
}

/// The form as the API's policy body: rows with a from group, not marked for removal.
fn policy(f: &HashMap<String, String>) -> Result<serde_json::Value, ApiError> {
    let get = |k: String| f.get(&k).map(|v| v.trim().to_string()).unwrap_or_default();
    let mut rules = Vec::new();
    for i in 0..=super::firewall::MAX_RULES {
        let from = get(format!("from_{i}"));
        if from.is_empty() || f.contains_key(&format!("remove_{i}")) {
            continue;
        }
        let to = get(format!("to_{i}"));
        let (to_group, to_cidr) = if to.contains('/') || to.parse::<std::net::IpAddr>().is_ok() {
            (None, Some(to))
        } else {
            (Some(to), None)
        };
        let ports: Vec<String> = get(format!("ports_{i}"))
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        rules.push(serde_json::json!({
            "from_group": from, "to_group": to_group, "to_cidr": to_cidr,
            "protocol": get(format!("protocol_{i}")), "ports": ports,
        }));
    }
    let fence: Vec<String> = get("admin_cidrs".into())
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    Ok(serde_json::json!({
        "egress": f.contains_key("egress"),
        "admin_cidrs": if fence.is_empty() { None } else { Some(fence) },
        "rules": rules,
    }))
}

async fn save(
    State(state): State<AppState>,
    admin: Admin,
    ip: ClientIp,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let Form(f) = form.map_err(|r| ApiError::Invalid(r.body_text()))?;
        let body = serde_json::from_value(policy(&f)?)
            .map(crate::json::StrictJson)
            .map_err(|e| ApiError::Invalid(e.to_string()))?;
        super::firewall::update(State(state.clone()), admin.clone(), ip, body).await
    }
    .await;
    match result {
        Ok(_) => Ok(Redirect::to("/firewall?done=saved").into_response()),
        Err(e @ (ApiError::Invalid(_) | ApiError::Conflict(_) | ApiError::Unavailable(_))) => {
            let message = e.to_string();
            render(&state, &admin, None, Some(&message), e.status()).await
        }
        Err(e) => Err(e),
    }
}
