//! Acknowledged writes survive SIGKILL (SPEC §7): a client streams API writes while the
//! daemon is killed with SIGKILL at random moments; after each restart every write that
//! got a 2xx must be there. `WATCHGRID_DURABILITY_CYCLES` sets the number of kill cycles
//! (CI runs a few; `scripts/bench-durability` runs 200).

use anyhow::{ensure, Context, Result};
use std::collections::HashSet;
use std::time::Duration;
use watchgrid_netns_tests::{
    api_token, env_or, scenario, seed_from_env, start_serve, unique_name, Impl, Netns, Proc,
    XorShift,
};

/// Streams `POST /api/enrollment-tokens` with names PREFIX-N; appends each name that was
/// acknowledged (HTTP 200) to ACKFILE, flushed, before sending the next.
const WRITER: &str = r#"
import json, ssl, sys, urllib.request
base, token, prefix, ackfile = sys.argv[1:5]
ctx = ssl._create_unverified_context()
n = 0
with open(ackfile, "a") as acks:
    while True:
        name = f"{prefix}-{n}"
        n += 1
        req = urllib.request.Request(base + "/api/enrollment-tokens", method="POST",
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

/// Prints the names of all enrollment tokens, one per line.
const LISTER: &str = r#"
import json, ssl, sys, urllib.request
base, token = sys.argv[1:3]
req = urllib.request.Request(base + "/api/enrollment-tokens")
req.add_header("Authorization", "Bearer " + token)
body = json.loads(urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=10).read())
for t in body["tokens"]:
    print(t["name"])
"#;

const BASE: &str = "https://127.0.0.1:8443";

fn start(ns: &Netns, bin: &str, data: &str, run: &str) -> Result<Proc> {
    start_serve(
        ns,
        bin,
        data,
        run,
        &[
            "ADMIN_PASSWORD=durability-test-password",
            "WG_SERVER_ENDPOINT=192.0.2.1:51820",
        ],
        &[
            "--https-listen",
            "127.0.0.1:8443",
            "--http-listen",
            "off",
            "--metrics-listen",
            "127.0.0.1:9100",
        ],
    )
}

#[test]
fn acknowledged_writes_survive_sigkill_ours() -> Result<()> {
    scenario(durability)
}

fn durability() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let cycles: u32 = env_or("WATCHGRID_DURABILITY_CYCLES", 12);
    let seed = seed_from_env("WATCHGRID_DURABILITY_SEED");
    eprintln!("durability: {cycles} cycles, seed {seed}");
    let mut rng = XorShift(seed);
    let ns = Netns::new("dur")?;
    let data = ns.private_dir("data")?.to_string_lossy().into_owned();
    let run = ns.dir().join("run").to_string_lossy().into_owned();
    let acks_path = ns.dir().join("acks.txt");
    let acks = acks_path.to_string_lossy().into_owned();

    let mut daemon = start(&ns, &bin, &data, &run)?;
    let token = api_token(&ns, BASE, "durability-test-password", None)?;
    let mut acknowledged_total = 0usize;
    for cycle in 0..cycles {
        let mut writer = ns.spawn_python(
            &unique_name("writer"),
            WRITER,
            &[BASE, &token, &format!("c{cycle}"), &acks],
        )?;
        // Kill somewhere between 50 ms and 800 ms into the stream of writes.
        let delay = Duration::from_millis(50 + rng.next_u64() % 750);
        std::thread::sleep(delay);
        daemon.signal("KILL")?;
        let _ = daemon.wait_timeout(Duration::from_secs(10))?;
        writer.terminate(Duration::from_secs(5))?;
        daemon = start(&ns, &bin, &data, &run)?;
        let stored: HashSet<String> = ns
            .run_python(LISTER, &[BASE, &token])?
            .lines()
            .map(str::to_string)
            .collect();
        // No file yet: the kill came before the first acknowledgement.
        let acked: Vec<String> = match std::fs::read_to_string(&acks_path) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).context("reading the acknowledgements"),
        };
        let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
        ensure!(
            lost.is_empty(),
            "cycle {cycle} (seed {seed}): acknowledged but lost after SIGKILL: {lost:?}"
        );
        acknowledged_total = acked.len();
    }
    ensure!(
        acknowledged_total > 0,
        "no write was ever acknowledged; the test proved nothing"
    );
    eprintln!(
        "durability: {cycles} SIGKILL cycles, {acknowledged_total} acknowledged writes, none lost"
    );
    daemon.terminate(Duration::from_secs(10))?;
    Ok(())
}
