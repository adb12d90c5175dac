//! The firewall with real packets: `watchgrid serve --firewall on` in a hub namespace,
//! WAN clients and WireGuard peers (wireguard-go) in their own namespaces, a LAN behind
//! the hub. What the WAN, the admin LAN and the peers can reach is probed with TCP
//! connects and pings; the ruleset is read back with `nft`.

use anyhow::{bail, ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::appliance::json::{field, obj, string_list, Json};
use watchgrid_netns_tests::appliance::Client;
use watchgrid_netns_tests::{
    api_token, scenario, start_serve, unique_name, veth, Impl, KeyPair, Netns, PeerConfig, Proc,
    WgDevice,
};

const PASSWORD: &str = "correct horse battery";
const HUB_VPN: &str = "10.100.0.1";

/// `probe.py HOST PORT`: `ok <what the server sent>`, `timeout` or `refused`.
const PROBE: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.settimeout(2)
try:
    s.connect((host, port))
except socket.timeout:
    print("timeout"); sys.exit(0)
except ConnectionRefusedError:
    print("refused"); sys.exit(0)
except OSError as e:
    print("error", e); sys.exit(0)
try:
    data = s.recv(200).decode(errors="replace").strip()
except OSError:
    data = ""
print("ok", data)
"#;

/// `whoami.py ADDR PORT`: tells each client the address it connected from.
const WHOAMI: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(peer[0].encode())
    c.close()
"#;

fn probe(ns: &Netns, host: &str, port: u16) -> Result<String> {
    Ok(ns
        .run_python(PROBE, &[host, &port.to_string()])?
        .trim()
        .to_string())
}

fn whoami(ns: &Netns, addr: &str, port: u16) -> Result<Proc> {
    let mut p = ns.spawn_python(&unique_name("whoami"), WHOAMI, &[addr, &port.to_string()])?;
    watchgrid_netns_tests::wait_until(Duration::from_secs(10), "whoami listening", || {
        p.output().contains("listening")
    })?;
    p.ensure_running()?;
    Ok(p)
}

fn nft(ns: &Netns, args: &[&str]) -> Result<String> {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    ns.exec(&argv)
}

fn has_table(ns: &Netns, table: &str) -> Result<bool> {
    Ok(nft(ns, &["list", "tables"])?
        .lines()
        .any(|l| l.trim() == format!("table inet {table}")))
}

/// A JSON string literal.
fn js(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An enrolled peer: its device id, VPN addresses (without prefix) and wireguard-go.
struct Peer {
    id: String,
    v4: String,
    v6: String,
    _dev: WgDevice,
}

/// Registers a key through the WAN and brings up wireguard-go with the answer.
fn enroll_peer(
    ns: &Netns,
    hub_wan: &str,
    enrol_token: &str,
    name: &str,
    extra_routes: &[&str],
) -> Result<Peer> {
    let client = Client {
        ns,
        base: format!("https://{hub_wan}"),
        ca: "-".into(),
        bearer: None,
    };
    let keys = KeyPair::generate()?;
    let reg = client.ok(
        "POST",
        "/api/register",
        Some(obj(&[
            ("token", enrol_token),
            ("public_key", &keys.public),
            ("hostname", name),
        ])),
    )?;
    let id = field(&reg, "device_id").context("device id")?;
    let address = field(&reg, "address").context("address")?;
    let address_v6 = field(&reg, "address_v6").context("address_v6")?;
    let allowed = string_list(&reg, "allowed_ips").context("allowed_ips as a JSON array")?;
    let hub_key = field(&reg, "hub_public_key").context("hub key")?;
    let wg_if = unique_name("wgp");
    let mut dev = WgDevice::spawn_bare(ns, Impl::WireguardGo, &wg_if)?;
    dev.set_private_key(&keys)?;
    let mut routes: Vec<&str> = allowed.iter().map(String::as_str).collect();
    routes.extend_from_slice(extra_routes);
    dev.add_peer(
        &PeerConfig::new(&hub_key)
            .allowed(&routes)
            .endpoint(&format!("{hub_wan}:51820"))
            .keepalive(25),
    )?;
    ns.add_addr(&wg_if, &address)?;
    ns.add_addr(&wg_if, &address_v6)?;
    ns.link_up(&wg_if)?;
    for r in extra_routes {
        ns.route_add(&[r, "dev", &wg_if])?;
    }
    ns.ping_within(HUB_VPN, Duration::from_secs(15))
        .with_context(|| format!("{name} reaching the hub over UDP 51820 from the WAN"))?;
    let bare = |a: &str| a.split('/').next().unwrap_or_default().to_string();
    Ok(Peer {
        id,
        v4: bare(&address),
        v6: bare(&address_v6),
        _dev: dev,
    })
}

#[test]
fn wan_lan_and_peers_see_exactly_what_the_policy_allows_ours() -> Result<()> {
    scenario(policy_end_to_end)
}

fn policy_end_to_end() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Netns::new("fwhub")?;
    let pa = Netns::new("fwpa")?;
    let pb = Netns::new("fwpb")?;
    let lan = Netns::new("fwlan")?;
    // Peers A and B dial in from the WAN (documentation addresses, inside namespaces);
    // the LAN behind the hub is also where the admin sits.
    for (ns, h, p, hub_ip, peer_ip) in [
        (&pa, "ha", "pa", "203.0.113.5/30", "203.0.113.6/30"),
        (&pb, "hb", "pb", "203.0.113.9/30", "203.0.113.10/30"),
        (&lan, "hl", "ll", "192.168.77.1/24", "192.168.77.2/24"),
    ] {
        veth(&hub, h, ns, p)?;
        hub.add_addr(h, hub_ip)?;
        ns.add_addr(p, peer_ip)?;
        hub.link_up(h)?;
        ns.link_up(p)?;
    }
    hub.sysctl(&["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])?;
    let data = hub.private_dir("data")?.to_string_lossy().into_owned();
    let runtime = hub.dir().join("run").to_string_lossy().into_owned();
    let password = format!("ADMIN_PASSWORD={PASSWORD}");
    let mut daemon = start_serve(
        &hub,
        &bin,
        &data,
        &runtime,
        &[&password, "WG_SERVER_ENDPOINT=203.0.113.5:51820"],
        &[
            "--firewall",
            "on",
            "--tls-names",
            "192.168.77.1,203.0.113.5,203.0.113.9",
        ],
    )?;
    ensure!(has_table(&hub, "watchgrid")?, "no table inet watchgrid");

    // The admin LAN: the admin API answers.
    let base = "https://192.168.77.1".to_string();
    let admin = Client {
        ns: &lan,
        base: base.clone(),
        ca: "-".into(),
        bearer: Some(api_token(&lan, &base, PASSWORD, None)?),
    };
    admin.ok("GET", "/api/devices", None)?;

    // The WAN: HTTPS answers, the admin surface does not, nor the metrics port, nor
    // anything else (dropped: the connection times out rather than being refused).
    let wan = Client {
        ns: &pa,
        base: "https://203.0.113.5".into(),
        ca: "-".into(),
        bearer: admin.bearer.clone(),
    };
    let health = wan.ok("GET", "/healthz", None)?;
    ensure!(
        health.contains("\"firewall\":\"applied\""),
        "healthz: {health}"
    );
    for path in ["/api/devices", "/setup", "/login"] {
        let (status, body) = wan.call("GET", path, None)?;
        ensure!(status == 403, "WAN {path}: {status} {body}");
    }
    let redirect = probe(&pa, "203.0.113.5", 80)?;
    ensure!(
        redirect.starts_with("ok"),
        "HTTP (redirect) from the WAN: {redirect}"
    );
    pa.route_add(&["10.100.0.1/32", "via", "203.0.113.5"])?;
    let metrics_wan = probe(&pa, HUB_VPN, 9100)?;
    pa.exec(&["ip", "route", "del", "10.100.0.1/32"])?;
    ensure!(
        metrics_wan == "timeout",
        "metrics from the WAN: {metrics_wan}"
    );
    // Echo requests are answered, at most 20/s after a burst of 50.
    let flood = pa.exec_output(&[
        "ping",
        "-n",
        "-q",
        "-c",
        "300",
        "-i",
        "0.005",
        "-W",
        "1",
        "203.0.113.5",
    ])?;
    let summary = String::from_utf8_lossy(&flood.stdout).into_owned();
    let received: u32 = summary
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("ping summary: {summary}"))?;
    eprintln!("ping flood from the WAN: 300 sent in 1.5 s, {received} answered");
    ensure!(
        (50..200).contains(&received),
        "300 pings in 1.5 s from the WAN, {received} answered (want the burst of 50 plus ~20/s)"
    );
    let other_port = probe(&pa, "203.0.113.5", 22)?;
    ensure!(
        other_port == "timeout",
        "port 22 from the WAN: {other_port}"
    );
    lan.route_add(&["10.100.0.1/32", "via", "192.168.77.1"])?;
    let metrics_lan = probe(&lan, HUB_VPN, 9100)?;
    lan.exec(&["ip", "route", "del", "10.100.0.1/32"])?;
    ensure!(
        metrics_lan == "timeout",
        "metrics from the LAN: {metrics_lan}"
    );

    // Two peers enroll over the WAN (registration is outside the admin fence) and
    // reach the hub through UDP 51820.
    let enrol = admin.ok(
        "POST",
        "/api/enrollment-tokens",
        Some(obj(&[("name", "fw"), ("uses", "2")])),
    )?;
    let enrol = field(&enrol, "token").context("enrollment token")?;
    let a = enroll_peer(&pa, "203.0.113.5", &enrol, "peer-a", &["192.168.77.0/24"])?;
    let b = enroll_peer(&pb, "203.0.113.9", &enrol, "peer-b", &[])?;
    let metrics_vpn = probe(&pa, HUB_VPN, 9100)?;
    ensure!(
        metrics_vpn.starts_with("ok"),
        "metrics over the VPN: {metrics_vpn}"
    );

    // By default peers reach the hub only, over IPv4 and IPv6.
    let mut servers = Vec::new();
    for addr in [&b.v4, &b.v6] {
        servers.push(whoami(&pb, addr, 8080)?);
        servers.push(whoami(&pb, addr, 8081)?);
    }
    servers.push(whoami(&pa, &a.v4, 8080)?);
    for (from, to) in [(&a.v4, &b.v4), (&a.v6, &b.v6)] {
        ensure!(!pa.ping(to), "A pinged B at {to} with no rule");
        let before = probe(&pa, to, 8080)?;
        ensure!(
            before == "timeout",
            "A ({from}) reached B at {to}:8080 with no rule: {before}"
        );
    }

    // Groups with hostile names, and a rule between them for TCP 8080 only.
    let hostile = "dev's \"team\"; flush ruleset; }";
    admin.ok(
        "PUT",
        &format!("/api/devices/{}/groups", a.id),
        Some(Json(format!("{{\"groups\":[{}]}}", js(hostile)))),
    )?;
    admin.ok(
        "PUT",
        &format!("/api/devices/{}/groups", b.id),
        Some(Json("{\"groups\":[\"servers\"]}".into())),
    )?;
    let rule = format!(
        "{{\"from_group\":{},\"to_group\":\"servers\",\"protocol\":\"tcp\",\"ports\":[\"8080\"]}}",
        js(hostile)
    );
    let policy = |egress: bool| {
        Json(format!(
            "{{\"egress\":{egress},\"admin_cidrs\":null,\"rules\":[{rule}]}}"
        ))
    };
    admin.ok("PUT", "/api/firewall", Some(policy(false)))?;
    for (from, to) in [(&a.v4, &b.v4), (&a.v6, &b.v6)] {
        let allowed = probe(&pa, to, 8080)?;
        ensure!(
            allowed == format!("ok {from}"),
            "A to B at {to}:8080 after the rule: {allowed}"
        );
        let other = probe(&pa, to, 8081)?;
        ensure!(
            other == "timeout",
            "A reached B at {to}:8081 (not allowed): {other}"
        );
        ensure!(
            !pa.ping(to),
            "A pinged B at {to} (only TCP 8080 is allowed)"
        );
    }
    let reverse = probe(&pb, &a.v4, 8080)?;
    ensure!(
        reverse == "timeout",
        "B opened a connection to A: {reverse}"
    );

    // Names never reach the ruleset; a name with a newline is refused and changes nothing.
    let ruleset = nft(&hub, &["-j", "list", "ruleset"])?;
    for fragment in ["team", "flush", "servers"] {
        ensure!(
            !ruleset.contains(fragment),
            "{fragment:?} is in the ruleset"
        );
    }
    let (status, body) = admin.call(
        "PUT",
        &format!("/api/devices/{}/groups", b.id),
        Some(Json("{\"groups\":[\"evil\\n}\"]}".into())),
    )?;
    ensure!(status == 422, "newline in a group name: {status} {body}");
    ensure!(
        nft(&hub, &["-j", "list", "ruleset"])? == ruleset,
        "a refused change altered the ruleset"
    );

    // Egress: off, the LAN behind the hub is unreachable; on, it is reached with the
    // peer masqueraded as the hub (the LAN has no route back to the VPN anyway).
    let _lan_srv = whoami(&lan, "192.168.77.2", 8000)?;
    let off = probe(&pa, "192.168.77.2", 8000)?;
    ensure!(off == "timeout", "LAN reachable with egress off: {off}");
    admin.ok("PUT", "/api/firewall", Some(policy(true)))?;
    let on = probe(&pa, "192.168.77.2", 8000)?;
    ensure!(on == "ok 192.168.77.1", "egress on, LAN saw: {on}");
    let still = probe(&pa, &b.v4, 8081)?;
    ensure!(
        still == "timeout",
        "egress opened peer-to-peer traffic: {still}"
    );

    let audit = admin.ok("GET", "/api/audit", None)?;
    ensure!(
        audit.matches("firewall.update").count() == 2,
        "audit: {audit}"
    );
    daemon.terminate(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn a_foreign_table_survives_applies_and_shutdown_ours() -> Result<()> {
    scenario(foreign_table)
}

const FOREIGN: &str = "table inet other {
    set blocked { type ipv4_addr; elements = { 192.0.2.1, 192.0.2.2 } }
    chain input { type filter hook input priority 10; policy accept;
        ip saddr @blocked counter drop
        tcp dport 12345 counter accept comment \"not ours\"
    }
}
";

fn foreign_table() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Netns::new("fwown")?;
    let file = hub.write_file("other.nft", FOREIGN)?;
    nft(&hub, &["-f", &file.to_string_lossy()])?;
    let snapshot = nft(&hub, &["list", "table", "inet", "other"])?;
    let data = hub.private_dir("data")?.to_string_lossy().into_owned();
    let runtime = hub.dir().join("run").to_string_lossy().into_owned();
    let password = format!("ADMIN_PASSWORD={PASSWORD}");
    let env = [password.as_str(), "WG_SERVER_ENDPOINT=192.0.2.10:51820"];
    let serve = |extra: &[&str]| -> Result<Proc> {
        let mut flags = vec!["--firewall", "on", "--http-listen", "off"];
        flags.extend_from_slice(extra);
        start_serve(&hub, &bin, &data, &runtime, &env, &flags)
    };
    let local = |bearer: Option<String>| Client {
        ns: &hub,
        base: "https://127.0.0.1".into(),
        ca: "-".into(),
        bearer,
    };

    // An nft that cannot run: the tunnels stay up, but the daemon fails closed. Only
    // /healthz answers (degraded, without nft's error text), and the journal says why.
    let mut daemon = serve(&["--nft", "/nonexistent/nft"])?;
    let (status, body) = local(None).call("GET", "/healthz", None)?;
    ensure!(
        status == 503 && body.contains("degraded") && !body.contains("nonexistent"),
        "healthz with a failing firewall: {status} {body}"
    );
    let (status, body) = local(None).call(
        "POST",
        "/api/auth/login",
        Some(Json(format!(
            "{{\"username\":\"admin\",\"password\":\"{PASSWORD}\"}}"
        ))),
    )?;
    ensure!(
        status == 503 && body.contains("firewall is not applied"),
        "sign-in answered with the firewall down: {status} {body}"
    );
    ensure!(
        daemon.output().contains("firewall NOT applied")
            && daemon.output().contains("/nonexistent/nft"),
        "the failure is not logged:\n{}",
        daemon.output()
    );
    daemon.terminate(Duration::from_secs(10))?;

    // Apply, re-apply on a policy change, and remove on shutdown: ours only.
    let mut daemon = serve(&["--firewall-cleanup"])?;
    ensure!(has_table(&hub, "watchgrid")?, "no table inet watchgrid");
    let token = api_token(&hub, "https://127.0.0.1", PASSWORD, None)?;
    local(Some(token)).ok(
        "PUT",
        "/api/firewall",
        Some(Json(
            "{\"egress\":true,\"admin_cidrs\":null,\"rules\":[]}".into(),
        )),
    )?;
    let ours = nft(&hub, &["list", "table", "inet", "watchgrid"])?;
    ensure!(ours.contains("masquerade"), "egress not applied:\n{ours}");
    ensure!(
        nft(&hub, &["list", "table", "inet", "other"])? == snapshot,
        "apply changed the foreign table"
    );
    let status = daemon.terminate(Duration::from_secs(10))?;
    ensure!(status.success(), "daemon exit: {status}");
    ensure!(
        !has_table(&hub, "watchgrid")?,
        "table left after --firewall-cleanup"
    );
    ensure!(
        nft(&hub, &["list", "table", "inet", "other"])? == snapshot,
        "shutdown changed the foreign table"
    );

    // Without --firewall-cleanup the rules stay up while the daemon is down.
    let mut daemon = serve(&[])?;
    daemon.terminate(Duration::from_secs(10))?;
    ensure!(
        has_table(&hub, "watchgrid")?,
        "rules removed without --firewall-cleanup"
    );
    let names = nft(&hub, &["list", "tables"])?;
    let tables: Vec<&str> = names.lines().map(str::trim).collect();
    if tables != ["table inet other", "table inet watchgrid"] {
        bail!("unexpected tables: {tables:?}");
    }
    Ok(())
}

#[test]
fn the_reviewed_rulesets_load_into_the_kernel() -> Result<()> {
    scenario(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../appliance/firewall/tests/golden");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            // A fresh namespace each, so every file is loaded as the first apply is.
            let ns = Netns::new("fwgold")?;
            nft(&ns, &["-j", "-f", &path.to_string_lossy()])
                .with_context(|| format!("loading {}", path.display()))?;
            ensure!(
                has_table(&ns, "watchgrid")?,
                "{} made no table",
                path.display()
            );
            // Applying the same transaction again replaces the table without error.
            nft(&ns, &["-j", "-f", &path.to_string_lossy()])?;
            loaded += 1;
        }
        ensure!(
            loaded >= 3,
            "only {loaded} golden rulesets found in {}",
            dir.display()
        );
        Ok(())
    })
}
