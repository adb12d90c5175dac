//! Traffic history and quotas for the admin: a device's series over a range, every
//! device's monthly totals, the whole hub's series, and per-device monthly quotas.

use crate::accounting::{month_of, month_used};
use crate::auth::Admin;
use crate::dto::{ErrorBody, Status};
use crate::error::ApiError;
use crate::json::{StrictJson, StrictQuery};
use crate::state::{unix_now, AppState};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use watchgrid_store::{DeviceQuota, QuotaAction, Resolution};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/traffic", get(hub_series))
        .route("/api/traffic/monthly", get(monthly))
        .route("/api/devices/{id}/traffic", get(device_series))
        .route(
            "/api/devices/{id}/quota",
            get(show_quota).put(set_quota).delete(remove_quota),
        )
}

/// A span of history and the resolution it is shown at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Range {
    /// The last 60 minutes, per minute.
    Hour,
    /// The last 24 hours, per minute.
    Day,
    /// The last 7 days, per hour.
    Week,
    /// The last 30 days, per hour.
    Month,
    /// The last 365 days, per day.
    Year,
}

impl Range {
    fn resolution(self) -> Resolution {
        match self {
            Range::Hour | Range::Day => Resolution::Minute,
            Range::Week | Range::Month => Resolution::Hour,
            Range::Year => Resolution::Day,
        }
    }

    fn points(self) -> u64 {
        match self {
            Range::Hour => 60,
            Range::Day => 1440,
            Range::Week => 168,
            Range::Month => 720,
            Range::Year => 365,
        }
    }

    /// Bucket starts from oldest to the one holding `now`.
    fn starts(self, now: u64) -> impl Iterator<Item = u64> {
        let res = self.resolution();
        let last = res.bucket(now);
        let first = last.saturating_sub((self.points() - 1) * res.secs());
        (0..self.points()).map(move |i| first + i * res.secs())
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    /// `hour`, `day` (default), `week`, `month` or `year`.
    range: Option<Range>,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct PointView {
    /// Unix second the bucket begins.
    pub start: u64,
    /// Bytes received from the device (or, for the hub, from all devices).
    pub rx: u64,
    /// Bytes sent to it.
    pub tx: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    pub range: Range,
    /// Seconds each point covers.
    pub step_s: u64,
    /// Every bucket of the range, oldest first, zero where nothing moved.
    pub points: Vec<PointView>,
    pub total_rx: u64,
    pub total_tx: u64,
}

/// Fills the range's buckets from stored points (absent ones are zero).
pub(crate) fn series(
    range: Range,
    now: u64,
    stored: &[watchgrid_store::TrafficPoint],
) -> SeriesView {
    let by_start: std::collections::HashMap<u64, (u64, u64)> =
        stored.iter().map(|p| (p.start, (p.rx, p.tx))).collect();
    let points: Vec<PointView> = range
        .starts(now)
        .map(|start| {
            let (rx, tx) = by_start.get(&start).copied().unwrap_or_default();
            PointView { start, rx, tx }
        })
        .collect();
    SeriesView {
        range,
        step_s: range.resolution().secs(),
        total_rx: points.iter().map(|p| p.rx).sum(),
        total_tx: points.iter().map(|p| p.tx).sum(),
        points,
    }
}

/// One device's stored points for the range.
pub(crate) fn device_points(
    state: &AppState,
    id: &str,
    range: Range,
    now: u64,
) -> Result<Vec<watchgrid_store::TrafficPoint>, ApiError> {
    let first = range.starts(now).next().unwrap_or(0);
    Ok(state
        .store
        .traffic(id, range.resolution(), first, now + 1)?)
}

/// A device's traffic over a range.
#[utoipa::path(get, path = "/api/devices/{id}/traffic", tag = "devices",
    params(("id" = String, Path, description = "device id"), RangeQuery),
    responses((status = 200, body = SeriesView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn device_series(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    StrictQuery(q): StrictQuery<RangeQuery>,
) -> Result<Json<SeriesView>, ApiError> {
    state.store.devices.get(&id)?.ok_or(ApiError::NotFound)?;
    let range = q.range.unwrap_or(Range::Day);
    let now = unix_now();
    Ok(Json(series(
        range,
        now,
        &device_points(&state, &id, range, now)?,
    )))
}

/// The whole hub's traffic: every device's series summed.
pub(crate) fn hub_points(
    state: &AppState,
    range: Range,
    now: u64,
) -> Result<Vec<watchgrid_store::TrafficPoint>, ApiError> {
    let mut sum: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for d in state.store.devices.list()? {
        for p in device_points(state, &d.id, range, now)? {
            let e = sum.entry(p.start).or_default();
            *e = (e.0.saturating_add(p.rx), e.1.saturating_add(p.tx));
        }
    }
    Ok(sum
        .into_iter()
        .map(|(start, (rx, tx))| watchgrid_store::TrafficPoint { start, rx, tx })
        .collect())
}

/// All devices' traffic together over a range.
#[utoipa::path(get, path = "/api/traffic", tag = "devices", params(RangeQuery),
    responses((status = 200, body = SeriesView), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn hub_series(
    State(state): State<AppState>,
    _admin: Admin,
    StrictQuery(q): StrictQuery<RangeQuery>,
) -> Result<Json<SeriesView>, ApiError> {
    let range = q.range.unwrap_or(Range::Day);
    let now = unix_now();
    Ok(Json(series(range, now, &hub_points(&state, range, now)?)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct MonthQuery {
    /// `YYYY-MM` (UTC); default the current month.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}$")]
    month: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MonthlyRow {
    pub device_id: String,
    pub name: String,
    pub rx: u64,
    pub tx: u64,
    /// The device's quota, when it has one.
    pub quota: Option<QuotaView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MonthlyView {
    /// `YYYY-MM`.
    pub month: String,
    pub devices: Vec<MonthlyRow>,
}

/// `YYYY-MM` to the month's first and (exclusive) last second.
fn month_bounds(month: &str) -> Result<(u64, u64), ApiError> {
    let bad = || ApiError::Invalid("month: YYYY-MM, from 1970-01".into());
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let year: i32 = y.parse().map_err(|_| bad())?;
    let month: u8 = m.parse().map_err(|_| bad())?;
    let month = time::Month::try_from(month).map_err(|_| bad())?;
    let first = time::Date::from_calendar_date(year, month, 1).map_err(|_| bad())?;
    let next = match month {
        time::Month::December => time::Date::from_calendar_date(year + 1, time::Month::January, 1),
        m => time::Date::from_calendar_date(year, m.next(), 1),
    }
    .map_err(|_| bad())?;
    let secs = |d: time::Date| d.midnight().assume_utc().unix_timestamp();
    let (a, b) = (secs(first), secs(next));
    if a < 0 {
        return Err(bad());
    }
    Ok((a as u64, b as u64))
}

fn month_label(at: u64) -> String {
    let (m, _) = month_of(at);
    format!("{:04}-{:02}", m / 100, m % 100)
}

/// Every device's bytes in a calendar month (UTC), with its quota.
#[utoipa::path(get, path = "/api/traffic/monthly", tag = "devices", params(MonthQuery),
    responses((status = 200, body = MonthlyView), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn monthly(
    State(state): State<AppState>,
    _admin: Admin,
    StrictQuery(q): StrictQuery<MonthQuery>,
) -> Result<Json<MonthlyView>, ApiError> {
    let now = unix_now();
    let label = q.month.unwrap_or_else(|| month_label(now));
    let (first, end) = month_bounds(&label)?;
    let mut devices = Vec::new();
    for d in state.store.devices.list()? {
        let (rx, tx) = state.store.traffic_total(&d.id, first, end)?;
        devices.push(MonthlyRow {
            quota: quota_view(&state, &d.id, now)?,
            device_id: d.id,
            name: d.name,
            rx,
            tx,
        });
    }
    Ok(Json(MonthlyView {
        month: label,
        devices,
    }))
}

/// The smallest quota: below a mebibyte a month a device could not even keep its
/// handshakes and keepalives going.
const QUOTA_MIN: u64 = 1 << 20;
/// The largest: within a signed 64-bit integer, which JSON readers and the schema take.
const QUOTA_MAX: u64 = 1 << 60;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaBody {
    /// Bytes a calendar month (received plus sent), 1 MiB to 1 EiB.
    #[schema(minimum = 1048576, maximum = 1152921504606846976_u64)]
    monthly_bytes: u64,
    /// `disable` (leaves the hub until the month turns) or `alert`.
    #[schema(value_type = String, pattern = "^(disable|alert)$")]
    action: QuotaAction,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QuotaView {
    pub monthly_bytes: u64,
    /// `disable` or `alert`.
    #[schema(value_type = String)]
    pub action: QuotaAction,
    /// Bytes used this month.
    pub used_bytes: u64,
    /// The quota was crossed this month.
    pub crossed: bool,
    /// The quota disabled the device; it comes back when the month turns.
    pub disabled_by_quota: bool,
}

pub(crate) fn quota_view(
    state: &AppState,
    id: &str,
    now: u64,
) -> Result<Option<QuotaView>, ApiError> {
    let Some(q) = state.store.quotas.get(id)? else {
        return Ok(None);
    };
    Ok(Some(QuotaView {
        monthly_bytes: q.monthly_bytes,
        action: q.action,
        used_bytes: month_used(state, id, now)?,
        crossed: q.crossed_month == Some(month_of(now).0),
        disabled_by_quota: q.disabled_by_quota,
    }))
}

/// A device's monthly quota; 404 when it has none.
#[utoipa::path(get, path = "/api/devices/{id}/quota", tag = "devices",
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, body = QuotaView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn show_quota(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<QuotaView>, ApiError> {
    state.store.devices.get(&id)?.ok_or(ApiError::NotFound)?;
    quota_view(&state, &id, unix_now())?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// Sets a device's monthly quota (checked at the next traffic sample). Changing it
/// lets it act again this month, against the new limit.
#[utoipa::path(put, path = "/api/devices/{id}/quota", tag = "devices",
    params(("id" = String, Path, description = "device id")), request_body = QuotaBody,
    responses((status = 200, body = QuotaView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn set_quota(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    StrictJson(body): StrictJson<QuotaBody>,
) -> Result<Json<QuotaView>, ApiError> {
    if !(QUOTA_MIN..=QUOTA_MAX).contains(&body.monthly_bytes) {
        return Err(ApiError::Invalid(format!(
            "monthly_bytes: {QUOTA_MIN} (1 MiB) to {QUOTA_MAX} (1 EiB)"
        )));
    }
    let _one_at_a_time = state.device_changes.lock().await;
    state.store.devices.get(&id)?.ok_or(ApiError::NotFound)?;
    let held = state
        .store
        .quotas
        .get(&id)?
        .is_some_and(|q| q.disabled_by_quota);
    state.store.quotas.put(
        &id,
        &DeviceQuota {
            device_id: id.clone(),
            monthly_bytes: body.monthly_bytes,
            action: body.action,
            crossed_month: None,
            // Still disabled by the old quota: the month's turn (or an admin) enables it.
            disabled_by_quota: held,
        },
    )?;
    super::audit(&state, &admin.username, "device.quota_set", &id)?;
    quota_view(&state, &id, unix_now())?
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// Removes a device's quota. A device the quota disabled stays disabled until enabled.
#[utoipa::path(delete, path = "/api/devices/{id}/quota", tag = "devices",
    params(("id" = String, Path, description = "device id")),
    responses((status = 200, body = Status), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("cookie" = [])))]
pub(crate) async fn remove_quota(
    State(state): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Status>, ApiError> {
    state.store.quotas.remove(&id)?.ok_or(ApiError::NotFound)?;
    super::audit(&state, &admin.username, "device.quota_remove", &id)?;
    Ok(Json(Status::new("removed")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_ends_with_the_bucket_holding_now() {
        let now = 1_796_637_600 + 59; // 10:00:59Z
        let starts: Vec<u64> = Range::Hour.starts(now).collect();
        assert_eq!(starts.len(), 60);
        assert_eq!(starts.last(), Some(&1_796_637_600));
        assert_eq!(starts[0], 1_796_637_600 - 59 * 60);
        assert_eq!(Range::Year.starts(now).count(), 365);
    }

    #[test]
    fn months_are_checked_and_bounded() {
        assert_eq!(
            month_bounds("2026-12").ok(),
            Some((1_796_083_200, 1_798_761_600))
        );
        for bad in ["2026-13", "2026-1", "26-12", "2026/12", "1969-12", "x"] {
            assert!(month_bounds(bad).is_err(), "{bad}");
        }
    }
}
