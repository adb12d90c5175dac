//! `watchgrid serve` as a hub: peers from peers.conf, a key generated on first start and kept,
//! and the kernel forwarding between two wireguard-go peers through it.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::{
    genpsk, scenario, uapi_socket, unique_name, unix_now, veth, wait_until, Impl, Netns,
    PeerConfig, WgDevice,
};

const TEN: Duration = Duration::from_secs(10);
const HUB_ADDRS: [&str; 2] = ["10.77.0.1/24", "fd77::1/64"];

/// Two wireguard-go peers, each on its own link to the hub, ping each other through it.
/// Peer 1 is known to the hub with an Endpoint in peers.conf; peer 2 has no Endpoint but a
/// PresharedKey, and announces itself with persistent keepalives.
fn hub_routing(hub_impl: Impl) -> Result<()> {
    eprintln!("hub = {}, peers = wireguard-go", hub_impl.describe());
    let ns_hub = Netns::new("hub")?;
    let ns_p1 = Netns::new("p1")?;
    let ns_p2 = Netns::new("p2")?;
    veth(&ns_hub, "eth1", &ns_p1, "eth0")?;
    veth(&ns_hub, "eth2", &ns_p2, "eth0")?;
    ns_hub.add_addr("eth1", "10.0.1.1/24")?;
    ns_p1.add_addr("eth0", "10.0.1.2/24")?;
    ns_hub.add_addr("eth2", "10.0.2.1/24")?;
    ns_p2.add_addr("eth0", "10.0.2.2/24")?;
    ns_hub.sysctl(&[
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.all.send_redirects=0",
    ])?;

    let p1 = WgDevice::start(&ns_p1, Impl::WireguardGo, 51820)?;
    let p2 = WgDevice::start(&ns_p2, Impl::WireguardGo, 51820)?;
    let psk = genpsk()?;
    let peers_conf = format!(
        "# peers of the test hub\n{}\n{}",
        PeerConfig::new(p1.public_key())
            .allowed(&["10.77.0.2/32", "fd77::2/128"])
            .endpoint("10.0.1.2:51820")
            .to_conf(),
        PeerConfig::new(p2.public_key())
            .allowed(&["10.77.0.3/32", "fd77::3/128"])
            .psk(&psk)
            .to_conf()
    );
    let data = ns_hub.private_dir("data")?;
    std::fs::write(data.join("peers.conf"), &peers_conf)?;
    let mut hub = WgDevice::start_hub(
        &ns_hub,
        hub_impl,
        &unique_name("wh"),
        &data,
        51820,
        &HUB_ADDRS,
    )?;
    eprintln!("hub {} public key {}", hub.ifname, hub.public_key());

    p1.add_peer(
        &PeerConfig::new(hub.public_key())
            .allowed(&["10.77.0.0/24", "fd77::/64"])
            .endpoint("10.0.1.1:51820"),
    )?;
    p2.add_peer(
        &PeerConfig::new(hub.public_key())
            .allowed(&["10.77.0.0/24", "fd77::/64"])
            .endpoint("10.0.2.1:51820")
            .psk(&psk)
            .keepalive(1),
    )?;
    p1.add_addr("10.77.0.2/24")?;
    p1.add_addr("fd77::2/64")?;
    p2.add_addr("10.77.0.3/24")?;
    p2.add_addr("fd77::3/64")?;
    p1.up()?;
    p2.up()?;

    // Peer 2's keepalives teach the hub where it is.
    let mut last = None;
    wait_until(TEN, "the hub to learn peer 2's endpoint", || {
        last = hub.endpoint(p2.public_key()).ok().flatten();
        last.as_deref() == Some("10.0.2.2:51820")
    })
    .with_context(|| format!("hub's endpoint for peer 2: {last:?}"))?;

    ns_p1
        .ping_within("10.77.0.1", TEN)
        .context("peer 1 -> hub")?;
    let t = ns_p1
        .ping_within("10.77.0.3", TEN)
        .context("peer 1 -> peer 2 via the hub")?;
    eprintln!("peer 1 reached peer 2 through the hub after {t:?}");
    ns_p1
        .ping_within("fd77::3", TEN)
        .context("peer 1 -> peer 2 (v6) via the hub")?;
    ns_p2
        .ping_args("10.77.0.2", &[])
        .context("peer 2 -> peer 1 via the hub")?;
    ns_p2
        .ping_args("fd77::2", &[])
        .context("peer 2 -> peer 1 (v6) via the hub")?;
    ns_p2.ping_args("10.77.0.1", &[]).context("peer 2 -> hub")?;

    let dump = hub.dump()?;
    eprintln!("hub dump: {dump:#?}");
    ensure!(
        dump.interface.listen_port == 51820,
        "hub listen port {}",
        dump.interface.listen_port
    );
    ensure!(
        dump.peers.len() == 2,
        "hub should have exactly the two peers of peers.conf"
    );
    let now = unix_now();
    for p in &dump.peers {
        ensure!(
            p.rx_bytes > 0 && p.tx_bytes > 0,
            "no traffic counted for {p:?}"
        );
        ensure!(
            now.saturating_sub(p.latest_handshake) <= 60,
            "stale handshake: {p:?}"
        );
    }
    ensure!(
        dump.peer(p1.public_key())?.endpoint.as_deref() == Some("10.0.1.2:51820"),
        "peer 1's endpoint from peers.conf: {:?}",
        dump.peer(p1.public_key())?.endpoint
    );
    ensure!(
        dump.peer(p2.public_key())?.preshared_key.as_deref() == Some(psk.as_str()),
        "peer 2's preshared key from peers.conf is not in effect"
    );
    hub.ensure_running()
}

#[test]
fn hub_routes_between_wggo_peers_ours() -> Result<()> {
    scenario(|| hub_routing(Impl::Ours))
}

/// First start generates DATA/wg-private.key; SIGTERM stops serve cleanly (socket and
/// interface gone); the next start reuses the key.
#[test]
fn hub_key_generated_once_and_kept_ours() -> Result<()> {
    scenario(hub_key_generated_once_and_kept)
}

fn hub_key_generated_once_and_kept() -> Result<()> {
    eprintln!("hub = {}", Impl::Ours.describe());
    let ns = Netns::new("hub")?;
    let data = ns.private_dir("data")?;
    let ifname = unique_name("wh");
    let key_file = data.join("wg-private.key");

    let mut hub = WgDevice::start_hub(&ns, Impl::Ours, &ifname, &data, 51820, &HUB_ADDRS)?;
    let first = hub.keys.clone();
    let on_disk = std::fs::read_to_string(&key_file)?;
    ensure!(
        on_disk.trim().len() == 44 && on_disk.trim().ends_with('='),
        "{} is not a base64 key: {on_disk:?}",
        key_file.display()
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln!(
                "WARNING: {} has mode {mode:o}: readable by others",
                key_file.display()
            );
        }
    }
    let peers = hub.dump()?.peers;
    ensure!(peers.is_empty(), "no peers.conf, yet peers: {peers:?}");
    let status = hub.stop()?;
    eprintln!("serve exited with {status} on SIGTERM");
    ensure!(
        !uapi_socket(&ifname).exists(),
        "UAPI socket {} left behind after SIGTERM",
        uapi_socket(&ifname).display()
    );
    let links = ns.exec(&["ip", "-o", "link", "show"])?;
    ensure!(
        !links.contains(&format!(" {ifname}:")),
        "{ifname} still exists: {links}"
    );
    drop(hub);

    let hub = WgDevice::start_hub(&ns, Impl::Ours, &ifname, &data, 51820, &HUB_ADDRS)
        .context("second start")?;
    ensure!(
        hub.keys == first,
        "the second start changed the key: {} -> {}",
        first.public,
        hub.keys.public
    );
    Ok(())
}
