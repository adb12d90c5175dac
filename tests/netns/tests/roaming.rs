//! Roaming: side B moves to a new UDP port and then to a new source address; A must follow
//! (its `wg show endpoints` changes) and traffic continues both ways.

use anyhow::{Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::{variants, wait_until, Impl, Outer, Pair, PeerConfig};

const FIVE: Duration = Duration::from_secs(5);

fn expect_endpoint(p: &Pair, want: &str) -> Result<()> {
    let mut last = None;
    wait_until(
        FIVE,
        &format!("A's endpoint for B to become {want}"),
        || {
            last = p.a.endpoint(p.b.public_key()).ok().flatten();
            last.as_deref() == Some(want)
        },
    )
    .with_context(|| format!("A's endpoint for B is {last:?}"))?;
    Ok(())
}

fn roaming(a: Impl, b: Impl) -> Result<()> {
    let mut p = Pair::new(a, b, Outer::V4)?;
    p.ns_b
        .ping_within(Pair::A_TUN4, Duration::from_secs(10))
        .context("initial handshake")?;
    expect_endpoint(&p, &format!("{}:{}", Pair::B_UNDER4, Pair::B_PORT))?;

    // 1. B rebinds to another port. Its old port is closed, so A's replies only arrive if A
    //    now sends to the new one.
    p.b.set_listen_port(51831)?;
    let t = p
        .ns_b
        .ping_within(Pair::A_TUN4, FIVE)
        .context("B -> A after B changed its listen port")?;
    eprintln!("traffic resumed {t:?} after B moved to port 51831");
    expect_endpoint(&p, &format!("{}:51831", Pair::B_UNDER4))?;
    p.ns_a
        .ping_args(Pair::B_TUN4, &[])
        .context("A -> B after B changed its listen port")?;
    p.ns_a
        .ping_args(Pair::B_TUN6, &[])
        .context("A -> B (v6 inner) after B changed its listen port")?;

    // 2. B's underlay address changes from 10.0.0.2 to 10.0.0.3 (the old one disappears).
    p.ns_b.del_addr("eth0", &format!("{}/24", Pair::B_UNDER4))?;
    p.ns_b.add_addr("eth0", "10.0.0.3/24")?;
    if b == Impl::Ours {
        // Informational: does our side drop a cached source address that no longer exists on
        // its own? (The kernel now answers such sends with ENETUNREACH; wireguard-go
        // 0.0.20220316 only recovers from EINVAL and stays stuck.)
        match p.ns_b.ping_within(Pair::A_TUN4, Duration::from_secs(3)) {
            Ok(t) => {
                eprintln!("B (ours) recovered from losing its source address by itself in {t:?}")
            }
            Err(_) => eprintln!(
                "WARNING: B (ours) did not recover from losing its source address within 3 s \
                 without an endpoint re-set"
            ),
        }
    }
    // A roaming client re-applies its endpoint after a network change (as wg-quick's
    // reresolve-dns does); this makes the sender forget its cached source address.
    p.b.add_peer(
        &PeerConfig::new(p.a.public_key())
            .allowed(&["10.100.0.1/32", "fd10::1/128"])
            .endpoint(&format!("{}:{}", Pair::A_UNDER4, Pair::A_PORT)),
    )?;
    let t = p
        .ns_b
        .ping_within(Pair::A_TUN4, FIVE)
        .context("B -> A after B's address changed")?;
    eprintln!("traffic resumed {t:?} after B moved to 10.0.0.3");
    expect_endpoint(&p, "10.0.0.3:51831")?;
    p.ns_a
        .ping_args(Pair::B_TUN4, &[])
        .context("A -> B after B's address changed")?;
    p.ns_a
        .ping_args(Pair::B_TUN6, &[])
        .context("A -> B (v6 inner) after B's address changed")?;
    p.ensure_running()
}

variants!(roaming {
    // Our side follows a roaming wireguard-go peer.
    roaming_ours_follows_wggo => (Impl::Ours, Impl::WireguardGo),
    // wireguard-go follows our side roaming (our listen-port rebinding and source choice).
    roaming_wggo_follows_ours => (Impl::WireguardGo, Impl::Ours),
    roaming_ours_ours => (Impl::Ours, Impl::Ours),
});
