//! The setup wizard in a real browser: headless Chromium (driven by Selenium through
//! Debian's chromedriver) completes setup, signs in and turns on 2FA from Settings
//! (QR code, a code computed from the key, recovery codes), with no script on the wizard and 2FA pages.
//! A screenshot of the last page is saved as a test artifact.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::{scenario, start_serve, Impl, Netns};

const BROWSER: &str = r##"
import sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, token, shot = sys.argv[1:4]

def totp(secret_b32):
    # RFC 6238 with SHA-1, 6 digits, 30 s steps, as an authenticator app computes it.
    import base64, hashlib, hmac, struct
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
    o = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) % 1000000)
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-quic", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--window-size=1100,800",
          # The appliance's internal CA is not in this throwaway profile's trust store.
          "--ignore-certificate-errors"]:
    opts.add_argument(a)
drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
drv.set_page_load_timeout(30)
try:
    drv.get(base + "/setup")
    assert drv.find_elements(By.TAG_NAME, "script") == [], "wizard has script"
    drv.find_element(By.ID, "setup_token").send_keys(token)
    drv.find_element(By.ID, "admin_password").send_keys("correct horse battery")
    drv.find_element(By.ID, "endpoint").send_keys("vpn.example.com:51820")
    drv.find_element(By.ID, "submit").click()
    # A click returns before the next page has loaded: wait for it.
    try:
        WebDriverWait(drv, 15).until(EC.url_matches(r"/login$"))
    except Exception:
        raise AssertionError("after setup: " + drv.current_url + " " + drv.page_source[:600])
    drv.find_element(By.ID, "username").send_keys("admin")
    drv.find_element(By.ID, "password").send_keys("correct horse battery")
    drv.find_element(By.ID, "submit").click()
    try:
        who = WebDriverWait(drv, 15).until(EC.presence_of_element_located((By.ID, "whoami"))).text
    except Exception:
        raise AssertionError("after sign-in: " + drv.current_url + " " + drv.page_source[:600])
    assert "admin" in who, who
    # Optional 2FA from the Settings page: QR code page, a code from the key, recovery codes.
    drv.get(base + "/settings")
    WebDriverWait(drv, 15).until(EC.presence_of_element_located((By.ID, "setup2fa"))).click()
    secret = WebDriverWait(drv, 15).until(EC.presence_of_element_located((By.ID, "secret"))).text
    assert drv.find_elements(By.CSS_SELECTOR, "#qr svg"), "no QR code"
    assert drv.find_elements(By.TAG_NAME, "script") == [], "2FA page has script"
    drv.find_element(By.ID, "code").send_keys(totp(secret))
    drv.find_element(By.ID, "submit").click()
    codes = WebDriverWait(drv, 15).until(EC.presence_of_element_located((By.ID, "recovery")))
    n = len(codes.find_elements(By.TAG_NAME, "li"))
    assert n == 10, f"{n} recovery codes"
    drv.save_screenshot(shot)
    print("OK", who, "2FA on,", n, "recovery codes")
finally:
    drv.quit()
"##;

#[test]
fn chromium_completes_the_wizard_and_signs_in_ours() -> Result<()> {
    scenario(wizard)
}

fn wizard() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let ns = Netns::new("wiz")?;
    let data = ns.private_dir("data")?;
    let runtime = ns.dir().join("run");
    let (data_s, run_s) = (
        data.to_string_lossy().into_owned(),
        runtime.to_string_lossy().into_owned(),
    );
    let mut daemon = start_serve(
        &ns,
        &bin,
        &data_s,
        &run_s,
        &[],
        &["--https-listen", "127.0.0.1:8443", "--http-listen", "off"],
    )?;
    let token = std::fs::read_to_string(runtime.join("setup-token"))?
        .trim()
        .to_string();
    let artifacts =
        std::env::var("WATCHGRID_ARTIFACTS").unwrap_or_else(|_| "/tmp/watchgrid-artifacts".into());
    std::fs::create_dir_all(&artifacts).with_context(|| format!("creating {artifacts}"))?;
    let shot = format!("{artifacts}/wizard-dashboard.png");
    let out = ns.run_python(BROWSER, &["https://127.0.0.1:8443", &token, &shot])?;
    eprintln!("{}", out.trim());
    ensure!(out.contains("OK"), "browser run: {out}");
    let png = std::fs::read(&shot).with_context(|| format!("reading {shot}"))?;
    ensure!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
    eprintln!("screenshot: {shot} ({} bytes)", png.len());
    daemon.terminate(Duration::from_secs(10))?;
    Ok(())
}
