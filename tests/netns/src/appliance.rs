//! `watchgrid serve` as the tests run it, and the client steps they share.

use crate::{unique_name, wait_until, Netns, Proc};
use anyhow::{ensure, Context, Result};
use std::time::Duration;

/// Starts `watchgrid serve` in `ns` with the given environment (`KEY=VALUE`) and extra
/// flags, a fresh interface name and no firewall (unless `extra` has `--firewall`), and
/// waits for its ready line.
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
    ]);
    if !extra.contains(&"--firewall") {
        argv.extend_from_slice(&["--firewall", "off"]);
    }
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

/// `api.py METHOD URL CAFILE BODY_JSON|- BEARER|-`: prints the status line, then the body.
/// With CAFILE `-`, downloads without verification (how the CA itself is fetched once).
const API_CLIENT: &str = r#"
import json, ssl, sys, urllib.request, urllib.error
method, url, ca, body, bearer = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca) if ca != "-" else ssl._create_unverified_context()
data = None if body == "-" else body.encode()
req = urllib.request.Request(url, data=data, method=method)
if data is not None:
    req.add_header("Content-Type", "application/json")
if bearer != "-":
    req.add_header("Authorization", "Bearer " + bearer)
try:
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        status, text = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
print(status)
print(text)
"#;

/// An HTTPS client for the appliance's API, run inside a namespace.
pub struct Client<'a> {
    pub ns: &'a Netns,
    pub base: String,
    pub ca: String,
    pub bearer: Option<String>,
}

impl Client<'_> {
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<json::Json>,
    ) -> Result<(u16, String)> {
        let url = format!("{}{}", self.base, path);
        let body = body.map(|b| b.0).unwrap_or_else(|| "-".into());
        let bearer = self.bearer.clone().unwrap_or_else(|| "-".into());
        let out = self
            .ns
            .run_python(API_CLIENT, &[method, &url, &self.ca, &body, &bearer])?;
        let (status, text) = out.split_once('\n').context("no status line")?;
        Ok((status.trim().parse()?, text.trim().to_string()))
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<json::Json>) -> Result<String> {
        let (status, text) = self.call(method, path, body)?;
        ensure!(status == 200, "{method} {path}: {status} {text}");
        Ok(text)
    }
}

/// Minimal JSON helpers: the test crate keeps its dependencies to anyhow.
pub mod json {
    pub struct Json(pub String);

    pub fn obj(fields: &[(&str, &str)]) -> Json {
        let parts: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{}", quote(v)))
            .collect();
        Json(format!("{{{}}}", parts.join(",")))
    }

    fn quote(v: &str) -> String {
        if v.parse::<i64>().is_ok() {
            v.to_string()
        } else {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("\"{escaped}\"")
        }
    }

    /// The string or number value of `key` in a flat JSON object.
    pub fn field(json: &str, key: &str) -> Option<String> {
        let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = json[at..].trim_start();
        if let Some(s) = rest.strip_prefix('"') {
            Some(s[..s.find('"')?].to_string())
        } else {
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim().to_string())
        }
    }

    /// The strings of `key`'s array value in a flat JSON object (items without commas
    /// or escaped quotes, such as CIDRs); `None` unless the value is an array.
    pub fn string_list(json: &str, key: &str) -> Option<Vec<String>> {
        let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = json[at..].trim_start().strip_prefix('[')?;
        let items = &rest[..rest.find(']')?];
        items
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Some(s.strip_prefix('"')?.strip_suffix('"')?.to_string()))
            .collect()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn string_lists_are_read_only_from_arrays() {
            let j = r#"{"allowed_ips":["10.0.0.0/16", "fd00::/64"],"n":1}"#;
            assert_eq!(
                super::string_list(j, "allowed_ips"),
                Some(vec!["10.0.0.0/16".to_string(), "fd00::/64".to_string()])
            );
            assert_eq!(super::string_list(r#"{"a":"x, y"}"#, "a"), None);
            assert_eq!(super::string_list(r#"{"a":[]}"#, "a"), Some(Vec::new()));
        }
    }
}
