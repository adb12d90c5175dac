//! Handshake flood: bogus initiations with a valid mac1 hammer our side while an established
//! peer keeps pinging and a new peer joins.
//!
//! ```text
//!        est ns (wireguard-go, established)   10.0.1.2 --- 10.0.1.1
//!        new ns (wireguard-go, joins later)   10.0.2.2 --- 10.0.2.1   target ns (ours)
//!        flood ns (python)                    10.0.3.2 --- 10.0.3.1
//! ```
//!
//! Before flooding, a wireguard-go device sends a real initiation for the target's public key
//! to a python listener that checks it with the same mac1 code the flood uses, so the flood is
//! known to pass the target's cheap mac1 check and reach the expensive part.

use anyhow::{bail, ensure, Context, Result};
use std::time::{Duration, Instant};
use watchgrid_netns_tests::{
    python, scenario, veth, wait_until, Impl, Netns, PeerConfig, Proc, WgDevice,
};

const TARGET_TUN: &str = "10.100.0.1";
const FLOOD_RATE: u32 = 5000;
const JOIN_AFTER: Duration = Duration::from_secs(2);
/// Prefix the spoofing flooder draws its source addresses from.
const SPOOF_PREFIX: &str = "10.9.0.0/16";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sources {
    /// Every initiation from the flooder's own address.
    Single,
    /// Every initiation from a random address of [`SPOOF_PREFIX`].
    Spoofed,
}

impl Sources {
    /// How long the new peer may take to join.
    ///
    /// From one source the flood must not touch legitimate peers at all: 5 s. From 65k
    /// spoofed sources a responder is entitled to answer initiations with cookie replies (that
    /// is what the cookie mechanism is for); a wireguard-go initiator then retries with mac2
    /// only after REKEY_TIMEOUT (5 s plus up to 333 ms jitter), so one cookie round trip is
    /// allowed but not two.
    fn join_limit(self) -> Duration {
        match self {
            Sources::Single => Duration::from_secs(5),
            Sources::Spoofed => Duration::from_secs(7),
        }
    }

    /// The flood lasts until after the new peer's deadline.
    fn flood_seconds(self) -> u32 {
        match self {
            Sources::Single => 8,
            Sources::Spoofed => 10,
        }
    }
}

fn mac1_self_check(flood_ns: &Netns, target_public_key: &str) -> Result<()> {
    let mut listener = flood_ns.spawn_python(
        "mac1-check",
        python::HANDSHAKE,
        &["check", target_public_key, "40000"],
    )?;
    wait_until(Duration::from_secs(5), "the mac1 checker to listen", || {
        listener.output().contains("READY")
    })?;
    let probe = WgDevice::start(flood_ns, Impl::WireguardGo, 40001)?;
    probe.add_peer(
        &PeerConfig::new(target_public_key)
            .allowed(&["10.251.0.2/32"])
            .endpoint("127.0.0.1:40000"),
    )?;
    probe.add_addr("10.251.0.1/24")?;
    probe.up()?;
    // The ping cannot be answered; it only makes wireguard-go send an initiation.
    let _ = flood_ns.ping("10.251.0.2");
    listener.wait_timeout(Duration::from_secs(10))?;
    let out = listener.output();
    ensure!(
        out.contains("MAC1-OK"),
        "the flood's mac1 computation disagrees with wireguard-go: {out}"
    );
    Ok(())
}

fn ping_stats(output: &str) -> Result<(u32, u32)> {
    // "35 packets transmitted, 34 received, 2.85714% packet loss, time 6810ms"
    for line in output.lines() {
        if let Some((tx, rest)) = line.split_once(" packets transmitted, ") {
            let rx = rest.split_whitespace().next().unwrap_or("");
            return Ok((tx.trim().parse()?, rx.parse()?));
        }
    }
    bail!("no ping statistics in {output:?}")
}

fn handshake_flood(target_impl: Impl, sources: Sources) -> Result<()> {
    eprintln!(
        "target = {}, peers = wireguard-go, flood sources: {sources:?}",
        target_impl.describe()
    );
    let join_limit = sources.join_limit();
    let flood_seconds = sources.flood_seconds();
    // Pings every 0.2 s for all but the last second of the flood.
    let ping_count = (flood_seconds - 1) * 5;
    let ns_t = Netns::new("tgt")?;
    let ns_est = Netns::new("est")?;
    let ns_new = Netns::new("new")?;
    let ns_fl = Netns::new("fld")?;
    veth(&ns_t, "eth1", &ns_est, "eth0")?;
    veth(&ns_t, "eth2", &ns_new, "eth0")?;
    veth(&ns_t, "eth3", &ns_fl, "eth0")?;
    for (ns, dev, addr) in [
        (&ns_t, "eth1", "10.0.1.1/24"),
        (&ns_est, "eth0", "10.0.1.2/24"),
        (&ns_t, "eth2", "10.0.2.1/24"),
        (&ns_new, "eth0", "10.0.2.2/24"),
        (&ns_t, "eth3", "10.0.3.1/24"),
        (&ns_fl, "eth0", "10.0.3.2/24"),
    ] {
        ns.add_addr(dev, addr)?;
    }

    let mut target = WgDevice::start(&ns_t, target_impl, 51820)?;
    let est = WgDevice::start(&ns_est, Impl::WireguardGo, 51820)?;
    let newp = WgDevice::start(&ns_new, Impl::WireguardGo, 51820)?;
    target.add_peer(&PeerConfig::new(est.public_key()).allowed(&["10.100.0.2/32"]))?;
    est.add_peer(
        &PeerConfig::new(target.public_key())
            .allowed(&["10.100.0.0/24"])
            .endpoint("10.0.1.1:51820"),
    )?;
    // The new peer knows the target, the target does not know it yet.
    newp.add_peer(
        &PeerConfig::new(target.public_key())
            .allowed(&["10.100.0.0/24"])
            .endpoint("10.0.2.1:51820"),
    )?;
    target.add_addr("10.100.0.1/24")?;
    est.add_addr("10.100.0.2/24")?;
    newp.add_addr("10.100.0.3/24")?;
    target.up()?;
    est.up()?;
    newp.up()?;
    ns_est
        .ping_within(TARGET_TUN, Duration::from_secs(10))
        .context("established peer")?;

    mac1_self_check(&ns_fl, target.public_key())?;

    let rate = FLOOD_RATE.to_string();
    let secs = flood_seconds.to_string();
    let mut args = vec![
        "flood",
        target.public_key(),
        "10.0.3.1",
        "51820",
        &rate,
        &secs,
    ];
    if sources == Sources::Spoofed {
        // The whole prefix is local to the flooder, and the target routes it back there, so
        // cookie replies to the spoofed sources reach the flooder's socket.
        ns_fl.route_add(&["local", SPOOF_PREFIX, "dev", "lo"])?;
        ns_t.route_add(&[SPOOF_PREFIX, "via", "10.0.3.2"])?;
        args.push(SPOOF_PREFIX);
    }
    let mut flood = ns_fl.spawn_python("flood", python::HANDSHAKE, &args)?;
    wait_until(Duration::from_secs(5), "the flood to start", || {
        flood.output().contains("STARTED")
    })?;
    let flood_start = Instant::now();
    let count = ping_count.to_string();
    let mut pinger: Proc = ns_est.spawn(
        "est-ping-loop",
        &[
            "ping", "-n", "-c", &count, "-i", "0.2", "-W", "1", TARGET_TUN,
        ],
    )?;

    // Deliberately mid-flood: the new peer is added to the target 2 s into it.
    std::thread::sleep(JOIN_AFTER.saturating_sub(flood_start.elapsed()));
    target.add_peer(&PeerConfig::new(newp.public_key()).allowed(&["10.100.0.3/32"]))?;
    let join_start = Instant::now();
    let joined = ns_new.ping_within(TARGET_TUN, join_limit + Duration::from_secs(3));
    let join_time = join_start.elapsed();
    let flood_running_at_join = flood.is_running();

    pinger.wait_timeout(Duration::from_secs(15))?;
    let (ping_tx, ping_rx) = ping_stats(&pinger.output())?;
    flood.wait_timeout(Duration::from_secs(u64::from(flood_seconds) + 10))?;
    let out = flood.output();
    let summary = out
        .lines()
        .find(|l| l.starts_with("sent="))
        .with_context(|| format!("no flood summary in {out:?}"))?
        .to_owned();
    let sent = python::field(&summary, "sent").unwrap_or(0.0);
    let flood_rate = python::field(&summary, "rate").unwrap_or(0.0);
    let cookies = python::field(&summary, "cookie_replies").unwrap_or(0.0);
    let ratio = f64::from(ping_rx) / f64::from(ping_tx.max(1));

    eprintln!("== handshake flood results ==");
    eprintln!("flood: {summary}");
    eprintln!(
        "flood rate achieved: {flood_rate:.0} initiations/s ({sent:.0} in total), \
         cookie replies seen by the flooder: {cookies:.0}"
    );
    eprintln!(
        "established peer pings during flood: {ping_rx}/{ping_tx} = {:.1}%",
        ratio * 100.0
    );
    match &joined {
        Ok(t) => eprintln!(
            "new peer handshake + first ping: {t:?} (flood still running: {flood_running_at_join})"
        ),
        Err(e) => eprintln!("new peer never got through in {join_time:?}: {e:#}"),
    }

    target.ensure_running()?;
    ensure!(
        flood_rate >= 2000.0,
        "the flooder only achieved {flood_rate:.0}/s; the scenario needs thousands per second"
    );
    ensure!(
        ratio >= 0.8,
        "established peer lost too many pings during the flood: {ping_rx}/{ping_tx}"
    );
    let join_time = joined.context("the new peer could not handshake during the flood")?;
    ensure!(
        join_time <= join_limit,
        "the new peer needed {join_time:?} (> {join_limit:?}) to handshake during the flood"
    );
    ensure!(
        flood_running_at_join,
        "the flood had already ended when the new peer got through"
    );
    // And everything still works afterwards.
    ns_est
        .ping_args(TARGET_TUN, &[])
        .context("established peer after the flood")?;
    ns_new
        .ping_args(TARGET_TUN, &[])
        .context("new peer after the flood")?;
    Ok(())
}

#[test]
fn handshake_flood_ours() -> Result<()> {
    scenario(|| handshake_flood(Impl::Ours, Sources::Single))
}

#[test]
fn handshake_flood_spoofed_sources_ours() -> Result<()> {
    scenario(|| handshake_flood(Impl::Ours, Sources::Spoofed))
}
