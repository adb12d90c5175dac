//! The setup wizard in a real browser: headless Chromium (driven by Selenium through
//! Debian's chromedriver) completes setup and signs in, with no script on the pages.
//! A screenshot of the signed-in dashboard is saved as a test artifact.

use anyhow::{bail, ensure, Context, Result};
use std::time::Duration;
use watchgrid_netns_tests::{scenario, start_serve, Impl, Netns};

const BROWSER: &str = r#"
import sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, token, shot = sys.argv[1:4]
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
    drv.save_screenshot(shot)
    print("OK", who)
finally:
    drv.quit()
"#;

#[test]
fn chromium_completes_the_wizard_and_signs_in_ours() -> Result<()> {
    scenario(wizard)
}

fn wizard() -> Result<()> {
    let Some(bin) = Impl::Ours.watchgrid_binary() else {
        bail!("this scenario needs the watchgrid binary");
    };
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
