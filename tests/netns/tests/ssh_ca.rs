//! The hub's SSH CA against a real OpenSSH. An agent enrolled with `--ssh-host-cert
//! --ssh-user-ca` sends its sshd's host keys (ed25519, ECDSA, RSA), installs the host
//! certificates the hub signs, the hub's user CA and KRL, and reloads sshd. An `ssh`
//! client in the hub's namespace that knows only the hub's `@cert-authority` line, with
//! `StrictHostKeyChecking=yes`, signs in over the tunnel with a hub-signed user
//! certificate. Once revoked (and the agent has fetched the new KRL) the certificate is
//! refused; an expired one is refused; a plain key is refused.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

use watchgrid_netns_tests::appliance::json::{field, Json};
use watchgrid_netns_tests::fleet::{enrolled, json_string, Hub, Machine};
use watchgrid_netns_tests::sshd::PrivsepDir;
use watchgrid_netns_tests::{scenario, unix_now, wait_until, Impl, Netns, Proc};

const MACHINE: &str = "172.31.1.2";
const NAME: &str = "web-1";
const SSH_PORT: &str = "2222";

/// Saves a public download's bytes: `URL CA OUT`.
const FETCH: &str = r#"
import ssl, sys, urllib.request
url, ca, out = sys.argv[1:4]
data = urllib.request.urlopen(url, context=ssl.create_default_context(cafile=ca), timeout=10).read()
open(out, "wb").write(data)
"#;

fn fetch(hub: &Hub, path: &str, out: &Path) -> Result<()> {
    hub.ns.run_python(
        FETCH,
        &[
            &format!("https://127.0.0.1{path}"),
            &hub.ca.to_string_lossy(),
            &out.to_string_lossy(),
        ],
    )?;
    Ok(())
}

/// A key pair made by ssh-keygen in `dir`; its public line.
fn keygen(ns: &Netns, path: &Path, kind: &str) -> Result<String> {
    ns.exec(&[
        "ssh-keygen",
        "-q",
        "-t",
        kind,
        "-N",
        "",
        "-f",
        &path.to_string_lossy(),
    ])?;
    Ok(std::fs::read_to_string(format!("{}.pub", path.display()))?
        .trim()
        .to_string())
}

/// Has the hub sign `public_key`; the certificate line.
fn sign(
    hub: &Hub,
    kind: &str,
    public_key: &str,
    principal: &str,
    extra: &str,
) -> Result<(String, u64)> {
    let body = format!(
        "{{\"public_key\":{},\"principals\":[{}]{extra}}}",
        json_string(public_key),
        json_string(principal)
    );
    let r = hub
        .client()
        .ok("POST", &format!("/api/ssh/{kind}-certs"), Some(Json(body)))?;
    let cert = field(&r, "certificate").context("certificate")?;
    let serial = field(&r, "serial").context("serial")?.parse()?;
    Ok((cert, serial))
}

#[test]
fn openssh_trusts_hub_signed_host_and_user_certificates_and_honours_the_krl_ours() -> Result<()> {
    scenario(ssh_ca)
}

fn ssh_ca() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Hub::start(&bin)?;
    let mut machine = Machine::new(&hub, 1)?;

    // The machine: sshd with three host keys and nothing of the hub's yet.
    let etc = machine.ns.private_dir("etc-ssh")?;
    for kind in ["ed25519", "ecdsa", "rsa"] {
        keygen(&machine.ns, &etc.join(format!("ssh_host_{kind}_key")), kind)?;
    }
    let (_sshd, config, log, _privsep) = start_sshd(&machine.ns, &etc)?;

    let reload = format!("pkill -HUP -f {}", config.display());
    let ssh_dir = etc.to_string_lossy().into_owned();
    enrolled(
        &mut machine,
        &hub,
        &[
            "--hostname",
            NAME,
            "--ssh-host-cert",
            "--ssh-user-ca",
            "--ssh-dir",
            &ssh_dir,
            "--sshd-reload",
            &reload,
        ],
    )?;
    machine.run(&bin)?;
    // The agent installs the certificates, then reloads sshd, which binds again.
    let agent = machine.agent()?.output_reader();
    wait_until(
        Duration::from_secs(30),
        "host certificates, then a reload",
        || {
            let out = agent();
            let installed = out.rfind("installed an sshd host certificate");
            installed.is_some_and(|at| out[at..].contains("sshd reloaded"))
        },
    )?;
    wait_until(
        Duration::from_secs(10),
        "sshd listening after the reload",
        || {
            std::fs::read_to_string(&log).is_ok_and(|l| {
                let hups = l.matches("Received SIGHUP").count();
                hups > 0 && l.matches("Server listening on 0.0.0.0").count() == hups + 1
            })
        },
    )?;
    watchgrid_netns_tests::sshd::wait_listening(&machine.ns, "0.0.0.0", SSH_PORT)?;
    let vpn = hub
        .query(
            "/api/devices",
            &format!(
                "[d['address'] for d in j['devices'] if d['id'] == '{}'][0]",
                machine.device
            ),
        )?
        .trim_matches('"')
        .to_string();
    let listed = machine.ns.exec(&[
        "ssh-keygen",
        "-L",
        "-f",
        &etc.join("ssh_host_rsa_key-cert.pub").to_string_lossy(),
    ])?;
    for principal in [NAME, "web-1.wg", vpn.as_str()] {
        ensure!(
            listed.contains(principal),
            "host certificate without {principal}: {listed}"
        );
    }
    eprintln!("agent status:\n{}", machine.status(&bin)?);

    // The client: only the hub's @cert-authority line, and a hub-signed user key.
    let hdir = hub.ns.dir().to_path_buf();
    let known_hosts = hdir.join("known_hosts");
    fetch(&hub, "/downloads/ssh-known-hosts", &known_hosts)?;
    let user_key = hdir.join("user_key");
    let user_pub = keygen(&hub.ns, &user_key, "ed25519")?;
    let (user_cert, serial) = sign(&hub, "user", &user_pub, "root", "")?;
    // Not KEY-cert.pub: ssh would load that one by itself, also for the plain-key attempt.
    let cert_file = hdir.join("user.cert");
    std::fs::write(&cert_file, format!("{user_cert}\n"))?;

    let client = Client {
        ns: &hub.ns,
        known_hosts: &known_hosts,
        key: &user_key,
    };
    let (ok, err) = client.ssh(&vpn, None, Some(&cert_file))?;
    ensure!(
        ok,
        "a hub-signed user certificate to {vpn} over the tunnel: {err}"
    );
    let alias = "web-1.wg";
    let (ok, err) = client.ssh(MACHINE, Some(alias), Some(&cert_file))?;
    ensure!(ok, "the host as {alias}: {err}");
    let (ok, err) = client.ssh(MACHINE, None, Some(&cert_file))?;
    ensure!(
        !ok && err.contains("Host key verification failed"),
        "a name the host certificate does not carry was trusted: {err}"
    );
    let (ok, _) = client.ssh(&vpn, None, None)?;
    ensure!(!ok, "a plain key without a certificate was let in");

    // Expired: a window that ended an hour ago.
    let expired_file = hdir.join("expired-cert.pub");
    let past = format!(
        ",\"valid_after\":{},\"validity_secs\":3600",
        unix_now() - 7200
    );
    let (expired, _) = sign(&hub, "user", &user_pub, "root", &past)?;
    std::fs::write(&expired_file, format!("{expired}\n"))?;
    let (ok, _) = client.ssh(&vpn, None, Some(&expired_file))?;
    ensure!(!ok, "an expired certificate was let in");

    // Revoked: the next heartbeat tells the agent, which fetches the new KRL.
    hub.client().ok(
        "POST",
        &format!("/api/ssh/certs/{serial}/revoke"),
        Some(Json("{}".into())),
    )?;
    let krl = etc
        .join("watchgrid-revoked.krl")
        .to_string_lossy()
        .into_owned();
    let cert = cert_file.to_string_lossy().into_owned();
    wait_until(
        Duration::from_secs(30),
        "the agent's KRL revoking the certificate",
        || {
            machine
                .ns
                .exec_output(&["ssh-keygen", "-Q", "-f", &krl, &cert])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("REVOKED"))
        },
    )?;
    let (ok, _) = client.ssh(&vpn, None, Some(&cert_file))?;
    ensure!(
        !ok,
        "a revoked certificate was let in after the agent fetched the KRL"
    );
    Ok(())
}

/// sshd with `etc`'s host keys that reads the agent's drop-in; its config and log.
fn start_sshd(ns: &Netns, etc: &Path) -> Result<(Proc, PathBuf, PathBuf, PrivsepDir)> {
    let privsep = PrivsepDir::ensure()?;
    let keys: String = ["ed25519", "ecdsa", "rsa"]
        .iter()
        .map(|k| format!("HostKey {}/ssh_host_{k}_key\n", etc.display()))
        .collect();
    let config = ns.write_file(
        "sshd_config",
        &format!(
            "Include {}/sshd_config.d/*.conf\nListenAddress 0.0.0.0\nPort {SSH_PORT}\n{keys}\
             AuthorizedKeysFile none\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPidFile none\nLogLevel VERBOSE\n",
            etc.display(),
        ),
    )?;
    let log: PathBuf = ns.dir().join("sshd.log");
    let proc = watchgrid_netns_tests::sshd::spawn(ns, &config, &log, "0.0.0.0", SSH_PORT)?;
    Ok((proc, config, log, privsep))
}

/// An ssh client with strict host checking against the hub's `known_hosts` only.
struct Client<'a> {
    ns: &'a Netns,
    known_hosts: &'a Path,
    key: &'a Path,
}

impl Client<'_> {
    /// `ssh root@HOST true`, checking the host key as `alias` when given.
    fn ssh(&self, host: &str, alias: Option<&str>, cert: Option<&Path>) -> Result<(bool, String)> {
        let known = format!("UserKnownHostsFile={}", self.known_hosts.display());
        let key = self.key.to_string_lossy();
        let cert = cert.map(|c| format!("CertificateFile={}", c.display()));
        let alias = alias.map(|a| format!("HostKeyAlias={a}"));
        let target = format!("root@{host}");
        let mut argv = vec![
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &known,
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-i",
            &key,
            "-p",
            SSH_PORT,
        ];
        for option in [&cert, &alias].into_iter().flatten() {
            argv.extend(["-o", option.as_str()]);
        }
        argv.extend([target.as_str(), "true"]);
        let out = self.ns.exec_output(&argv)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}
