//! Agents end to end: `watchgrid serve` in one namespace, `watchgrid agent enroll` and
//! `run` in others, pinned by the CA fingerprint the hub's banner prints. Heartbeats put
//! them online, each pings the hub through its own tunnel, remote commands run once and
//! come back capped, timeouts kill the whole process group, a disabled device's agent
//! loses its tunnel and regains it when enabled, and commands survive SIGKILLs of the
//! hub and of the agent without ever running twice.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use watchgrid_netns_tests::appliance::json::{field, Json};
use watchgrid_netns_tests::appliance::Client;
use watchgrid_netns_tests::fleet::{
    enrolled, enrolled_trusting, online, Hub, Machine, HUB_VPN, INTERVAL_S,
};
use watchgrid_netns_tests::{scenario, wait_until, Impl};

#[test]
fn three_agents_enroll_pinned_come_online_ping_and_run_commands() -> Result<()> {
    scenario(three_agents)
}

fn three_agents() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let hub = Hub::start(&bin)?;
    let mut machines = (1..=3)
        .map(|n| Machine::new(&hub, n))
        .collect::<Result<Vec<_>>>()?;

    // A wrong fingerprint refuses enrollment and leaves no state (and keeps the token).
    let token = hub.enrollment_token()?;
    let wrong = format!("SHA256:{}", "00:".repeat(31) + "00");
    let out = machines[0].enroll(&bin, &token, Some(&wrong), &[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a wrong fingerprint was accepted");
    ensure!(stderr.contains("do not match"), "unclear refusal: {stderr}");
    ensure!(
        !machines[0].state.exists(),
        "a refused enrollment left state behind"
    );
    eprintln!("wrong fingerprint refused: {}", stderr.trim());
    no_fingerprint_refused(&machines[0], &bin, &token)?;

    enrolled(&mut machines[0], &hub, &["--allow-commands"])?;
    enrolled(&mut machines[1], &hub, &["--allow-commands"])?;
    let printed = enrolled_trusting(&mut machines[2], &hub, None, &["--insecure-first-use"])?;
    ensure!(
        printed.contains("trusted on first use") && printed.contains(&hub.fingerprint),
        "first use must print the CA it trusted ({}):\n{printed}",
        hub.fingerprint
    );
    let enrollment = machines[0].state.join("enrollment.json");
    let before = std::fs::read(&enrollment)?;
    let again = machines[0].enroll(&bin, &token, Some(&hub.fingerprint), &[])?;
    ensure!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("already enrolled"),
        "second enrollment: {again:?}"
    );
    ensure!(
        std::fs::read(&enrollment)? == before,
        "a second enroll changed the state"
    );
    check_modes(&machines[0].state)?;

    let started = Instant::now();
    for m in machines.iter_mut() {
        m.run(&bin)?;
    }
    let ids: Vec<String> = machines.iter().map(|m| m.device.clone()).collect();
    wait_until(Duration::from_secs(30), "all three agents online", || {
        online(&hub).is_ok_and(|o| ids.iter().all(|id| o.contains(id)))
    })?;
    eprintln!(
        "all three online {:?} after the agents started (interval {INTERVAL_S} s)",
        started.elapsed()
    );
    for m in &machines {
        m.ns.ping_within(HUB_VPN, Duration::from_secs(15))
            .with_context(|| format!("{} -> hub through its tunnel", m.device))?;
    }
    hub_lists_peers(&hub, 3)?;

    commands(&hub, &mut machines)?;
    disable_and_enable(&hub, &mut machines[1], &bin)?;
    bad_agent_input(&hub, &machines)?;
    roam(&hub, &machines[2])?;
    endpoint_change(&hub, &machines)?;
    for m in machines.iter_mut() {
        m.agent()?.ensure_running()?;
    }
    goes_offline(&hub, &mut machines[2])
}

/// Without a fingerprint, and without `--insecure-first-use`, enrollment refuses, says
/// how to go on, and leaves no state.
fn no_fingerprint_refused(m: &Machine, bin: &str, token: &str) -> Result<()> {
    let out = m.enroll(bin, token, None, &[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "enrolled without any trust anchor");
    ensure!(
        stderr.contains("--ca-fingerprint") && stderr.contains("--insecure-first-use"),
        "unclear refusal: {stderr}"
    );
    ensure!(!m.state.exists(), "a refused enrollment left state behind");
    Ok(())
}

/// The admin changes the endpoint: at their next heartbeats the agents see their
/// config's new ETag, fetch it and dial the new endpoint, and the tunnels stay up.
fn endpoint_change(hub: &Hub, machines: &[Machine]) -> Result<()> {
    // The hub's address on machine 2's link; the others reach it through their routes.
    let endpoint = "172.31.2.1:51820";
    hub.client().ok(
        "PUT",
        "/api/settings",
        Some(Json(format!("{{\"endpoint\": \"{endpoint}\"}}"))),
    )?;
    for m in machines {
        wait_until(
            Duration::from_secs(30),
            "the agent dialing the new endpoint",
            || {
                m.ns.exec(&["wg", "show", &m.interface, "endpoints"])
                    .is_ok_and(|e| e.contains(endpoint))
            },
        )
        .with_context(|| format!("{}: its config after the endpoint change", m.device))?;
        m.ns.ping_within(HUB_VPN, Duration::from_secs(15))
            .with_context(|| format!("{} -> hub after the endpoint change", m.device))?;
    }
    eprintln!("all three agents follow the endpoint change to {endpoint}");
    Ok(())
}

/// The machine's address changes under the agent: the tunnel keeps working from the
/// new UDP source address.
fn hub_lists_endpoint(hub: &Hub, prefix: &str) -> Result<()> {
    let ifname = hub_interface(hub)?;
    let endpoints = hub.ns.exec(&["wg", "show", &ifname, "endpoints"])?;
    ensure!(
        endpoints.contains(prefix),
        "the hub's endpoints after roaming:\n{endpoints}"
    );
    Ok(())
}

fn roam(hub: &Hub, m: &Machine) -> Result<()> {
    let dev = format!("vm{}", m.n);
    // Deleting a primary address takes its secondaries along: delete first, then add.
    m.ns.del_addr(&dev, &format!("172.31.{}.2/24", m.n))?;
    m.ns.add_addr(&dev, &format!("172.31.{}.9/24", m.n))?;
    m.ns.route_add(&["default", "via", &format!("172.31.{}.1", m.n)])?;
    m.ns.ping_within(HUB_VPN, Duration::from_secs(30))
        .context("the tunnel after the machine's address changed")?;
    hub_lists_endpoint(hub, &format!("172.31.{}.9:", m.n))
}

/// A stopped agent is offline after three missed heartbeats, in the API and the audit
/// log.
fn goes_offline(hub: &Hub, m: &mut Machine) -> Result<()> {
    let agent = m.agent()?;
    agent.signal("TERM")?;
    agent.wait_timeout(Duration::from_secs(10))?;
    let took = wait_until(Duration::from_secs(30), "the stopped agent offline", || {
        online(hub).is_ok_and(|o| !o.contains(&m.device))
    })?;
    let offline = "[e['target'] for e in j['entries'] if e['action'] == 'agent.offline']";
    wait_until(
        Duration::from_secs(15),
        "agent.offline in the audit log",
        || {
            hub.query("/api/audit", offline)
                .is_ok_and(|t| t.contains(&m.device))
        },
    )?;
    eprintln!("offline {took:?} after the agent stopped (interval {INTERVAL_S} s)");
    Ok(())
}

/// The state dir is 0700 and every file in it 0600.
fn check_modes(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    ensure!(mode == 0o700, "{} is {mode:o}", dir.display());
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let mode = entry.metadata()?.permissions().mode() & 0o777;
        if entry.file_type()?.is_file() {
            ensure!(mode == 0o600, "{} is {mode:o}", entry.path().display());
        }
    }
    Ok(())
}

/// `wg show` on the hub's interface lists every agent with a recent handshake.
fn hub_interface(hub: &Hub) -> Result<String> {
    let links = hub.ns.exec(&["ip", "-o", "link", "show"])?;
    links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .find(|name| name.starts_with("wgs"))
        .map(str::to_string)
        .context("the hub's WireGuard interface")
}

fn hub_lists_peers(hub: &Hub, n: usize) -> Result<()> {
    let ifname = hub_interface(hub)?;
    let dump = hub.ns.exec(&["wg", "show", &ifname, "latest-handshakes"])?;
    let recent = dump
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|t| t != "0"))
        .count();
    eprintln!("wg show {ifname} latest-handshakes:\n{dump}");
    ensure!(
        recent == n,
        "{recent} of {n} agents have a handshake with the hub"
    );
    Ok(())
}

fn commands(hub: &Hub, machines: &mut [Machine]) -> Result<()> {
    let m1 = &machines[0].device;
    let id = hub.queue(m1, &["uname", "-r"], 20)?;
    let done = hub.wait_final(&id, Duration::from_secs(30))?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    ensure!(
        field(&done, "state").as_deref() == Some("succeeded"),
        "{done}"
    );
    ensure!(
        field(&done, "stdout").as_deref() == Some(&format!("{}\\n", kernel.trim())),
        "uname -r: {done}"
    );

    let id = hub.queue(m1, &["sh", "-c", "yes | head -c 100000000"], 60)?;
    hub.wait_final(&id, Duration::from_secs(60))?;
    let cut = hub.query(
        &format!("/api/commands/{id}"),
        "[j['state'], len(j['result']['stdout']), j['result']['stdout_truncated']]",
    )?;
    ensure!(
        cut == "[\"succeeded\", 65536, true]",
        "100 MB of output: {cut}"
    );

    let pidfile = machines[0].ns.dir().join("sleeper.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let id = hub.queue(m1, &["sh", "-c", &script], 2)?;
    let done = hub.wait_final(&id, Duration::from_secs(30))?;
    ensure!(
        field(&done, "state").as_deref() == Some("timed_out"),
        "{done}"
    );
    let pid = std::fs::read_to_string(&pidfile)?.trim().to_string();
    // SIGKILL is delivered asynchronously; the child is gone (or a zombie) shortly after.
    wait_until(
        Duration::from_secs(10),
        "the timed-out command's child to die",
        || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.split(' ').nth(2).is_none_or(|s| s == "Z")
        },
    )?;

    let (status, text) = hub.client().call(
        "POST",
        &format!("/api/devices/{}/commands", machines[2].device),
        Some(Json("{\"argv\":[\"true\"]}".into())),
    )?;
    ensure!(
        status == 409,
        "an agent without --allow-commands: {status} {text}"
    );
    Ok(())
}

/// Disabling the device makes the agent's calls 401 and its tunnel stop; enabling it
/// brings both back without re-enrolling.
fn disable_and_enable(hub: &Hub, m: &mut Machine, bin: &str) -> Result<()> {
    let path = |what: &str| format!("/api/devices/{}/{what}", m.device);
    hub.client()
        .ok("POST", &path("disable"), Some(Json("{}".into())))?;
    wait_until(
        Duration::from_secs(30),
        "the agent to see the refusal",
        || {
            m.status(bin)
                .is_ok_and(|s| s.contains("stopped: the hub refused"))
        },
    )?;
    ensure!(
        !m.ns.ping(HUB_VPN),
        "a disabled device still reaches the hub"
    );
    hub.client()
        .ok("POST", &path("enable"), Some(Json("{}".into())))?;
    m.ns.ping_within(HUB_VPN, Duration::from_secs(90))
        .context("the tunnel after enabling")?;
    wait_until(
        Duration::from_secs(90),
        "the agent's status up again",
        || m.status(bin).is_ok_and(|s| s.contains("tunnel:     up")),
    )?;
    eprintln!("status after enable:\n{}", m.status(bin)?);
    Ok(())
}

/// The agent API refuses unknown fields, oversized bodies and another device's command.
fn bad_agent_input(hub: &Hub, machines: &[Machine]) -> Result<()> {
    let key = |m: &Machine| -> Result<String> {
        let text = std::fs::read_to_string(m.state.join("enrollment.json"))?;
        field(&text, "agent_key").context("agent key")
    };
    let id = hub.queue(&machines[0].device, &["true"], 10)?;
    hub.wait_final(&id, Duration::from_secs(30))?;
    let as_agent = |m: &Machine| -> Result<Client<'_>> {
        Ok(Client {
            ns: &hub.ns,
            base: "https://127.0.0.1".into(),
            ca: hub.ca.to_string_lossy().into_owned(),
            bearer: Some(key(m)?),
        })
    };
    let report = |extra: &str| {
        Json(format!(
            "{{\"id\":\"{id}\",\"exit_code\":0,\"stdout\":\"forged\",\"stderr\":\"\",\"started_at\":1,\"duration_ms\":1{extra}}}"
        ))
    };
    let other = as_agent(&machines[1])?;
    let (status, text) = other.call("POST", "/api/commandresult", Some(report("")))?;
    ensure!(
        status == 404,
        "another device's command id: {status} {text}"
    );
    let own = as_agent(&machines[0])?;
    let (status, _) = own.call("POST", "/api/commandresult", Some(report(",\"x\":1")))?;
    ensure!(status == 422, "unknown field: {status}");
    // The hub answers 413 as soon as the body passes its cap and closes the connection;
    // curl, still uploading, may see the 413 or only the closed socket (exit 55/56).
    let body = hub.ns.write_file(
        "oversized.json",
        &report(&format!(",\"pad\":\"{}\"", "a".repeat(2_000_000))).0,
    )?;
    let key0 = key(&machines[0])?;
    let out = hub.ns.exec_output(&[
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
        &hub.ca.to_string_lossy(),
        "-H",
        &format!("Authorization: Bearer {key0}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", body.display()),
        "https://127.0.0.1/api/commandresult",
    ])?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let cut_off = matches!(out.status.code(), Some(55 | 56)) && code != "200";
    ensure!(
        code == "413" || cut_off,
        "a 2 MB result: {code} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "a 2 MB result: http {code}, curl exit {:?}",
        out.status.code()
    );
    let stored = hub.query(&format!("/api/commands/{id}"), "j['result']['stdout']")?;
    ensure!(
        stored == "\"\"",
        "a refused report changed the result: {stored}"
    );
    Ok(())
}

#[test]
fn commands_run_exactly_once_when_the_hub_or_the_agent_is_killed() -> Result<()> {
    scenario(exactly_once)
}

/// A command that appends a line to its own file and then sleeps.
fn appender(file: &Path, sleep_s: u32) -> String {
    format!("echo ran >> {}; sleep {sleep_s}", file.display())
}

fn lines(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn exactly_once() -> Result<()> {
    let bin = Impl::required_watchgrid_binary()?;
    let mut hub = Hub::start(&bin)?;
    let mut m = Machine::new(&hub, 1)?;
    enrolled(&mut m, &hub, &["--allow-commands"])?;
    m.run(&bin)?;
    let files: Vec<PathBuf> = (0..4)
        .map(|i| m.ns.dir().join(format!("once-{i}")))
        .collect();
    let mut ids = Vec::new();

    // 0: the hub is killed while the command runs.
    ids.push(hub.queue(&m.device, &["sh", "-c", &appender(&files[0], 4)], 60)?);
    wait_until(Duration::from_secs(30), "command 0 to start", || {
        lines(&files[0]) > 0
    })?;
    hub.kill_and_restart()?;
    eprintln!("hub killed and restarted while command 0 ran");
    // Command 0 ends before the agent is killed below, which would cut it short too.
    hub.wait_final(&ids[0], Duration::from_secs(60))?;

    // 1: the agent is killed while the command runs.
    ids.push(hub.queue(&m.device, &["sh", "-c", &appender(&files[1], 4)], 60)?);
    wait_until(Duration::from_secs(60), "command 1 to start", || {
        lines(&files[1]) > 0
    })?;
    let agent = m.agent()?;
    agent.signal("KILL")?;
    agent.wait_timeout(Duration::from_secs(10))?;
    // 2: queued while the agent is down.
    ids.push(hub.queue(&m.device, &["sh", "-c", &appender(&files[2], 0)], 60)?);
    m.run(&bin)?;
    eprintln!("agent killed during command 1 and restarted");

    // 3: the hub is killed right after the command is queued.
    ids.push(hub.queue(&m.device, &["sh", "-c", &appender(&files[3], 1)], 60)?);
    hub.kill_and_restart()?;

    let mut states = Vec::new();
    for id in &ids {
        let done = hub.wait_final(id, Duration::from_secs(120))?;
        states.push(field(&done, "state").unwrap_or_default());
    }
    eprintln!("final states: {states:?}");
    for (i, f) in files.iter().enumerate() {
        let n = lines(f);
        if n != 1 {
            bail!("command {i} ({}) ran {n} times; states {states:?}", ids[i]);
        }
    }
    ensure!(
        states[0] == "succeeded",
        "a hub restart must not disturb a run: {states:?}"
    );
    ensure!(
        states[1] == "interrupted",
        "a run cut by the agent's death: {states:?}"
    );
    ensure!(
        states[2] == "succeeded" && states[3] == "succeeded",
        "{states:?}"
    );
    m.agent()?.ensure_running()?;
    hub.proc.ensure_running()
}
