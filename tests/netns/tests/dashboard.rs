//! The dashboard as a new operator meets it, in headless Chromium (Debian's chromium and
//! chromedriver, through Selenium): set up, sign in with the keyboard alone, add a
//! device and scan its QR code (decoded with zbar and compared with the wg-quick file
//! the page shows), create and revoke an enrollment token, change the firewall (and see
//! a bad value refused with the API's reason), upload an update bundle signed by a foreign
//! key and see it refused. Every page is saved as a screenshot at 375 px and 1280 px into
//! the artifacts directory, is checked for sideways overflow at phone width, and is
//! run through axe-core; any console error (a CSP violation is one) fails the walk.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::{scenario, start_serve, Impl, Netns, AXE_JS};

const WALK: &str = r##"
import os, subprocess, sys
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, token, out, axe_path, foreign_bundle = sys.argv[1:6]
PASSWORD = "correct horse battery"
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-quic", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--window-size=1280,900",
          "--hide-scrollbars",
          # The appliance's internal CA is not in this throwaway profile's trust store.
          "--ignore-certificate-errors"]:
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
drv.set_page_load_timeout(30)
drv.set_script_timeout(60)
wait = WebDriverWait(drv, 15)
axe_source = open(axe_path).read()
problems, shots = [], []

def console(where):
    for e in drv.get_log("browser"):
        if e["level"] == "SEVERE":
            problems.append(f"{where}: console: {e['message']}")

def accessibility(where):
    drv.execute_script(axe_source)
    found = drv.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ['violations']})
          .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                  nodes: v.nodes.map(n => n.target.join(' '))}))))
          .catch(e => done([{id: 'axe-failed', impact: 'critical', help: String(e), nodes: []}]));
    """)
    for v in found:
        if v["impact"] in ("serious", "critical"):
            problems.append(f"{where}: axe {v['impact']} {v['id']}: {v['help']} at {v['nodes'][:3]}")

def viewport(width, height):
    # Not "mobile": a mobile layout viewport widens to fit overflowing content, which
    # would hide the overflow this walk looks for.
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    wait.until(lambda d: d.execute_script("return [innerWidth, innerHeight]") == [width, height],
               f"the viewport never became {width}x{height} on {drv.current_url}")

def snapshot(name):
    """Screenshots at phone and desktop width (the whole page), and the phone-width
    overflow check: nothing but a table's own scroller may be wider than the screen."""
    for width in (375, 1280):
        viewport(width, 900)
        wide = drv.execute_script("return document.documentElement.scrollWidth")
        if wide > width:
            culprits = drv.execute_script("""
                return [...document.querySelectorAll('main *, header *')]
                  .filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > innerWidth + 1)
                  .slice(0, 4).map(e => e.tagName + (e.id ? '#' + e.id : '') + ' ' +
                                     Math.round(e.getBoundingClientRect().right) + 'px');""")
            problems.append(f"{name}: {wide} px wide at {width} px: {culprits}")
        height = drv.execute_script("return document.documentElement.scrollHeight")
        viewport(width, max(600, min(height, 6000)))
        path = f"{out}/dashboard-{name}-{width}.png"
        drv.save_screenshot(path)
        shots.append(path)
    drv.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

def visit(name, path):
    drv.get(base + path)
    wait.until(EC.presence_of_element_located((By.TAG_NAME, "main")))
    snapshot(name)
    accessibility(name)
    console(name)

def submit(button_id, expect=None):
    drv.find_element(By.ID, button_id).click()
    if expect:
        return wait.until(EC.presence_of_element_located((By.ID, expect)))

try:
    # Set up, as on first boot.
    visit("setup", "/setup")
    drv.find_element(By.ID, "setup_token").send_keys(token)
    drv.find_element(By.ID, "admin_password").send_keys(PASSWORD)
    drv.find_element(By.ID, "endpoint").send_keys("vpn.example.com:51820")
    submit("submit")
    wait.until(EC.url_matches(r"/login$"))
    visit("login", "/login")
    # Sign in with the keyboard alone: focus moves by Tab, Enter submits.
    # Focus starts at the top of the document, as after a page load.
    drv.execute_script("document.activeElement && document.activeElement.blur()")
    keys = ActionChains(drv)
    keys.send_keys(Keys.TAB).perform()
    focused = drv.switch_to.active_element.get_attribute("id")
    assert focused == "username", f"Tab went to {focused!r}, not the username"
    keys.send_keys("admin", Keys.TAB, PASSWORD, Keys.ENTER).perform()
    wait.until(EC.presence_of_element_located((By.ID, "peers-online")))
    console("sign-in")
    # The first Tab on a signed-in page offers to skip the navigation.
    drv.execute_script("document.activeElement && document.activeElement.blur()")
    ActionChains(drv).send_keys(Keys.TAB).perform()
    first = drv.switch_to.active_element.text
    assert first == "Skip to the content", f"first Tab stop: {first!r}"

    # Add a phone by keyboard alone: Tab reaches the form, Enter submits it. Its QR code
    # must decode to exactly the wg-quick file shown.
    drv.get(base + "/devices")
    drv.execute_script("document.activeElement && document.activeElement.blur()")
    for _ in range(80):
        ActionChains(drv).send_keys(Keys.TAB).perform()
        if drv.switch_to.active_element.get_attribute("id") == "device-name":
            break
    else:
        raise AssertionError("Tab never reached the device name field")
    ActionChains(drv).send_keys("phone-1", Keys.TAB, "staff", Keys.ENTER).perform()
    config = wait.until(EC.presence_of_element_located((By.ID, "wg-config"))).text
    qr_png = f"{out}/dashboard-device-qr.png"
    drv.find_element(By.CSS_SELECTOR, "#qr svg").screenshot(qr_png)
    scanned = subprocess.run(["zbarimg", "--raw", "-q", qr_png], capture_output=True, text=True)
    assert scanned.returncode == 0, f"zbarimg: {scanned.stderr}"
    assert scanned.stdout.strip() == config.strip(), f"QR {scanned.stdout!r} != page {config!r}"
    assert "PrivateKey = " in config and "Endpoint = vpn.example.com:51820" in config, config
    snapshot("device-added")
    accessibility("device-added")
    console("device-added")

    # An enrollment token: created, listed, revoked.
    drv.get(base + "/devices")
    drv.find_element(By.ID, "token-name").send_keys("rack-2")
    secret = submit("token-create", "new-token").text
    assert len(secret) == 43, secret
    revoke = drv.find_element(By.CSS_SELECTOR, "#tokens button[id^=revoke-]")
    revoke.click()
    wait.until(EC.presence_of_element_located((By.ID, "no-tokens")))
    assert "revoked" in drv.find_element(By.ID, "notice").text

    # The firewall: a rule for the new device's group, egress on.
    drv.get(base + "/firewall")
    drv.find_element(By.ID, "from-0").send_keys("staff")
    drv.find_element(By.ID, "to-0").send_keys("192.168.50.0/24")
    drv.find_element(By.ID, "ports-0").send_keys("22, 443")
    drv.find_element(By.ID, "egress").click()
    submit("firewall-save", "notice")
    page = drv.page_source
    assert "192.168.50.0/24" in page and "on (masqueraded)" in page, "the rule is not shown"
    # A bad value: the API's reason on the page, the policy as it was.
    drv.find_element(By.ID, "ports-1").send_keys("22")
    drv.find_element(By.ID, "from-1").send_keys("staff")
    drv.find_element(By.ID, "to-1").send_keys("10.0.0.0/99")
    error = submit("firewall-save", "error").text
    assert "10.0.0.0/99" in error or "rule" in error.lower(), error
    # The refusal is a 422 page, which the console reports; that one is expected.
    for e in drv.get_log("browser"):
        if e["level"] == "SEVERE" and "/forms/firewall" not in e["message"]:
            problems.append(f"firewall refusal: console: {e['message']}")
    drv.get(base + "/firewall")
    assert "10.0.0.0/99" not in drv.page_source

    # Copies off the box, set through the Backup page's form. Nothing listens on the
    # port, so the test fails and the page says why.
    drv.get(base + "/backup")
    drv.find_element(By.ID, "offsite-host").send_keys("127.0.0.1")
    port = drv.find_element(By.ID, "offsite-port")
    port.clear()
    port.send_keys("9")
    drv.find_element(By.ID, "offsite-user").send_keys("backup")
    drv.find_element(By.ID, "offsite-dir").send_keys("/srv/backups")
    drv.find_element(By.ID, "offsite-host-key").send_keys(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIaSm1a12YtuYLZw4vHixGfKIiksPtc0T2afO+eXjnVX")
    submit("offsite-save", "offsite-test")
    failed = submit("offsite-test", "error").text
    assert "connecting to 127.0.0.1:9" in failed, failed
    for e in drv.get_log("browser"):
        if e["level"] == "SEVERE" and "/forms/backup/offsite/test" not in e["message"]:
            problems.append(f"offsite test: console: {e['message']}")
    # An update bundle signed by a key the appliance does not trust, through the Settings
    # page's form: its script uploads it and shows the API's refusal.
    drv.get(base + "/settings")
    drv.find_element(By.ID, "update-file").send_keys(foreign_bundle)
    submit("update-upload")
    wait.until(lambda d: d.find_element(By.ID, "update-progress").text.startswith("Refused:"),
               "the update form never showed the refusal")
    refusal = drv.find_element(By.ID, "update-progress").text
    assert "does not verify" in refusal, refusal
    for e in drv.get_log("browser"):
        if e["level"] == "SEVERE" and "/api/update" not in e["message"]:
            problems.append(f"update upload: console: {e['message']}")
    device = drv.execute_script(
        "return fetch('/api/devices').then(r => r.json()).then(j => j.devices[0].id)")
    for name, path in [("overview", "/"), ("devices", "/devices"),
                       ("device", f"/devices/{device}"), ("device-month", f"/devices/{device}?range=month"),
                       ("firewall", "/firewall"), ("logins", "/logins"), ("audit", "/audit"),
                       ("backup", "/backup"), ("ssh", "/ssh"), ("settings", "/settings")]:
        visit(name, path)
    # Dark, as the system asks: the same pages, legible (axe checks the contrast).
    drv.execute_cdp_cmd("Emulation.setEmulatedMedia",
                        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    for name, path in [("overview-dark", "/"), ("devices-dark", "/devices")]:
        visit(name, path)
    drv.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    # The live updates: the page's only script opens the event stream under the CSP and
    # marks the page when the first update arrived; the device table's state is live.
    drv.get(base + "/devices")
    wait.until(lambda d: d.execute_script("return document.documentElement.dataset.live") == "on")
    cell = f"tr[data-device='{device}'] .state > span"
    assert drv.find_element(By.CSS_SELECTOR, cell).text == "offline"
    # Disabled elsewhere (the API, as a script would): this page shows it without a reload.
    status = drv.execute_script(
        "return fetch('/api/devices/' + arguments[0] + '/disable', {method: 'POST', "
        "headers: {'content-type': 'application/json'}, body: '{}'}).then(r => r.status)", device)
    assert status == 200, f"disable: {status}"
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, cell).text == "disabled",
               "the devices page did not show the disabled state live")
    console("devices-live")
    print("SHOTS", " ".join(os.path.basename(s) for s in shots))
    if problems:
        print("PROBLEMS")
        for p in problems:
            print("  " + p)
    else:
        print("OK", len(shots), "screenshots")
finally:
    drv.quit()
"##;

#[test]
fn chromium_walks_every_dashboard_page_ours() -> Result<()> {
    scenario(walk)
}

fn walk() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let ns = Netns::new("dash")?;
    let data = ns.private_dir("data")?;
    let runtime = ns.dir().join("run");
    let (data_s, run_s) = (
        data.to_string_lossy().into_owned(),
        runtime.to_string_lossy().into_owned(),
    );
    let (keys, foreign) = foreign_bundle(std::path::Path::new(&bin), ns.dir())?;
    let mut daemon = start_serve(
        &ns,
        &bin,
        &data_s,
        &run_s,
        &["SERVER_LATITUDE=52.37", "SERVER_LONGITUDE=4.89"],
        &[
            "--https-listen",
            "127.0.0.1:8443",
            "--http-listen",
            "off",
            "--update-keys",
            &keys.to_string_lossy(),
        ],
    )?;
    let token = std::fs::read_to_string(runtime.join("setup-token"))?
        .trim()
        .to_string();
    let artifacts =
        std::env::var("WATCHGRID_ARTIFACTS").unwrap_or_else(|_| "/tmp/watchgrid-artifacts".into());
    std::fs::create_dir_all(&artifacts).with_context(|| format!("creating {artifacts}"))?;
    let out = ns.run_python(
        WALK,
        &[
            "https://127.0.0.1:8443",
            &token,
            &artifacts,
            AXE_JS,
            &foreign.to_string_lossy(),
        ],
    )?;
    eprintln!("{}", out.trim());
    ensure!(
        out.lines().any(|l| l.starts_with("OK ")),
        "the walk found problems:\n{out}"
    );
    let shots = out
        .lines()
        .find_map(|l| l.strip_prefix("SHOTS "))
        .context("no screenshot list")?;
    for name in shots.split_whitespace() {
        let png = std::fs::read(format!("{artifacts}/{name}"))?;
        ensure!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
    }
    daemon.terminate(Duration::from_secs(10))?;
    Ok(())
}

/// A directory with the one release key the hub trusts, and a bundle signed by another
/// key (made by the binary's own `update keygen` and `update bundle`).
fn foreign_bundle(
    bin: &std::path::Path,
    dir: &std::path::Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let run = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new(bin).args(args).output()?;
        ensure!(
            out.status.success(),
            "watchgrid {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let keys = dir.join("update-keys");
    std::fs::create_dir_all(&keys)?;
    run(&[
        "update",
        "keygen",
        "--key",
        &path("release.key"),
        "--public",
        &path("update-keys/release.pub"),
    ])?;
    run(&["update", "keygen", "--key", &path("other.key")])?;
    std::fs::write(dir.join("root.squashfs"), vec![1u8; 4096])?;
    std::fs::write(dir.join("uki.efi"), b"MZ")?;
    run(&[
        "update",
        "bundle",
        "--key",
        &path("other.key"),
        "--version",
        "9.9.9",
        "--cmdline",
        "root=PARTUUID=@SLOT_PARTUUID@ ro",
        "--slot-a",
        "5a7c0b10-5e2b-4c39-9e4f-57a7c4c0d00a",
        "--slot-b",
        "5a7c0b10-5e2b-4c39-9e4f-57a7c4c0d00b",
        "--root",
        &path("root.squashfs"),
        "--uki",
        &path("uki.efi"),
        "--out",
        &path("foreign.update"),
    ])?;
    Ok((keys, dir.join("foreign.update")))
}
