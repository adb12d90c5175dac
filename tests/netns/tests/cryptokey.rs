//! Cryptokey routing on receive: a packet that decrypts fine but whose inner source address is
//! not in the sender's allowed-ips must be dropped by the receiver (A).
//!
//! The sender B is made willing to tunnel anything to A (allowed-ips 0.0.0.0/0, ::/0) and gets
//! a second address on its wg interface that A does not allow. UDP datagrams from both source
//! addresses go to a listener on A. The test shows the spoofed ones left B encrypted (B's tx
//! counter), that the allowed ones arrive and the spoofed ones do not, and finally that the very
//! same spoofed source is delivered once A allows it, so nothing but A's check dropped them.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::{python, variants, wait_until, Impl, Outer, Pair, PeerConfig};

const PORT: &str = "9999";
const FIVE: Duration = Duration::from_secs(5);

fn received(listener: &watchgrid_netns_tests::Proc) -> Vec<String> {
    listener
        .output()
        .lines()
        .filter_map(|l| l.strip_prefix("GOT "))
        .map(str::to_owned)
        .collect()
}

fn cryptokey_routing(a: Impl, b: Impl) -> Result<()> {
    let mut p = Pair::new(a, b, Outer::V4)?;
    let a_ep = format!("{}:{}", Pair::A_UNDER4, Pair::A_PORT);
    p.b.add_peer(
        &PeerConfig::new(p.a.public_key())
            .allowed(&["0.0.0.0/0", "::/0"])
            .endpoint(&a_ep),
    )?;
    p.b.add_addr("10.100.0.99/32")?;
    p.b.add_addr("fd10::99/128")?;

    let mut listener = p
        .ns_a
        .spawn_python("udp-listener", python::UDP_LISTENER, &[PORT, "60"])?;
    wait_until(FIVE, "the UDP listener to be ready", || {
        listener.output().contains("READY")
    })?;
    p.establish()?;

    let send = |src: &str, dst: &str, payloads: &[&str]| -> Result<()> {
        let mut args = vec![src, dst, PORT];
        args.extend_from_slice(payloads);
        p.ns_b.run_python(python::UDP_SEND, &args).map(drop)
    };

    // Spoofed first: per-peer delivery is in order, so if they were not dropped they would
    // show up before the allowed datagrams sent afterwards.
    let tx_before = p.b.peer(p.a.public_key())?.tx_bytes;
    send(
        "10.100.0.99",
        Pair::A_TUN4,
        &["spoofed-v4-1", "spoofed-v4-2", "spoofed-v4-3"],
    )?;
    send(
        "fd10::99",
        Pair::A_TUN6,
        &["spoofed-v6-1", "spoofed-v6-2", "spoofed-v6-3"],
    )?;
    let mut tx_after = tx_before;
    wait_until(FIVE, "B to encrypt and send the spoofed datagrams", || {
        tx_after =
            p.b.peer(p.a.public_key())
                .map(|d| d.tx_bytes)
                .unwrap_or(tx_before);
        tx_after >= tx_before + 6 * 32
    })
    .with_context(|| format!("B's tx to A went from {tx_before} to {tx_after} only"))?;
    eprintln!(
        "B sent {} tunnel bytes of spoofed datagrams",
        tx_after - tx_before
    );

    send(Pair::B_TUN4, Pair::A_TUN4, &["allowed-v4"])?;
    send(Pair::B_TUN6, Pair::A_TUN6, &["allowed-v6"])?;
    wait_until(FIVE, "the allowed datagrams to arrive", || {
        let got = received(&listener);
        got.iter().any(|l| l.ends_with(" allowed-v4"))
            && got.iter().any(|l| l.ends_with(" allowed-v6"))
    })
    .with_context(|| format!("listener got {:?}", received(&listener)))?;
    let got = received(&listener);
    eprintln!("listener on A received: {got:?}");
    ensure!(
        !got.iter().any(|l| l.contains("spoofed")),
        "A delivered datagrams whose inner source is outside B's allowed-ips: {got:?}"
    );

    // Control: allow the extra addresses on A and the same kind of datagram gets through.
    let b_ep = format!("{}:{}", Pair::B_UNDER4, Pair::B_PORT);
    p.a.add_peer(
        &PeerConfig::new(p.b.public_key())
            .allowed(&[
                "10.100.0.2/32",
                "fd10::2/128",
                "10.100.0.99/32",
                "fd10::99/128",
            ])
            .endpoint(&b_ep),
    )?;
    send("10.100.0.99", Pair::A_TUN4, &["now-allowed-v4"])?;
    send("fd10::99", Pair::A_TUN6, &["now-allowed-v6"])?;
    wait_until(FIVE, "datagrams from the newly allowed addresses", || {
        let got = received(&listener);
        got.iter().any(|l| l == "10.100.0.99 now-allowed-v4")
            && got.iter().any(|l| l == "fd10::99 now-allowed-v6")
    })
    .with_context(|| format!("listener got {:?}", received(&listener)))?;
    let got = received(&listener);
    ensure!(
        !got.iter().any(|l| l.contains("spoofed")),
        "spoofed datagrams turned up late: {got:?}"
    );
    listener.ensure_running()?;
    p.ensure_running()
}

variants!(cryptokey_routing {
    cryptokey_routing_ours_receives_from_wggo => (Impl::Ours, Impl::WireguardGo),
    cryptokey_routing_ours_ours => (Impl::Ours, Impl::Ours),
});
