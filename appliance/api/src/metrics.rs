//! Prometheus series (names from the seed, SPEC §6), served on their own listener.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

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
    /// Unix time of the last scheduled backup that succeeded (0: none yet).
    pub backup_last_success: Gauge,
    pub backup_offsite_last_success: Gauge,
    /// Per device, only with `--peer-metrics` (otherwise the families stay empty).
    pub peer_rx_bytes: Family<Labels, Counter>,
    pub peer_tx_bytes: Family<Labels, Counter>,
}

/// Each metric's name and help text.
type Described = (&'static str, &'static str);

const HTTP_REQUESTS: Described = (
    "watchgrid_http_requests",
    "HTTP requests by route, method and status",
);
const HTTP_DURATION: Described = (
    "watchgrid_http_request_duration_seconds",
    "HTTP request latency",
);
const AGENT_HEARTBEATS: Described = ("watchgrid_agent_heartbeats", "Agent heartbeats received");
const AGENT_COMMANDS: Described = (
    "watchgrid_agent_commands",
    "Remote commands entering each state (queued, delivered, succeeded, ...)",
);
const AGENTS_ONLINE: Described = (
    "watchgrid_agents_online",
    "Agents heard from within three heartbeat intervals",
);
const AGENT_LONG_POLLS: Described = (
    "watchgrid_agent_long_polls",
    "Agents' command long polls held open now",
);
const LOGIN_FAILURES: Described = ("watchgrid_login_failures", "Failed admin logins by reason");
const AGENT_AUTH_FAILURES: Described = (
    "watchgrid_agent_auth_failures",
    "Agent requests refused for their credential (missing_key, unknown_key)",
);
const LOGIN_EVENTS: Described = ("watchgrid_login_events", "Login events stored, by outcome");
const LOG_LINES_INGESTED: Described = ("watchgrid_log_lines_ingested", "Agents' log lines stored");
const LOG_STORE_BYTES: Described = ("watchgrid_log_store_bytes", "Size of the log store on disk");
const ALERTS_SENT: Described = (
    "watchgrid_alerts_sent",
    "Alert webhook attempts by result (delivered, retry, failed)",
);
const RATE_LIMIT_REJECTIONS: Described = (
    "watchgrid_rate_limit_rejections",
    "Requests refused by a rate limiter",
);
const WIREGUARD_PEERS: Described = (
    "watchgrid_wireguard_peers",
    "Peers configured on the WireGuard hub",
);
const DB_SIZE_BYTES: Described = (
    "watchgrid_db_size_bytes",
    "Size of the embedded store on disk",
);
const DB_UP: Described = ("watchgrid_db_up", "1 when the embedded store answers");
const DB_SYNC_DURATION: Described = (
    "watchgrid_db_sync_seconds",
    "Time the store spends making each acknowledged write durable (syncfs)",
);
const PEER_RX_BYTES: Described = (
    "watchgrid_peer_rx_bytes",
    "Bytes received from each device through the tunnel (only with --peer-metrics)",
);
const PEER_TX_BYTES: Described = (
    "watchgrid_peer_tx_bytes",
    "Bytes sent to each device through the tunnel (only with --peer-metrics)",
);
const FIREWALL_APPLIED: Described = (
    "watchgrid_firewall_applied",
    "1 when the node's nftables rules are in force (last apply succeeded)",
);

const BACKUP_LAST_SUCCESS: Described = (
    "watchgrid_backup_last_success_timestamp_seconds",
    "Unix time of the last scheduled backup that succeeded (0 when none has)",
);

const BACKUP_OFFSITE_LAST_SUCCESS: Described = (
    "watchgrid_backup_offsite_last_success_timestamp_seconds",
    "Unix time of the last backup copied off the box over SFTP (0 when none has)",
);

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        Metrics {
            http_requests: registered(&mut r, HTTP_REQUESTS, Family::default()),
            http_duration: registered(
                &mut r,
                HTTP_DURATION,
                Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            ),
            agent_heartbeats: registered(&mut r, AGENT_HEARTBEATS, Counter::default()),
            agent_commands: registered(&mut r, AGENT_COMMANDS, Family::default()),
            agents_online: registered(&mut r, AGENTS_ONLINE, Gauge::default()),
            agent_long_polls: registered(&mut r, AGENT_LONG_POLLS, Gauge::default()),
            login_failures: registered(&mut r, LOGIN_FAILURES, Family::default()),
            agent_auth_failures: registered(&mut r, AGENT_AUTH_FAILURES, Family::default()),
            login_events: registered(&mut r, LOGIN_EVENTS, Family::default()),
            log_lines_ingested: registered(&mut r, LOG_LINES_INGESTED, Counter::default()),
            log_store_bytes: registered(&mut r, LOG_STORE_BYTES, Gauge::default()),
            alerts_sent: registered(&mut r, ALERTS_SENT, Family::default()),
            rate_limit_rejections: registered(&mut r, RATE_LIMIT_REJECTIONS, Family::default()),
            wireguard_peers: registered(&mut r, WIREGUARD_PEERS, Gauge::default()),
            db_size_bytes: registered(&mut r, DB_SIZE_BYTES, Gauge::default()),
            db_up: registered(&mut r, DB_UP, Gauge::default()),
            db_sync_duration: registered(
                &mut r,
                DB_SYNC_DURATION,
                Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            ),
            firewall_applied: registered(&mut r, FIREWALL_APPLIED, Gauge::default()),
            backup_last_success: registered(&mut r, BACKUP_LAST_SUCCESS, Gauge::default()),
            backup_offsite_last_success: registered(
                &mut r,
                BACKUP_OFFSITE_LAST_SUCCESS,
                Gauge::default(),
            ),
            peer_rx_bytes: registered(&mut r, PEER_RX_BYTES, Family::default()),
            peer_tx_bytes: registered(&mut r, PEER_TX_BYTES, Family::default()),
            registry: r,
        }
    }
}

/// Registers `metric` and returns the handle the code updates.
fn registered<M: Metric + Clone>(r: &mut Registry, (name, help): Described, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
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

    /// Adds a device's bytes since the last sample to its series.
    pub fn peer_traffic(&self, device_id: &str, rx: u64, tx: u64) {
        let labels = vec![("device", device_id.to_string())];
        self.peer_rx_bytes.get_or_create(&labels).inc_by(rx);
        self.peer_tx_bytes.get_or_create(&labels).inc_by(tx);
    }

    /// Drops a deleted device's series.
    pub fn forget_peer(&self, device_id: &str) {
        let labels = vec![("device", device_id.to_string())];
        self.peer_rx_bytes.remove(&labels);
        self.peer_tx_bytes.remove(&labels);
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
