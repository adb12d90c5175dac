//! Engines talking to each other in memory with a fake clock.

mod sim;

use sim::*;
use std::time::Duration;
use watchgrid_core::{PeerUpdate, Secret};

/// Two nodes A (10.0.0.1) and B (10.0.0.2) that know each other with endpoints.
fn pair() -> (Net, usize, usize) {
    let mut net = Net::new();
    let a = net.add_node("192.0.2.1:51820");
    let b = net.add_node("192.0.2.2:51820");
    net.peer(a, b, &["10.0.0.2/32", "fd00::2/128"], true);
    net.peer(b, a, &["10.0.0.1/32", "fd00::1/128"], true);
    (net, a, b)
}

fn ping(net: &mut Net, from: usize, to: usize, src: [u8; 4], dst: [u8; 4], tag: &[u8]) -> bool {
    let p = ipv4_packet(src, dst, tag);
    net.send(from, &p);
    net.pump();
    net.took_tunnel(to).contains(&p)
}

#[test]
fn handshake_then_data_both_ways_v4_and_v6() {
    let (mut net, a, b) = pair();
    // The first packet is queued behind the handshake and delivered once it completes.
    assert!(ping(
        &mut net,
        a,
        b,
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 2),
        b"first"
    ));
    assert_eq!(net.count(INIT), 1);
    assert_eq!(net.count(RESPONSE), 1);
    assert!(ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"back"
    ));
    let p6 = ipv6_packet("fd00::1", "fd00::2", b"six");
    net.send(a, &p6);
    net.pump();
    assert_eq!(net.took_tunnel(b), vec![p6]);
    // No further handshakes were needed.
    assert_eq!(net.count(INIT), 1);

    let now = net.now();
    let st = net.nodes[a].engine.peer_status(now);
    assert_eq!(st.len(), 1);
    assert!(st[0].rx_bytes > 0 && st[0].tx_bytes > 0);
    assert_eq!(st[0].last_handshake_age, Some(Duration::ZERO));
    assert_eq!(st[0].endpoint, Some(sa("192.0.2.2:51820")));
}

#[test]
fn rekey_happens_after_120_seconds_of_traffic() {
    let (mut net, a, b) = pair();
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    let inits = net.count(INIT);
    // Steady traffic for 119 s: no new handshake.
    for _ in 0..119 {
        net.advance(Duration::from_secs(1));
        assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    }
    assert_eq!(net.count(INIT), inits, "no rekey before REKEY_AFTER_TIME");
    for _ in 0..5 {
        net.advance(Duration::from_secs(1));
        assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    }
    assert!(net.count(INIT) > inits, "initiator rekeys after 120 s");
    let now = net.now();
    let age = net.nodes[a].engine.peer_status(now)[0].last_handshake_age;
    assert!(age.is_some_and(|d| d < Duration::from_secs(10)), "{age:?}");
}

#[test]
fn idle_session_expires_after_180_seconds() {
    let (mut net, a, b) = pair();
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    net.advance(Duration::from_secs(179));
    let inits = net.count(INIT);
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    assert_eq!(net.count(INIT), inits, "session still valid at 179 s");

    let (mut net, a, b) = pair();
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    net.advance(Duration::from_secs(182));
    let inits = net.count(INIT);
    let datas = net.count(DATA);
    // The session is gone: the packet waits for a new handshake, then arrives.
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    assert_eq!(net.count(INIT), inits + 1);
    assert!(net.count(DATA) > datas);
    // The latest handshake is still reported after expiry, like wg show does.
    let now = net.now();
    assert!(net.nodes[a].engine.peer_status(now)[0]
        .last_handshake_age
        .is_some());
}

#[test]
fn endpoint_roams_to_latest_authenticated_source() {
    let (mut net, a, b) = pair();
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    // B moves: it now sends from a new address and port.
    let moved = sa("198.51.100.7:40000");
    net.nodes[b].addrs.insert(0, moved);
    assert!(ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"from new place"
    ));
    let now = net.now();
    assert_eq!(
        net.nodes[a].engine.peer_status(now)[0].endpoint,
        Some(moved)
    );
    // A's reply goes to the new address.
    let before = net.seen.len();
    assert!(ping(
        &mut net,
        a,
        b,
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 2),
        b"reply"
    ));
    assert!(net.seen[before..].iter().all(|s| s.to == moved));
}

#[test]
fn forged_packet_does_not_move_the_endpoint() {
    let (mut net, a, b) = pair();
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    assert!(ping(&mut net, b, a, v4(10, 0, 0, 2), v4(10, 0, 0, 1), b"y"));
    // An attacker replays B's last data packet from elsewhere, and sends garbage.
    let replay = net
        .seen
        .iter()
        .rev()
        .find(|s| s.kind == DATA && s.to == sa("192.0.2.1:51820"))
        .map(|s| s.bytes.clone())
        .expect("B sent data");
    net.inject(sa("203.0.113.9:9999"), sa("192.0.2.1:51820"), replay);
    let mut garbage = vec![4u8, 0, 0, 0];
    garbage.extend_from_slice(&[0xAB; 60]);
    net.inject(sa("203.0.113.9:9999"), sa("192.0.2.1:51820"), garbage);
    net.pump();
    let now = net.now();
    assert_eq!(
        net.nodes[a].engine.peer_status(now)[0].endpoint,
        Some(sa("192.0.2.2:51820"))
    );
    assert!(net.nodes[a].engine.drops().invalid + net.nodes[a].engine.drops().unknown_peer > 0);
}

#[test]
fn inner_source_outside_allowed_ips_is_dropped() {
    let mut net = Net::new();
    let a = net.add_node("192.0.2.1:51820");
    let b = net.add_node("192.0.2.2:51820");
    // A only accepts 10.0.0.2 from B; B routes everything to A.
    net.peer(a, b, &["10.0.0.2/32"], true);
    net.peer(b, a, &["0.0.0.0/0"], true);
    assert!(ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"allowed"
    ));
    assert!(!ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 99),
        v4(10, 0, 0, 1),
        b"spoofed"
    ));
    assert_eq!(net.nodes[a].engine.drops().source_not_allowed, 1);
}

#[test]
fn packets_route_by_longest_prefix_to_the_right_peer() {
    let mut net = Net::new();
    let hub = net.add_node("192.0.2.1:51820");
    let b = net.add_node("192.0.2.2:51820");
    let c = net.add_node("192.0.2.3:51820");
    net.peer(hub, b, &["10.0.0.0/8"], true);
    net.peer(hub, c, &["10.5.0.0/16"], true);
    net.peer(b, hub, &["0.0.0.0/0"], true);
    net.peer(c, hub, &["0.0.0.0/0"], true);
    assert!(ping(
        &mut net,
        hub,
        c,
        v4(10, 0, 0, 1),
        v4(10, 5, 1, 1),
        b"to c"
    ));
    assert!(ping(
        &mut net,
        hub,
        b,
        v4(10, 0, 0, 1),
        v4(10, 6, 1, 1),
        b"to b"
    ));
    net.send(
        hub,
        &ipv4_packet(v4(10, 0, 0, 1), v4(192, 168, 0, 1), b"nowhere"),
    );
    assert_eq!(net.nodes[hub].engine.drops().no_route, 1);
}

#[test]
fn private_key_change_rehandshakes_at_once_after_peer_readds_key() {
    let (mut net, a, b) = pair();
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"x"));
    let old = net.nodes[a].public_key();
    let new_key = Secret::generate_private();
    net.set_private_key(a, new_key.clone());
    net.pump();
    // B's session was keyed to A's old identity: nothing gets through.
    assert!(!ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"lost"
    ));
    // B replaces the peer with A's new public key.
    net.nodes[b].engine.remove_peer(&old).expect("remove old");
    net.peer(b, a, &["10.0.0.1/32"], true);
    let now = net.now();
    assert_eq!(
        net.nodes[b].engine.peer_status(now)[0].public_key,
        new_key.public_key()
    );
    // Without any timer running, the next packet from the side whose key changed
    // handshakes and arrives: nothing sent at the key change holds it back.
    assert!(ping(
        &mut net,
        a,
        b,
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 2),
        b"again"
    ));
    assert!(ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"and back"
    ));
}

#[test]
fn peer_changes_leave_unrelated_sessions_alone() {
    let mut net = Net::new();
    let hub = net.add_node("192.0.2.1:51820");
    let b = net.add_node("192.0.2.2:51820");
    let c = net.add_node("192.0.2.3:51820");
    net.peer(hub, b, &["10.0.0.2/32"], true);
    net.peer(hub, c, &["10.0.0.3/32"], true);
    net.peer(b, hub, &["10.0.0.1/32"], true);
    net.peer(c, hub, &["10.0.0.1/32"], true);
    assert!(ping(
        &mut net,
        hub,
        b,
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 2),
        b"b"
    ));
    assert!(ping(
        &mut net,
        hub,
        c,
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 3),
        b"c"
    ));
    let inits = net.count(INIT);

    // Remove B, add D, widen C's allowed IPs: C's session survives without a handshake.
    let bkey = net.nodes[b].public_key();
    net.nodes[hub].engine.remove_peer(&bkey).expect("remove b");
    let d = net.add_node("192.0.2.4:51820");
    net.peer(hub, d, &["10.0.0.4/32"], true);
    let ckey = net.nodes[c].public_key();
    net.upsert(
        hub,
        ckey,
        PeerUpdate {
            allowed_ips: vec![prefix("10.3.0.0/16")],
            ..PeerUpdate::default()
        },
    );
    assert!(ping(
        &mut net,
        hub,
        c,
        v4(10, 0, 0, 1),
        v4(10, 3, 0, 1),
        b"c again"
    ));
    assert_eq!(net.count(INIT), inits, "C kept its session");

    // B is gone: its traffic is dropped and nothing routes to it.
    assert!(!ping(
        &mut net,
        b,
        hub,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"b is gone"
    ));
    net.send(hub, &ipv4_packet(v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"to b"));
    assert!(net.nodes[hub].engine.drops().no_route >= 1);
    assert!(net.nodes[hub].engine.drops().unknown_peer >= 1);
}

#[test]
fn peer_removed_and_added_back_handshakes_at_once() {
    let mut net = Net::new();
    let hub = net.add_node("192.0.2.1:51820");
    let dev = net.add_node("192.0.2.2:51820");
    // The hub learns the device's endpoint from its handshake, as with enrolled devices.
    net.peer(hub, dev, &["10.0.0.2/32"], false);
    net.peer(dev, hub, &["10.0.0.1/32"], true);
    assert!(ping(
        &mut net,
        dev,
        hub,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"x"
    ));
    let key = net.nodes[dev].public_key();
    net.nodes[hub].engine.remove_peer(&key).expect("remove");
    assert!(!ping(
        &mut net,
        dev,
        hub,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"disabled"
    ));
    // Added back without an endpoint: the hub still knows where the device was.
    net.peer(hub, dev, &["10.0.0.2/32"], false);
    net.pump();
    assert!(ping(
        &mut net,
        dev,
        hub,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"enabled"
    ));
}

#[test]
fn restarted_hub_rehandshakes_with_known_endpoints_at_once() {
    let (mut net, a, b) = pair();
    assert!(ping(&mut net, b, a, v4(10, 0, 0, 2), v4(10, 0, 0, 1), b"x"));
    // A restarts: a fresh engine with the same key and peer, endpoint from its store.
    let key = net.nodes[a].key.clone();
    net.nodes[a].engine = watchgrid_core::Engine::new(key).expect("engine");
    net.peer(a, b, &["10.0.0.2/32", "fd00::2/128"], true);
    // B still uses its old session: A cannot read it.
    assert!(!ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"stale"
    ));
    let inits = net.count(INIT);
    let now = net.now();
    let mut out = Capture::default();
    net.nodes[a].engine.initiate_handshakes(now, &mut out);
    assert_eq!(out.sent.len(), 1);
    for (to, d) in out.sent {
        net.inject(sa("192.0.2.1:51820"), to, d);
    }
    net.pump();
    assert_eq!(net.count(INIT), inits + 1);
    // Without waiting for any timer, B's traffic flows again.
    assert!(ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"back"
    ));
}

#[test]
fn persistent_keepalive_sends_on_idle_link() {
    let (mut net, a, b) = pair();
    let akey = net.nodes[a].public_key();
    net.upsert(
        b,
        akey,
        PeerUpdate {
            persistent_keepalive: Some(5),
            ..PeerUpdate::default()
        },
    );
    net.pump();
    net.advance(Duration::from_secs(7));
    // The keepalive brings the handshake up by itself, then keeps sending.
    assert!(net.count(RESPONSE) >= 1);
    let keepalives = |net: &Net| {
        net.seen
            .iter()
            .filter(|s| s.kind == DATA && s.len == 32 && s.from == sa("192.0.2.2:51820"))
            .count()
    };
    let before = keepalives(&net);
    net.advance(Duration::from_secs(21));
    let sent = keepalives(&net) - before;
    assert!(
        (3..=5).contains(&sent),
        "about one keepalive per 5 s, got {sent}"
    );
}

#[test]
fn preshared_key_must_match() {
    let (mut net, a, b) = pair();
    let psk = Secret::generate_private();
    let (ak, bk) = (net.nodes[a].public_key(), net.nodes[b].public_key());
    let with_psk = |k: Option<Secret>| PeerUpdate {
        preshared_key: Some(k),
        ..PeerUpdate::default()
    };
    net.upsert(a, bk, with_psk(Some(psk.clone())));
    net.pump();
    assert!(!ping(
        &mut net,
        a,
        b,
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 2),
        b"x"
    ));
    net.upsert(b, ak, with_psk(Some(psk)));
    net.pump();
    net.advance(Duration::from_secs(6));
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"y"));
    let now = net.now();
    assert!(net.nodes[a].engine.peer_status(now)[0]
        .preshared_key
        .is_some());
}

#[test]
fn flood_from_one_source_is_capped_and_new_peer_still_handshakes() {
    let (mut net, a, b) = pair();
    assert!(ping(&mut net, b, a, v4(10, 0, 0, 2), v4(10, 0, 0, 1), b"x"));
    // Replay B's handshake initiation (valid MACs, stale timestamp) thousands of times
    // from one attacker address within one second.
    let init = capture_initiation(&net, b);
    for _ in 0..5000 {
        net.inject(sa("203.0.113.66:1234"), sa("192.0.2.1:51820"), init.clone());
    }
    net.pump();
    let drops = net.nodes[a].engine.drops();
    assert!(drops.rate_limited >= 4900, "{drops:?}");
    // The established session keeps working and a new peer handshakes with no cookie.
    assert!(ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"still"
    ));
    let c = net.add_node("192.0.2.3:51820");
    net.peer(a, c, &["10.0.0.3/32"], true);
    net.peer(c, a, &["10.0.0.1/32"], true);
    assert!(ping(
        &mut net,
        c,
        a,
        v4(10, 0, 0, 3),
        v4(10, 0, 0, 1),
        b"new"
    ));
    assert_eq!(net.count(COOKIE), 0);
}

#[test]
fn flood_from_many_sources_triggers_cookies_and_legit_peer_gets_through() {
    let (mut net, a, b) = pair();
    assert!(ping(&mut net, b, a, v4(10, 0, 0, 2), v4(10, 0, 0, 1), b"x"));
    let init = capture_initiation(&net, b);
    let c = net.add_node("192.0.2.3:51820");
    net.peer(a, c, &["10.0.0.3/32"], true);
    net.peer(c, a, &["10.0.0.1/32"], true);
    // Spoofed sources each stay under the per-source cap but together exceed the
    // device-wide budget; the legitimate initiation then gets a cookie reply.
    for i in 0..300u32 {
        let src = std::net::SocketAddr::new(
            std::net::IpAddr::from([100, 64, (i >> 8) as u8, i as u8]),
            1000,
        );
        net.inject(src, sa("192.0.2.1:51820"), init.clone());
    }
    net.pump();
    let p = ipv4_packet(v4(10, 0, 0, 3), v4(10, 0, 0, 1), b"legit");
    net.send(c, &p);
    net.pump();
    assert!(
        net.count(COOKIE) >= 1,
        "under load the device asks for a cookie"
    );
    assert!(net.took_tunnel(a).is_empty());
    // C retries with the cookie (mac2) after REKEY_TIMEOUT and gets through.
    for _ in 0..40 {
        net.advance(Duration::from_millis(250));
        let (now, ckey) = (net.now(), net.nodes[c].public_key());
        let st = net.nodes[a].engine.peer_status(now);
        if st
            .iter()
            .any(|s| s.public_key == ckey && s.last_handshake_age.is_some())
        {
            break;
        }
    }
    net.send(c, &p);
    net.pump();
    assert!(net.took_tunnel(a).contains(&p));
}

/// The latest handshake initiation node `from` put on the wire.
fn capture_initiation(net: &Net, from: usize) -> Vec<u8> {
    let addr = net.nodes[from].addrs[0];
    net.seen
        .iter()
        .rev()
        .find(|s| s.kind == INIT && s.from == addr)
        .map(|s| s.bytes.clone())
        .expect("node sent an initiation")
}

#[test]
fn an_engine_without_a_key_is_inert_until_it_gets_one() {
    let (mut net, a, b) = pair();
    let key = net.nodes[a].key.clone();
    // A starts without a key but with its peer configured, as `wg set` may do.
    net.nodes[a].engine = watchgrid_core::Engine::without_key();
    net.peer(a, b, &["10.0.0.2/32"], true);
    assert_eq!(net.nodes[a].engine.public_key(), None);
    assert_eq!(net.nodes[a].engine.poll_timeout(), None);
    assert!(!ping(
        &mut net,
        a,
        b,
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 2),
        b"x"
    ));
    assert_eq!(net.count(INIT), 0, "a keyless device sends nothing");
    assert!(!ping(
        &mut net,
        b,
        a,
        v4(10, 0, 0, 2),
        v4(10, 0, 0, 1),
        b"y"
    ));
    assert!(net.count(INIT) > 0);
    assert_eq!(net.count(RESPONSE), 0, "a keyless device answers nothing");
    assert_eq!(net.nodes[a].engine.poll_timeout(), None);

    net.set_private_key(a, key);
    assert!(ping(&mut net, a, b, v4(10, 0, 0, 1), v4(10, 0, 0, 2), b"z"));
    assert!(net.nodes[a].engine.poll_timeout().is_some());

    // Clearing the key turns it inert again; the peer stays configured.
    net.nodes[a].engine.clear_private_key();
    assert_eq!(net.nodes[a].engine.poll_timeout(), None);
    assert_eq!(net.nodes[a].engine.peer_count(), 1);
    assert!(!ping(
        &mut net,
        a,
        b,
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 2),
        b"w"
    ));
}
