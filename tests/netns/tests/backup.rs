//! Backup and restore end to end: a hub serving a wireguard-go device while a client
//! registers devices in a loop; `watchgrid admin backup` takes a backup from the running
//! daemon; a fresh appliance in another namespace, reached at the same endpoint, is
//! restored from it through the setup wizard in headless Chromium, and the device
//! reconnects without any change on its side. The old password and API token work, the
//! CA is the same, and every registration acknowledged before the backup is there.

use anyhow::{ensure, Context, Result};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};
use watchgrid_netns_tests::appliance::json::{field, obj, string_list};
use watchgrid_netns_tests::appliance::Client;
use watchgrid_netns_tests::{
    api_token, run_combined, run_output, scenario, start_serve, unique_name, veth_addressed, Impl,
    KeyPair, Netns, PeerConfig, Proc, WgDevice,
};

const HUB_IP: &str = "172.30.11.1";
const HUB_V4: &str = "10.61.0.1";
const PASSWORD: &str = "correct horse battery";
const PASSPHRASE: &str = "a long backup passphrase";

/// Streams `POST /api/devices` with names PREFIX-N; appends each name that was
/// acknowledged (HTTP 200) to ACKFILE, flushed, before sending the next.
const REGISTER_LOOP: &str = r#"
import json, ssl, sys, urllib.request
base, token, ca, prefix, ackfile = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
n = 0
with open(ackfile, "a") as acks:
    while True:
        name = f"{prefix}-{n}"
        n += 1
        req = urllib.request.Request(base + "/api/devices", method="POST",
            data=json.dumps({"name": name}).encode())
        req.add_header("Content-Type", "application/json")
        req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                if r.status == 200:
                    acks.write(name + "\n")
                    acks.flush()
        except Exception:
            pass
"#;

/// Downloads `POST /api/backup` to OUT: `URL CA BEARER PASSPHRASE OUT`.
const DOWNLOAD: &str = r#"
import json, ssl, sys, urllib.request
url, ca, bearer, passphrase, out = sys.argv[1:6]
req = urllib.request.Request(url, method="POST", data=json.dumps({"passphrase": passphrase}).encode())
req.add_header("Content-Type", "application/json")
req.add_header("Authorization", "Bearer " + bearer)
with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca), timeout=60) as r:
    open(out, "wb").write(r.read())
    print(r.headers["Content-Disposition"])
"#;

/// The wizard's "restore from a backup" in headless Chromium, then signing in with the
/// backup's admin: `BASE TOKEN FILE PASSPHRASE PASSWORD`.
const WIZARD_RESTORE: &str = r##"
import sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, token, backup, passphrase, password = sys.argv[1:6]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-quic", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--ignore-certificate-errors"]:
    opts.add_argument(a)
drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
drv.set_page_load_timeout(60)
try:
    drv.get(base + "/setup")
    # Chromium's own error page (no connection, a TLS failure) has scripts: say which.
    assert drv.find_elements(By.TAG_NAME, "script") == [], \
        f"wizard has script: title {drv.title!r}: {drv.find_element(By.TAG_NAME, 'body').text[:400]!r}"
    drv.find_element(By.ID, "restore_token").send_keys(token)
    drv.find_element(By.ID, "restore_file").send_keys(backup)
    drv.find_element(By.ID, "restore_passphrase").send_keys(passphrase)
    drv.find_element(By.ID, "restore_submit").click()
    try:
        WebDriverWait(drv, 60).until(EC.presence_of_element_located((By.ID, "restoring")))
    except Exception:
        raise AssertionError("after restore: " + drv.current_url + " " + drv.page_source[:800])
    # The daemon restarts into the backup: sign in as soon as it answers again.
    deadline = time.time() + 60
    while True:
        try:
            drv.get(base + "/login")
            if drv.find_elements(By.ID, "username"):
                break
        except Exception:
            pass
        assert time.time() < deadline, "no sign-in page after the restart"
        time.sleep(0.5)
    drv.find_element(By.ID, "username").send_keys("admin")
    drv.find_element(By.ID, "password").send_keys(password)
    drv.find_element(By.ID, "submit").click()
    who = WebDriverWait(drv, 15).until(EC.presence_of_element_located((By.ID, "whoami"))).text
    print("OK signed in after the restore as", who)
finally:
    drv.quit()
"##;

fn start_daemon(ns: &Netns, bin: &str, data: &Path, runtime: &Path) -> Result<Proc> {
    start_serve(
        ns,
        bin,
        &data.to_string_lossy(),
        &runtime.to_string_lossy(),
        &[],
        &["--http-listen", "off", "--tls-names", HUB_IP],
    )
}

/// `watchgrid admin ARGS…` with the passphrase in a file; its output, or its error text.
fn admin(bin: &str, args: &[&str], passphrase_file: &Path) -> Result<(bool, String)> {
    let mut argv = vec![bin, "admin"];
    argv.extend_from_slice(args);
    let file = passphrase_file.to_string_lossy();
    argv.extend_from_slice(&["--passphrase-file", &file]);
    run_combined(&argv)
}

#[test]
fn a_backup_of_a_busy_hub_restores_elsewhere_and_its_peers_reconnect_ours() -> Result<()> {
    scenario(backup_and_restore)
}

fn backup_and_restore() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Netns::new("bkhub")?;
    let dev = Netns::new("bkdev")?;
    veth_addressed(
        &hub,
        "vh",
        &format!("{HUB_IP}/24"),
        &dev,
        "vd",
        "172.30.11.2/24",
    )?;
    let data = hub.private_dir("data")?;
    let runtime = hub.dir().join("run");
    let mut daemon = start_daemon(&hub, &bin, &data, &runtime)?;
    let setup_token = std::fs::read_to_string(runtime.join("setup-token"))?;

    let mut client = Client {
        ns: &dev,
        base: format!("https://{HUB_IP}"),
        ca: "-".into(),
        bearer: None,
    };
    let ca_pem = client.ok("GET", "/downloads/ca.crt", None)?;
    let ca = dev.write_file("ca.crt", &format!("{ca_pem}\n"))?;
    client.ca = ca.to_string_lossy().into_owned();
    client.ok(
        "POST",
        "/api/setup",
        Some(obj(&[
            ("setup_token", setup_token.trim()),
            ("admin_username", "admin"),
            ("admin_password", PASSWORD),
            ("endpoint", &format!("{HUB_IP}:51820")),
            ("vpn_subnet", "10.61.0.0/16"),
        ])),
    )?;
    let token = api_token(&dev, &client.base, PASSWORD, Some(&client.ca))?;
    client.bearer = Some(token.clone());

    // A wireguard-go device, connected.
    let enrol = client.ok(
        "POST",
        "/api/enrollment-tokens",
        Some(obj(&[("uses", "1")])),
    )?;
    let keys = KeyPair::generate()?;
    let reg = client.ok(
        "POST",
        "/api/register",
        Some(obj(&[
            ("token", &field(&enrol, "token").context("token")?),
            ("public_key", &keys.public),
            ("hostname", "laptop"),
        ])),
    )?;
    let hub_key = field(&reg, "hub_public_key").context("hub key")?;
    let allowed = string_list(&reg, "allowed_ips").context("allowed_ips")?;
    let wg_if = unique_name("wgd");
    let mut peer = WgDevice::spawn_bare(&dev, Impl::WireguardGo, &wg_if)?;
    peer.set_private_key(&keys)?;
    let routes: Vec<&str> = allowed.iter().map(String::as_str).collect();
    peer.add_peer(
        &PeerConfig::new(&hub_key)
            .allowed(&routes)
            .endpoint(&field(&reg, "endpoint").context("endpoint")?)
            .keepalive(5),
    )?;
    dev.add_addr(&wg_if, &field(&reg, "address").context("address")?)?;
    dev.link_up(&wg_if)?;
    dev.ping_within(HUB_V4, Duration::from_secs(10))?;

    // Registrations stream in while the backup is taken from the running daemon.
    let acks_path = dev.dir().join("acks.txt");
    let mut writer = dev.spawn_python(
        &unique_name("register"),
        REGISTER_LOOP,
        &[
            &client.base,
            &token,
            &client.ca,
            "reg",
            &acks_path.to_string_lossy(),
        ],
    )?;
    let acked = |at_least: usize| -> Result<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&acks_path).unwrap_or_default();
            let names: Vec<String> = text.lines().map(str::to_string).collect();
            if names.len() >= at_least {
                return Ok(names);
            }
            ensure!(
                Instant::now() < deadline,
                "only {} registrations acknowledged",
                names.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let before_backup = acked(20)?;
    let passphrase_file = hub.write_file("passphrase", &format!("{PASSPHRASE}\n"))?;
    let backup_file = hub.dir().join("appliance.wgbackup");
    let started = Instant::now();
    let data_arg = data.to_string_lossy().into_owned();
    let run_arg = runtime.to_string_lossy().into_owned();
    let out_arg = backup_file.to_string_lossy().into_owned();
    let (ok, text) = admin(
        &bin,
        &[
            "backup",
            "--data-dir",
            &data_arg,
            "--runtime-dir",
            &run_arg,
            "--out",
            &out_arg,
        ],
        &passphrase_file,
    )?;
    ensure!(ok, "admin backup from the running daemon: {text}");
    eprintln!("{} (in {:?})", text.trim(), started.elapsed());
    let after_backup = acked(before_backup.len() + 5)?;
    writer.terminate(Duration::from_secs(5))?;
    ensure!(
        after_backup.len() > before_backup.len(),
        "registrations stopped while the backup was taken"
    );

    // The API's download is a backup too.
    let downloaded = hub.dir().join("download.wgbackup");
    let hub_ca = hub.write_file("ca.crt", &format!("{ca_pem}\n"))?;
    let disposition = hub.run_python(
        DOWNLOAD,
        &[
            &format!("https://{HUB_IP}/api/backup"),
            &hub_ca.to_string_lossy(),
            &token,
            PASSPHRASE,
            &downloaded.to_string_lossy(),
        ],
    )?;
    ensure!(disposition.contains(".wgbackup"), "{disposition}");
    let (ok, text) = admin(
        &bin,
        &["verify-backup", &downloaded.to_string_lossy()],
        &passphrase_file,
    )?;
    ensure!(
        ok && text.contains(&hub_key),
        "verify-backup of the download: {text}"
    );

    // The daily timer's run: the daemon keeps it in DATA_DIR/backups with the schedule's
    // passphrase, and the metric says when.
    client.ok(
        "PUT",
        "/api/backups/schedule",
        Some(obj(&[("passphrase", PASSPHRASE)])),
    )?;
    let (ok, text) = admin(
        &bin,
        &[
            "backup",
            "--scheduled",
            "--data-dir",
            &data_arg,
            "--runtime-dir",
            &run_arg,
        ],
        &passphrase_file,
    )?;
    ensure!(ok, "the timer's scheduled backup: {text}");
    let kept: Vec<_> = std::fs::read_dir(data.join("backups"))?.collect::<Result<_, _>>()?;
    ensure!(kept.len() == 1, "scheduled backups kept: {kept:?}");
    let (ok, text) = admin(
        &bin,
        &["verify-backup", &kept[0].path().to_string_lossy()],
        &passphrase_file,
    )?;
    ensure!(ok, "the scheduled backup does not verify: {text}");
    let metrics = hub.exec(&["python3", "-c", "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())"])?;
    let last = metrics
        .lines()
        .find_map(|l| l.strip_prefix("watchgrid_backup_last_success_timestamp_seconds "))
        .context("no backup metric")?;
    ensure!(
        last.trim().parse::<u64>()? > 0,
        "metric after a success: {last}"
    );

    // A wrong passphrase writes nothing.
    let wrong = hub.write_file("wrong", "not the passphrase at all\n")?;
    let refused_dir = hub.dir().join("refused");
    let (ok, text) = admin(
        &bin,
        &[
            "restore",
            &out_arg,
            "--data-dir",
            &refused_dir.to_string_lossy(),
        ],
        &wrong,
    )?;
    ensure!(!ok && text.contains("wrong passphrase"), "{text}");
    ensure!(
        !refused_dir.exists(),
        "a refused restore created {refused_dir:?}"
    );

    // The console's restore into an empty dir: a data dir `admin status` reads.
    let cli_dir = hub.dir().join("cli-restore");
    let (ok, text) = admin(
        &bin,
        &[
            "restore",
            &out_arg,
            "--data-dir",
            &cli_dir.to_string_lossy(),
        ],
        &passphrase_file,
    )?;
    ensure!(ok && text.contains(&hub_key), "admin restore: {text}");
    let status = run_output(
        &[
            bin.as_str(),
            "admin",
            "status",
            "--data-dir",
            &cli_dir.to_string_lossy(),
        ],
        None,
    )?;
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    ensure!(
        status.contains("setup:             complete"),
        "status after restore: {status}"
    );

    // The old box goes away; a new one answers at the same address. The device learns
    // nothing: its next handshake (wireguard-go retries within 15 s) finds the same key.
    daemon.terminate(Duration::from_secs(10))?;
    hub.exec(&["ip", "link", "del", "vh"])?;
    let hub2 = Netns::new("bkhub2")?;
    veth_addressed(
        &hub2,
        "vh2",
        &format!("{HUB_IP}/24"),
        &dev,
        "vd2",
        "172.30.11.2/24",
    )?;
    let data2 = hub2.private_dir("data")?;
    let runtime2 = hub2.dir().join("run");
    let mut daemon2 = start_daemon(&hub2, &bin, &data2, &runtime2)?;
    let token2 = std::fs::read_to_string(runtime2.join("setup-token"))?;
    let restore_started = Instant::now();
    let browser = hub2.run_python(
        WIZARD_RESTORE,
        &[
            &format!("https://{HUB_IP}"),
            token2.trim(),
            &out_arg,
            PASSPHRASE,
            PASSWORD,
        ],
    )?;
    ensure!(
        browser.contains("OK signed in"),
        "the wizard's restore: {browser}"
    );
    let rtt = dev.ping_within(HUB_V4, Duration::from_secs(45))?;
    eprintln!(
        "restored through the wizard; signed in, and the device reconnected {:?} after the upload began (ping {rtt:?})",
        restore_started.elapsed()
    );
    ensure!(daemon2.is_running(), "the daemon did not restart in place");
    ensure!(
        !runtime2.join("setup-token").exists(),
        "the restored hub asks for setup again"
    );

    // Same CA, the old token and password work, nothing acknowledged is missing.
    let ca_now = client.ok("GET", "/downloads/ca.crt", None)?;
    ensure!(ca_now == ca_pem, "the CA changed with the restore");
    let listed = client.ok("GET", "/api/devices", None)?;
    let names: HashSet<String> = listed
        .split("\"name\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect();
    let lost: Vec<&String> = before_backup
        .iter()
        .filter(|n| !names.contains(*n))
        .collect();
    ensure!(
        lost.is_empty(),
        "acknowledged before the backup, missing after restore: {lost:?}"
    );
    ensure!(names.contains("laptop"), "the wireguard-go device is gone");
    api_token(&dev, &client.base, PASSWORD, Some(&client.ca))
        .context("signing in with the old password")?;
    eprintln!(
        "{} registrations acknowledged before the backup, {} during it; all of the first are back",
        before_backup.len(),
        after_backup.len() - before_backup.len()
    );
    daemon2.terminate(Duration::from_secs(10))?;
    peer.stop()?;
    Ok(())
}
