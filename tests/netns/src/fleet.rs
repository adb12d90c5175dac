//! A hub and the machines of its fleet, as the agent, logs and install tests run them:
//! `watchgrid serve` in its own namespace with setup done and an admin API token, and
//! machines linked to it on 172.31.N.0/24 that enroll and run `watchgrid agent`.

use crate::appliance::json::{field, obj, Json};
use crate::appliance::Client;
use crate::{api_token, retry_until, start_serve, unique_name, veth, Netns, Proc};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const PASSWORD: &str = "correct horse battery";
/// Short, so that "online within two intervals" is quick to see.
pub const INTERVAL_S: &str = "2";
pub const HUB_VPN: &str = "10.100.0.1";

/// Reads `EXPR` of the JSON answer to an authenticated GET: `api_json.py URL CA BEARER EXPR`.
pub const API_JSON: &str = r#"
import json, ssl, sys, urllib.request
url, ca, bearer, expr = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
req = urllib.request.Request(url, headers={"Authorization": "Bearer " + bearer})
j = json.loads(urllib.request.urlopen(req, context=ctx, timeout=10).read())
print(json.dumps(eval(expr)))
"#;

/// The hub, its namespace and an admin client.
pub struct Hub {
    pub ns: Netns,
    pub bin: String,
    pub data: PathBuf,
    pub runtime: PathBuf,
    pub proc: Proc,
    /// The internal CA's fingerprint as the banner shows it.
    pub fingerprint: String,
    pub ca: PathBuf,
    pub admin: String,
}

impl Hub {
    pub fn start_proc(ns: &Netns, bin: &str, data: &Path, runtime: &Path) -> Result<Proc> {
        start_serve(
            ns,
            bin,
            &data.to_string_lossy(),
            &runtime.to_string_lossy(),
            &[],
            &[
                "--http-listen",
                "off",
                "--tls-names",
                "172.31.1.1,127.0.0.1",
                "--heartbeat-interval",
                INTERVAL_S,
            ],
        )
    }

    /// Starts the hub, completes setup and makes an admin API token.
    pub fn start(bin: &str) -> Result<Hub> {
        let ns = Netns::new("aghub")?;
        ns.sysctl(&["net.ipv4.ip_forward=1"])?;
        let data = ns.private_dir("data")?;
        let runtime = ns.dir().join("run");
        let proc = Hub::start_proc(&ns, bin, &data, &runtime)?;
        let fingerprint = banner_fingerprint(&proc.output())?;
        let token = std::fs::read_to_string(runtime.join("setup-token"))?
            .trim()
            .to_string();
        let mut client = Client {
            ns: &ns,
            base: "https://127.0.0.1".into(),
            ca: "-".into(),
            bearer: None,
        };
        let pem = client.ok("GET", "/downloads/ca.crt", None)?;
        let ca = ns.write_file("ca.crt", &format!("{pem}\n"))?;
        client.ca = ca.to_string_lossy().into_owned();
        client.ok(
            "POST",
            "/api/setup",
            Some(obj(&[
                ("setup_token", &token),
                ("admin_username", "admin"),
                ("admin_password", PASSWORD),
                ("endpoint", "172.31.1.1:51820"),
            ])),
        )?;
        let admin = api_token(&ns, &client.base, PASSWORD, Some(&client.ca))?;
        Ok(Hub {
            bin: bin.to_string(),
            ns,
            data,
            runtime,
            proc,
            fingerprint,
            ca,
            admin,
        })
    }

    pub fn client(&self) -> Client<'_> {
        Client {
            ns: &self.ns,
            base: "https://127.0.0.1".into(),
            ca: self.ca.to_string_lossy().into_owned(),
            bearer: Some(self.admin.clone()),
        }
    }

    pub fn enrollment_token(&self) -> Result<String> {
        let t = self.client().ok(
            "POST",
            "/api/enrollment-tokens",
            Some(obj(&[("uses", "1")])),
        )?;
        field(&t, "token").context("enrollment token")
    }

    /// `EXPR` (Python, over the answer `j`) of an admin GET.
    pub fn query(&self, path: &str, expr: &str) -> Result<String> {
        let url = format!("https://127.0.0.1{path}");
        let ca = self.ca.to_string_lossy();
        let out = self
            .ns
            .run_python(API_JSON, &[&url, &ca, &self.admin, expr])?;
        Ok(out.trim().to_string())
    }

    pub fn queue(&self, device: &str, argv: &[&str], timeout_s: u32) -> Result<String> {
        let argv: Vec<String> = argv.iter().map(|a| json_string(a)).collect();
        let body = format!(
            "{{\"argv\":[{}],\"timeout_s\":{timeout_s}}}",
            argv.join(",")
        );
        let (status, text) = self.client().call(
            "POST",
            &format!("/api/devices/{device}/commands"),
            Some(Json(body)),
        )?;
        ensure!(status == 202, "queueing {argv:?}: {status} {text}");
        field(&text, "id").context("command id")
    }

    /// Waits for a command's final state; returns the command's JSON.
    pub fn wait_final(&self, id: &str, timeout: Duration) -> Result<String> {
        retry_until(timeout, &format!("command {id} to end"), || {
            let (status, text) = self
                .client()
                .call("GET", &format!("/api/commands/{id}"), None)?;
            ensure!(status == 200, "{status} {text}");
            let state = field(&text, "state").context("state")?;
            ensure!(
                !["queued", "delivered"].contains(&state.as_str()),
                "still {state}"
            );
            Ok(text)
        })
    }

    /// SIGKILLs the hub and starts it again on the same data.
    pub fn kill_and_restart(&mut self) -> Result<()> {
        self.proc.signal("KILL")?;
        self.proc.wait_timeout(Duration::from_secs(10))?;
        self.proc = Hub::start_proc(&self.ns, &self.bin, &self.data, &self.runtime)?;
        Ok(())
    }
}

pub fn json_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The `internal CA SHA-256  AB:CD:…` line of the console banner.
pub fn banner_fingerprint(output: &str) -> Result<String> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("internal CA SHA-256"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .with_context(|| format!("no CA fingerprint in the banner:\n{output}"))
}

/// A machine with an agent: its namespace, linked to the hub's on 172.31.N.0/24.
pub struct Machine {
    pub n: u8,
    pub ns: Netns,
    pub state: PathBuf,
    pub interface: String,
    pub agent: Option<Proc>,
    pub device: String,
}

impl Machine {
    pub fn new(hub: &Hub, n: u8) -> Result<Machine> {
        let ns = Netns::new(&format!("ag{n}"))?;
        let (h, m) = (format!("vh{n}"), format!("vm{n}"));
        veth(&hub.ns, &h, &ns, &m)?;
        hub.ns.add_addr(&h, &format!("172.31.{n}.1/24"))?;
        ns.add_addr(&m, &format!("172.31.{n}.2/24"))?;
        hub.ns.link_up(&h)?;
        ns.link_up(&m)?;
        // The configured endpoint is 172.31.1.1; machines 2 and 3 reach it via the hub.
        ns.route_add(&["default", "via", &format!("172.31.{n}.1")])?;
        let state = ns.dir().join("agent-state");
        Ok(Machine {
            n,
            ns,
            state,
            interface: unique_name("wga"),
            agent: None,
            device: String::new(),
        })
    }

    pub fn server(&self) -> String {
        format!("https://172.31.{}.1", self.n)
    }

    pub fn enroll(
        &self,
        bin: &str,
        token: &str,
        fingerprint: Option<&str>,
        extra: &[&str],
    ) -> Result<std::process::Output> {
        let state = self.state.to_string_lossy();
        let server = self.server();
        let mut argv = vec![
            bin,
            "agent",
            "enroll",
            "--server",
            &server,
            "--token",
            token,
            "--state-dir",
            &state,
        ];
        if let Some(f) = fingerprint {
            argv.extend_from_slice(&["--ca-fingerprint", f]);
        }
        argv.extend_from_slice(extra);
        self.ns.exec_output(&argv)
    }

    /// Starts `watchgrid agent run` without log sources: a test never ships the host's journal.
    pub fn run(&mut self, bin: &str) -> Result<()> {
        self.run_with(bin, &["--journal", "off"])
    }

    /// Starts `watchgrid agent run` with extra flags (log sources, spool size).
    pub fn run_with(&mut self, bin: &str, extra: &[&str]) -> Result<()> {
        let state = self.state.to_string_lossy().into_owned();
        let mut argv = vec![
            bin,
            "agent",
            "run",
            "--state-dir",
            &state,
            "--interface",
            &self.interface,
        ];
        argv.extend_from_slice(extra);
        self.agent = Some(self.ns.spawn(&unique_name("agent"), &argv)?);
        Ok(())
    }

    pub fn agent(&mut self) -> Result<&mut Proc> {
        self.agent.as_mut().context("agent not started")
    }

    pub fn status(&self, bin: &str) -> Result<String> {
        let state = self.state.to_string_lossy();
        self.ns
            .exec(&[bin, "agent", "status", "--state-dir", &state])
    }
}

pub fn enrolled(m: &mut Machine, hub: &Hub, extra: &[&str]) -> Result<()> {
    enrolled_trusting(m, hub, Some(&hub.fingerprint), extra).map(drop)
}

/// Enrolls pinned to `fingerprint`, or trusting on first use when it is `None` (then
/// `extra` has `--insecure-first-use`); returns what enroll printed.
pub fn enrolled_trusting(
    m: &mut Machine,
    hub: &Hub,
    fingerprint: Option<&str>,
    extra: &[&str],
) -> Result<String> {
    let out = m.enroll(&hub.bin, &hub.enrollment_token()?, fingerprint, extra)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "enroll: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.device = text
        .split_whitespace()
        .find(|w| w.starts_with("dev-"))
        .context("device id in the enroll output")?
        .to_string();
    Ok(text)
}

/// Device ids the API shows online.
pub fn online(hub: &Hub) -> Result<Vec<String>> {
    let out = hub.query(
        "/api/devices",
        "[d['id'] for d in j['devices'] if (d.get('agent') or {}).get('online')]",
    )?;
    Ok(out
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect())
}
