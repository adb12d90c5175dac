//! Persistent keepalive keeps a NAT mapping alive.
//!
//! ```text
//!  peer ns  10.0.1.2 --- 10.0.1.1  nat ns  10.0.2.1 --- 10.0.2.2  hub ns
//!  (tunnel 10.100.0.2)             masquerade, UDP conntrack       (tunnel 10.100.0.1)
//!                                   timeouts 3 s
//! ```
//!
//! The hub has no endpoint for the peer and no route to 10.0.1.0/24: it can only reach the peer
//! through the mapping the peer's packets create. After idling longer than the conntrack
//! timeout (but shorter than WireGuard's 10 s passive keepalive), a hub-initiated ping works
//! only if the peer kept the mapping alive with persistent keepalives. The control case without
//! keepalive shows the same ping failing, so the scenario can tell the difference.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::{run_with_input, scenario, veth, Impl, Netns, PeerConfig, WgDevice};

const HUB_TUN: &str = "10.100.0.1";
const PEER_TUN: &str = "10.100.0.2";
const NAT_WAN: &str = "10.0.2.1";
const CONNTRACK_TIMEOUT_S: u64 = 3;
/// Longer than the conntrack timeout, shorter than the 10 s passive keepalive.
const IDLE: Duration = Duration::from_secs(2 * CONNTRACK_TIMEOUT_S);

struct NatSetup {
    // Devices first: they stop before their namespaces are deleted.
    peer: WgDevice,
    hub: WgDevice,
    ns_peer: Netns,
    ns_hub: Netns,
    _ns_nat: Netns,
}

fn setup(peer_impl: Impl, hub_impl: Impl, keepalive: Option<u16>) -> Result<NatSetup> {
    let ns_peer = Netns::new("peer")?;
    let ns_nat = Netns::new("nat")?;
    let ns_hub = Netns::new("hub")?;
    veth(&ns_peer, "eth0", &ns_nat, "lan0")?;
    veth(&ns_nat, "wan0", &ns_hub, "eth0")?;
    ns_peer.add_addr("eth0", "10.0.1.2/24")?;
    ns_peer.route_add(&["default", "via", "10.0.1.1"])?;
    ns_nat.add_addr("lan0", "10.0.1.1/24")?;
    ns_nat.add_addr("wan0", "10.0.2.1/24")?;
    ns_hub.add_addr("eth0", "10.0.2.2/24")?;
    ns_nat.sysctl(&[
        "net.ipv4.ip_forward=1",
        &format!("net.netfilter.nf_conntrack_udp_timeout={CONNTRACK_TIMEOUT_S}"),
        &format!("net.netfilter.nf_conntrack_udp_timeout_stream={CONNTRACK_TIMEOUT_S}"),
    ])?;
    run_with_input(
        &ns_nat.argv(&["nft", "-f", "-"]),
        b"table ip nat {\n\
          \tchain postrouting {\n\
          \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
          \t\toifname \"wan0\" masquerade\n\
          \t}\n\
          }\n",
    )?;

    let hub = WgDevice::start(&ns_hub, hub_impl, 51820)?;
    let peer = WgDevice::start(&ns_peer, peer_impl, 51821)?;
    hub.add_peer(&PeerConfig::new(peer.public_key()).allowed(&["10.100.0.2/32"]))?;
    let mut to_hub = PeerConfig::new(hub.public_key())
        .allowed(&["10.100.0.1/32"])
        .endpoint("10.0.2.2:51820");
    if let Some(k) = keepalive {
        to_hub = to_hub.keepalive(k);
    }
    peer.add_peer(&to_hub)?;
    hub.add_addr("10.100.0.1/24")?;
    peer.add_addr("10.100.0.2/24")?;
    hub.up()?;
    peer.up()?;
    Ok(NatSetup {
        peer,
        hub,
        ns_peer,
        ns_hub,
        _ns_nat: ns_nat,
    })
}

fn nat_scenario(peer_impl: Impl, hub_impl: Impl, keepalive: Option<u16>) -> Result<()> {
    eprintln!(
        "peer = {} (persistent keepalive {keepalive:?}), hub = {}",
        peer_impl.describe(),
        hub_impl.describe()
    );
    let mut s = setup(peer_impl, hub_impl, keepalive)?;
    s.ns_peer
        .ping_within(HUB_TUN, Duration::from_secs(10))
        .context("peer -> hub through the NAT")?;
    let ep = s.hub.endpoint(s.peer.public_key())?;
    ensure!(
        ep.as_deref()
            .is_some_and(|e| e.starts_with(&format!("{NAT_WAN}:"))),
        "the hub should have learned the peer's NATed endpoint {NAT_WAN}:*, has {ep:?}"
    );
    s.ns_hub
        .ping_args(PEER_TUN, &[])
        .context("hub -> peer while the NAT mapping is fresh")?;

    let rx_before = s.hub.peer(s.peer.public_key())?.rx_bytes;
    // Deliberate idle period: the scenario is "nothing but keepalives for longer than the
    // conntrack timeout"; there is no event to poll for.
    std::thread::sleep(IDLE);
    let rx_idle = s.hub.peer(s.peer.public_key())?.rx_bytes - rx_before;
    let reached = s.ns_hub.ping(PEER_TUN);
    eprintln!(
        "after {IDLE:?} idle: hub received {rx_idle} tunnel bytes from the peer; \
         hub-initiated ping {}",
        if reached { "succeeded" } else { "failed" }
    );
    match keepalive {
        Some(k) => {
            // IDLE/k keepalives of 32 bytes are due; timer granularity (boringtun polls at
            // 250 ms with 1 s resolution) may stretch the interval, so ask for half.
            let min = IDLE.as_secs() / u64::from(k) / 2 * 32;
            ensure!(
                rx_idle >= min,
                "with persistent-keepalive {k} the hub got only {rx_idle} bytes in {IDLE:?} \
                 (expected >= {min}: keepalives are 32 bytes)"
            );
            ensure!(
                reached,
                "hub could not reach the peer after {IDLE:?} idle despite persistent-keepalive {k}"
            );
        }
        None => {
            ensure!(
                rx_idle == 0,
                "without persistent keepalive the peer still sent {rx_idle} bytes while idle"
            );
            ensure!(
                !reached,
                "control case: without keepalive the NAT mapping should have expired after \
                 {IDLE:?} and the hub-initiated ping should fail"
            );
        }
    }
    s.peer.ensure_running()?;
    s.hub.ensure_running()
}

#[test]
fn nat_keepalive_ours_peer_wggo_hub() -> Result<()> {
    scenario(|| nat_scenario(Impl::Ours, Impl::WireguardGo, Some(1)))
}

#[test]
fn nat_keepalive_wggo_peer_ours_hub() -> Result<()> {
    scenario(|| nat_scenario(Impl::WireguardGo, Impl::Ours, Some(1)))
}

#[test]
fn nat_keepalive_ours_ours() -> Result<()> {
    scenario(|| nat_scenario(Impl::Ours, Impl::Ours, Some(1)))
}

#[test]
fn nat_no_keepalive_control_ours_peer_wggo_hub() -> Result<()> {
    scenario(|| nat_scenario(Impl::Ours, Impl::WireguardGo, None))
}
