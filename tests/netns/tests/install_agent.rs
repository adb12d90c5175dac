//! The agent installer end to end: `watchgrid serve` in one namespace; in another, the
//! one-line install command exactly as the dashboard shows it after its form created an
//! enrollment token, and `install-agent.sh` run directly. A wrong CA fingerprint installs
//! nothing; the right one installs the hub's own binary, byte for byte, and the unit, and
//! enrolls the machine (`watchgrid agent enroll`); a second run keeps that enrollment.
//!
//! Everything goes into the agent namespace's scratch directory (`WATCHGRID_PREFIX`,
//! `WATCHGRID_UNIT_DIR`, `WATCHGRID_STATE_DIR`, `TMPDIR`) and `--no-start` keeps the host's
//! users and systemd out of it (the service itself is not started here).

use anyhow::{ensure, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use watchgrid_netns_tests::appliance::json::field;
use watchgrid_netns_tests::appliance::Client;
use watchgrid_netns_tests::{api_token, run_output, scenario, start_serve, veth, Impl, Netns};

const HUB: &str = "172.30.11.1";
const PASSWORD: &str = "install-agent-password";

/// Signs in, posts the Devices page's "Install an agent" form (with the page's CSRF
/// token) and prints the install command
/// from the page it answers with (HTML-unescaped, as a browser shows it).
const INSTALL_COMMAND: &str = r#"
import html, http.cookiejar, json, re, ssl, sys, urllib.parse, urllib.request
base, password = sys.argv[1:3]
ctx = ssl._create_unverified_context()
op = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                 urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
req = urllib.request.Request(base + "/api/auth/login", method="POST",
    data=json.dumps({"username": "admin", "password": password}).encode())
req.add_header("Content-Type", "application/json")
op.open(req, timeout=10).read()
devices = op.open(base + "/devices", timeout=10).read().decode()
csrf = re.search(r'name="csrf" value="([^"]+)"', devices).group(1)
form = urllib.parse.urlencode({"name": "netns", "uses": "1", "expires_hours": "1",
                               "csrf": csrf}).encode()
req = urllib.request.Request(base + "/api/enrollment-tokens/agent-install", data=form, method="POST")
page = op.open(req, timeout=10).read().decode()
m = re.search(r'<pre id="install-command"><code>(.*?)</code></pre>', page, re.S)
print(html.unescape(m.group(1)))
"#;

#[test]
fn install_agent_verifies_the_ca_then_installs_the_hubs_binary() -> Result<()> {
    scenario(install)
}

/// Where one installer run puts things, under `root`.
struct Target {
    prefix: String,
    units: String,
    state: String,
    tmp: String,
}

impl Target {
    fn new(root: &Path) -> Result<Target> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let p = |s: &str| root.join(s).to_string_lossy().into_owned();
        Ok(Target {
            prefix: p("prefix"),
            units: p("units"),
            state: p("state"),
            tmp: p("tmp"),
        })
    }

    fn env(&self, enroll: bool) -> Vec<String> {
        let mut env = vec![
            format!("WATCHGRID_PREFIX={}", self.prefix),
            format!("WATCHGRID_UNIT_DIR={}", self.units),
            format!("WATCHGRID_STATE_DIR={}", self.state),
            format!("TMPDIR={}", self.tmp),
        ];
        if !enroll {
            env.push("WATCHGRID_SKIP_ENROLL=1".into());
        }
        env
    }

    /// Nothing of the install exists, and nothing but `leftovers` (file names) is left
    /// in the scratch space: the installer removes its own.
    fn ensure_nothing_installed(&self, leftovers: &[&str]) -> Result<()> {
        for dir in [&self.prefix, &self.units, &self.state] {
            ensure!(
                !Path::new(dir).exists(),
                "{dir} exists after a refused install"
            );
        }
        let mut pending = vec![std::path::PathBuf::from(&self.tmp)];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                ensure!(
                    leftovers.contains(&name.as_ref()),
                    "{} left behind",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// `env VARS... sh -c COMMAND` in `ns`; its output whatever the status. Without
/// `enroll`, the installer stops before `watchgrid agent enroll` (WATCHGRID_SKIP_ENROLL).
fn sh(ns: &Netns, target: &Target, enroll: bool, command: &str) -> Result<Output> {
    let mut argv = vec!["env".to_string()];
    argv.extend(target.env(enroll));
    argv.extend(["sh".to_string(), "-c".to_string(), command.to_string()]);
    ns.exec_output(&argv)
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The fingerprint with its first hex digit changed.
fn tampered(fp: &str) -> String {
    let first = if fp.starts_with('0') { "1" } else { "0" };
    format!("{first}{}", &fp[1..])
}

fn install() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Netns::new("iahub")?;
    let agent = Netns::new("iaagt")?;
    veth(&hub, "vh", &agent, "va")?;
    hub.add_addr("vh", &format!("{HUB}/24"))?;
    agent.add_addr("va", "172.30.11.2/24")?;
    hub.link_up("vh")?;
    agent.link_up("va")?;
    let data = hub.private_dir("data")?.to_string_lossy().into_owned();
    let runtime = hub.dir().join("run").to_string_lossy().into_owned();
    let password = format!("ADMIN_PASSWORD={PASSWORD}");
    let endpoint = format!("WG_SERVER_ENDPOINT={HUB}:51820");
    let daemon = start_serve(
        &hub,
        &bin,
        &data,
        &runtime,
        &[&password, &endpoint],
        &["--http-listen", "off", "--tls-names", HUB],
    )?;
    // The fingerprint as the operator reads it on the console.
    let banner = daemon.output();
    let fingerprint = banner
        .lines()
        .find(|l| l.contains("internal CA SHA-256"))
        .and_then(|l| l.split_whitespace().nth(3))
        .context("the CA fingerprint in the banner")?
        .to_string();
    ensure!(fingerprint.len() == 95, "banner fingerprint: {fingerprint}");

    let base = format!("https://{HUB}");
    let command = agent.run_python(INSTALL_COMMAND, &[&base, PASSWORD])?;
    let command = command.trim().to_string();
    eprintln!("install command from the dashboard: {command}");
    ensure!(
        command.contains(&format!("--fingerprint SHA256:{fingerprint}")),
        "the page's command does not carry the banner's fingerprint: {command}"
    );
    let token = command
        .split("--token ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .context("a token in the command")?
        .to_string();
    ensure!(token.len() == 43, "token {token}");
    let command = format!("{command} --no-start");

    // 1. The one-liner with a wrong fingerprint stops at its own check.
    let hex = fingerprint.replace(':', "").to_lowercase();
    let t = Target::new(&agent.dir().join("wrong-oneliner"))?;
    let out = sh(&agent, &t, true, &command.replace(&hex, &tampered(&hex)))?;
    ensure!(
        !out.status.success(),
        "wrong fingerprint accepted: {}",
        describe(&out)
    );
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("FAILED"),
        "no checksum failure shown: {}",
        describe(&out)
    );
    // The one-liner's own directory keeps the CA it refused, and nothing else.
    t.ensure_nothing_installed(&["watchgrid-ca.crt", "watchgrid-ca.der"])?;

    // 2. The installer itself with a wrong fingerprint: a clear refusal, nothing installed.
    let script = agent.dir().join("install-agent.sh");
    let fetched = agent.exec_output(&[
        "curl",
        "-fsSk",
        "-o",
        &script.to_string_lossy(),
        &format!("{base}/downloads/install-agent.sh"),
    ])?;
    ensure!(fetched.status.success(), "{}", describe(&fetched));
    let script = script.to_string_lossy().into_owned();
    let direct = |t: &Target, enroll: bool, fp: &str| {
        sh(
            &agent,
            t,
            enroll,
            &format!("sh {script} --server {base} --token {token} --fingerprint {fp} --no-start"),
        )
    };
    let t = Target::new(&agent.dir().join("wrong-direct"))?;
    let out = direct(&t, true, &format!("SHA256:{}", tampered(&fingerprint)))?;
    ensure!(out.status.code() == Some(1), "{}", describe(&out));
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("CA fingerprint mismatch"),
        "{}",
        describe(&out)
    );
    t.ensure_nothing_installed(&[])?;

    // Not root: refused before any download.
    let input = std::fs::read(&script)?;
    let as_nobody = run_output(
        &agent.argv(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-s",
            "--",
            "--server",
            &base,
            "--token",
            &token,
            "--fingerprint",
            &fingerprint,
        ]),
        Some(&input),
    )?;
    ensure!(
        as_nobody.status.code() == Some(1)
            && String::from_utf8_lossy(&as_nobody.stderr).contains("run this as root"),
        "{}",
        describe(&as_nobody)
    );

    // 3. The dashboard's one-liner, as shown: installs the hub's binary and the unit, and
    //    the installed binary enrolls with the hub (pinning the same CA).
    let want = std::fs::read(&bin).with_context(|| format!("reading {bin}"))?;
    let t = Target::new(&agent.dir().join("oneliner"))?;
    let out = sh(&agent, &t, true, &command)?;
    ensure!(out.status.success(), "install failed: {}", describe(&out));
    check_installed(&t, &want)?;
    let installed = format!("{}/bin/watchgrid", t.prefix);
    let status = agent.exec(&[&installed, "agent", "status", "--state-dir", &t.state])?;
    ensure!(
        status.contains(&fingerprint) && status.contains("device:"),
        "agent status after the install:\n{status}"
    );
    let ca = agent.write_file(
        "ca.crt",
        &agent.exec(&["curl", "-fsSk", &format!("{base}/downloads/ca.crt")])?,
    )?;
    let ca = ca.to_string_lossy().into_owned();
    let admin = Client {
        ns: &agent,
        base: base.clone(),
        ca: ca.clone(),
        bearer: Some(api_token(&agent, &base, PASSWORD, Some(&ca))?),
    };
    let devices = admin.ok("GET", "/api/devices", None)?;
    ensure!(
        field(&devices, "id").is_some() && devices.matches("\"id\":").count() == 1,
        "the hub should list the one enrolled machine: {devices}"
    );

    // 4. Again over the same install (an upgrade): the enrollment is kept, the spent token
    //    is not needed.
    let out = direct(&t, true, &fingerprint)?;
    ensure!(out.status.success(), "reinstall failed: {}", describe(&out));
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("already enrolled; keeping it"),
        "{}",
        describe(&out)
    );
    check_installed(&t, &want)?;

    // 5. The installer directly, the fingerprint in another spelling (lowercase, no
    //    colons), up to the enrollment (the token is spent).
    let t = Target::new(&agent.dir().join("direct"))?;
    let out = direct(&t, false, &hex)?;
    ensure!(out.status.success(), "install failed: {}", describe(&out));
    check_installed(&t, &want)?;
    Ok(())
}

fn check_installed(t: &Target, want: &[u8]) -> Result<()> {
    let installed = format!("{}/bin/watchgrid", t.prefix);
    let got = std::fs::read(&installed).with_context(|| format!("reading {installed}"))?;
    ensure!(
        got == want,
        "{installed} differs from the hub's binary ({} vs {} bytes)",
        got.len(),
        want.len()
    );
    let mode = std::fs::metadata(&installed)?.permissions().mode() & 0o7777;
    ensure!(mode == 0o755, "{installed} has mode {mode:o}");

    let unit_path = format!("{}/watchgrid-agent.service", t.units);
    let unit =
        std::fs::read_to_string(&unit_path).with_context(|| format!("reading {unit_path}"))?;
    let exec = format!("ExecStart={installed} agent run --state-dir {}\n", t.state);
    ensure!(unit.contains(&exec), "{unit_path} lacks {exec:?}:\n{unit}");
    ensure!(
        unit.contains(&format!("ReadWritePaths={}\n", t.state)),
        "{unit_path} does not open the state dir:\n{unit}"
    );
    ensure!(
        unit.contains("User=watchgrid-agent\n") && unit.contains("ProtectSystem=strict\n"),
        "{unit_path} is not the hardened unit:\n{unit}"
    );
    let state = std::fs::metadata(&t.state)?.permissions().mode() & 0o7777;
    ensure!(state == 0o700, "{} has mode {state:o}", t.state);
    // No temporary file next to the installed ones.
    for dir in [format!("{}/bin", t.prefix), t.units.clone()] {
        let names: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ensure!(names.len() == 1, "{dir} holds {names:?}");
    }
    Ok(())
}
