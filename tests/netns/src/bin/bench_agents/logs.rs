//! `--logs N`: the log pipeline's benchmark. The registered agents ship N log lines in
//! all, each in batches as fast as the hub acknowledges them (the real agent's shipper
//! does the same with a backlog); then admin searches over everything stored: text
//! (`q=` a word in 1 line of 10,000) and time ranges (`since/until`, one second wide),
//! fleet-wide and for one device. Prints lines/s with the hub's CPU, search latency
//! percentiles and the store's bytes per line. A benchmark: it asserts nothing.

use super::{percentiles, proc_sample, scrape, show, Agent, Conn, Fail, Net, Stats, CALL_TIMEOUT};
use anyhow::{ensure, Context, Result};
use hyper::header;
use hyper::{Method, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Words the messages are made of.
const WORDS: [&str; 8] = [
    "GET", "POST", "upstream", "timeout", "accepted", "closed", "cache", "refused",
];
const RARE: u64 = 1000;

pub struct LogBench {
    pub total: u64,
    pub batch: usize,
    pub searches: usize,
    pub hub_pid: Option<String>,
    pub metrics: Option<std::net::SocketAddr>,
    pub admin: String,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Line `n` of an agent: a web server's access line; every `RARE`th carries the
/// rare word `needle-K` (K of 0 to 9) for the text search: each K is in one line of
/// 10,000.
fn message(agent: usize, n: u64) -> String {
    let w = WORDS[(n % WORDS.len() as u64) as usize];
    let rare = if n % RARE == 7 {
        format!(" needle-{}", n / RARE % 10)
    } else {
        String::new()
    };
    format!(
        "10.{}.{}.{} - - {w} /api/items/{n} HTTP/1.1 200 {} agent-{agent}{rare}",
        agent % 250,
        n % 250,
        (n / 250) % 250,
        n % 9000
    )
}

/// One agent's shipper: batches of `batch` lines until `quota` are acknowledged.
async fn ship(
    net: Arc<Net>,
    stats: Arc<Stats>,
    agent: Arc<Agent>,
    quota: u64,
    batch: usize,
    acked: Arc<AtomicU64>,
) {
    let mut conn: Option<Conn> = None;
    let mut seq = 1u64;
    while seq <= quota {
        let end = (seq + batch as u64).min(quota + 1);
        let ts = now_us();
        let lines: Vec<serde_json::Value> = (seq..end)
            .map(|s| {
                serde_json::json!({
                    "seq": s, "ts_us": ts, "source": "/var/log/nginx/access.log",
                    "unit": "nginx.service", "priority": 6,
                    "message": message(agent.index, s),
                })
            })
            .collect();
        let body = serde_json::json!({ "lines": lines });
        let c = match &mut conn {
            Some(c) if !c.is_closed() => c,
            _ => match net.connect(Some(agent.src)).await {
                Ok(c) => conn.insert(c),
                Err(f) => {
                    stats.error("logs", &f);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        let headers = [(header::AUTHORIZATION, agent.bearer.as_str())];
        match net
            .call(
                c,
                Method::POST,
                "/api/logs/",
                &headers,
                Some(&body),
                CALL_TIMEOUT,
            )
            .await
        {
            Ok(a) if a.status == StatusCode::OK => {
                let upto = a.json().ok().and_then(|v| v["acked_seq"].as_u64());
                if let Some(upto) = upto.filter(|&u| u >= seq) {
                    acked.fetch_add(upto + 1 - seq, Ordering::Relaxed);
                    seq = upto + 1;
                }
            }
            Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS => {
                stats.error("logs", &Fail::new("status 429", "rate limited"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(a) => {
                let f = Fail::new(
                    format!("status {}", a.status.as_u16()),
                    String::from_utf8_lossy(&a.body),
                );
                stats.error("logs", &f);
                return;
            }
            Err(f) => {
                stats.error("logs", &f);
                conn = None;
            }
        }
    }
}

pub async fn run(
    bench: LogBench,
    net: Arc<Net>,
    stats: Arc<Stats>,
    agents: Vec<Arc<Agent>>,
) -> Result<()> {
    ensure!(!agents.is_empty(), "no agent registered");
    let ticks = super::clock_ticks();
    let hub = || bench.hub_pid.as_deref().and_then(proc_sample);
    let per_agent = bench.total.div_ceil(agents.len() as u64);
    println!(
        "bench-logs: {} agents ship {per_agent} lines each in batches of {}",
        agents.len(),
        bench.batch
    );
    let acked = Arc::new(AtomicU64::new(0));
    let (t0, hub_a) = (Instant::now(), hub());
    let mut tasks = JoinSet::new();
    for a in &agents {
        tasks.spawn(ship(
            net.clone(),
            stats.clone(),
            a.clone(),
            per_agent,
            bench.batch,
            acked.clone(),
        ));
    }
    let progress = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = acked.load(Ordering::Relaxed);
                let rate = n as f64 / t0.elapsed().as_secs_f64();
                println!("bench-logs: {n} lines acknowledged ({rate:.0}/s so far)");
            }
        })
    };
    while tasks.join_next().await.is_some() {}
    progress.abort();
    let secs = t0.elapsed().as_secs_f64();
    let hub_b = hub();
    let stored = acked.load(Ordering::Relaxed);
    let cpu = match (&hub_a, &hub_b) {
        (Some(a), Some(b)) => format!(
            "{:.0}% of one core",
            b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks / secs * 100.0
        ),
        _ => "?".into(),
    };
    println!(
        "bench-logs: ingest {stored} lines in {secs:.1}s = {:.0} lines/s, hub CPU {cpu}",
        stored as f64 / secs
    );
    let store_bytes = match bench.metrics {
        Some(m) => scrape(m, &["watchgrid_log_store_bytes"])
            .await
            .ok()
            .and_then(|v| v[0]),
        None => None,
    };
    println!(
        "bench-logs: store {} bytes = {} bytes a line",
        show(store_bytes),
        show(store_bytes.map(|b| b / stored.max(1) as f64))
    );
    search(&bench, &net, &agents, t0, secs).await?;
    for (kind, (count, example)) in stats.errors.lock().expect("stats lock").iter() {
        println!("bench-logs: error {kind} x{count}: {example}");
    }
    Ok(())
}

/// The query string of the `i`th search of a kind.
type QueryOf<'a> = Box<dyn Fn(usize) -> String + 'a>;

/// Text and time-range searches, fleet-wide and for one device, on one connection.
async fn search(
    bench: &LogBench,
    net: &Net,
    agents: &[Arc<Agent>],
    t0: Instant,
    secs: f64,
) -> Result<()> {
    let mut conn = net.connect(None).await?;
    let bearer = format!("Bearer {}", bench.admin);
    let device = device_of(net, &mut conn, &bearer, &agents[0]).await?;
    let start_us = now_us() - (t0.elapsed().as_secs_f64() * 1e6) as u64;
    let span_us = (secs * 1e6) as u64;
    let kinds: [(&str, QueryOf); 4] = [
        ("text, fleet", Box::new(|i| format!("q=needle-{}", i % 10))),
        (
            "text, one device",
            Box::new(|i| format!("q=needle-{}&device={device}", i % 10)),
        ),
        (
            "1 s range, fleet",
            Box::new(|i| {
                let since = start_us + (i as u64 * 7_919_993) % span_us.max(1);
                format!("since={since}&until={}", since + 1_000_000)
            }),
        ),
        (
            "text and 1 s range, one device",
            Box::new(|i| {
                let since = start_us + (i as u64 * 7_919_993) % span_us.max(1);
                format!(
                    "q=upstream&device={device}&since={since}&until={}",
                    since + 1_000_000
                )
            }),
        ),
    ];
    for (what, query) in kinds.iter() {
        let mut samples = Vec::with_capacity(bench.searches);
        let mut found = 0usize;
        for i in 0..bench.searches {
            let path = format!("/api/logs?limit=100&{}", query(i));
            let t = Instant::now();
            let a = net
                .call(
                    &mut conn,
                    Method::GET,
                    &path,
                    &[(header::AUTHORIZATION, bearer.as_str())],
                    None,
                    CALL_TIMEOUT,
                )
                .await?
                .ok("search")?;
            samples.push(super::micros(t.elapsed()));
            found += a.json()?["lines"].as_array().map_or(0, Vec::len);
        }
        println!(
            "bench-logs: search {what}: {} ({} queries, {:.0} lines a page)",
            percentiles(&mut samples),
            bench.searches,
            found as f64 / bench.searches.max(1) as f64
        );
    }
    Ok(())
}

/// The device id of an agent, from the admin's device list (by its hostname).
async fn device_of(net: &Net, conn: &mut Conn, bearer: &str, agent: &Agent) -> Result<String> {
    let a = net
        .call(
            conn,
            Method::GET,
            "/api/devices",
            &[(header::AUTHORIZATION, bearer)],
            None,
            CALL_TIMEOUT,
        )
        .await?
        .ok("devices")?;
    let want = format!("bench-{}", agent.index);
    a.json()?["devices"]
        .as_array()
        .and_then(|ds| {
            ds.iter()
                .find(|d| d["name"].as_str() == Some(want.as_str()))
        })
        .and_then(|d| d["id"].as_str())
        .map(str::to_string)
        .context("the first agent's device in GET /api/devices")
}
