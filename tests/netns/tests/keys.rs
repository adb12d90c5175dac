//! Key changes: one side gets a new private key, the other replaces the peer with the new
//! public key, and the next packet handshakes again at once.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::{unix_now, variants, Impl, KeyPair, Outer, Pair, PeerConfig};

/// "At once": the reference implementation needs milliseconds; a lost first initiation would
/// only be retried after REKEY_TIMEOUT (5 s), which this limit is meant to catch.
const AT_ONCE: Duration = Duration::from_secs(3);

fn key_change(a: Impl, b: Impl) -> Result<()> {
    let mut p = Pair::new(a, b, Outer::V4)?;
    p.establish()?;
    p.ns_b.ping_args(Pair::A_TUN4, &[])?;
    let a_ep = format!("{}:{}", Pair::A_UNDER4, Pair::A_PORT);
    let b_ep = format!("{}:{}", Pair::B_UNDER4, Pair::B_PORT);

    // Phase 1: A changes its key; B swaps the peer. A (the re-keyed side) sends first.
    // This is the order an operator follows (new key on the device, then tell the other side),
    // so an initiation A might send the moment its key changes reaches B before B knows the
    // new key. If that makes A wait for REKEY_TIMEOUT (5 s) before trying again, the limit
    // below catches it.
    let old_a = p.a.public_key().to_owned();
    let new_a = KeyPair::generate()?;
    p.a.set_private_key(&new_a)?;
    ensure!(
        p.a.show("public-key")?.trim() == new_a.public,
        "A's public key did not change with its private key"
    );
    p.b.remove_peer(&old_a)?;
    p.b.add_peer(
        &PeerConfig::new(&new_a.public)
            .allowed(&["10.100.0.1/32", "fd10::1/128"])
            .endpoint(&a_ep),
    )?;
    let t = p
        .ns_a
        .ping_within(Pair::B_TUN4, AT_ONCE)
        .context("A -> B after A's key change")?;
    eprintln!("A changed key: A -> B ping succeeded after {t:?}");
    p.ns_b
        .ping_args(Pair::A_TUN6, &[])
        .context("B -> A after A's key change")?;
    let dump = p.b.dump()?;
    ensure!(
        dump.peers.iter().all(|x| x.public_key != old_a),
        "B still lists A's old key"
    );
    let hs = dump.peer(&new_a.public)?.latest_handshake;
    ensure!(
        unix_now().saturating_sub(hs) <= 10,
        "B has no fresh handshake with A's new key: {hs}"
    );

    // Phase 2: B changes its key; A swaps the peer. A (the side that re-added) sends first.
    //
    // A just handshook with B in phase 1 and is about to send B another initiation. Responders
    // accept at most one initiation per peer every 20 ms (wireguard-go's
    // HandshakeInitationRate; TAI64N timestamps are also coarsened to ~16 ms and must
    // strictly increase), so two handshakes of the same pair must be spaced. This is a
    // protocol minimum, not a race: without it wireguard-go as B rejects the initiation as a
    // "handshake flood" and the retry comes 5 s later.
    std::thread::sleep(Duration::from_millis(250));
    let old_b = p.b.public_key().to_owned();
    let new_b = KeyPair::generate()?;
    p.b.set_private_key(&new_b)?;
    p.a.remove_peer(&old_b)?;
    p.a.add_peer(
        &PeerConfig::new(&new_b.public)
            .allowed(&["10.100.0.2/32", "fd10::2/128"])
            .endpoint(&b_ep),
    )?;
    let t = p
        .ns_a
        .ping_within(Pair::B_TUN4, AT_ONCE)
        .context("A -> B after B's key change")?;
    eprintln!("B changed key: A -> B ping succeeded after {t:?}");
    p.ns_b
        .ping_args(Pair::A_TUN6, &[])
        .context("B -> A after B's key change")?;
    let dump = p.a.dump()?;
    ensure!(
        dump.peers.len() == 1 && dump.peers[0].public_key == new_b.public,
        "A's peers after the swap: {:?}",
        dump.peers
    );
    ensure!(
        unix_now().saturating_sub(dump.peers[0].latest_handshake) <= 10,
        "A has no fresh handshake with B's new key: {:?}",
        dump.peers[0]
    );
    p.ensure_running()
}

variants!(key_change {
    key_change_ours_wggo => (Impl::Ours, Impl::WireguardGo),
    key_change_ours_ours => (Impl::Ours, Impl::Ours),
});
