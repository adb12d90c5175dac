//! Setup switches the HTTPS certificate to one the operator uploads: a bad upload is
//! refused and the internal CA's certificate stays; a good one is served at once
//! (verified by curl against the operator's CA) and again after a restart.

use anyhow::{ensure, Result};
use std::time::Duration;
use watchgrid_netns_tests::{scenario, start_serve, test_ca_and_leaf, Impl, Netns};

const NAME: &str = "vpn.upload.test";

/// POSTs /api/setup (TLS unverified: the internal CA is not trusted here) with the
/// uploaded PEMs read from files; prints the status code.
const SETUP: &str = r#"
import json, ssl, sys, urllib.request, urllib.error
base, token, cert_file, key_file = sys.argv[1:5]
body = {"setup_token": token, "admin_username": "admin", "admin_password": "correct horse battery",
        "endpoint": "192.0.2.1:51820", "tls_mode": "uploaded",
        "tls_cert_pem": open(cert_file).read(), "tls_key_pem": open(key_file).read()}
req = urllib.request.Request(base + "/api/setup", data=json.dumps(body).encode(), method="POST")
req.add_header("Content-Type", "application/json")
try:
    print(urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=10).status)
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#;

#[test]
fn uploaded_certificate_chosen_at_setup_is_served_ours() -> Result<()> {
    scenario(upload)
}

fn upload() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let ns = Netns::new("upload")?;
    let dir = ns.dir().to_path_buf();
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    // The operator's own CA and a certificate for the appliance's name.
    test_ca_and_leaf(&dir, "leaf", &format!("DNS:{NAME}"))?;
    std::fs::write(
        dir.join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )?;

    let data = ns.private_dir("data")?.to_string_lossy().into_owned();
    let runtime = p("run");
    let flags = [
        "--https-listen",
        "127.0.0.1:8443",
        "--http-listen",
        "off",
        "--metrics-listen",
        "127.0.0.1:9100",
    ];
    let mut daemon = start_serve(&ns, &bin, &data, &runtime, &[], &flags)?;
    let token = std::fs::read_to_string(dir.join("run/setup-token"))?
        .trim()
        .to_string();
    let base = "https://127.0.0.1:8443";
    let resolve = format!("{NAME}:8443:127.0.0.1");
    let url = format!("https://{NAME}:8443/healthz");
    let verified = || {
        ns.exec(&[
            "curl",
            "-sf",
            "--cacert",
            &p("leaf-ca.pem"),
            "--resolve",
            &resolve,
            &url,
        ])
    };

    let refused = ns.run_python(SETUP, &[base, &token, &p("broken.pem"), &p("leaf.key")])?;
    ensure!(
        refused.starts_with("422"),
        "a broken certificate was not refused: {refused}"
    );
    ensure!(
        verified().is_err(),
        "the operator's certificate is served before it was uploaded"
    );

    let accepted = ns.run_python(SETUP, &[base, &token, &p("leaf.pem"), &p("leaf.key")])?;
    ensure!(
        accepted.trim() == "200",
        "setup with the upload: {accepted}"
    );
    let body = verified()?;
    ensure!(
        body.contains("\"setup_complete\":true"),
        "unexpected /healthz: {body}"
    );

    daemon.terminate(Duration::from_secs(10))?;
    let mut daemon = start_serve(&ns, &bin, &data, &runtime, &[], &flags)?;
    let body = verified()?;
    ensure!(body.contains("\"status\":\"ok\""), "after restart: {body}");
    daemon.terminate(Duration::from_secs(10))?;
    Ok(())
}
