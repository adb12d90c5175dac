//! `watchgrid serve`: the appliance daemon. The WireGuard hub (the engine on a TUN
//! device with the hub's addresses, its UAPI socket so `wg show` works) plus the HTTPS
//! control plane, which reaches the hub through the dataplane's command channel.
//! The hub is rebuilt from the store (enrolled devices) and `peers.conf` at start.

mod data_dir;
mod first_boot;
mod host_addrs;

use crate::control::hub::DataplaneHub;
use crate::dataplane::uapi::protocol::PeerChange;
use crate::dataplane::uapi::server::UapiSocket;
use crate::dataplane::wgconf;
use crate::dataplane::{Command, Dataplane};
use anyhow::{bail, Context};
use data_dir::{load_or_create_key, prepare_data_dir, read_peers};
use first_boot::{first_boot, print_banner, Banner, Provisioning};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use watchgrid_api::{ApiConfig, AppState};
use watchgrid_core::{IpPrefix, PeerUpdate, PublicKey};
use watchgrid_store::Store;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Data directory (mode 0700): store, keys, certificates.
    #[arg(long, env = "WATCHGRID_DATA_DIR", default_value = "/var/lib/watchgrid")]
    data_dir: PathBuf,
    /// Runtime directory; the setup token is written here until setup completes.
    #[arg(long, env = "WATCHGRID_RUNTIME_DIR", default_value = "/run/watchgrid")]
    runtime_dir: PathBuf,
    /// HTTPS listener for the API, the wizard and the dashboard.
    #[arg(long, env = "WATCHGRID_HTTPS_LISTEN", default_value = "[::]:443")]
    https_listen: SocketAddr,
    /// HTTP listener that redirects to HTTPS, or `off`.
    #[arg(long, env = "WATCHGRID_HTTP_LISTEN", default_value = "[::]:80")]
    http_listen: String,
    /// Metrics listeners (comma separated). Default: 127.0.0.1:9100 and the hub's VPN address.
    #[arg(long, env = "WATCHGRID_METRICS_LISTEN", value_delimiter = ',')]
    metrics_listen: Vec<SocketAddr>,
    /// WireGuard interface name.
    #[arg(long, env = "WATCHGRID_WG_INTERFACE", default_value = "wg0")]
    wg_interface: String,
    /// WireGuard UDP port.
    #[arg(long, env = "WATCHGRID_WG_PORT", default_value_t = 51820)]
    wg_port: u16,
    /// Hub addresses on the VPN, comma separated; the first IPv4 one sets the VPN subnet.
    #[arg(
        long,
        env = "WATCHGRID_HUB_ADDRESS",
        default_value = "10.100.0.1/16",
        value_delimiter = ','
    )]
    hub_address: Vec<String>,
    /// nftables rules owned by the daemon (`table inet watchgrid`): `on` or `off`.
    #[arg(long, env = "WATCHGRID_FIREWALL", default_value = "on")]
    firewall: String,
    /// Remove the daemon's nftables table on a clean shutdown (by default the rules
    /// stay, so the host stays closed while the daemon is down).
    #[arg(long, env = "WATCHGRID_FIREWALL_CLEANUP")]
    firewall_cleanup: bool,
    /// The nft program that applies the rules.
    #[arg(long, env = "WATCHGRID_NFT", default_value = "nft")]
    nft: String,
    /// MTU of the WireGuard interface.
    #[arg(long, env = "WATCHGRID_WG_MTU", default_value_t = 1420)]
    wg_mtu: u16,
    /// Names and addresses the TLS certificate covers (comma separated).
    /// Default: FRONTEND_HOST if set, the host's global addresses at start, localhost,
    /// 127.0.0.1, ::1 and the hub address.
    #[arg(long, env = "WATCHGRID_TLS_NAMES", value_delimiter = ',')]
    tls_names: Vec<String>,
    /// Extra browser origins allowed by CORS (comma separated).
    #[arg(long, env = "WATCHGRID_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Reverse proxies whose X-Forwarded-For is trusted (CIDRs, comma separated).
    #[arg(long, env = "WATCHGRID_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// When set, admin requests are only accepted from these CIDRs (comma separated).
    #[arg(long, env = "WATCHGRID_ADMIN_CIDRS", value_delimiter = ',')]
    admin_cidrs: Vec<String>,
    /// Serve this certificate chain (PEM) instead of the internal CA or ACME.
    #[arg(long, env = "WATCHGRID_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "WATCHGRID_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// ACME directory used when FRONTEND_HOST is set.
    #[arg(
        long,
        env = "WATCHGRID_ACME_DIRECTORY",
        default_value = "https://acme-v02.api.letsencrypt.org/directory"
    )]
    acme_directory: String,
    /// Extra trust root (PEM) for the ACME server's HTTPS, e.g. a private CA.
    #[arg(long, env = "WATCHGRID_ACME_CA_ROOT")]
    acme_ca_root: Option<PathBuf>,
}

/// The hub's private key, generated on first start.
const KEY_FILE: &str = "wg-private.key";
/// Static peers in wg(8) setconf format ([Peer] sections), besides enrolled devices.
const PEERS_FILE: &str = "peers.conf";

fn parse_cidrs(what: &str, items: &[String]) -> anyhow::Result<Vec<IpPrefix>> {
    items
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<IpPrefix>()
                .with_context(|| format!("{what}: {s:?}"))
        })
        .collect()
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    crate::init_logging();
    crate::cli::wg::validate_ifname(&args.wg_interface)?;
    let firewall_on = match args.firewall.as_str() {
        "on" => true,
        "off" => false,
        other => bail!("--firewall {other:?}: expected on or off"),
    };
    let provisioning = Provisioning::from_env()?;
    let mut addresses = args
        .hub_address
        .iter()
        .map(|s| s.parse::<HostAddress>().map(|h| (h.0, h.1)))
        .collect::<anyhow::Result<Vec<(IpAddr, u8)>>>()
        .context("--hub-address")?;
    let (hub_v4, hub_prefix) = addresses
        .iter()
        .find_map(|(a, l)| match a {
            IpAddr::V4(v4) => Some((*v4, *l)),
            IpAddr::V6(_) => None,
        })
        .context("--hub-address needs an IPv4 address (e.g. 10.100.0.1/16)")?;
    let http_listen: Option<SocketAddr> = match args.http_listen.as_str() {
        "off" => None,
        s => Some(s.parse().with_context(|| format!("--http-listen {s:?}"))?),
    };
    let mut metrics_listen = args.metrics_listen.clone();
    if metrics_listen.is_empty() {
        metrics_listen = vec![
            SocketAddr::from(([127, 0, 0, 1], 9100)),
            SocketAddr::from((hub_v4, 9100)),
        ];
    }
    let mut config = ApiConfig {
        allowed_origins: args
            .allowed_origins
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
        trusted_proxies: parse_cidrs("--trusted-proxies", &args.trusted_proxies)?,
        admin_cidrs: parse_cidrs("--admin-cidrs", &args.admin_cidrs)?,
        jwt_secret: provisioning.jwt_secret.clone(),
        vpn_subnet: match IpPrefix::new(hub_v4.into(), hub_prefix)?.addr() {
            IpAddr::V4(net) => net,
            IpAddr::V6(_) => hub_v4,
        },
        vpn_prefix: hub_prefix,
        hub_address: hub_v4,
        ..ApiConfig::default()
    };
    let mut tls_names = args
        .tls_names
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>();
    if tls_names.is_empty() {
        tls_names = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            hub_v4.to_string(),
        ];
        // The address the operator browses to (an appliance's DHCP address) first, so
        // the banner's first URL is one that works from another machine.
        for (i, a) in host_addrs::host_addresses().into_iter().enumerate() {
            tls_names.insert(i, a.to_string());
        }
        if let Some(h) = &provisioning.frontend_host {
            tls_names.insert(0, h.clone());
        }
        let mut seen = std::collections::HashSet::new();
        tls_names.retain(|n| seen.insert(n.clone()));
    }

    prepare_data_dir(&args.data_dir)?;
    let store = Arc::new(Store::open(&args.data_dir).context("opening the store")?);
    // After setup, the VPN subnet chosen there decides the hub's IPv4 address.
    if let Some(settings) = store.settings.get(watchgrid_store::SETTINGS_KEY)? {
        let hub = std::net::Ipv4Addr::from(u32::from(settings.vpn_subnet_v4) | 1);
        let prefix = settings.vpn_prefix_v4;
        addresses.retain(|(a, _)| a.is_ipv6());
        addresses.insert(0, (IpAddr::V4(hub), prefix));
        if args.metrics_listen.is_empty() {
            metrics_listen = vec![
                SocketAddr::from(([127, 0, 0, 1], 9100)),
                SocketAddr::from((hub, 9100)),
            ];
        }
        if args.tls_names.is_empty() {
            for n in tls_names.iter_mut().filter(|n| **n == hub_v4.to_string()) {
                *n = hub.to_string();
            }
        }
        config.vpn_subnet = settings.vpn_subnet_v4;
        config.vpn_prefix = prefix;
        config.hub_address = hub;
    }
    // The VPN's IPv6 ULA /64, generated on first start; the hub is ::1 in it.
    let mut random = [0u8; 7];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
    let network = store
        .network_or_init(random)
        .context("the VPN's IPv6 prefix")?;
    if !addresses.iter().any(|(a, _)| a.is_ipv6()) {
        let hub_v6 = std::net::Ipv6Addr::from(u128::from(network.ula_prefix) | 1);
        addresses.push((IpAddr::V6(hub_v6), 64));
    }
    let key = load_or_create_key(&args.data_dir.join(KEY_FILE))?;
    let hub_public = wgconf::encode_key(&key.public_key().0);
    let mut wg_config = read_peers(&args.data_dir.join(PEERS_FILE))?;
    wg_config.private_key = Some(Some(key.clone()));
    wg_config.listen_port = None;
    wg_config.peers.extend(device_peers(&store)?);
    // TLS: flags and environment first (--tls-cert, FRONTEND_HOST), then the choice made
    // at setup, else the internal CA.
    let chosen = store
        .settings
        .get(watchgrid_store::SETTINGS_KEY)?
        .map(|s| s.tls)
        .unwrap_or_default();
    let acme_target = provisioning
        .frontend_host
        .clone()
        .map(|d| (d, provisioning.acme_email.clone()))
        .or(match &chosen {
            watchgrid_store::TlsChoice::Acme { domain, email } => {
                Some((domain.clone(), email.clone()))
            }
            _ => None,
        });
    let static_tls = match (&args.tls_cert, &args.tls_key, &acme_target) {
        (Some(cert), Some(key), _) => {
            Some(crate::control::tls::uploaded(cert, key).context("--tls-cert/--tls-key")?)
        }
        (_, _, Some(_)) => None,
        _ if chosen == watchgrid_store::TlsChoice::Uploaded => {
            let (cert, key) = crate::control::tls_switch::uploaded_paths(&args.data_dir);
            Some(
                crate::control::tls::uploaded(&cert, &key)
                    .context("the certificate uploaded at setup")?,
            )
        }
        _ => Some(
            crate::control::tls::internal_ca(&args.data_dir, &tls_names)
                .context("setting up TLS")?,
        ),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let tls = match static_tls {
            Some(t) => t,
            None => {
                let (domain, email) = acme_target.clone().unwrap_or_default();
                let settings = crate::control::acme::AcmeSettings {
                    domain,
                    email,
                    directory: args.acme_directory.clone(),
                    ca_root: args.acme_ca_root.clone(),
                };
                crate::control::tls::TlsMaterial {
                    config: crate::control::acme::start(&settings, &args.data_dir).context("starting ACME")?,
                    certs: None,
                    ca_pem: None,
                    leaf_fingerprint: None,
                    ca_fingerprint: None,
                }
            }
        };
        let tun = crate::cli::wg::open_tun(&args.wg_interface, args.wg_mtu, Some(&addresses))?;
        let mut dataplane = Dataplane::new(tun, args.wg_port)?;
        let peers = wg_config.peers.len();
        dataplane
            .apply(wg_config)
            .map_err(|e| anyhow::anyhow!("configuring the hub's peers: {}", e.message))?;
        let socket = UapiSocket::bind(&args.wg_interface)?;
        let (tx, rx) = mpsc::channel::<Command>(64);
        let hub = Arc::new(DataplaneHub {
            commands: tx.clone(),
            public_key: hub_public.clone(),
            peers: dataplane.peer_gauge(),
        });

        let setup_token = first_boot(&store, &provisioning, &args.runtime_dir, &config).await?;
        let node = watchgrid_firewall::Node {
            wg_interface: args.wg_interface.clone(),
            wg_port: args.wg_port,
            public_tcp_ports: std::iter::once(args.https_listen.port())
                .chain(http_listen.map(|a| a.port()))
                .collect(),
            metrics_port: metrics_listen.first().map(|a| a.port()),
            vpn_v4: IpPrefix::new(IpAddr::V4(config.vpn_subnet), config.vpn_prefix)?,
            vpn_v6: None,
        };
        let state = AppState::new(store.clone(), hub, config, setup_token.clone(), tls.ca_pem.clone());
        // The admin fence: --admin-cidrs, else the stored policy, else the default.
        watchgrid_api::routes::firewall::refresh_fence(&state)
            .map_err(|e| anyhow::anyhow!("the admin fence: {e}"))?;
        // The firewall goes up before any listener opens. A failure leaves the daemon
        // running (devices keep their tunnels) and reports degraded on /healthz.
        let firewall = if firewall_on {
            let fw = crate::control::firewall::NftFirewall::new(store.clone(), node, args.nft.clone());
            let _ = fw.clone().apply_now().await;
            if state.firewall.set(Arc::new(crate::control::firewall::FirewallHandle(fw.clone()))).is_err() {
                tracing::warn!("firewall already set");
            }
            Some(fw)
        } else {
            tracing::warn!("--firewall off: the daemon manages no firewall rules");
            None
        };
        let live_tls = crate::control::tls_switch::live(tls.config.clone());
        let switch = crate::control::tls_switch::ListenerTls {
            live: live_tls.clone(),
            data_dir: args.data_dir.clone(),
            acme_directory: args.acme_directory.clone(),
            acme_ca_root: args.acme_ca_root.clone(),
        };
        if state.tls.set(Arc::new(switch)).is_err() {
            tracing::warn!("TLS switch already set");
        }
        let app = watchgrid_api::router(state.clone());

        let https = TcpListener::bind(args.https_listen)
            .await
            .with_context(|| format!("binding HTTPS on {} (needs CAP_NET_BIND_SERVICE below 1024; see --https-listen)", args.https_listen))?;
        tokio::spawn(crate::control::listeners::serve_https(https, live_tls, app));
        if let Some(addr) = http_listen {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding HTTP on {addr} (see --http-listen, or pass off)"))?;
            tokio::spawn(crate::control::listeners::serve_plain(l, crate::control::listeners::redirect_router(args.https_listen.port())));
        }
        for addr in &metrics_listen {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    tokio::spawn(crate::control::listeners::serve_plain(l, crate::control::listeners::metrics_router(state.clone())));
                }
                Err(e) => tracing::warn!(address = %addr, error = %e, "metrics listener not available"),
            }
        }
        // Idle rate-limit buckets: swept every 5 minutes (SPEC §6).
        let sweeper = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(300));
            loop {
                every.tick().await;
                sweeper.limits.evict_idle();
            }
        });
        // The internal CA's leaf is checked twice a day and renewed before it expires.
        if let (Some(certs), Some(fp), true) =
            (tls.certs.clone(), tls.leaf_fingerprint.clone(), tls.ca_pem.is_some())
        {
            let (dir, names) = (args.data_dir.clone(), tls_names.clone());
            tokio::spawn(async move {
                let mut current = fp;
                let mut every = tokio::time::interval(std::time::Duration::from_secs(12 * 3600));
                every.tick().await;
                loop {
                    every.tick().await;
                    match crate::control::tls::renew_internal(&dir, &names, &certs, &current) {
                        Ok(Some(new_fp)) => {
                            tracing::info!(fingerprint = %new_fp, "renewed the TLS certificate");
                            current = new_fp;
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "renewing the TLS certificate"),
                    }
                }
            });
        }
        // Devices past their expiry date leave the hub.
        let expirer = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                every.tick().await;
                if let Err(e) = watchgrid_api::routes::devices::expire_devices(&expirer).await {
                    tracing::error!(error = %e, "expiring devices");
                }
            }
        });
        let uapi = tokio::spawn(socket.serve(tx));

        tracing::info!(
            interface = %args.wg_interface,
            port = dataplane.listen_port(),
            public_key = %hub_public,
            peers,
            "WireGuard hub ready"
        );
        let shown_names = match &acme_target {
            Some((h, _)) if args.tls_cert.is_none() => vec![h.clone()],
            _ => tls_names.clone(),
        };
        print_banner(&Banner {
            https_port: args.https_listen.port(),
            runtime_dir: &args.runtime_dir,
            acme_directory: &args.acme_directory,
            tls: &tls,
            token: setup_token.as_deref(),
            names: &shown_names,
        });
        dataplane.initiate_handshakes();
        let result = dataplane.run(rx, crate::shutdown_signal()).await;
        let result = result.map(|endpoints| save_endpoints(&store, &endpoints));
        if let (Some(fw), true) = (&firewall, args.firewall_cleanup) {
            fw.remove();
        }
        uapi.abort();
        let _ = uapi.await;
        result
    })
}

/// Remembers where each device was, so the next start can reach it at once.
fn save_endpoints(store: &Store, endpoints: &[(PublicKey, SocketAddr)]) {
    let devices = match store.devices.list() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "reading devices to save their endpoints");
            return;
        }
    };
    let by_key: std::collections::HashMap<String, String> =
        devices.into_iter().map(|d| (d.public_key, d.id)).collect();
    for (key, ep) in endpoints {
        let Some(id) = by_key.get(&wgconf::encode_key(&key.0)) else {
            continue;
        };
        let saved = store.devices.update(id, |cur| {
            Ok::<_, ()>(cur.map(|d| watchgrid_store::Device {
                last_endpoint: Some(ep.to_string()),
                ..d
            }))
        });
        if let Err(e) = saved {
            tracing::warn!(device = %id, error = %e, "saving the last endpoint");
        }
    }
}

/// Enabled, unexpired devices from the store become hub peers at start.
fn device_peers(store: &Store) -> anyhow::Result<Vec<PeerChange>> {
    let now = watchgrid_api::state::unix_now();
    let mut out = Vec::new();
    for d in store.devices.list().context("reading devices")? {
        if !d.enabled || d.expires_at.is_some_and(|e| now >= e) {
            continue;
        }
        let key = wgconf::decode_key(&d.public_key).with_context(|| format!("device {}", d.id))?;
        out.push(PeerChange {
            public_key: PublicKey(key),
            remove: false,
            update_only: false,
            update: PeerUpdate {
                endpoint: d.last_endpoint.as_deref().and_then(|e| e.parse().ok()),
                replace_allowed_ips: true,
                allowed_ips: std::iter::once(IpPrefix::host(d.address_v4.into()))
                    .chain(d.address_v6.map(|a| IpPrefix::host(a.into())))
                    .collect(),
                ..PeerUpdate::default()
            },
        });
    }
    Ok(out)
}

/// An interface address with its prefix length, e.g. `10.100.0.1/16` (host bits kept).
struct HostAddress(IpAddr, u8);

impl std::str::FromStr for HostAddress {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (addr, len) = s
            .split_once('/')
            .with_context(|| format!("{s:?}: expected ADDRESS/PREFIX, e.g. 10.100.0.1/16"))?;
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .with_context(|| format!("{s:?}: bad address"))?;
        let len: u8 = len
            .trim()
            .parse()
            .with_context(|| format!("{s:?}: bad prefix length"))?;
        // Validate the length, but keep the host part: it is the hub's own address.
        IpPrefix::new(addr, len).with_context(|| format!("{s:?}"))?;
        Ok(HostAddress(addr, len))
    }
}
