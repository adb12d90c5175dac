//! Prometheus series (names from the seed, SPEC §6), served on their own listener.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<Labels, Counter>,
    pub http_duration: Histogram,
    pub agent_heartbeats: Counter,
    /// Remote command transitions by the state entered.
    pub agent_commands: Family<Labels, Counter>,
    /// Agents heard from within three heartbeat intervals.
    pub agents_online: Gauge,
    /// Agents' command long polls held open now.
    pub agent_long_polls: Gauge,
    pub login_failures: Family<Labels, Counter>,
    pub login_events: Family<Labels, Counter>,
    pub log_lines_ingested: Counter,
    pub log_store_bytes: Gauge,
    pub alerts_sent: Family<Labels, Counter>,
    /// Agent requests refused for their credential, by reason.
    pub agent_auth_failures: Family<Labels, Counter>,
    pub rate_limit_rejections: Family<Labels, Counter>,
    pub wireguard_peers: Gauge,
    pub db_size_bytes: Gauge,
    pub db_up: Gauge,
    /// How long each store commit's file-system sync took.
    pub db_sync_duration: Histogram,
    /// 1 when the last firewall apply succeeded, 0 when it failed or the firewall is off.
    pub firewall_applied: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<Labels, Counter>::default();
        let http_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let agent_heartbeats = Counter::default();
        let agent_commands = Family::<Labels, Counter>::default();
        let agents_online = Gauge::default();
        let agent_long_polls = Gauge::default();
        let login_failures = Family::<Labels, Counter>::default();
        let agent_auth_failures = Family::<Labels, Counter>::default();
        let login_events = Family::<Labels, Counter>::default();
        let log_lines_ingested = Counter::default();
        let log_store_bytes = Gauge::default();
        let alerts_sent = Family::<Labels, Counter>::default();
        registry.register(
            "watchgrid_login_events",
            "Login events stored, by outcome",
            login_events.clone(),
        );
        registry.register(
            "watchgrid_log_lines_ingested",
            "Agents' log lines stored",
            log_lines_ingested.clone(),
        );
        registry.register(
            "watchgrid_log_store_bytes",
            "Size of the log store on disk",
            log_store_bytes.clone(),
        );
        registry.register(
            "watchgrid_alerts_sent",
            "Alert webhook attempts by result (delivered, retry, failed)",
            alerts_sent.clone(),
        );
        let rate_limit_rejections = Family::<Labels, Counter>::default();
        let wireguard_peers = Gauge::default();
        let db_size_bytes = Gauge::default();
        let db_up = Gauge::default();
        let db_sync_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let firewall_applied = Gauge::default();
        registry.register(
            "watchgrid_http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        registry.register(
            "watchgrid_http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        registry.register(
            "watchgrid_agent_heartbeats",
            "Agent heartbeats received",
            agent_heartbeats.clone(),
        );
        registry.register(
            "watchgrid_agent_commands",
            "Remote commands entering each state (queued, delivered, succeeded, ...)",
            agent_commands.clone(),
        );
        registry.register(
            "watchgrid_agents_online",
            "Agents heard from within three heartbeat intervals",
            agents_online.clone(),
        );
        registry.register(
            "watchgrid_agent_long_polls",
            "Agents' command long polls held open now",
            agent_long_polls.clone(),
        );
        registry.register(
            "watchgrid_login_failures",
            "Failed admin logins by reason",
            login_failures.clone(),
        );
        registry.register(
            "watchgrid_agent_auth_failures",
            "Agent requests refused for their credential (missing_key, unknown_key)",
            agent_auth_failures.clone(),
        );
        registry.register(
            "watchgrid_rate_limit_rejections",
            "Requests refused by a rate limiter",
            rate_limit_rejections.clone(),
        );
        registry.register(
            "watchgrid_wireguard_peers",
            "Peers configured on the WireGuard hub",
            wireguard_peers.clone(),
        );
        registry.register(
            "watchgrid_db_size_bytes",
            "Size of the embedded store on disk",
            db_size_bytes.clone(),
        );
        registry.register(
            "watchgrid_db_up",
            "1 when the embedded store answers",
            db_up.clone(),
        );
        registry.register(
            "watchgrid_db_sync_seconds",
            "Time the store spends making each acknowledged write durable (syncfs)",
            db_sync_duration.clone(),
        );
        registry.register(
            "watchgrid_firewall_applied",
            "1 when the node's nftables rules are in force (last apply succeeded)",
            firewall_applied.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            agent_heartbeats,
            agent_commands,
            agents_online,
            agent_long_polls,
            login_failures,
            agent_auth_failures,
            login_events,
            log_lines_ingested,
            log_store_bytes,
            alerts_sent,
            rate_limit_rejections,
            wireguard_peers,
            db_size_bytes,
            db_up,
            db_sync_duration,
            firewall_applied,
        }
    }
}

impl Metrics {
    pub fn login_failure(&self, reason: &str) {
        self.login_failures
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    pub fn command(&self, state: watchgrid_store::CommandState) {
        self.agent_commands
            .get_or_create(&vec![("state", state.as_str().to_string())])
            .inc();
    }

    pub fn login_event(&self, outcome: &str) {
        self.login_events
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn alert_sent(&self, result: &'static str) {
        self.alerts_sent
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn agent_auth_failure(&self, reason: &'static str) {
        self.agent_auth_failures
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    pub fn rate_limited(&self, limiter: &str) {
        self.rate_limit_rejections
            .get_or_create(&vec![("limiter", limiter.to_string())])
            .inc();
    }

    /// The exposition in Prometheus text format 0.0.4 (what `promtool check metrics`
    /// and every Prometheus version read).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        openmetrics_to_prometheus(&out)
    }
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has samples
/// `x_total` and its HELP/TYPE lines name `x`. The 0.0.4 text format names the sample
/// (`x_total`) there, and has no `# EOF` line.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_renamed_and_eof_dropped() {
        let m = Metrics::default();
        m.login_failure("bad_credentials");
        m.wireguard_peers.set(3);
        let text = m.render();
        assert!(
            text.contains("# HELP watchgrid_login_failures_total Failed admin logins by reason."),
            "{text}"
        );
        assert!(
            text.contains("# TYPE watchgrid_login_failures_total counter"),
            "{text}"
        );
        assert!(
            text.contains("watchgrid_login_failures_total{reason=\"bad_credentials\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE watchgrid_wireguard_peers gauge\nwatchgrid_wireguard_peers 3"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }
}
