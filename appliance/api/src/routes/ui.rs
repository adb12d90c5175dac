//! The frame of every signed-in page: the navigation, the sign-out form, the session's
//! CSRF token for the page's forms, a notice after an action; and the traffic chart,
//! drawn on the server as SVG (no script, no library, works offline).

use super::pages::{bytes, esc};
use super::traffic::SeriesView;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;
use axum::response::Html;

/// The sections of the dashboard, in the navigation's order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Devices,
    Firewall,
    Logins,
    Audit,
    Backup,
    Ssh,
    Settings,
}

const SECTIONS: [(Nav, &str, &str); 8] = [
    (Nav::Overview, "/", "Overview"),
    (Nav::Devices, "/devices", "Devices"),
    (Nav::Firewall, "/firewall", "Firewall"),
    (Nav::Logins, "/logins", "Logins"),
    (Nav::Audit, "/audit", "Audit log"),
    (Nav::Backup, "/backup", "Backup"),
    (Nav::Ssh, "/ssh", "SSH"),
    (Nav::Settings, "/settings", "Settings"),
];

/// What a signed-in page needs from the session.
pub struct Frame {
    pub username: String,
    csrf: String,
}

impl Frame {
    pub fn of(state: &AppState, admin: &Admin) -> Result<Frame, ApiError> {
        Ok(Frame {
            username: admin.username.clone(),
            csrf: crate::auth::csrf_token(state, admin)?.unwrap_or_default(),
        })
    }

    /// The hidden CSRF field every form of the page carries.
    pub fn field(&self) -> String {
        crate::csrf::hidden_field(&self.csrf)
    }

    /// A form posting to `action` with the CSRF field and a submit button.
    pub fn button(&self, action: &str, label: &str, id: &str) -> String {
        format!(
            "<form method=\"post\" action=\"{}\" class=\"inline\">{}\
             <button type=\"submit\" id=\"{}\">{}</button></form>",
            esc(action),
            self.field(),
            esc(id),
            esc(label)
        )
    }

    pub fn page(&self, title: &str, active: Nav, body: &str) -> Html<String> {
        let links: String = SECTIONS
            .iter()
            .map(|(nav, href, label)| {
                let current = if *nav == active {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                format!("<a href=\"{href}\"{current}>{label}</a>")
            })
            .collect();
        let header = format!(
            "<header><a class=\"skip\" href=\"#main\">Skip to the content</a><a class=\"brand\" href=\"/\">Watchgrid</a><nav aria-label=\"Sections\">{links}</nav>\
             <form method=\"post\" action=\"/api/auth/logout\" class=\"signout\">{}\
             <span id=\"whoami\">{}</span> <button type=\"submit\" id=\"signout\">Sign out</button></form></header>",
            self.field(),
            esc(&self.username)
        );
        super::pages::shell(title, &header, body, true)
    }
}

/// `?done=CODE` after a redirect: which fixed notice the page shows.
#[derive(serde::Deserialize, Default)]
pub struct DoneQuery {
    pub done: Option<String>,
}

/// A message above a page's content after an action: what happened, or what was wrong.
pub fn notice(ok: Option<&str>, error: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(m) = ok {
        out += &format!(
            "<p class=\"ok\" role=\"status\" id=\"notice\">{}</p>",
            esc(m)
        );
    }
    if let Some(e) = error {
        out += &format!(
            "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
            esc(e)
        );
    }
    out
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 20.0;

/// The series as a chart of bytes received and sent per step: two lines on one scale,
/// the scale's top labelled, the totals in the accessible name.
pub fn chart(id: &str, series: &SeriesView) -> String {
    let peak = series
        .points
        .iter()
        .map(|p| p.rx.max(p.tx))
        .max()
        .unwrap_or(0)
        .max(1);
    let n = series.points.len().max(2) as f64;
    let x = |i: usize| LEFT + (WIDTH - LEFT) * i as f64 / (n - 1.0);
    let y = |v: u64| (HEIGHT - BOTTOM) * (1.0 - v as f64 / peak as f64);
    let line = |pick: fn(&super::traffic::PointView) -> u64| -> String {
        series
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(pick(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let label = format!(
        "Traffic over the last {}: {} received, {} sent",
        range_words(series),
        bytes(series.total_rx),
        bytes(series.total_tx)
    );
    format!(
        "<figure class=\"chart\"><svg id=\"{}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">\
         <title>{}</title>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{WIDTH}\" y2=\"{base}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"0\" x2=\"{LEFT}\" y2=\"{base}\"/>\
         <text class=\"scale\" x=\"{tx}\" y=\"12\" text-anchor=\"end\">{}</text>\
         <text class=\"scale\" x=\"{tx}\" y=\"{base}\" text-anchor=\"end\">0</text>\
         <polyline class=\"rx\" points=\"{}\"/><polyline class=\"tx\" points=\"{}\"/></svg>\
         <figcaption><span class=\"key rx\">received {}</span> <span class=\"key tx\">sent {}</span> \
         · per {}</figcaption></figure>",
        esc(id),
        esc(&label),
        esc(&label),
        bytes(peak),
        line(|p| p.rx),
        line(|p| p.tx),
        bytes(series.total_rx),
        bytes(series.total_tx),
        step_words(series.step_s),
        base = HEIGHT - BOTTOM,
        tx = LEFT - 4.0,
    )
}

fn range_words(series: &SeriesView) -> &'static str {
    use super::traffic::Range;
    match series.range {
        Range::Hour => "hour",
        Range::Day => "24 hours",
        Range::Week => "7 days",
        Range::Month => "30 days",
        Range::Year => "year",
    }
}

fn step_words(step_s: u64) -> &'static str {
    match step_s {
        60 => "minute",
        3600 => "hour",
        _ => "day",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::traffic::{PointView, Range};

    #[test]
    fn the_chart_scales_to_its_peak_and_names_the_totals() {
        let points = vec![
            PointView {
                start: 0,
                rx: 0,
                tx: 10,
            },
            PointView {
                start: 60,
                rx: 2048,
                tx: 0,
            },
        ];
        let s = SeriesView {
            range: Range::Hour,
            step_s: 60,
            total_rx: 2048,
            total_tx: 10,
            points,
        };
        let svg = chart("c", &s);
        // The rx line ends at the top (the peak), the tx line starts just above the base.
        assert!(svg.contains("points=\"56.0,140.0 600.0,0.0\""), "{svg}");
        assert!(svg.contains("2.0 KiB received, 10 B sent"), "{svg}");
        assert!(svg.contains(">2.0 KiB</text>"), "{svg}");
    }
}
