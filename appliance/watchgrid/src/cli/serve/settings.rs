//! Resolving what the daemon runs with from its flags and the store: after setup, the
//! VPN subnet chosen there decides the hub's IPv4 address, and every default that
//! follows from it (metrics listeners, certificate names).

use super::args::ServeArgs;
use super::first_boot::Provisioning;
use anyhow::Context;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use watchgrid_api::ApiConfig;
use watchgrid_core::IpPrefix;
use watchgrid_store::{Store, SETTINGS_KEY};

/// Where the metrics listeners go unless --metrics-listen says otherwise.
const METRICS_PORT: u16 = 9100;

/// The daemon's settings once flags and the store are reconciled.
pub struct Settings {
    /// The hub's addresses on the WireGuard interface; the IPv4 one comes first.
    pub addresses: Vec<(IpAddr, u8)>,
    pub metrics_listen: Vec<SocketAddr>,
    /// Names the internal CA's certificate covers.
    pub tls_names: Vec<String>,
    pub api: ApiConfig,
}

pub fn resolve(args: &ServeArgs, p: &Provisioning, store: &Store) -> anyhow::Result<Settings> {
    let mut addresses: Vec<(IpAddr, u8)> = args.hub_address.iter().map(|h| (h.0, h.1)).collect();
    let (mut hub, mut prefix) = addresses
        .iter()
        .find_map(|(a, l)| match a {
            IpAddr::V4(v4) => Some((*v4, *l)),
            IpAddr::V6(_) => None,
        })
        .context("--hub-address needs an IPv4 address (e.g. 10.100.0.1/16)")?;
    let mut subnet = match IpPrefix::new(hub.into(), prefix)?.addr() {
        IpAddr::V4(net) => net,
        IpAddr::V6(_) => hub,
    };
    if let Some(stored) = store.settings.get(SETTINGS_KEY)? {
        (subnet, prefix) = (stored.vpn_subnet_v4, stored.vpn_prefix_v4);
        hub = Ipv4Addr::from(u32::from(subnet) | 1);
        addresses.retain(|(a, _)| a.is_ipv6());
        addresses.insert(0, (IpAddr::V4(hub), prefix));
    }
    // Generated on first start even when --hub-address has an IPv6 address: devices
    // get their IPv6 addresses from it.
    let v6 = hub_v6(store)?;
    if !addresses.iter().any(|(a, _)| a.is_ipv6()) {
        addresses.push((IpAddr::V6(v6), 64));
    }
    let mut api = ApiConfig {
        allowed_origins: https_origins(&args.allowed_origins)?,
        trusted_proxies: parse_cidrs("--trusted-proxies", &args.trusted_proxies)?,
        admin_cidrs: parse_cidrs("--admin-cidrs", &args.admin_cidrs)?,
        jwt_secret: p.jwt_secret.clone(),
        vpn_subnet: subnet,
        vpn_prefix: prefix,
        hub_address: hub,
        heartbeat_interval_s: args.heartbeat_interval,
        traffic_sample_s: args.traffic_sample,
        peer_metrics: args.peer_metrics,
        location: location(args.server_latitude, args.server_longitude)?,
        setup_token_file: Some(args.runtime_dir.join(super::first_boot::TOKEN_FILE)),
        ..ApiConfig::default()
    };
    let metrics_listen = if args.metrics_listen.is_empty() {
        vec![
            SocketAddr::from(([127, 0, 0, 1], METRICS_PORT)),
            SocketAddr::from((hub, METRICS_PORT)),
        ]
    } else {
        args.metrics_listen.clone()
    };
    api.metrics_port = metrics_listen.first().map(|a| a.port());
    let tls_names = match non_empty(&args.tls_names) {
        names if names.is_empty() => default_tls_names(p, hub),
        names => names,
    };
    Ok(Settings {
        addresses,
        metrics_listen,
        tls_names,
        api,
    })
}

/// The hub's address in the VPN's IPv6 ULA /64 (`::1`), the prefix generated on first start.
/// SERVER_LATITUDE and SERVER_LONGITUDE together, each in its range.
fn location(lat: Option<f64>, lon: Option<f64>) -> anyhow::Result<Option<(f64, f64)>> {
    match (lat, lon) {
        (None, None) => Ok(None),
        (Some(lat), Some(lon)) => {
            anyhow::ensure!(
                (-90.0..=90.0).contains(&lat),
                "SERVER_LATITUDE (--server-latitude): {lat} is not within -90 to 90"
            );
            anyhow::ensure!(
                (-180.0..=180.0).contains(&lon),
                "SERVER_LONGITUDE (--server-longitude): {lon} is not within -180 to 180"
            );
            Ok(Some((lat, lon)))
        }
        _ => anyhow::bail!("SERVER_LATITUDE and SERVER_LONGITUDE go together: set both or neither"),
    }
}

fn hub_v6(store: &Store) -> anyhow::Result<Ipv6Addr> {
    let mut random = [0u8; 7];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
    let network = store
        .network_or_init(random)
        .context("the VPN's IPv6 prefix")?;
    Ok(Ipv6Addr::from(u128::from(network.ula_prefix) | 1))
}

/// FRONTEND_HOST, then the address the operator browses to (an appliance's DHCP
/// address), so the banner's first URL is one that works from another machine; then
/// the local names and the hub.
fn default_tls_names(p: &Provisioning, hub: Ipv4Addr) -> Vec<String> {
    let host = super::host_addrs::host_addresses()
        .into_iter()
        .map(|a| a.to_string());
    let local = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let mut names: Vec<String> = p
        .frontend_host
        .iter()
        .cloned()
        .chain(host)
        .chain(local)
        .chain([hub.to_string()])
        .collect();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn non_empty(items: &[String]) -> Vec<String> {
    items.iter().filter(|s| !s.is_empty()).cloned().collect()
}

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

/// WATCHGRID_ALLOWED_ORIGINS: each an `https://HOST[:PORT]` origin. A plain-HTTP page
/// can be written by anyone on the path, so trusting one would undo CORS.
fn https_origins(items: &[String]) -> anyhow::Result<Vec<String>> {
    let items = non_empty(items);
    for o in &items {
        let Some(rest) = o.strip_prefix("https://") else {
            anyhow::bail!("--allowed-origins: {o:?} is not an https:// origin");
        };
        if rest.is_empty() || rest.contains('/') {
            anyhow::bail!("--allowed-origins: {o:?} must be https://HOST[:PORT], no path");
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_16_extra_origins_must_be_https() {
        let ok = https_origins(&["https://a.example".into(), "".into()]).expect("https");
        assert_eq!(ok, vec!["https://a.example".to_string()]);
        for bad in [
            "http://a.example",
            "a.example",
            "https://",
            "https://a.example/x",
        ] {
            let e = https_origins(&[bad.into()]).expect_err(bad).to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
