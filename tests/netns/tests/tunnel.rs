//! Basic tunnel traffic between two sides: pings (v4/v6 inside, v4/v6 outside), large pings
//! that need inner fragmentation, TCP throughput, and the counters `wg show dump` reports.

use anyhow::{bail, ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::{
    iperf3_client, iperf3_server, unix_now, variants, Impl, Netns, Outer, Pair,
};

const TEN: Duration = Duration::from_secs(10);

/// The tunnel MTU both implementations default to.
const MTU: u64 = 1420;

/// Pings both tunnel families in both directions.
fn ping_all(p: &Pair) -> Result<()> {
    let t = p.ns_a.ping_within(Pair::B_TUN4, TEN)?;
    eprintln!("first v4 ping A->B (handshake included) after {t:?}");
    p.ns_a.ping_within(Pair::B_TUN6, TEN)?;
    p.ns_b.ping_within(Pair::A_TUN4, TEN)?;
    p.ns_b.ping_within(Pair::A_TUN6, TEN)?;
    // Established now: single pings must simply work.
    for (ns, addr) in [
        (&p.ns_a, Pair::B_TUN4),
        (&p.ns_a, Pair::B_TUN6),
        (&p.ns_b, Pair::A_TUN4),
        (&p.ns_b, Pair::A_TUN6),
    ] {
        ns.ping_args(addr, &[])
            .with_context(|| format!("ping {addr} from {} after the handshake", ns.name()))?;
    }
    Ok(())
}

fn ping_v4_v6(a: Impl, b: Impl) -> Result<()> {
    let mut p = Pair::new(a, b, Outer::V4)?;
    ping_all(&p)?;
    p.ensure_running()
}

variants!(ping_v4_v6 {
    ping_v4_v6_ours_wggo => (Impl::Ours, Impl::WireguardGo),
    ping_v4_v6_wggo_ours => (Impl::WireguardGo, Impl::Ours),
    ping_v4_v6_ours_ours => (Impl::Ours, Impl::Ours),
});

/// The encrypted UDP travels over IPv6 (`endpoint [fd00::2]:51821`).
fn outer_ipv6(a: Impl, b: Impl) -> Result<()> {
    let mut p = Pair::new(a, b, Outer::V6)?;
    ping_all(&p)?;
    let ep_b = format!("[{}]:{}", Pair::B_UNDER6, Pair::B_PORT);
    let ep_a = format!("[{}]:{}", Pair::A_UNDER6, Pair::A_PORT);
    ensure!(
        p.a.endpoint(p.b.public_key())?.as_deref() == Some(ep_b.as_str()),
        "A's endpoint for B is not {ep_b}: {:?}",
        p.a.show("endpoints")?
    );
    ensure!(
        p.b.endpoint(p.a.public_key())?.as_deref() == Some(ep_a.as_str()),
        "B's endpoint for A is not {ep_a}: {:?}",
        p.b.show("endpoints")?
    );
    // Prove the tunnel really rides on IPv6: take IPv4 off the underlay and it still works.
    p.ns_a.del_addr("eth0", &format!("{}/24", Pair::A_UNDER4))?;
    p.ns_b.del_addr("eth0", &format!("{}/24", Pair::B_UNDER4))?;
    p.ns_a
        .ping_args(Pair::B_TUN4, &[])
        .context("tunnel ping with no IPv4 underlay")?;
    p.ns_b
        .ping_args(Pair::A_TUN6, &[])
        .context("tunnel ping with no IPv4 underlay")?;
    p.ensure_running()
}

variants!(outer_ipv6 {
    outer_ipv6_ours_wggo => (Impl::Ours, Impl::WireguardGo),
    outer_ipv6_ours_ours => (Impl::Ours, Impl::Ours),
});

/// Pings larger than the 1420-byte tunnel MTU are fragmented inside the tunnel; every fragment
/// must make it through, in both directions and both families.
fn large_pings(a: Impl, b: Impl) -> Result<()> {
    let mut p = Pair::new(a, b, Outer::V4)?;
    p.establish()?;
    for size in ["3000", "8000"] {
        for (ns, addr) in [
            (&p.ns_a, Pair::B_TUN4),
            (&p.ns_a, Pair::B_TUN6),
            (&p.ns_b, Pair::A_TUN4),
            (&p.ns_b, Pair::A_TUN6),
        ] {
            // Two tries: a lost fragment is possible in principle, two in a row is a bug.
            ns.ping_args(addr, &["-s", size])
                .or_else(|_| ns.ping_args(addr, &["-s", size]))
                .with_context(|| format!("ping -s {size} {addr} from {}", ns.name()))?;
        }
    }
    // The link MTU stays the one the contract promises.
    let link = p
        .ns_a
        .exec(&["ip", "-o", "link", "show", "dev", &p.a.ifname])?;
    ensure!(
        link.contains("mtu 1420"),
        "A's tunnel MTU is not 1420: {link}"
    );
    p.ensure_running()
}

variants!(large_pings {
    large_pings_ours_wggo => (Impl::Ours, Impl::WireguardGo),
    large_pings_ours_ours => (Impl::Ours, Impl::Ours),
});

/// TCP through the tunnel with iperf3, A as client sending (`-t 2`) and receiving (`-R`), over
/// the inner IPv4 and IPv6 addresses respectively.
fn tcp_iperf3(a: Impl, b: Impl) -> Result<()> {
    let mut p = Pair::new(a, b, Outer::V4)?;
    p.establish()?;
    let _server = iperf3_server(&p.ns_b, 5201)?;
    let up = iperf3_client(&p.ns_a, Pair::B_TUN4, 5201, 2, false)?;
    eprintln!(
        "iperf3 A->B over IPv4: {:.1} Mbit/s ({} bytes)",
        up.received_bps / 1e6,
        up.received_bytes
    );
    let down = iperf3_client(&p.ns_a, Pair::B_TUN6, 5201, 2, true)?;
    eprintln!(
        "iperf3 B->A (-R) over IPv6: {:.1} Mbit/s ({} bytes)",
        down.received_bps / 1e6,
        down.received_bytes
    );
    for (dir, r) in [("A->B", &up), ("B->A", &down)] {
        if !(r.received_bps > 0.0 && r.received_bytes > 0) {
            bail!("iperf3 {dir} moved nothing: {r:?}");
        }
    }
    p.ensure_running()
}

variants!(tcp_iperf3 {
    tcp_iperf3_ours_wggo => (Impl::Ours, Impl::WireguardGo),
    tcp_iperf3_ours_ours => (Impl::Ours, Impl::Ours),
});

/// Bytes and packets a link has counted, in one namespace, as (bytes, packets).
fn link_counters(ns: &Netns, ifname: &str, dir: &str) -> Result<(u64, u64)> {
    let read = |what: &str| -> Result<u64> {
        let path = format!("/sys/class/net/{ifname}/statistics/{dir}_{what}");
        let text = ns.exec(&["cat", path.as_str()])?;
        text.trim()
            .parse()
            .with_context(|| format!("{path}: {text:?}"))
    };
    Ok((read("bytes")?, read("packets")?))
}

/// A link counter to watch: what it shows, where, and which direction.
type Link<'a> = (&'static str, &'a Netns, &'a str, &'static str);

/// Runs `transfer` and returns, for each link, the bytes per packet it counted meanwhile
/// (the kernel counts one per write or send, whatever its size).
fn bytes_per_packet(links: &[Link<'_>], transfer: impl FnOnce() -> Result<()>) -> Result<Vec<u64>> {
    let before = links
        .iter()
        .map(|(_, ns, ifname, dir)| link_counters(ns, ifname, dir))
        .collect::<Result<Vec<_>>>()?;
    transfer()?;
    let mut sizes = Vec::new();
    for ((what, ns, ifname, dir), (bytes0, packets0)) in links.iter().zip(before) {
        let (bytes1, packets1) = link_counters(ns, ifname, dir)?;
        let (bytes, packets) = (bytes1 - bytes0, (packets1 - packets0).max(1));
        eprintln!(
            "{what}: {bytes} bytes in {packets} ({} per packet)",
            bytes / packets
        );
        sizes.push(bytes / packets);
    }
    Ok(sizes)
}

fn bulk_a_to_b(p: &Pair) -> Result<()> {
    let up = iperf3_client(&p.ns_a, Pair::B_TUN4, 5201, 2, false)?;
    ensure!(up.received_bytes > 0, "iperf3 A->B moved nothing: {up:?}");
    Ok(())
}

/// The offloads are in use, seen from the kernel's link counters during bulk TCP
/// transfers, A->B over inner IPv4 and B->A over inner IPv6: the sender reads TCP
/// super-packets from its TUN device (TSO), sends the encrypted segments as UDP GSO
/// batches on the wire, and the receiver writes coalesced (GRO) packets to its TUN
/// device. Without them every counter would average one packet.
fn offloads(a: Impl, b: Impl) -> Result<()> {
    let p = Pair::new(a, b, Outer::V4)?;
    p.establish()?;
    let _server = iperf3_server(&p.ns_b, 5201)?;
    let a_to_b: [Link<'_>; 3] = [
        ("A's TUN reads (TSO, IPv4)", &p.ns_a, &p.a.ifname, "tx"),
        ("A's UDP sends (GSO)", &p.ns_a, "eth0", "tx"),
        ("B's TUN writes (GRO, IPv4)", &p.ns_b, &p.b.ifname, "rx"),
    ];
    let b_to_a: [Link<'_>; 3] = [
        ("B's TUN reads (TSO, IPv6)", &p.ns_b, &p.b.ifname, "tx"),
        ("B's UDP sends (GSO)", &p.ns_b, "eth0", "tx"),
        ("A's TUN writes (GRO, IPv6)", &p.ns_a, &p.a.ifname, "rx"),
    ];
    let mut seen = bytes_per_packet(&a_to_b, || bulk_a_to_b(&p))?;
    seen.extend(bytes_per_packet(&b_to_a, || {
        let down = iperf3_client(&p.ns_a, Pair::B_TUN6, 5201, 2, true)?;
        ensure!(
            down.received_bytes > 0,
            "iperf3 B->A moved nothing: {down:?}"
        );
        Ok(())
    })?);
    for ((what, ..), size) in a_to_b.iter().chain(&b_to_a).zip(seen) {
        // Two MTUs (1420) per packet on average is far beyond what single packets reach.
        ensure!(
            size > 2 * MTU,
            "{what}: {size} bytes per packet, so no offload"
        );
    }
    Ok(())
}

variants!(offloads {
    offloads_ours_ours => (Impl::Ours, Impl::Ours),
});

/// A side whose kernel refuses TUN offload and UDP GSO/GRO falls back to single packets
/// (the counters show it) and still carries TCP both ways, to a peer with offloads and
/// to one without.
fn offloads_refused(a: Impl, b: Impl) -> Result<()> {
    let mut p = Pair::new(a, b, Outer::V4)?;
    p.establish()?;
    let _server = iperf3_server(&p.ns_b, 5201)?;
    let links: [Link<'_>; 2] = [
        ("A's TUN reads (no TSO)", &p.ns_a, &p.a.ifname, "tx"),
        ("A's UDP sends (no GSO)", &p.ns_a, "eth0", "tx"),
    ];
    let sizes = bytes_per_packet(&links, || bulk_a_to_b(&p))?;
    for ((what, ..), size) in links.iter().zip(sizes) {
        // One packet each: the MTU plus WireGuard's and the outer headers at most.
        ensure!(
            size <= 1500,
            "{what}: {size} bytes per packet, so offload was on"
        );
    }
    let down = iperf3_client(&p.ns_a, Pair::B_TUN6, 5201, 2, true)?;
    ensure!(
        down.received_bytes > 0,
        "iperf3 B->A moved nothing: {down:?}"
    );
    p.ensure_running()
}

variants!(offloads_refused {
    offloads_refused_ours_plain_ours => (Impl::OursWithoutOffload, Impl::Ours),
    offloads_refused_ours_plain_wggo => (Impl::OursWithoutOffload, Impl::WireguardGo),
});

/// After traffic, `wg show IFNAME dump` on our side (A) reports the peer with its endpoint and
/// allowed-ips, non-zero transfer both ways and a recent handshake.
fn wg_show_dump(a: Impl, b: Impl) -> Result<()> {
    let mut p = Pair::new(a, b, Outer::V4)?;
    p.establish()?;
    p.ns_a
        .exec(&["ping", "-n", "-q", "-c5", "-i0.05", "-W1", Pair::B_TUN4])?;
    p.ns_b
        .exec(&["ping", "-n", "-q", "-c5", "-i0.05", "-W1", Pair::A_TUN6])?;
    let now = unix_now();
    let dump = p.a.dump()?;
    eprintln!("A's dump: {dump:#?}");
    ensure!(
        dump.interface.public_key.as_deref() == Some(p.a.public_key()),
        "dump public key {:?} is not A's {}",
        dump.interface.public_key,
        p.a.public_key()
    );
    ensure!(
        dump.interface.private_key.as_deref() == Some(p.a.keys.private.as_str()),
        "dump private key is not the one set"
    );
    ensure!(
        dump.interface.listen_port == Pair::A_PORT,
        "listen port {} != {}",
        dump.interface.listen_port,
        Pair::A_PORT
    );
    ensure!(dump.peers.len() == 1, "expected exactly one peer: {dump:?}");
    let peer = dump.peer(p.b.public_key())?;
    let ep = format!("{}:{}", Pair::B_UNDER4, Pair::B_PORT);
    ensure!(
        peer.endpoint.as_deref() == Some(ep.as_str()),
        "endpoint {:?} != {ep}",
        peer.endpoint
    );
    let mut allowed = peer.allowed_ips.clone();
    allowed.sort();
    ensure!(
        allowed == ["10.100.0.2/32", "fd10::2/128"],
        "allowed-ips {:?}",
        peer.allowed_ips
    );
    ensure!(
        peer.rx_bytes > 0,
        "transfer rx is 0 after traffic: {peer:?}"
    );
    ensure!(
        peer.tx_bytes > 0,
        "transfer tx is 0 after traffic: {peer:?}"
    );
    // 10 echo requests and 10 replies of 84/104 bytes each went through: each direction carries
    // at least 10 packets of 32 bytes overhead + payload.
    ensure!(
        peer.rx_bytes >= 10 * 84 && peer.tx_bytes >= 10 * 84,
        "transfer counters too small for the traffic sent: {peer:?}"
    );
    ensure!(
        peer.latest_handshake != 0,
        "latest-handshake is 0 after traffic"
    );
    ensure!(
        peer.latest_handshake <= now + 2 && now.saturating_sub(peer.latest_handshake) <= 60,
        "latest-handshake {} is not within a minute of now ({now})",
        peer.latest_handshake
    );
    ensure!(
        peer.persistent_keepalive.is_none(),
        "keepalive should be off: {peer:?}"
    );
    ensure!(
        peer.preshared_key.is_none(),
        "no preshared key was set: {peer:?}"
    );
    p.ensure_running()
}

variants!(wg_show_dump {
    wg_show_dump_ours_wggo => (Impl::Ours, Impl::WireguardGo),
    wg_show_dump_ours_ours => (Impl::Ours, Impl::Ours),
});
