//! `watchgrid serve`'s flags. Each setting has one source: its flag, or the environment
//! variable named beside it; each default is written here once.

use super::first_boot::Provisioning;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use watchgrid_core::IpPrefix;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Data directory (mode 0700): store, keys, certificates.
    #[arg(long, env = "WATCHGRID_DATA_DIR", default_value = "/var/lib/watchgrid")]
    pub data_dir: PathBuf,
    /// Runtime directory; the setup token is written here until setup completes.
    #[arg(long, env = "WATCHGRID_RUNTIME_DIR", default_value = "/run/watchgrid")]
    pub runtime_dir: PathBuf,
    /// The release keys update bundles must be signed with (`*.pub` files).
    #[arg(long, env = "WATCHGRID_UPDATE_KEYS", default_value = watchgrid_update::keys::TRUSTED_DIR)]
    pub update_keys: PathBuf,
    /// HTTPS listener for the API, the wizard and the dashboard.
    #[arg(long, env = "WATCHGRID_HTTPS_LISTEN", default_value = "[::]:443")]
    pub https_listen: SocketAddr,
    /// HTTP listener that redirects to HTTPS, or `off`.
    #[arg(
        long,
        env = "WATCHGRID_HTTP_LISTEN",
        default_value = "[::]:80",
        value_parser = parse_http_listen
    )]
    pub http_listen: ::std::option::Option<SocketAddr>,
    /// Metrics listeners (comma separated). Default: 127.0.0.1:9100 and the hub's VPN address.
    #[arg(long, env = "WATCHGRID_METRICS_LISTEN", value_delimiter = ',')]
    pub metrics_listen: Vec<SocketAddr>,
    /// WireGuard interface name.
    #[arg(long, env = "WATCHGRID_WG_INTERFACE", default_value = "wg0")]
    pub wg_interface: String,
    /// WireGuard UDP port.
    #[arg(long, env = "WATCHGRID_WG_PORT", default_value_t = 51820)]
    pub wg_port: u16,
    /// Hub addresses on the VPN, comma separated; the first IPv4 one sets the VPN subnet.
    #[arg(
        long,
        env = "WATCHGRID_HUB_ADDRESS",
        default_value = "10.100.0.1/16",
        value_delimiter = ','
    )]
    pub hub_address: Vec<HostAddress>,
    /// nftables rules owned by the daemon (`table inet watchgrid`).
    #[arg(long, env = "WATCHGRID_FIREWALL", value_enum, default_value_t = FirewallMode::On)]
    pub firewall: FirewallMode,
    /// Remove the daemon's nftables table on a clean shutdown (by default the rules
    /// stay, so the host stays closed while the daemon is down).
    #[arg(long, env = "WATCHGRID_FIREWALL_CLEANUP")]
    pub firewall_cleanup: bool,
    /// The nft program that applies the rules.
    #[arg(long, env = "WATCHGRID_NFT", default_value = "nft")]
    pub nft: String,
    /// Seconds between agents' heartbeats; an agent that misses three is offline.
    #[arg(long, env = "WATCHGRID_HEARTBEAT_INTERVAL", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_interval: u64,
    /// Seconds between samples of each peer's traffic (the history the dashboard charts
    /// and quotas count; minute buckets, so more than 60 only coarsens them).
    #[arg(long, env = "WATCHGRID_TRAFFIC_SAMPLE", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=60))]
    pub traffic_sample: u64,
    /// Export watchgrid_peer_rx_bytes_total / watchgrid_peer_tx_bytes_total for every
    /// device (one series pair per device: off by default for the scraper's sake).
    #[arg(long, env = "WATCHGRID_PEER_METRICS")]
    pub peer_metrics: bool,
    /// Where the hub stands, for the dashboard's overview (decimal degrees; both or neither).
    #[arg(long, env = "SERVER_LATITUDE", allow_negative_numbers = true)]
    pub server_latitude: Option<f64>,
    #[arg(long, env = "SERVER_LONGITUDE", allow_negative_numbers = true)]
    pub server_longitude: Option<f64>,
    /// MTU of the WireGuard interface.
    #[arg(long, env = "WATCHGRID_WG_MTU", default_value_t = 1420)]
    pub wg_mtu: u16,
    /// Names and addresses the TLS certificate covers (comma separated).
    /// Default: FRONTEND_HOST if set, the host's global addresses at start, localhost,
    /// 127.0.0.1, ::1 and the hub address.
    #[arg(long, env = "WATCHGRID_TLS_NAMES", value_delimiter = ',')]
    pub tls_names: Vec<String>,
    /// Extra browser origins allowed by CORS (comma separated).
    #[arg(long, env = "WATCHGRID_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose X-Forwarded-For is trusted (CIDRs, comma separated).
    #[arg(long, env = "WATCHGRID_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// When set, admin requests are only accepted from these CIDRs (comma separated).
    #[arg(long, env = "WATCHGRID_ADMIN_CIDRS", value_delimiter = ',')]
    pub admin_cidrs: Vec<String>,
    /// Serve this certificate chain (PEM) instead of the internal CA or ACME.
    #[arg(long, env = "WATCHGRID_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "WATCHGRID_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// ACME directory used when FRONTEND_HOST is set.
    #[arg(
        long,
        env = "WATCHGRID_ACME_DIRECTORY",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    pub acme_directory: String,
    /// Extra trust root (PEM) for the ACME server's HTTPS, e.g. a private CA.
    #[arg(long, env = "WATCHGRID_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,
    #[command(flatten)]
    pub provisioning: Provisioning,
}

/// Whether the daemon owns the host's nftables rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FirewallMode {
    On,
    Off,
}

/// `off`, or the address to listen on.
fn parse_http_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    match s {
        "off" => Ok(None),
        s => s
            .parse()
            .map(Some)
            .map_err(|e| format!("{e} (an ADDRESS:PORT, or off)")),
    }
}

/// An interface address with its prefix length, e.g. `10.100.0.1/16` (host bits kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostAddress(pub IpAddr, pub u8);

impl std::str::FromStr for HostAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX, e.g. 10.100.0.1/16"))?;
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: bad address"))?;
        let len: u8 = len
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: bad prefix length"))?;
        // Validate the length, but keep the host part: it is the hub's own address.
        IpPrefix::new(addr, len).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(HostAddress(addr, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(argv: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = std::iter::once("serve").chain(argv.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.serve)
    }

    #[test]
    fn flags_parse_into_types() {
        let a = parse(&[
            "--http-listen",
            "off",
            "--firewall",
            "off",
            "--hub-address",
            "10.9.0.1/24,fd00::1/64",
        ])
        .expect("valid flags");
        assert_eq!(a.http_listen, None);
        assert_eq!(a.firewall, FirewallMode::Off);
        assert_eq!(
            a.hub_address,
            vec![
                HostAddress("10.9.0.1".parse().expect("ip"), 24),
                HostAddress("fd00::1".parse().expect("ip"), 64)
            ]
        );
        let a = parse(&["--http-listen", "127.0.0.1:8080"]).expect("valid flags");
        assert_eq!(a.http_listen, Some("127.0.0.1:8080".parse().expect("addr")));
    }

    #[test]
    fn bad_values_are_refused_at_parse_time() {
        for argv in [
            &["--firewall", "maybe"][..],
            &["--http-listen", "nowhere"],
            &["--hub-address", "10.0.0.1"],
            &["--hub-address", "10.0.0.1/33"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?}");
        }
    }
}
