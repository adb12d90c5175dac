//! ACME end to end against pebble (Let's Encrypt's test server, Debian package): the
//! daemon, given FRONTEND_HOST, obtains a certificate over TLS-ALPN-01 on its HTTPS
//! port and serves it; curl verifies it against pebble's root. After a restart the
//! certificate comes from the cache in the data dir, without a new order. And when no
//! order can succeed, HTTPS keeps working on the internal CA's certificate.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::appliance::Client;
use watchgrid_netns_tests::{
    api_token, scenario, start_serve, test_ca_and_leaf, veth, wait_until, Impl, Netns, Proc,
};

const DOMAIN: &str = "vpn.watchgrid.test";
const CA_IP: &str = "10.88.0.1";
const HUB_IP: &str = "10.88.0.2";

#[test]
fn acme_certificate_from_pebble_is_served_and_cached_ours() -> Result<()> {
    scenario(acme)
}

#[test]
fn finding_11_a_failing_acme_order_leaves_https_on_the_internal_certificate_ours() -> Result<()> {
    scenario(acme_down)
}

fn acme_down() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Netns::new("acmedown")?;
    let data_dir = hub.private_dir("data")?;
    let data = data_dir.to_string_lossy().into_owned();
    let run_dir = hub.dir().join("run").to_string_lossy().into_owned();
    let domain_env = format!("FRONTEND_HOST={DOMAIN}");
    let password = "acme-down-password";
    let password_env = format!("ADMIN_PASSWORD={password}");
    // Nothing listens at the directory: every order fails.
    let mut daemon = start_serve(
        &hub,
        &bin,
        &data,
        &run_dir,
        &[
            &domain_env,
            &password_env,
            "WG_SERVER_ENDPOINT=192.0.2.10:51820",
        ],
        &[
            "--http-listen",
            "off",
            "--metrics-listen",
            "127.0.0.1:9100",
            "--acme-directory",
            "https://127.0.0.1:14000/dir",
        ],
    )?;
    wait_until(Duration::from_secs(60), "a failed ACME order", || {
        daemon.output().contains("ACME certificate order failed")
    })
    .with_context(|| format!("daemon:\n{}", daemon.output()))?;
    let ca = data_dir.join("tls/ca.crt").to_string_lossy().into_owned();
    let resolve = format!("{DOMAIN}:443:127.0.0.1");
    let body = hub.exec(&[
        "curl",
        "-sf",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        &format!("https://{DOMAIN}/healthz"),
    ])?;
    ensure!(body.contains("\"status\":\"ok\""), "/healthz: {body}");

    let token = api_token(&hub, "https://127.0.0.1", password, Some(&ca))?;
    let admin = Client {
        ns: &hub,
        base: "https://127.0.0.1".into(),
        ca: ca.clone(),
        bearer: Some(token),
    };
    let tls = admin.ok("GET", "/api/tls", None)?;
    eprintln!("/api/tls with ACME failing: {tls}");
    ensure!(
        tls.contains("\"serving\":\"internal\"")
            && tls.contains(&format!("\"domain\":\"{DOMAIN}\""))
            && tls.contains("\"last_error\":\"")
            && tls.contains("\"certificate_since\":null"),
        "/api/tls: {tls}"
    );
    daemon.terminate(Duration::from_secs(10))?;
    Ok(())
}

fn start_daemon(hub: &Netns, bin: &str, data: &str, ca_root: &str) -> Result<Proc> {
    let run_dir = hub.dir().join("run").to_string_lossy().into_owned();
    let domain_env = format!("FRONTEND_HOST={DOMAIN}");
    let directory = format!("https://{CA_IP}:14000/dir");
    start_serve(
        hub,
        bin,
        data,
        &run_dir,
        &[&domain_env, "WATCHGRID_ACME_EMAIL=ops@watchgrid.test"],
        &[
            "--http-listen",
            "off",
            "--metrics-listen",
            "127.0.0.1:9100",
            "--acme-directory",
            &directory,
            "--acme-ca-root",
            ca_root,
        ],
    )
}

fn acme() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let ca = Netns::new("acmeca")?;
    let hub = Netns::new("acmehub")?;
    veth(&ca, "vca", &hub, "vhub")?;
    ca.add_addr("vca", &format!("{CA_IP}/24"))?;
    hub.add_addr("vhub", &format!("{HUB_IP}/24"))?;
    ca.link_up("vca")?;
    hub.link_up("vhub")?;
    let dir = ca.dir().to_path_buf();
    // pebble's own HTTPS API needs a certificate the daemon can verify.
    test_ca_and_leaf(&dir, "api", &format!("IP:{CA_IP}"))?;
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let config = format!(
        r#"{{"pebble": {{"listenAddress": "{CA_IP}:14000", "managementListenAddress": "{CA_IP}:15000",
        "certificate": "{}", "privateKey": "{}", "httpPort": 80, "tlsPort": 443,
        "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
        p("api.pem"),
        p("api.key")
    );
    std::fs::write(dir.join("pebble.json"), config)?;
    // DNS for pebble: every name resolves to the hub.
    let dns = format!("{CA_IP}:8053");
    let _dns = ca.spawn(
        "challtestsrv",
        &[
            "pebble-challtestsrv",
            "-defaultIPv4",
            HUB_IP,
            "-defaultIPv6",
            "",
            "-dns01",
            &dns,
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("{CA_IP}:8055"),
        ],
    )?;
    // No artificial validation delay, no random nonce rejections.
    let mut pebble = ca.spawn(
        "pebble",
        &[
            "env",
            "PEBBLE_VA_NOSLEEP=1",
            "PEBBLE_WFE_NONCEREJECT=0",
            "pebble",
            "-config",
            &p("pebble.json"),
            "-dnsserver",
            &dns,
        ],
    )?;
    wait_until(Duration::from_secs(10), "pebble listening", || {
        pebble.output().contains("Listening on")
    })?;
    pebble.ensure_running()?;

    let data = hub.private_dir("data")?.to_string_lossy().into_owned();
    let mut daemon = start_daemon(&hub, &bin, &data, &p("api-ca.pem"))?;
    let took = wait_until(Duration::from_secs(60), "ACME certificate deployed", || {
        daemon.output().contains("DeployedNewCert")
    })
    .with_context(|| format!("daemon:\n{}\npebble:\n{}", daemon.output(), pebble.output()))?;
    eprintln!("certificate obtained from pebble in {took:?}");

    // pebble's issuing root, then curl verifies the served chain against it.
    let root = ca.exec(&[
        "curl",
        "-sf",
        "--cacert",
        &p("api-ca.pem"),
        &format!("https://{CA_IP}:15000/roots/0"),
    ])?;
    std::fs::write(dir.join("issuing-root.pem"), &root)?;
    let resolve = format!("{DOMAIN}:443:{HUB_IP}");
    let url = format!("https://{DOMAIN}/healthz");
    let verify = || {
        ca.exec(&[
            "curl",
            "-sf",
            "--cacert",
            &p("issuing-root.pem"),
            "--resolve",
            &resolve,
            &url,
        ])
    };
    let body = verify()?;
    ensure!(
        body.contains("\"status\":\"ok\""),
        "unexpected /healthz: {body}"
    );
    // The internal CA is not in play: its root is not offered.
    let ca_download = ca.exec_output(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
        &p("issuing-root.pem"),
        "--resolve",
        &resolve,
        &format!("https://{DOMAIN}/downloads/ca.crt"),
    ])?;
    ensure!(
        String::from_utf8_lossy(&ca_download.stdout) == "404",
        "internal CA offered in ACME mode"
    );

    // Restart: the cached certificate is served at once.
    daemon.terminate(Duration::from_secs(10))?;
    let mut daemon = start_daemon(&hub, &bin, &data, &p("api-ca.pem"))?;
    wait_until(
        Duration::from_secs(30),
        "cached certificate deployed",
        || daemon.output().contains("DeployedCachedCert"),
    )
    .with_context(|| format!("daemon:\n{}", daemon.output()))?;
    ensure!(
        !daemon.output().contains("DeployedNewCert"),
        "a new order was placed despite the cache"
    );
    let body = verify()?;
    ensure!(
        body.contains("\"status\":\"ok\""),
        "unexpected /healthz after restart: {body}"
    );
    daemon.terminate(Duration::from_secs(10))?;
    Ok(())
}
