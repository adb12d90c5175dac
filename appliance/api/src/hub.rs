//! How the control plane reaches the WireGuard hub: through the dataplane's command
//! channel (implemented by the binary), never by sharing engine state.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::pin::Pin;
use watchgrid_core::{EngineError, IpPrefix, PublicKey};

pub type HubFuture = Pin<Box<dyn Future<Output = Result<(), HubError>> + Send>>;
pub type FirewallFuture = Pin<Box<dyn Future<Output = Result<(), FirewallError>> + Send>>;
pub type PeerStatsFuture = Pin<Box<dyn Future<Output = Result<Vec<PeerStats>, HubError>> + Send>>;

/// What the hub knows of one peer now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    pub public_key: PublicKey,
    /// Where its datagrams last came from.
    pub endpoint: Option<std::net::SocketAddr>,
    /// Since its latest completed handshake, if there was one.
    pub last_handshake_age: Option<std::time::Duration>,
    /// Wire bytes received from / sent to it since it was put on the hub. They start
    /// again from zero when the peer is removed and added back, or the daemon restarts.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Why the hub did not apply a change.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The dataplane task is gone (the daemon is shutting down).
    #[error("the dataplane has stopped")]
    Stopped,
    /// The engine refused the peer (its key is the hub's own, or the table is full).
    #[error("{0}")]
    Peer(#[from] EngineError),
    /// The kernel refused the interface's new address.
    #[error("setting {address}/{prefix}: {source}")]
    Address {
        address: Ipv4Addr,
        prefix: u8,
        source: std::io::Error,
    },
}

/// Why the HTTPS certificate was not switched.
#[derive(Debug, thiserror::Error)]
pub enum TlsSwitchError {
    /// The directory for the uploaded files could not be created.
    #[error("creating {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Writing the uploaded files into the data dir failed.
    #[error("saving the upload: {0}")]
    Save(std::io::Error),
    /// Moving the checked files into place failed.
    #[error("installing the upload: {0}")]
    Install(std::io::Error),
    /// The uploaded chain and key do not make a usable certificate.
    #[error("{0}")]
    Unusable(String),
    /// ACME could not be started for the domain.
    #[error("{0}")]
    Acme(String),
}

/// Why the firewall was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The store could not be read to render the rules.
    #[error("reading the store: {0}")]
    Store(#[from] watchgrid_store::StoreError),
    /// The VPN subnet in the store is not a valid prefix.
    #[error("the stored VPN subnet: {0}")]
    Subnet(#[from] watchgrid_core::PrefixError),
    /// `nft` could not be run, or refused the ruleset.
    #[error("running {program}: {reason}")]
    Nft { program: String, reason: String },
    /// The blocking apply task panicked or was cancelled.
    #[error("the apply task failed: {0}")]
    Task(String),
}

/// Takes an encrypted backup of the whole appliance (implemented by the binary, which
/// knows the data dir). Blocking: scrypt and the snapshot run on the caller's thread.
pub trait BackupSource: Send + Sync + 'static {
    /// The backup file's bytes, encrypted to `passphrase`, and its suggested file name.
    fn take(&self, passphrase: &str) -> Result<(Vec<u8>, String), BackupRefused>;
    /// Decrypts and checks the backup at `file`; a one-line summary of what it holds.
    fn verify(&self, file: &std::path::Path, passphrase: &str) -> Result<String, BackupRefused>;
    /// The directory scheduled backups are kept in.
    fn dir(&self) -> std::path::PathBuf;
    /// Checks a whole backup and stages it to replace this (not yet set up) appliance's
    /// data at the next start; a one-line summary of what it holds. Nothing is staged
    /// unless every part checks out.
    fn stage_restore(&self, backup: &[u8], passphrase: &str) -> Result<String, BackupRefused>;
    /// Restarts the daemon (in place), which applies a staged restore.
    fn restart(&self);
}

/// Why no backup was made.
#[derive(Debug, thiserror::Error)]
pub enum BackupRefused {
    /// The request's fault (a passphrase too short): 422.
    #[error("{0}")]
    Invalid(String),
    /// The appliance's: 500, logged.
    #[error("{0}")]
    Failed(String),
    /// Another backup is being taken (each costs a second of CPU and 128 MiB): 503.
    #[error("another backup is being taken; try again in a few seconds")]
    Busy,
}

/// How the control plane changes the HTTPS certificate at setup (implemented by the
/// binary, which owns the listener).
pub trait TlsSwitch: Send + Sync + 'static {
    /// Checks and installs an uploaded chain and key (PEM) and serves them at once.
    fn use_uploaded(&self, cert_pem: &str, key_pem: &str) -> Result<(), TlsSwitchError>;
    /// Starts ACME for `domain` and serves its certificate once issued; until then the
    /// certificate served so far stays.
    fn use_acme(&self, domain: &str, email: Option<&str>) -> Result<(), TlsSwitchError>;
    /// What is served now and how an ACME order is going.
    fn status(&self) -> TlsStatus;
}

/// The certificate the HTTPS listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsServing {
    /// The internal CA's leaf (also while an ACME certificate is on its way).
    Internal,
    Uploaded,
    Acme,
}

/// An ACME order's progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AcmeStatus {
    pub domain: String,
    /// When the certificate being served was issued or loaded from the cache.
    pub certificate_since: Option<u64>,
    /// The last failure of an order (rustls-acme retries by itself), and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TlsStatus {
    pub serving: TlsServing,
    /// Present when ACME is configured.
    pub acme: Option<AcmeStatus>,
}

pub trait Hub: Send + Sync + 'static {
    /// The hub's WireGuard public key.
    fn public_key(&self) -> PublicKey;
    /// Adds or replaces a peer; resolves once the dataplane has applied it.
    fn set_peer(&self, key: PublicKey, allowed_ips: Vec<IpPrefix>) -> HubFuture;
    /// Removes a peer (no error if it is absent).
    fn remove_peer(&self, key: PublicKey) -> HubFuture;
    /// Number of peers the hub has now, for the metrics.
    fn peer_count(&self) -> usize;
    /// Every peer's counters, endpoint and handshake age (traffic accounting, status).
    fn peer_stats(&self) -> PeerStatsFuture;
    /// Moves the hub's IPv4 address (the VPN subnet chosen at setup).
    fn set_hub_address(&self, address: Ipv4Addr, prefix: u8) -> HubFuture;
}

/// The appliance's nftables rules (implemented by the binary). The API stores the
/// policy and device groups; `reconcile` renders them from the store and applies them.
pub trait Firewall: Send + Sync + 'static {
    /// Applies the ruleset for what the store holds now; resolves once `nft` is done.
    fn reconcile(&self) -> FirewallFuture;
    /// The outcome of the last apply, for `/healthz` and the firewall page.
    fn status(&self) -> FirewallStatus;
}

/// How the last apply went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallStatus {
    /// `--firewall off`: the daemon manages no rules.
    Off,
    /// Not applied yet (start-up).
    Pending,
    Applied {
        at: u64,
    },
    Failed {
        at: u64,
        error: String,
        /// An earlier ruleset of this run is still in force: nft replaces a ruleset
        /// atomically, so a refused apply leaves the last good one.
        in_force: bool,
    },
}

impl FirewallStatus {
    /// Whether the appliance may answer beyond `/healthz`: a ruleset of this run is in
    /// force, or the operator chose to manage no firewall (`--firewall off`).
    pub fn protects(&self) -> bool {
        match self {
            FirewallStatus::Off | FirewallStatus::Applied { .. } => true,
            FirewallStatus::Pending => false,
            FirewallStatus::Failed { in_force, .. } => *in_force,
        }
    }
}
