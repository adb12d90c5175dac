//! `watchgrid serve` as the tests run it, and the client steps they share.

use crate::{unique_name, wait_until, Netns, Proc};
use anyhow::{Context, Result};
use std::time::Duration;

/// Starts `watchgrid serve` in `ns` with the given environment (`KEY=VALUE`) and extra
/// flags, a fresh interface name and no firewall, and waits for its ready line.
pub fn start_serve(
    ns: &Netns,
    bin: &str,
    data: &str,
    runtime: &str,
    env: &[&str],
    extra: &[&str],
) -> Result<Proc> {
    let wg_if = unique_name("wgs");
    let mut argv: Vec<&str> = vec!["env"];
    argv.extend_from_slice(env);
    argv.extend_from_slice(&[
        bin,
        "serve",
        "--data-dir",
        data,
        "--runtime-dir",
        runtime,
        "--wg-interface",
        &wg_if,
        "--firewall",
        "off",
    ]);
    argv.extend_from_slice(extra);
    let mut p = ns.spawn(&unique_name("serve"), &argv)?;
    wait_until(Duration::from_secs(30), "watchgrid ready line", || {
        p.output().contains("watchgrid: ready")
    })
    .with_context(|| format!("daemon output:\n{}", p.output()))?;
    p.ensure_running()?;
    Ok(p)
}

/// Signs in as `admin` (a session cookie) and creates an API token with it.
const API_TOKEN: &str = r#"
import http.cookiejar, json, ssl, sys, urllib.request
base, password, ca = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca) if ca != "-" else ssl._create_unverified_context()
op = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                 urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    return json.loads(op.open(req, timeout=10).read())
post("/api/auth/login", {"username": "admin", "password": password})
print(post("/api/tokens", {"name": "netns-test"})["token"])
"#;

/// An API token for `admin`, verifying TLS against `ca` (a PEM path), or not at all.
pub fn api_token(ns: &Netns, base: &str, password: &str, ca: Option<&str>) -> Result<String> {
    Ok(ns
        .run_python(API_TOKEN, &[base, password, ca.unwrap_or("-")])?
        .trim()
        .to_string())
}

/// A throwaway CA and a server certificate signed by it, made with openssl in `dir`:
/// `{name}-ca.pem` / `{name}-ca.key` and `{name}.pem` / `{name}.key`. `san` is an
/// openssl subjectAltName value such as `IP:10.88.0.1` or `DNS:vpn.example.test`.
/// (webpki refuses a self-signed CA certificate used directly as a server certificate.)
pub fn test_ca_and_leaf(dir: &std::path::Path, name: &str, san: &str) -> Result<()> {
    let p = |f: String| dir.join(f).to_string_lossy().into_owned();
    let (ca_key, ca_pem) = (p(format!("{name}-ca.key")), p(format!("{name}-ca.pem")));
    let (key, csr, pem, ext) = (
        p(format!("{name}.key")),
        p(format!("{name}.csr")),
        p(format!("{name}.pem")),
        p(format!("{name}.ext")),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["openssl", "req", "-x509"];
    args.extend_from_slice(&ec);
    args.extend_from_slice(&[
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-subj",
        "/CN=test CA",
        "-days",
        "2",
    ]);
    crate::run(&args)?;
    let mut args = vec!["openssl", "req"];
    args.extend_from_slice(&ec);
    args.extend_from_slice(&["-keyout", &key, "-out", &csr, "-subj", "/CN=test server"]);
    crate::run(&args)?;
    std::fs::write(
        &ext,
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .with_context(|| format!("writing {ext}"))?;
    crate::run(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &pem,
        "-days",
        "2",
        "-extfile",
        &ext,
    ])?;
    Ok(())
}
