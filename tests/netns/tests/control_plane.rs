//! The appliance end to end: `watchgrid serve` in one namespace, a client in another
//! doing setup, enrollment and registration over HTTPS (verified against the internal
//! CA), then wireguard-go with the returned configuration pinging the hub. Disabling the
//! device stops traffic; a daemon restart brings the peer back from the store.

use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::time::Duration;
use watchgrid_netns_tests::appliance::json::{field, obj, string_list};
use watchgrid_netns_tests::appliance::Client;
use watchgrid_netns_tests::{
    api_token, scenario, start_serve, unique_name, veth, Impl, KeyPair, Netns, PeerConfig, Proc,
    WgDevice,
};

/// The hub's address in the VPN subnet chosen at setup (not the 10.100.0.0/16 default).
const HUB_V4: &str = "10.60.0.1";

fn start_daemon(ns: &Netns, bin: &str, data: &Path, runtime: &Path) -> Result<Proc> {
    let data = data.to_string_lossy().into_owned();
    let runtime = runtime.to_string_lossy().into_owned();
    start_serve(
        ns,
        bin,
        &data,
        &runtime,
        &[],
        &[
            "--firewall",
            "on",
            "--http-listen",
            "off",
            "--tls-names",
            "172.30.9.1",
        ],
    )
}

#[test]
fn enroll_a_wireguard_go_device_through_the_api_ours() -> Result<()> {
    scenario(enroll)
}

fn enroll() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Netns::new("cphub")?;
    let dev = Netns::new("cpdev")?;
    veth(&hub, "vh", &dev, "vd")?;
    hub.add_addr("vh", "172.30.9.1/24")?;
    dev.add_addr("vd", "172.30.9.2/24")?;
    hub.link_up("vh")?;
    dev.link_up("vd")?;
    let data = hub.private_dir("data")?;
    let runtime = hub.dir().join("run");
    let mut daemon = start_daemon(&hub, &bin, &data, &runtime)?;
    let token = std::fs::read_to_string(runtime.join("setup-token"))?
        .trim()
        .to_string();

    // Fetch the CA once without verification, then verify everything against it.
    let mut client = Client {
        ns: &dev,
        base: "https://172.30.9.1".into(),
        ca: "-".into(),
        bearer: None,
    };
    let ca_pem = client.ok("GET", "/downloads/ca.crt", None)?;
    let ca_path = dev.write_file("ca.crt", &format!("{ca_pem}\n"))?;
    client.ca = ca_path.to_string_lossy().into_owned();

    let (status, _) = client.call("GET", "/api/devices", None)?;
    ensure!(status == 503, "admin API must wait for setup, got {status}");
    let setup = |t: &str| {
        obj(&[
            ("setup_token", t),
            ("admin_username", "admin"),
            ("admin_password", "correct horse battery"),
            ("endpoint", "172.30.9.1:51820"),
            ("vpn_subnet", "10.60.0.0/24"),
        ])
    };
    ensure!(
        client.call("POST", "/api/setup", Some(setup("wrong")))?.0 == 403,
        "wrong token accepted"
    );
    client.ok("POST", "/api/setup", Some(setup(&token)))?;
    ensure!(
        client.call("POST", "/api/setup", Some(setup(&token)))?.0 == 409,
        "setup ran twice"
    );

    // A wrong password is refused; a session (cookie) creates the API token used below.
    let login = client.call(
        "POST",
        "/api/auth/login",
        Some(obj(&[
            ("username", "admin"),
            ("password", "not the password"),
        ])),
    )?;
    ensure!(login.0 == 401, "wrong password: {login:?}");
    let admin_token = api_token(
        &dev,
        &client.base,
        "correct horse battery",
        Some(&client.ca),
    )?;
    client.bearer = Some(admin_token);

    let enrol = client.ok(
        "POST",
        "/api/enrollment-tokens",
        Some(obj(&[("name", "lab"), ("uses", "1")])),
    )?;
    let enrol_token = field(&enrol, "token").context("enrollment token")?;
    let keys = KeyPair::generate()?;
    let reg = client.ok(
        "POST",
        "/api/register",
        Some(obj(&[
            ("token", &enrol_token),
            ("public_key", &keys.public),
            ("hostname", "lab-1"),
        ])),
    )?;
    let (address, hub_key, endpoint, allowed, device_id) = (
        field(&reg, "address").context("address")?,
        field(&reg, "hub_public_key").context("hub key")?,
        field(&reg, "endpoint").context("endpoint")?,
        string_list(&reg, "allowed_ips").context("allowed_ips as a JSON array")?,
        field(&reg, "device_id").context("device id")?,
    );
    eprintln!(
        "registered {device_id}: address {address}, endpoint {endpoint}, allowed {allowed:?}"
    );
    // The one-use token is spent.
    let again = client.call(
        "POST",
        "/api/register",
        Some(obj(&[
            ("token", &enrol_token),
            ("public_key", &KeyPair::generate()?.public),
            ("hostname", "lab-2"),
        ])),
    )?;
    ensure!(again.0 == 401, "spent token accepted: {again:?}");

    // wireguard-go with exactly the returned configuration.
    let wg_dev = unique_name("wgd");
    let mut peer = WgDevice::spawn_bare(&dev, Impl::WireguardGo, &wg_dev)?;
    peer.set_private_key(&keys)?;
    let routes: Vec<&str> = allowed.iter().map(String::as_str).collect();
    ensure!(
        routes.len() == 2,
        "expected IPv4 and IPv6 routes, got {allowed:?}"
    );
    peer.add_peer(
        &PeerConfig::new(&hub_key)
            .allowed(&routes)
            .endpoint(&endpoint)
            .keepalive(25),
    )?;
    let address_v6 = field(&reg, "address_v6").context("address_v6")?;
    dev.add_addr(&wg_dev, &address)?;
    dev.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &address_v6,
        "dev",
        &wg_dev,
        "nodad",
    ])?;
    dev.link_up(&wg_dev)?;
    let rtt = dev.ping_within(HUB_V4, Duration::from_secs(10))?;
    eprintln!("hub reachable through the tunnel after {rtt:?}");
    // The hub is ::1 in the VPN's /64.
    let v6: std::net::Ipv6Addr = address_v6.split('/').next().unwrap_or_default().parse()?;
    let hub_v6 = std::net::Ipv6Addr::from((u128::from(v6) & (u128::MAX << 64)) | 1).to_string();
    dev.ping_within(&hub_v6, Duration::from_secs(10))
        .with_context(|| format!("pinging the hub at {hub_v6} over IPv6"))?;

    // Disable: the hub drops the peer before answering, so traffic stops.
    client.ok(
        "POST",
        &format!("/api/devices/{device_id}/disable"),
        Some(obj(&[])),
    )?;
    ensure!(!dev.ping(HUB_V4), "disabled device still reaches the hub");
    client.ok(
        "POST",
        &format!("/api/devices/{device_id}/enable"),
        Some(obj(&[])),
    )?;
    dev.ping_within(HUB_V4, Duration::from_secs(10))?;

    // Restart: the peer comes back from the store.
    daemon.terminate(Duration::from_secs(10))?;
    ensure!(!dev.ping(HUB_V4), "hub answered while stopped");
    let mut daemon = start_daemon(&hub, &bin, &data, &runtime)?;
    let back = dev.ping_within(HUB_V4, Duration::from_secs(20))?;
    eprintln!("peer back after restart in {back:?}");
    ensure!(
        !runtime.join("setup-token").exists(),
        "setup token left behind after setup"
    );
    let metrics = hub.exec(&["python3", "-c", "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())"])?;
    ensure!(
        metrics.contains("watchgrid_wireguard_peers 1"),
        "metrics: {metrics}"
    );
    // Prometheus' own linter accepts the exposition.
    let lint = watchgrid_netns_tests::run_output(
        &["promtool", "check", "metrics"],
        Some(metrics.as_bytes()),
    )?;
    ensure!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    daemon.terminate(Duration::from_secs(10))?;
    Ok(())
}
