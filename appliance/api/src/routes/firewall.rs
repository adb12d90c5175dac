//! The firewall policy (admin fence, egress, forward rules) and device groups.
//!
//! Everything is validated before anything is stored; a policy the firewall cannot
//! apply is rolled back, so the stored policy is always the one in force.

use super::audit;
use crate::auth::{Admin, ClientIp};
use crate::dto::{DeviceView, ErrorBody};
use crate::error::ApiError;
use crate::hub::FirewallStatus;
use crate::json::StrictJson;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use utoipa::ToSchema;
use watchgrid_core::IpPrefix;
use watchgrid_firewall::{Rule, RuleSpec};
use watchgrid_store::{FirewallPolicy, FIREWALL_KEY};

pub(crate) const MAX_RULES: usize = 256;
const MAX_PORTS: usize = 32;
const MAX_GROUPS: usize = 16;
const MAX_CIDRS: usize = 64;
const MAX_NAME: usize = 64;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/firewall", get(show).put(update))
        .route("/api/devices/{id}/groups", put(set_groups))
}

/// A forward rule: devices in `from_group` may open connections to `to_group` (or
/// `to_cidr`), for `protocol` and `ports`. The JSON form of [`RuleSpec`], described
/// for the OpenAPI document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    #[schema(min_length = 1, max_length = 64)]
    pub from_group: String,
    #[schema(min_length = 1, max_length = 64)]
    pub to_group: Option<String>,
    /// A network, e.g. a LAN behind the hub (`192.168.1.0/24`).
    pub to_cidr: Option<String>,
    /// `tcp`, `udp`, `icmp` or `any`.
    #[schema(pattern = "^(tcp|udp|icmp|any)$")]
    pub protocol: String,
    /// Ports (`"22"`) or ranges (`"9000-9100"`), TCP and UDP only; empty: all ports.
    #[serde(default)]
    pub ports: Vec<String>,
}

/// The policy as the admin sets it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// Networks that may use the setup wizard, admin pages and admin API; `null`
    /// restores the default (loopback, the VPN, private LAN ranges).
    pub admin_cidrs: Option<Vec<String>>,
    /// Required with an empty `admin_cidrs`, which opens the admin surface to every
    /// address: an empty list is otherwise refused, so it is never sent by mistake.
    #[serde(default)]
    pub open_to_all: bool,
    /// Let peers reach networks behind the hub, masqueraded as the hub.
    pub egress: bool,
    pub rules: Vec<RuleBody>,
}

#[derive(Serialize, ToSchema)]
pub struct FirewallView {
    /// The admin fence in force.
    pub admin_cidrs: Vec<String>,
    /// True when no fence was chosen and the default applies.
    pub admin_cidrs_default: bool,
    /// True when `--admin-cidrs` sets the fence (the API cannot change it).
    pub admin_cidrs_fixed: bool,
    pub egress: bool,
    pub rules: Vec<RuleBody>,
    /// `off`, `pending`, `applied` or `failed`.
    pub state: String,
    pub error: Option<String>,
    pub applied_at: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupsBody {
    #[schema(max_items = 16)]
    pub groups: Vec<String>,
}

/// The fence when the admin has not chosen one: loopback, private LAN ranges
/// (RFC 1918, IPv6 ULA and link-local) and the VPN itself.
pub fn default_admin_fence(vpn_v4: IpPrefix, vpn_v6: Option<IpPrefix>) -> Vec<IpPrefix> {
    let mut fence: Vec<IpPrefix> = [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .filter_map(|c| c.parse().ok())
    .collect();
    for net in std::iter::once(vpn_v4).chain(vpn_v6) {
        if !fence.iter().any(|f| f.contains(net.addr())) {
            fence.push(net);
        }
    }
    fence
}

/// `--admin-cidrs` was given: the flag decides the fence, the API may not change it.
fn fence_fixed(state: &AppState) -> bool {
    !state.config.admin_cidrs.is_empty()
}

/// The fence a stored policy gives (flags win; see [`crate::ApiConfig`]).
pub fn fence_for(state: &AppState, policy: &FirewallPolicy) -> Result<Vec<IpPrefix>, ApiError> {
    if fence_fixed(state) {
        return Ok(state.config.admin_cidrs.clone());
    }
    match &policy.admin_cidrs {
        Some(list) => parse_cidrs(list),
        None => {
            let settings = state.store.settings.get(watchgrid_store::SETTINGS_KEY)?;
            let (net, len) = match &settings {
                Some(s) => (s.vpn_subnet_v4, s.vpn_prefix_v4),
                None => (state.config.vpn_subnet, state.config.vpn_prefix),
            };
            let v4 = IpPrefix::new(IpAddr::V4(net), len)
                .map_err(|e| ApiError::internal(format!("VPN subnet: {e}")))?;
            let v6 = state
                .store
                .network()?
                .and_then(|n| IpPrefix::new(IpAddr::V6(n.ula_prefix), 64).ok());
            Ok(default_admin_fence(v4, v6))
        }
    }
}

/// Recomputes the fence in force from the stored policy (after setup moves the VPN).
pub fn refresh_fence(state: &AppState) -> Result<(), ApiError> {
    let policy = state.store.firewall_policy()?;
    let fence = fence_for(state, &policy)?;
    state.set_admin_fence(fence);
    Ok(())
}

fn parse_cidrs(list: &[String]) -> Result<Vec<IpPrefix>, ApiError> {
    list.iter()
        .map(|c| {
            c.trim()
                .parse::<IpPrefix>()
                .map_err(|e| ApiError::Invalid(format!("admin_cidrs: {c:?}: {e}")))
        })
        .collect()
}

/// Group names are free text (the ruleset only ever sees numbered sets), but they
/// must be printable and of sane length.
pub(crate) fn validate_group(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::Invalid(format!(
            "{what}: 1 to {MAX_NAME} characters"
        )));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(ApiError::Invalid(format!(
            "{what}: no control characters (newlines, tabs) and no leading or trailing spaces"
        )));
    }
    Ok(())
}

/// Parses a rule as received, once: group names are checked here (they are the API's
/// concern), everything else by the firewall's own parser.
fn validate_rule(i: usize, r: &RuleBody) -> Result<Rule, ApiError> {
    validate_group(&format!("rules[{i}].from_group"), &r.from_group)?;
    if let (Some(g), None) = (&r.to_group, &r.to_cidr) {
        validate_group(&format!("rules[{i}].to_group"), g)?;
    }
    if r.ports.len() > MAX_PORTS {
        return Err(ApiError::Invalid(format!(
            "rules[{i}]: at most {MAX_PORTS} ports"
        )));
    }
    Rule::try_from(RuleSpec::from(r.clone()))
        .map_err(|e| ApiError::Invalid(format!("rules[{i}]: {}", e.reason)))
}

impl From<RuleBody> for RuleSpec {
    fn from(b: RuleBody) -> RuleSpec {
        RuleSpec {
            from_group: b.from_group,
            to_group: b.to_group,
            to_cidr: b.to_cidr,
            protocol: b.protocol,
            ports: b.ports,
        }
    }
}

impl From<&Rule> for RuleBody {
    fn from(r: &Rule) -> RuleBody {
        let s = RuleSpec::from(r);
        RuleBody {
            from_group: s.from_group,
            to_group: s.to_group,
            to_cidr: s.to_cidr,
            protocol: s.protocol,
            ports: s.ports,
        }
    }
}

fn view(state: &AppState, policy: &FirewallPolicy) -> FirewallView {
    let (st, error, applied_at) = match state.firewall_status() {
        FirewallStatus::Off => ("off", None, None),
        FirewallStatus::Pending => ("pending", None, None),
        FirewallStatus::Applied { at } => ("applied", None, Some(at)),
        FirewallStatus::Failed { at, error, .. } => ("failed", Some(error), Some(at)),
    };
    FirewallView {
        admin_cidrs: state.admin_fence_list(),
        admin_cidrs_default: policy.admin_cidrs.is_none() && !fence_fixed(state),
        admin_cidrs_fixed: fence_fixed(state),
        egress: policy.egress,
        rules: policy.rules.iter().map(RuleBody::from).collect(),
        state: st.into(),
        error,
        applied_at,
    }
}

/// The firewall policy and whether it is applied.
#[utoipa::path(get, path = "/api/firewall", tag = "firewall",
    responses((status = 200, body = FirewallView), (status = 401, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<FirewallView>, ApiError> {
    let policy = state.store.firewall_policy()?;
    Ok(Json(view(&state, &policy)))
}

/// Replaces the policy and applies it. Nothing changes when the policy is invalid,
/// would shut out the admin making the change, or cannot be applied.
#[utoipa::path(put, path = "/api/firewall", tag = "firewall", request_body = PolicyBody,
    responses((status = 200, body = FirewallView), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn update(
    State(state): State<AppState>,
    admin: Admin,
    ClientIp(ip): ClientIp,
    StrictJson(body): StrictJson<PolicyBody>,
) -> Result<Json<FirewallView>, ApiError> {
    if body.rules.len() > MAX_RULES {
        return Err(ApiError::Invalid(format!("at most {MAX_RULES} rules")));
    }
    let rules = body
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| validate_rule(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(list) = &body.admin_cidrs {
        if list.is_empty() && !body.open_to_all {
            return Err(ApiError::Invalid(
                "admin_cidrs: an empty list opens the admin surface to every address; \
                 send \"open_to_all\": true to mean that, or null for the default fence"
                    .into(),
            ));
        }
        if list.len() > MAX_CIDRS {
            return Err(ApiError::Invalid(format!(
                "admin_cidrs: at most {MAX_CIDRS}"
            )));
        }
        if fence_fixed(&state) {
            return Err(ApiError::Conflict(
                "the admin fence is set with --admin-cidrs (WATCHGRID_ADMIN_CIDRS); change it there"
                    .into(),
            ));
        }
    }
    let new = FirewallPolicy {
        admin_cidrs: body
            .admin_cidrs
            .as_ref()
            .map(|l| l.iter().map(|c| c.trim().to_string()).collect()),
        egress: body.egress,
        rules,
    };
    let fence = fence_for(&state, &new)?;
    if !fence.is_empty() && !fence.iter().any(|c| c.contains(ip)) {
        return Err(ApiError::Invalid(format!(
            "admin_cidrs: this change would shut out your own address {ip}; include it"
        )));
    }
    let old = state.store.firewall.get(FIREWALL_KEY)?;
    state.store.firewall.put(FIREWALL_KEY, &new)?;
    apply_or_restore(&state, "this policy", || {
        match &old {
            Some(p) => state.store.firewall.put(FIREWALL_KEY, p)?,
            None => {
                state.store.firewall.remove(FIREWALL_KEY)?;
            }
        }
        Ok(())
    })
    .await?;
    state.set_admin_fence(fence);
    audit(&state, &admin.username, "firewall.update", FIREWALL_KEY)?;
    Ok(Json(view(&state, &new)))
}

/// Sets a device's groups (the names forward rules refer to).
#[utoipa::path(put, path = "/api/devices/{id}/groups", tag = "devices", request_body = GroupsBody,
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn set_groups(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<GroupsBody>,
) -> Result<Json<DeviceView>, ApiError> {
    let groups = normalize_groups(&body.groups)?;
    let before = state.store.devices.get(&id)?.ok_or(ApiError::NotFound)?;
    let device = store_groups(&state, &id, groups)?;
    apply_or_restore(&state, "the new groups", || {
        store_groups(&state, &id, before.groups).map(drop)
    })
    .await?;
    audit(&state, &admin.username, "device.groups", &id)?;
    Ok(Json(DeviceView::from(&device)))
}

/// Applies the firewall after a stored change; if the firewall refuses, `restore` puts
/// the store back, the previous ruleset is applied again, and the caller answers 503.
async fn apply_or_restore(
    state: &AppState,
    what: &str,
    restore: impl FnOnce() -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let Some(fw) = state.firewall.get() else {
        return Ok(());
    };
    if let Err(e) = fw.reconcile().await {
        restore()?;
        state.firewall_changed().await;
        return Err(ApiError::Unavailable(format!(
            "the firewall could not apply {what}, nothing changed: {e}"
        )));
    }
    Ok(())
}

/// Validates, sorts and de-duplicates group names.
pub(crate) fn normalize_groups(groups: &[String]) -> Result<Vec<String>, ApiError> {
    if groups.len() > MAX_GROUPS {
        return Err(ApiError::Invalid(format!("groups: at most {MAX_GROUPS}")));
    }
    for g in groups {
        validate_group("groups", g)?;
    }
    let mut out = groups.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

fn store_groups(
    state: &AppState,
    id: &str,
    groups: Vec<String>,
) -> Result<watchgrid_store::Device, ApiError> {
    let updated = state.store.devices.update(id, |cur| match cur {
        Some(d) => Ok(Some(watchgrid_store::Device {
            groups: groups.clone(),
            ..d
        })),
        None => Err(()),
    })?;
    updated
        .map_err(|()| ApiError::NotFound)?
        .ok_or(ApiError::NotFound)
}
