//! Backups copied off the box over SFTP, end to end: the daemon's scheduled backup, run
//! the way the image's daily timer runs it (`watchgrid admin backup --scheduled`), goes
//! to OpenSSH's sshd on a backup server in another namespace. The server's host key is
//! pinned from `ssh-keyscan` output; the appliance signs in with the key its API shows.
//! A server presenting another key gets nothing, a key the server no longer accepts is
//! named, and both failures fail the timer's run, keep the local backup, and show in the
//! API, the metric and an alert.

use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use watchgrid_netns_tests::appliance::json::{field, obj};
use watchgrid_netns_tests::appliance::Client;
use watchgrid_netns_tests::sshd::PrivsepDir;
use watchgrid_netns_tests::{
    api_token, run_combined, scenario, start_serve, veth_addressed, Impl, Netns, Proc,
};

const HUB_IP: &str = "172.30.13.1";
const BACKUP_IP: &str = "172.30.13.2";
const PASSWORD: &str = "correct horse battery";
const PASSPHRASE: &str = "a long backup passphrase";

#[test]
fn scheduled_backups_reach_a_pinned_sftp_server_and_failures_are_reported() -> Result<()> {
    scenario(offsite_copies)
}

fn offsite_copies() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Netns::new("oshub")?;
    let server = Netns::new("osbak")?;
    veth_addressed(
        &hub,
        "vh",
        &format!("{HUB_IP}/24"),
        &server,
        "vs",
        &format!("{BACKUP_IP}/24"),
    )?;
    let data = hub.private_dir("data")?;
    let runtime = hub.dir().join("run");
    let _daemon = start_serve(
        &hub,
        &bin,
        &data.to_string_lossy(),
        &runtime.to_string_lossy(),
        &[],
        &["--http-listen", "off", "--tls-names", HUB_IP],
    )?;
    let client = set_up(&hub, &runtime)?;
    client.ok(
        "PUT",
        "/api/backups/schedule",
        Some(obj(&[("passphrase", PASSPHRASE)])),
    )?;
    let offsite = client.ok("GET", "/api/backups/offsite", None)?;
    let public_key = field(&offsite, "public_key").context("the appliance's key")?;

    let remote = server.private_dir("backups")?;
    let authorized = server.write_file("authorized_keys", &format!("{public_key}\n"))?;
    let (_sshd, sshd_log, _privsep) = start_sshd(&server, &authorized)?;
    // The operator's way to learn the host key, from the appliance's side of the wire.
    let scan = hub.exec(&["ssh-keyscan", "-t", "ed25519", BACKUP_IP])?;
    ensure!(scan.contains("ssh-ed25519"), "ssh-keyscan: {scan}");
    let decoy = hub.dir().join("decoy");
    ed25519_key(&decoy)?;
    let decoy_key = std::fs::read_to_string(decoy.with_extension("pub"))?;

    // 1. The pin is another key: nothing reaches the server.
    put_target(&client, &remote, decoy_key.trim())?;
    let (ok, text) = scheduled(&bin, &data, &runtime)?;
    ensure!(!ok, "the run succeeded with a wrong pin: {text}");
    ensure!(text.contains("presented the host key SHA256:"), "{text}");
    ensure!(text.contains("stored on the appliance"), "{text}");
    ensure!(listing(&remote)?.is_empty(), "a file reached the server");
    ensure!(
        !std::fs::read_to_string(&sshd_log)?.contains("Accepted publickey"),
        "the appliance signed in to a server it does not trust"
    );
    let kept = local_backups(&data)?;
    ensure!(kept.len() == 1, "the local backup is kept: {kept:?}");
    ensure!(metric(&hub)? == 0, "offsite metric after a failure");

    // 2. Pinned from ssh-keyscan: the test passes, then the run's copy arrives whole.
    put_target(&client, &remote, &scan)?;
    let test = client.ok("POST", "/api/backups/offsite/test", Some(obj(&[])))?;
    ensure!(test.contains("\"ok\":true"), "the test: {test}");
    let (ok, text) = scheduled(&bin, &data, &runtime)?;
    ensure!(ok, "the timer's run with copies on: {text}");
    let stored = text.trim().rsplit(' ').next().unwrap_or_default();
    let name = Path::new(stored)
        .file_name()
        .context("the stored backup's name")?
        .to_string_lossy()
        .into_owned();
    ensure!(name.ends_with(".wgbackup"), "{text}");
    let copy =
        std::fs::read(remote.join(&name)).with_context(|| format!("{name} on the server"))?;
    let local = std::fs::read(data.join("backups").join(&name))?;
    ensure!(copy == local, "the copy differs from the stored backup");
    ensure!(
        listing(&remote)? == vec![name.clone()],
        "only the backup: {:?}",
        listing(&remote)?
    );
    let (ok, verified) = verify(&bin, &remote.join(&name), &hub)?;
    ensure!(ok, "the server's copy does not verify: {verified}");
    let view = client.ok("GET", "/api/backups/offsite", None)?;
    ensure!(
        view.contains(&name) && view.contains("\"last_error\":null"),
        "{view}"
    );
    ensure!(metric(&hub)? > 0, "offsite metric after a copy");

    // 3. The server stops accepting the appliance's key: the failure names it.
    std::fs::write(&authorized, "")?;
    let (ok, text) = scheduled(&bin, &data, &runtime)?;
    ensure!(!ok, "a run with a refused key succeeded: {text}");
    ensure!(text.contains("refused the appliance's key"), "{text}");
    let view = client.ok("GET", "/api/backups/offsite", None)?;
    ensure!(view.contains("refused the appliance"), "{view}");
    let alerts = client.ok("GET", "/api/alerts", None)?;
    ensure!(alerts.contains("backup_offsite_failed"), "{alerts}");
    Ok(())
}

/// Sets the appliance up and signs in; a client from the hub's own namespace.
fn set_up<'a>(hub: &'a Netns, runtime: &Path) -> Result<Client<'a>> {
    let setup_token = std::fs::read_to_string(runtime.join("setup-token"))?;
    let mut client = Client {
        ns: hub,
        base: format!("https://{HUB_IP}"),
        ca: "-".into(),
        bearer: None,
    };
    let ca_pem = client.ok("GET", "/downloads/ca.crt", None)?;
    client.ca = hub
        .write_file("ca.crt", &format!("{ca_pem}\n"))?
        .to_string_lossy()
        .into_owned();
    client.ok(
        "POST",
        "/api/setup",
        Some(obj(&[
            ("setup_token", setup_token.trim()),
            ("admin_username", "admin"),
            ("admin_password", PASSWORD),
            ("endpoint", &format!("{HUB_IP}:51820")),
            ("vpn_subnet", "10.62.0.0/16"),
        ])),
    )?;
    client.bearer = Some(api_token(hub, &client.base, PASSWORD, Some(&client.ca))?);
    Ok(client)
}

fn put_target(client: &Client, dir: &Path, host_key: &str) -> Result<()> {
    client
        .ok(
            "PUT",
            "/api/backups/offsite",
            Some(obj(&[
                ("host", BACKUP_IP),
                ("user", "root"),
                ("dir", &dir.to_string_lossy()),
                ("host_key", host_key),
            ])),
        )
        .map(drop)
}

/// A new ed25519 key pair at `path` and `path.pub`.
fn ed25519_key(path: &Path) -> Result<()> {
    let (ok, text) = run_combined(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        &path.to_string_lossy(),
    ])?;
    ensure!(ok, "ssh-keygen: {text}");
    Ok(())
}

/// sshd on the backup server: internal-sftp, only `authorized` for root.
fn start_sshd(ns: &Netns, authorized: &Path) -> Result<(Proc, PathBuf, PrivsepDir)> {
    let privsep = PrivsepDir::ensure()?;
    let host_key = ns.dir().join("ssh_host_ed25519_key");
    ed25519_key(&host_key)?;
    let config = ns.write_file(
        "sshd_config",
        &format!(
            "ListenAddress {BACKUP_IP}\nPort 22\nHostKey {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             Subsystem sftp internal-sftp\nPidFile none\nLogLevel VERBOSE\n",
            host_key.display(),
            authorized.display()
        ),
    )?;
    let log = ns.dir().join("sshd.log");
    let proc = watchgrid_netns_tests::sshd::spawn(ns, &config, &log, BACKUP_IP, "22")?;
    Ok((proc, log, privsep))
}

/// The daily timer's command; whether it succeeded, and what it printed.
fn scheduled(bin: &str, data: &Path, runtime: &Path) -> Result<(bool, String)> {
    run_combined(&[
        bin,
        "admin",
        "backup",
        "--scheduled",
        "--data-dir",
        &data.to_string_lossy(),
        "--runtime-dir",
        &runtime.to_string_lossy(),
    ])
}

fn verify(bin: &str, file: &Path, hub: &Netns) -> Result<(bool, String)> {
    let passphrase = hub.write_file("passphrase", &format!("{PASSPHRASE}\n"))?;
    run_combined(&[
        bin,
        "admin",
        "verify-backup",
        &file.to_string_lossy(),
        "--passphrase-file",
        &passphrase.to_string_lossy(),
    ])
}

fn listing(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    Ok(names)
}

fn local_backups(data: &Path) -> Result<Vec<String>> {
    listing(&data.join("backups"))
}

/// `watchgrid_backup_offsite_last_success_timestamp_seconds` from the hub's metrics.
fn metric(hub: &Netns) -> Result<u64> {
    let metrics = hub.exec(&[
        "python3",
        "-c",
        "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())",
    ])?;
    let value = metrics
        .lines()
        .find_map(|l| l.strip_prefix("watchgrid_backup_offsite_last_success_timestamp_seconds "))
        .context("no offsite metric")?;
    Ok(value.trim().parse()?)
}
