//! The one `Clone` state every handler gets.

use crate::hub::Hub;
use crate::limits::Limits;
use crate::metrics::Metrics;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, RwLock};
use watchgrid_core::IpPrefix;
use watchgrid_store::Store;

/// Settings from flags and environment (SPEC §2a, §3).
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Extra browser origins (WATCHGRID_ALLOWED_ORIGINS), e.g. `https://vpn.example.com`.
    pub allowed_origins: Vec<String>,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpPrefix>,
    /// `--admin-cidrs`: when non-empty, the setup wizard, admin pages and admin API
    /// answer only these networks and the firewall policy cannot change that. When
    /// empty, the fence comes from the policy (see `routes::firewall::refresh_fence`).
    pub admin_cidrs: Vec<IpPrefix>,
    /// JWT_SECRET, if the operator provides one (at least 32 characters).
    pub jwt_secret: Option<watchgrid_store::Sensitive<String>>,
    /// The VPN's IPv4 subnet and the hub's address in it.
    pub vpn_subnet: Ipv4Addr,
    pub vpn_prefix: u8,
    pub hub_address: Ipv4Addr,
    /// Lifetime of admin sessions.
    pub session_ttl_secs: u64,
    /// Persistent keepalive handed to registering devices (they may sit behind NAT).
    pub device_keepalive: u16,
    /// Seconds between an agent's heartbeats; three missed ones make it offline.
    pub heartbeat_interval_s: u64,
    /// The metrics listener's port (alert webhooks may not point at it).
    pub metrics_port: Option<u16>,
    /// The file that carries the setup token to the console; removed once setup completes.
    pub setup_token_file: Option<std::path::PathBuf>,
    /// Seconds between samples of the hub's per-peer byte counters (traffic history).
    pub traffic_sample_s: u64,
    /// `--peer-metrics`: export `watchgrid_peer_{rx,tx}_bytes_total` per device (one
    /// series pair per device, so off unless the operator asks).
    pub peer_metrics: bool,
    /// SERVER_LATITUDE and SERVER_LONGITUDE: where the overview places the hub.
    pub location: Option<(f64, f64)>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            admin_cidrs: Vec::new(),
            jwt_secret: None,
            vpn_subnet: Ipv4Addr::new(10, 100, 0, 0),
            vpn_prefix: 16,
            hub_address: Ipv4Addr::new(10, 100, 0, 1),
            session_ttl_secs: 12 * 3600,
            device_keepalive: 25,
            heartbeat_interval_s: 30,
            metrics_port: Some(9100),
            setup_token_file: None,
            traffic_sample_s: 60,
            peer_metrics: false,
            location: None,
        }
    }
}

pub struct Inner {
    pub store: Arc<Store>,
    pub hub: Arc<dyn Hub>,
    pub config: ApiConfig,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Agents' last heartbeats.
    pub presence: crate::presence::Presence,
    /// Wakes agents' long polls when a command is queued.
    pub command_bell: crate::command_bell::CommandBell,
    /// Held over every device change, hub and store together (add, enable, disable,
    /// delete): two requests with one key cannot both pass the key check, and the hub
    /// and the store see changes in the same order.
    pub device_changes: tokio::sync::Mutex<()>,
    /// Rung when a device is added or enabled, so the expiry timer looks again.
    pub expiry_bell: tokio::sync::Notify,
    /// Failed sign-ins per source, for the burst alert.
    pub burst_windows: crate::alerts::BurstWindows,
    /// Wakes the alert webhook sender.
    pub alert_bell: tokio::sync::Notify,
    /// Agents' log lines; set by the binary (tests may leave it unset: 503).
    pub logs: std::sync::OnceLock<Arc<watchgrid_logstore::LogStore>>,
    /// The one-time setup token; `None` once setup has completed.
    pub setup_token: Mutex<Option<String>>,
    /// PEM of the internal CA root, served at /downloads/ca.crt.
    pub ca_cert_pem: Option<String>,
    /// Changes the HTTPS certificate when setup picks ACME or an uploaded one; set by
    /// the binary once its listener exists.
    pub tls: std::sync::OnceLock<Arc<dyn crate::hub::TlsSwitch>>,
    /// The SSH certificate authority; set by the binary.
    pub ssh_ca: std::sync::OnceLock<Arc<watchgrid_sshca::SshCa>>,
    /// Encrypted backups of the data dir; set by the binary.
    pub backup: std::sync::OnceLock<Arc<dyn crate::hub::BackupSource>>,
    /// The nftables rules; set by the binary when `--firewall on`.
    pub firewall: std::sync::OnceLock<Arc<dyn crate::hub::Firewall>>,
    /// Where uploaded update bundles go and what the image trusts; set by the binary.
    pub update: std::sync::OnceLock<Arc<crate::update::UpdateSite>>,
    /// One bundle upload at a time.
    pub update_uploads: tokio::sync::Mutex<()>,
    /// The admin fence in force (empty: open); changed through the firewall policy.
    pub admin_fence: RwLock<Vec<IpPrefix>>,
    /// Each hub peer as of the latest traffic sample (status pages, live updates).
    pub peers_now: crate::accounting::PeersNow,
    /// Unix second the control plane started (the overview's uptime).
    pub started_at: u64,
    /// What agents keep of the SSH CA (its keys, the KRL) changed this many times since
    /// start; with `ssh_nonce` it makes the heartbeat's `ssh_etag`.
    pub ssh_revision: std::sync::atomic::AtomicU64,
    /// Random per process, so an etag from before a restart never matches one after.
    pub ssh_nonce: u64,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        store: Arc<Store>,
        hub: Arc<dyn Hub>,
        config: ApiConfig,
        setup_token: Option<String>,
        ca_cert_pem: Option<String>,
    ) -> AppState {
        let metrics = Metrics::default();
        let sync_duration = metrics.db_sync_duration.clone();
        store.observe_syncs(Box::new(move |d| sync_duration.observe(d.as_secs_f64())));
        AppState(Arc::new(Inner {
            store,
            hub,
            limits: Limits::default(),
            metrics,
            presence: Default::default(),
            command_bell: Default::default(),
            device_changes: tokio::sync::Mutex::new(()),
            expiry_bell: tokio::sync::Notify::new(),
            burst_windows: Default::default(),
            alert_bell: tokio::sync::Notify::new(),
            logs: std::sync::OnceLock::new(),
            setup_token: Mutex::new(setup_token),
            ca_cert_pem,
            tls: std::sync::OnceLock::new(),
            backup: std::sync::OnceLock::new(),
            update: std::sync::OnceLock::new(),
            update_uploads: tokio::sync::Mutex::new(()),
            ssh_ca: std::sync::OnceLock::new(),
            firewall: std::sync::OnceLock::new(),
            admin_fence: RwLock::new(config.admin_cidrs.clone()),
            peers_now: Default::default(),
            started_at: unix_now(),
            ssh_revision: Default::default(),
            ssh_nonce: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            config,
        }))
    }

    /// The firewall's state (`Off` when the binary runs without one).
    pub fn firewall_status(&self) -> crate::hub::FirewallStatus {
        match self.firewall.get() {
            Some(f) => f.status(),
            None => crate::hub::FirewallStatus::Off,
        }
    }

    /// Re-applies the firewall after a change it depends on. A failure is logged and
    /// shows on `/healthz`; the change itself stands (the hub already has it).
    pub async fn firewall_changed(&self) {
        if let Some(f) = self.firewall.get() {
            if let Err(e) = f.reconcile().await {
                tracing::error!(error = %e, "applying the firewall failed");
            }
        }
    }

    /// The admin fence in force, as CIDR strings.
    pub fn admin_fence_list(&self) -> Vec<String> {
        let fence = self.admin_fence.read().unwrap_or_else(|p| p.into_inner());
        fence.iter().map(|c| c.to_string()).collect()
    }

    pub fn set_admin_fence(&self, fence: Vec<IpPrefix>) {
        *self.admin_fence.write().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    /// True when `ip` may use the setup wizard, admin pages and admin API.
    pub fn admin_allowed(&self, ip: std::net::IpAddr) -> bool {
        let fence = self.admin_fence.read().unwrap_or_else(|p| p.into_inner());
        fence.is_empty() || fence.iter().any(|c| c.contains(ip))
    }

    pub fn setup_done(&self) -> Result<bool, crate::error::ApiError> {
        Ok(self
            .store
            .settings
            .get(watchgrid_store::SETTINGS_KEY)?
            .is_some())
    }
}

/// Microseconds since the UNIX epoch.
pub fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Seconds since the UNIX epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_of_the_config_hides_the_jwt_secret() {
        let config = super::ApiConfig {
            jwt_secret: Some(watchgrid_store::Sensitive::new(
                "jwt-secret-jwt-secret-jwt-secret-0123".into(),
            )),
            ..super::ApiConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("jwt-secret"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}
