//! The hub's SSH CA against a real OpenSSH: a machine's sshd serves a host certificate
//! the hub signed and trusts the hub's user CA; an `ssh` client that knows only the
//! hub's `@cert-authority` line, with `StrictHostKeyChecking=yes`, signs in with a
//! hub-signed user certificate. Once revoked (and the machine has the hub's KRL) the
//! certificate is refused; an expired one is refused; a plain key is refused.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};

use watchgrid_netns_tests::appliance::json::{field, Json};
use watchgrid_netns_tests::fleet::{json_string, Hub, Machine};
use watchgrid_netns_tests::sshd::PrivsepDir;
use watchgrid_netns_tests::{scenario, unix_now, Impl, Netns, Proc};

const MACHINE: &str = "172.31.1.2";
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
fn keygen(ns: &Netns, path: &Path) -> Result<String> {
    ns.exec(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
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
    let machine = Machine::new(&hub, 1)?;
    let mdir = machine.ns.dir().to_path_buf();

    // The machine: a host key with a hub-signed certificate, the hub's user CA, its KRL.
    let host_key = mdir.join("ssh_host_ed25519_key");
    let host_pub = keygen(&machine.ns, &host_key)?;
    let (host_cert, _) = sign(&hub, "host", &host_pub, MACHINE, "")?;
    std::fs::write(
        mdir.join("ssh_host_ed25519_key-cert.pub"),
        format!("{host_cert}\n"),
    )?;
    let user_ca = mdir.join("ssh-ca.pub");
    let krl = mdir.join("revoked.krl");
    fetch(&hub, "/downloads/ssh-ca.pub", &user_ca)?;
    fetch(&hub, "/downloads/ssh-revoked.krl", &krl)?;
    let _sshd = start_sshd(&machine.ns, &host_key, &user_ca, &krl)?;

    // The client: only the hub's @cert-authority line, and a hub-signed user key.
    let hdir = hub.ns.dir().to_path_buf();
    let known_hosts = hdir.join("known_hosts");
    fetch(&hub, "/downloads/ssh-known-hosts", &known_hosts)?;
    let user_key = hdir.join("user_key");
    let user_pub = keygen(&hub.ns, &user_key)?;
    let (user_cert, serial) = sign(&hub, "user", &user_pub, "root", "")?;
    // Not KEY-cert.pub: ssh would load that one by itself, also for the plain-key attempt.
    let cert_file = hdir.join("user.cert");
    std::fs::write(&cert_file, format!("{user_cert}\n"))?;

    let (ok, err) = ssh(&hub.ns, &known_hosts, &user_key, Some(&cert_file))?;
    ensure!(
        ok,
        "a hub-signed user certificate to a hub-certified host: {err}"
    );
    let (ok, _) = ssh(&hub.ns, &known_hosts, &user_key, None)?;
    ensure!(!ok, "a plain key without a certificate was let in");

    // Expired: a window that ended an hour ago.
    let expired_file = hdir.join("expired-cert.pub");
    let past = format!(
        ",\"valid_after\":{},\"validity_secs\":3600",
        unix_now() - 7200
    );
    let (expired, _) = sign(&hub, "user", &user_pub, "root", &past)?;
    std::fs::write(&expired_file, format!("{expired}\n"))?;
    let (ok, _) = ssh(&hub.ns, &known_hosts, &user_key, Some(&expired_file))?;
    ensure!(!ok, "an expired certificate was let in");

    // Revoked: the machine fetches the new KRL, and the certificate stops working.
    hub.client().ok(
        "POST",
        &format!("/api/ssh/certs/{serial}/revoke"),
        Some(Json("{}".into())),
    )?;
    fetch(&hub, "/downloads/ssh-revoked.krl", &krl)?;
    let checked = machine.ns.exec_output(&[
        "ssh-keygen",
        "-Q",
        "-f",
        &krl.to_string_lossy(),
        &cert_file.to_string_lossy(),
    ])?;
    eprintln!(
        "ssh-keygen -Q: {}",
        String::from_utf8_lossy(&checked.stdout).trim()
    );
    let (ok, _) = ssh(&hub.ns, &known_hosts, &user_key, Some(&cert_file))?;
    ensure!(
        !ok,
        "a revoked certificate was let in after the machine fetched the KRL"
    );
    Ok(())
}

fn start_sshd(
    ns: &Netns,
    host_key: &Path,
    user_ca: &Path,
    krl: &Path,
) -> Result<(Proc, PrivsepDir)> {
    let privsep = PrivsepDir::ensure()?;
    let config = ns.write_file(
        "sshd_config",
        &format!(
            "ListenAddress {MACHINE}\nPort {SSH_PORT}\nHostKey {key}\nHostCertificate {key}-cert.pub\n\
             TrustedUserCAKeys {}\nRevokedKeys {}\nAuthorizedKeysFile none\n\
             StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPidFile none\nLogLevel VERBOSE\n",
            user_ca.display(),
            krl.display(),
            key = host_key.display(),
        ),
    )?;
    let log: PathBuf = ns.dir().join("sshd.log");
    let proc = watchgrid_netns_tests::sshd::spawn(ns, &config, &log, MACHINE, SSH_PORT)?;
    Ok((proc, privsep))
}

/// `ssh root@MACHINE true` with strict host checking against `known_hosts` only.
fn ssh(
    from: &Netns,
    known_hosts: &Path,
    key: &Path,
    cert: Option<&Path>,
) -> Result<(bool, String)> {
    let known = format!("UserKnownHostsFile={}", known_hosts.display());
    let key = key.to_string_lossy();
    let cert = cert.map(|c| format!("CertificateFile={}", c.display()));
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
    if let Some(c) = &cert {
        argv.extend(["-o", c.as_str()]);
    }
    argv.extend(["root@172.31.1.2", "true"]);
    let out = from.exec_output(&argv)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
