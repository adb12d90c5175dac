//! `bench_agents`: N simulated agents against a running `watchgrid serve`, over HTTPS
//! with persistent HTTP/1.1 connections, the way the real agent talks to the hub.
//!
//! Phases: (1) as admin, finish setup if a setup token is waiting, sign in, create an
//! API token and an enrollment token; (2) register the agents (ten per loopback source
//! address, the hub's per-IP registration limit), with bounded concurrency; (3) open one
//! TLS connection per agent; (4) on it, as the agent does, heartbeat every interval
//! (start times spread uniformly over the first interval) and in between hold the long
//! poll `GET /api/commands/?wait=…` until the next heartbeat is due; a warm-up, then
//! a measured window in which heartbeat latency (request write to full response), the
//! hub's CPU, RSS and open connections and the driver's own CPU are recorded; (5) one
//! summary block. A benchmark: it prints numbers and asserts nothing about them.
//!
//! Run by `scripts/bench-agents`, which starts the hub in a private network namespace.

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand_core::RngCore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

#[path = "bench_agents/logs.rs"]
mod logs;

/// The hub's registration limit per client address (burst 10, 10 a minute).
const REGISTRATIONS_PER_ADDRESS: usize = 10;
const ADMIN: &str = "admin";
/// Ordinary calls; the long poll adds its wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Parser)]
#[command(about = "N simulated agents against a running watchgrid serve (a benchmark)")]
struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// The hub's HTTPS address (an IPv4 address the certificate covers).
    #[arg(long, default_value = "127.0.0.1:8443")]
    hub: SocketAddr,
    /// The CA certificate (PEM) that signs the hub's certificate: DATA_DIR/tls/ca.crt.
    #[arg(long)]
    ca: PathBuf,
    /// The hub's metrics listener (plain HTTP), for open long polls and agents online.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The hub's process id, for its RSS and CPU.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// The hub's setup token file (RUNTIME_DIR/setup-token): setup is run when it exists.
    #[arg(long)]
    setup_token_file: Option<PathBuf>,
    /// The admin password (set at setup, or already set).
    #[arg(long, default_value = "bench-agents correct horse")]
    password: String,
    /// Seconds between one agent's heartbeats.
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// Seconds of heartbeats before the measured window.
    #[arg(long, default_value_t = 30)]
    warmup: u64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 32)]
    register_concurrency: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// The long poll's `wait` in seconds (the hub allows up to 30).
    #[arg(long, default_value_t = 30)]
    poll_wait: u64,
    /// Instead of heartbeats: the agents ship this many log lines in all, then the log
    /// search is measured (`scripts/bench-logs`).
    #[arg(long, default_value_t = 0)]
    logs: u64,
    /// Log lines a batch (the agent's shipper sends up to 1000).
    #[arg(long, default_value_t = 1000)]
    log_batch: usize,
    /// Searches of each kind after the ingest.
    #[arg(long, default_value_t = 200)]
    searches: usize,
    /// Agents' credentials (`index TAB device_id TAB agent_key`): reused when present,
    /// new registrations appended. Only valid with the same hub data directory.
    #[arg(long)]
    agents_file: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let nofile = raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let result = rt.block_on(run(args, nofile));
    // Thousands of open connections and polls: no point in a graceful goodbye.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Raises the soft open-file limit to the hard one; returns the limit in force.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

// ---------------------------------------------------------------------------------------
// HTTPS plumbing

type Conn = SendRequest<Full<Bytes>>;

/// Why one call failed: a short kind (for counting) and the error text (an example).
#[derive(Debug)]
struct Fail {
    kind: String,
    detail: String,
}

impl Fail {
    fn new(kind: impl Into<String>, detail: impl fmt::Display) -> Fail {
        Fail {
            kind: kind.into(),
            detail: detail.to_string(),
        }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for Fail {}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Result<serde_json::Value, Fail> {
        serde_json::from_slice(&self.body).map_err(|e| Fail::new("decode", e))
    }

    fn ok(self, what: &str) -> Result<Answer, Fail> {
        if self.status == StatusCode::OK {
            Ok(self)
        } else {
            Err(Fail::new(
                format!("status {}", self.status.as_u16()),
                format!("{what}: {}", String::from_utf8_lossy(&self.body)),
            ))
        }
    }
}

/// Where the hub is and how to reach it.
struct Net {
    tls: TlsConnector,
    hub: SocketAddr,
    host: HeaderValue,
    /// Connections this driver has open.
    open: Arc<AtomicI64>,
}

impl Net {
    fn new(hub: SocketAddr, ca: &Path) -> Result<Net> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.with_context(|| format!("parsing {}", ca.display()))?)
                .context("adding the hub's CA")?;
        }
        ensure!(!roots.is_empty(), "no certificate in {}", ca.display());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Net {
            tls: TlsConnector::from(Arc::new(config)),
            hub,
            host: HeaderValue::from_str(&hub.to_string()).context("Host header")?,
            open: Arc::new(AtomicI64::new(0)),
        })
    }

    /// One TLS connection from `src` (any address when `None`), with its HTTP/1.1
    /// connection task running.
    async fn connect(&self, src: Option<Ipv4Addr>) -> Result<Conn, Fail> {
        let sock = TcpSocket::new_v4().map_err(|e| Fail::new("socket", e))?;
        if let Some(ip) = src {
            sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))
                .map_err(|e| Fail::new("bind", e))?;
        }
        let tcp = tokio::time::timeout(CALL_TIMEOUT, sock.connect(self.hub))
            .await
            .map_err(|_| Fail::new("connect timeout", "TCP connect"))?
            .map_err(|e| Fail::new("connect", e))?;
        tcp.set_nodelay(true).map_err(|e| Fail::new("socket", e))?;
        let name = ServerName::from(self.hub.ip());
        let tls = tokio::time::timeout(CALL_TIMEOUT, self.tls.connect(name, tcp))
            .await
            .map_err(|_| Fail::new("tls timeout", "TLS handshake"))?
            .map_err(|e| Fail::new("tls", e))?;
        let (send, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| Fail::new("http", e))?;
        let open = self.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = conn.await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(send)
    }

    /// One request on `conn`; the whole answer read within `limit`.
    async fn call(
        &self,
        conn: &mut Conn,
        method: Method,
        path: &str,
        headers: &[(header::HeaderName, &str)],
        body: Option<&serde_json::Value>,
        limit: Duration,
    ) -> Result<Answer, Fail> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.host.clone());
        for (name, value) in headers {
            req = req.header(name, *value);
        }
        let bytes = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(b).map_err(|e| Fail::new("encode", e))?)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| Fail::new("request", e))?;
        let exchange = async {
            conn.ready().await.map_err(|e| Fail::new("closed", e))?;
            let resp = conn
                .send_request(req)
                .await
                .map_err(|e| Fail::new("http", e))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Fail::new("body", e))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| Fail::new("timeout", format!("no answer within {limit:?}")))?
    }
}

/// Agent `i`'s loopback source address: ten agents share one, so registrations stay
/// within the hub's per-IP limit; 127.1.0.0/16 and up, never a .0 or .255 octet.
fn source_address(i: usize) -> Ipv4Addr {
    let k = i / REGISTRATIONS_PER_ADDRESS;
    let (a, b, c) = (k / (250 * 250), (k / 250) % 250, k % 250);
    Ipv4Addr::new(127, 1 + a as u8, 1 + b as u8, 1 + c as u8)
}

// ---------------------------------------------------------------------------------------
// Counters

#[derive(Default)]
struct Stats {
    /// kind -> (count, one example)
    errors: Mutex<BTreeMap<String, (u64, String)>>,
    /// Heartbeat latencies in microseconds: [warm-up, measured window].
    latency: Mutex<[Vec<u32>; 2]>,
    /// How late heartbeats in the window started, microseconds (driver overload).
    lag: Mutex<Vec<u32>>,
    heartbeats: AtomicU64,
    polls: AtomicU64,
    reconnects: AtomicU64,
}

impl Stats {
    fn error(&self, op: &str, f: &Fail) {
        let mut e = self.errors.lock().expect("stats lock");
        let entry = e
            .entry(format!("{op}:{}", f.kind))
            .or_insert_with(|| (0, f.detail.clone()));
        entry.0 += 1;
    }

    fn error_count(&self) -> u64 {
        self.errors
            .lock()
            .expect("stats lock")
            .values()
            .map(|v| v.0)
            .sum()
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// p50/p90/p99/max of microsecond samples, in milliseconds.
fn percentiles(samples: &mut [u32]) -> String {
    if samples.is_empty() {
        return "p50=- p90=- p99=- max=- (no samples)".into();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        f64::from(samples[i]) / 1000.0
    };
    format!(
        "p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0)
    )
}

// ---------------------------------------------------------------------------------------
// /proc

struct ProcSample {
    cpu_ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
}

fn proc_sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime
    // and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
    })
}

/// Sockets kept free for everything else (metrics, files, reconnects in flight).
const FD_MARGIN: u64 = 100;

/// The hub's soft open file limit and its open descriptors.
fn hub_fds(pid: &str) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    let limit = if soft == "unlimited" {
        u64::MAX
    } else {
        soft.parse().ok()?
    };
    let used = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((limit, used))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Established TCP connections whose local port is `port`, in this network namespace.
fn established_on(port: u16) -> usize {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    let mut f = l.split_whitespace();
                    let local = f.nth(1).unwrap_or_default();
                    let state = f.nth(1).unwrap_or_default();
                    state == "01" && local.ends_with(&want)
                })
                .count()
        })
        .sum()
}

/// Scrapes the hub's metrics; the value of each of `names` (a gauge or counter line).
async fn scrape(addr: SocketAddr, names: &[&str]) -> Result<Vec<Option<f64>>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .context("metrics")?;
    let (mut send, conn) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(CALL_TIMEOUT, send.send_request(req))
        .await
        .context("metrics timeout")??;
    let body = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    Ok(names
        .iter()
        .map(|name| {
            text.lines()
                .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .find_map(|v| v.trim().parse().ok())
        })
        .collect())
}

fn show(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), |v| format!("{v:.0}"))
}

// ---------------------------------------------------------------------------------------
// Admin and registration

/// Finishes setup when a setup token waits, signs in and returns an API token.
async fn admin_token(net: &Net, args: &Args) -> Result<String> {
    let mut c = net.connect(None).await?;
    let setup_token = args
        .setup_token_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    if let Some(token) = setup_token {
        let body = serde_json::json!({
            "setup_token": token,
            "admin_username": ADMIN,
            "admin_password": args.password,
            "endpoint": "127.0.0.1:51820",
            "vpn_subnet": "10.100.0.0/16",
        });
        net.call(
            &mut c,
            Method::POST,
            "/api/setup",
            &[],
            Some(&body),
            CALL_TIMEOUT,
        )
        .await?
        .ok("setup")?;
        println!("bench-agents: setup done");
    }
    let login = serde_json::json!({"username": ADMIN, "password": args.password});
    let answer = net
        .call(
            &mut c,
            Method::POST,
            "/api/auth/login",
            &[],
            Some(&login),
            CALL_TIMEOUT,
        )
        .await?
        .ok("login")?;
    let cookie = answer
        .headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("login answered without a session cookie")?
        .to_string();
    let answer = net
        .call(
            &mut c,
            Method::POST,
            "/api/tokens",
            &[(header::COOKIE, &cookie)],
            Some(&serde_json::json!({"name": "bench-agents"})),
            CALL_TIMEOUT,
        )
        .await?
        .ok("API token")?;
    answer.json()?["token"]
        .as_str()
        .map(str::to_string)
        .context("no token in the API token answer")
}

/// An enrolled agent.
struct Agent {
    index: usize,
    src: Ipv4Addr,
    bearer: String,
    heartbeat: serde_json::Value,
}

impl Agent {
    fn new(index: usize, key: &str) -> Agent {
        Agent {
            index,
            src: source_address(index),
            bearer: format!("Bearer {key}"),
            heartbeat: serde_json::json!({
                "agent_version": "bench",
                "hostname": format!("bench-{index}"),
                "uptime_s": 1,
            }),
        }
    }
}

/// Credentials saved by an earlier run: index -> agent key.
fn load_agents(path: &Path) -> Result<BTreeMap<usize, String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut agents = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let mut f = line.split('\t');
        let (Some(i), Some(_device), Some(key)) = (f.next(), f.next(), f.next()) else {
            bail!(
                "{}:{}: expected index, device id, key",
                path.display(),
                n + 1
            );
        };
        agents.insert(i.parse().context("agent index")?, key.to_string());
    }
    Ok(agents)
}

/// Registers agents `missing`, `concurrency` source addresses at a time, each address
/// on one keep-alive connection for its (up to) ten registrations.
async fn register_all(
    net: &Arc<Net>,
    stats: &Arc<Stats>,
    token: &str,
    missing: &[usize],
    concurrency: usize,
    file: Option<&Path>,
) -> Result<BTreeMap<usize, String>> {
    let mut blocks: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in missing {
        blocks
            .entry(i / REGISTRATIONS_PER_ADDRESS)
            .or_default()
            .push(i);
    }
    let out = match file {
        Some(p) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ))),
        None => None,
    };
    let done = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let progress = {
        let done = done.clone();
        let total = missing.len();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = done.load(Ordering::Relaxed);
                println!(
                    "bench-agents: registered {now}/{total} after {:.0}s ({:.1}/s in the last 10 s)",
                    started.elapsed().as_secs_f64(),
                    (now - last) as f64 / 10.0
                );
                last = now;
            }
        })
    };
    let mut tasks = JoinSet::new();
    for (_, block) in blocks {
        let permit = limit.clone().acquire_owned().await?;
        let (net, stats, token, done, out) = (
            net.clone(),
            stats.clone(),
            token.to_string(),
            done.clone(),
            out.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let mut keys = Vec::new();
            let mut conn: Option<Conn> = None;
            for i in block {
                match register_one(&net, &stats, &mut conn, &token, i).await {
                    Ok((device, key)) => {
                        if let Some(out) = &out {
                            let mut f = out.lock().expect("agents file lock");
                            if let Err(e) = writeln!(f, "{i}\t{device}\t{key}") {
                                stats.error("register", &Fail::new("agents file", e));
                            }
                        }
                        keys.push((i, key));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(f) => stats.error("register", &f),
                }
            }
            keys
        });
    }
    let mut agents = BTreeMap::new();
    while let Some(keys) = tasks.join_next().await {
        agents.extend(keys.context("registration task")?);
    }
    progress.abort();
    Ok(agents)
}

/// One registration, retried (on a new connection, or after the hub's Retry-After).
async fn register_one(
    net: &Net,
    stats: &Stats,
    conn: &mut Option<Conn>,
    token: &str,
    i: usize,
) -> Result<(String, String), Fail> {
    let mut key = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut key);
    let body = serde_json::json!({
        "token": token,
        "public_key": base64::engine::general_purpose::STANDARD.encode(key),
        "hostname": format!("bench-{i}"),
    });
    let mut last = Fail::new("none", "no attempt");
    for _ in 0..5 {
        let c = match conn {
            Some(c) if !c.is_closed() => c,
            _ => conn.insert(net.connect(Some(source_address(i))).await?),
        };
        match net
            .call(
                c,
                Method::POST,
                "/api/register",
                &[],
                Some(&body),
                CALL_TIMEOUT,
            )
            .await
        {
            Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS => {
                let wait = a
                    .headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(6);
                last = Fail::new("status 429", "rate limited");
                stats.error("register", &last);
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            Ok(a) => {
                let v = a.ok("register")?.json()?;
                let device = v["device_id"].as_str().unwrap_or_default().to_string();
                let key = v["agent_key"]
                    .as_str()
                    .ok_or_else(|| Fail::new("decode", "no agent_key"))?;
                return Ok((device, key.to_string()));
            }
            Err(f) => {
                // The request may have gone through: a retry could burn a second token
                // use on the same key (409). Counted, then retried on a new connection.
                stats.error("register", &f);
                *conn = None;
                last = f;
            }
        }
    }
    Err(last)
}

// ---------------------------------------------------------------------------------------
// The agents

struct Schedule {
    interval: Duration,
    /// Heartbeats due before this are warm-up.
    window_start: Instant,
    /// Heartbeats due from this on are not sent.
    window_end: Instant,
    /// The longest long poll, in seconds (the hub allows up to 30).
    poll_wait: u64,
}

/// One agent as `watchgrid agent run` behaves: heartbeats at `first`, `first +
/// interval`, … and in between the command long poll, on the same connection. After
/// the window's last heartbeat it says so on `done` and goes on polling, so that its
/// connection stays open until the counting is done.
async fn session_loop(
    net: Arc<Net>,
    stats: Arc<Stats>,
    agent: Arc<Agent>,
    conn: Conn,
    first: Instant,
    sched: Arc<Schedule>,
    done: oneshot::Sender<()>,
) {
    let mut conn = Some(conn);
    let mut done = Some(done);
    let mut due = first;
    loop {
        if due >= sched.window_end {
            if let Some(d) = done.take() {
                let _ = d.send(());
            }
        }
        poll_until(&net, &stats, &agent, &mut conn, due, sched.poll_wait).await;
        if due < sched.window_end {
            heartbeat(&net, &stats, &agent, &mut conn, due, &sched).await;
        }
        due += sched.interval;
    }
}

/// The agent's connection, reopened when the hub closed it.
async fn live<'a>(
    net: &Net,
    stats: &Stats,
    agent: &Agent,
    conn: &'a mut Option<Conn>,
    op: &str,
) -> Option<&'a mut Conn> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        stats.reconnects.fetch_add(1, Ordering::Relaxed);
        match net.connect(Some(agent.src)).await {
            Ok(c) => *conn = Some(c),
            Err(f) => {
                stats.error(op, &f);
                *conn = None;
            }
        }
    }
    conn.as_mut()
}

/// Long polls until `due`: whole seconds, rounded up, as the agent asks.
async fn poll_until(
    net: &Net,
    stats: &Stats,
    agent: &Agent,
    conn: &mut Option<Conn>,
    due: Instant,
    cap: u64,
) {
    loop {
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let wait = (left.as_secs_f64().ceil() as u64).clamp(1, cap.max(1));
        let Some(c) = live(net, stats, agent, conn, "poll").await else {
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            continue;
        };
        let path = format!("/api/commands/?wait={wait}");
        let limit = Duration::from_secs(wait) + CALL_TIMEOUT;
        let headers = [(header::AUTHORIZATION, agent.bearer.as_str())];
        let answer = net
            .call(c, Method::GET, &path, &headers, None, limit)
            .await
            .and_then(|a| a.ok("poll"));
        match answer {
            Ok(_) => {
                stats.polls.fetch_add(1, Ordering::Relaxed);
            }
            Err(f) => {
                stats.error("poll", &f);
                *conn = None;
                tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            }
        }
    }
}

/// The heartbeat due at `due`: its latency, and how late it went out, when measured.
async fn heartbeat(
    net: &Net,
    stats: &Stats,
    agent: &Agent,
    conn: &mut Option<Conn>,
    due: Instant,
    sched: &Schedule,
) {
    tokio::time::sleep_until(due).await;
    let measured = due >= sched.window_start;
    let Some(c) = live(net, stats, agent, conn, "heartbeat").await else {
        return;
    };
    let start = Instant::now();
    let headers = [(header::AUTHORIZATION, agent.bearer.as_str())];
    let body = Some(&agent.heartbeat);
    let answer = net
        .call(
            c,
            Method::POST,
            "/api/heartbeat",
            &headers,
            body,
            CALL_TIMEOUT,
        )
        .await
        .and_then(|a| a.ok("heartbeat"));
    let took = start.elapsed();
    match answer {
        Ok(_) => {
            stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            let mut lat = stats.latency.lock().expect("stats lock");
            lat[usize::from(measured)].push(micros(took));
            drop(lat);
            if measured {
                let late = start.saturating_duration_since(due);
                stats.lag.lock().expect("stats lock").push(micros(late));
            }
        }
        Err(f) => {
            stats.error("heartbeat", &f);
            *conn = None;
        }
    }
}

// ---------------------------------------------------------------------------------------

/// The agents' keys: from the agents file, then new registrations; and a line about
/// the registrations.
async fn credentials(
    args: &Args,
    net: &Arc<Net>,
    stats: &Arc<Stats>,
) -> Result<(BTreeMap<usize, String>, String)> {
    let n = args.agents;
    let mut keys = match &args.agents_file {
        Some(p) => load_agents(p)?,
        None => BTreeMap::new(),
    };
    keys.retain(|&i, _| i < n);
    let missing: Vec<usize> = (0..n).filter(|i| !keys.contains_key(i)).collect();
    if !keys.is_empty() {
        println!(
            "bench-agents: {} agents from {}",
            keys.len(),
            args.agents_file
                .as_deref()
                .map_or_else(String::new, |p| p.display().to_string())
        );
    }
    let mut registration = String::from("none (all from the agents file)");
    if !missing.is_empty() {
        let api = admin_token(net, args).await.context("admin API token")?;
        let mut c = net.connect(None).await?;
        let mut enrollment = Vec::new();
        for chunk in missing.chunks(100_000) {
            let answer = net
                .call(
                    &mut c,
                    Method::POST,
                    "/api/enrollment-tokens",
                    &[(header::AUTHORIZATION, &format!("Bearer {api}"))],
                    Some(&serde_json::json!({"uses": chunk.len(), "name": "bench"})),
                    CALL_TIMEOUT,
                )
                .await?
                .ok("enrollment token")?;
            let token = answer.json()?["token"]
                .as_str()
                .map(str::to_string)
                .context("no token in the enrollment token answer")?;
            enrollment.push((token, chunk.to_vec()));
        }
        drop(c);
        println!(
            "bench-agents: registering {} agents, {} at a time, {REGISTRATIONS_PER_ADDRESS} per source address",
            missing.len(),
            args.register_concurrency
        );
        let started = Instant::now();
        let mut registered = 0;
        for (token, chunk) in enrollment {
            let got = register_all(
                net,
                stats,
                &token,
                &chunk,
                args.register_concurrency,
                args.agents_file.as_deref(),
            )
            .await?;
            registered += got.len();
            keys.extend(got);
        }
        let secs = started.elapsed().as_secs_f64();
        registration = format!(
            "{registered}/{} in {secs:.1}s ({:.1}/s)",
            missing.len(),
            registered as f64 / secs.max(0.001)
        );
        println!("bench-agents: registration {registration}");
    }
    Ok((keys, registration))
}

/// One connection an agent (the agent's heartbeats and long polls share it),
/// `--connect-concurrency` agents at a time.
async fn connect_all(
    args: &Args,
    net: &Arc<Net>,
    stats: &Arc<Stats>,
    agents: &[Arc<Agent>],
) -> Result<Vec<(Arc<Agent>, Conn)>> {
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let count = agents.len();
    for (pos, agent) in agents.iter().enumerate() {
        let permit = limit.clone().acquire_owned().await?;
        let (net, stats, agent) = (net.clone(), stats.clone(), agent.clone());
        tasks.spawn(async move {
            let _permit = permit;
            match net.connect(Some(agent.src)).await {
                Ok(c) => Some((agent, c)),
                Err(f) => {
                    stats.error("connect", &f);
                    None
                }
            }
        });
        if pos > 0 && pos % 5000 == 0 {
            println!(
                "bench-agents: connecting {pos}/{count} after {:.0}s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let mut connected = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(pair) = r.context("connect task")? {
            connected.push(pair);
        }
    }
    connected.sort_by_key(|(a, _)| a.index);
    println!(
        "bench-agents: connected {}/{count} agents ({} TLS connections) in {:.1}s",
        connected.len(),
        net.open.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(connected)
}

async fn run(args: Args, nofile: u64) -> Result<()> {
    let n = args.agents;
    ensure!(n > 0, "--agents must be at least 1");
    ensure!(n <= 65_000, "--agents: at most 65000 (the VPN is a /16)");
    let net = Arc::new(Net::new(args.hub, &args.ca)?);
    let stats = Arc::new(Stats::default());
    let hub_pid = args.hub_pid.map(|p| p.to_string());
    let hub_proc = || hub_pid.as_deref().and_then(proc_sample);
    let ticks = clock_ticks();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "bench-agents: N={n} hub={} interval={}s warmup={}s window={}s poll_wait={}s cores={cores}",
        args.hub, args.interval, args.warmup, args.window, args.poll_wait
    );

    if args.logs > 0 {
        return run_logs(args, net, stats).await;
    }
    let (keys, registration) = credentials(&args, &net, &stats).await?;
    let agents: Vec<Arc<Agent>> = keys
        .iter()
        .map(|(&i, key)| Arc::new(Agent::new(i, key)))
        .collect();
    ensure!(!agents.is_empty(), "no agent registered");
    let idle = hub_proc();

    // Each connected agent costs a socket on both sides: stay within the open file
    // limits (a hard limit only CAP_SYS_RESOURCE raises).
    let mut room = nofile.saturating_sub(FD_MARGIN);
    let mut why = format!("driver open file limit {nofile}");
    if let Some((limit, used)) = hub_pid.as_deref().and_then(hub_fds) {
        let hub_room = limit.saturating_sub(used + FD_MARGIN);
        if hub_room < room {
            room = hub_room;
            why = format!("hub open file limit {limit}, {used} in use");
        }
    }
    let agents = if (room as usize) < agents.len() {
        println!(
            "bench-agents: only {room} of {} agents connect: {why}, a socket an agent; the rest stay registered and idle",
            agents.len()
        );
        agents[..room as usize].to_vec()
    } else {
        agents
    };

    let started = Instant::now();
    let connected = connect_all(&args, &net, &stats, &agents).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    ensure!(!connected.is_empty(), "no agent connected");

    // Heartbeats, spread uniformly over the first interval.
    let interval = Duration::from_secs(args.interval.max(1));
    let t0 = Instant::now() + Duration::from_secs(1);
    let window_start = t0 + Duration::from_secs(args.warmup);
    let sched = Arc::new(Schedule {
        interval,
        window_start,
        window_end: window_start + Duration::from_secs(args.window),
        poll_wait: args.poll_wait,
    });
    let m = connected.len();
    let mut finished = Vec::with_capacity(m);
    for (pos, (agent, conn)) in connected.into_iter().enumerate() {
        let first = t0 + interval.mul_f64(pos as f64 / m as f64);
        let (done, rx) = oneshot::channel();
        finished.push(rx);
        tokio::spawn(session_loop(
            net.clone(),
            stats.clone(),
            agent,
            conn,
            first,
            sched.clone(),
            done,
        ));
    }
    println!(
        "bench-agents: heartbeating; warm-up {}s, then the measured window of {}s",
        args.warmup, args.window
    );

    tokio::time::sleep_until(window_start).await;
    let me = std::process::id().to_string();
    let (hub_a, me_a) = (hub_proc(), proc_sample(&me));
    let (polls_a, beats_a) = (
        stats.polls.load(Ordering::Relaxed),
        stats.heartbeats.load(Ordering::Relaxed),
    );
    let errors_a = stats.error_count();
    tokio::time::sleep_until(sched.window_end).await;
    let (hub_b, me_b) = (hub_proc(), proc_sample(&me));
    let (polls_b, beats_b) = (
        stats.polls.load(Ordering::Relaxed),
        stats.heartbeats.load(Ordering::Relaxed),
    );
    let hub_conns = established_on(args.hub.port());
    let driver_conns = net.open.load(Ordering::Relaxed);
    let metrics = match args.metrics {
        Some(addr) => scrape(
            addr,
            &[
                "watchgrid_agent_long_polls",
                "watchgrid_agents_online",
                "watchgrid_agent_heartbeats_total",
            ],
        )
        .await
        .unwrap_or_else(|e| {
            println!("bench-agents: metrics: {e:#}");
            vec![None; 3]
        }),
        None => vec![None; 3],
    };
    // The window's last heartbeats may still be on their way.
    let drain = tokio::time::timeout(CALL_TIMEOUT, async {
        for rx in finished {
            let _ = rx.await;
        }
    })
    .await;
    if drain.is_err() {
        println!("bench-agents: heartbeats still pending after the window (left running)");
    }
    let errors_window = stats.error_count().saturating_sub(errors_a);

    // The summary.
    let secs = args.window.max(1) as f64;
    let pct = |a: &Option<ProcSample>, b: &Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => {
            format!(
                "{:.1}%",
                (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / ticks / secs * 100.0
            )
        }
        _ => "?".into(),
    };
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    let mut lat = std::mem::take(&mut *stats.latency.lock().expect("stats lock"));
    let mut lag = std::mem::take(&mut *stats.lag.lock().expect("stats lock"));
    let window_samples = lat[1].len();
    let window_p = percentiles(&mut lat[1]);
    let warm_p = percentiles(&mut lat[0]);
    let lag_p = percentiles(&mut lag);
    let requests = (beats_b - beats_a) + (polls_b - polls_a);
    println!();
    println!("bench-agents: registration {registration}; connect {connect_secs:.1}s");
    println!(
        "bench-agents: warm-up heartbeats {warm_p} ({} samples)",
        lat[0].len()
    );
    println!("bench-agents: driver lag (due -> sent) in the window {lag_p}");
    if let (Some(a), Some(b)) = (&hub_a, &hub_b) {
        let cpu_s = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks;
        println!(
            "bench-agents: hub in the window: {} heartbeats + {} long polls answered = {:.1} req/s, {:.0} µs hub CPU a request",
            beats_b - beats_a,
            polls_b - polls_a,
            requests as f64 / secs,
            cpu_s * 1e6 / (requests.max(1) as f64)
        );
    }
    if let (Some(i), Some(b)) = (&idle, &hub_b) {
        println!(
            "bench-agents: hub RSS {} MiB before connecting, {} MiB in the window: {:.1} KiB per connection",
            mib(i.rss_kib),
            mib(b.rss_kib),
            b.rss_kib.saturating_sub(i.rss_kib) as f64 / (hub_conns.max(1) as f64)
        );
    }
    println!(
        "bench-agents: reconnects={} driver_conns={driver_conns} hub heartbeats_total={}",
        stats.reconnects.load(Ordering::Relaxed),
        show(metrics[2])
    );
    for (kind, (count, example)) in stats.errors.lock().expect("stats lock").iter() {
        println!("bench-agents: error (whole run) {kind} x{count}: {example}");
    }
    println!(
        "bench-agents: N={n} connected={m} polls_open={} online={} hub_conns={hub_conns} heartbeat {window_p} samples={window_samples} errors={errors_window} hub_rss={} MiB hub_rss_peak={} MiB hub_cpu={} driver_cpu={} (of one core; {cores} cores) driver_rss={} MiB",
        show(metrics[0]),
        show(metrics[1]),
        hub_b.as_ref().map_or_else(|| "?".into(), |s| mib(s.rss_kib)),
        hub_b.as_ref().map_or_else(|| "?".into(), |s| mib(s.hwm_kib)),
        pct(&hub_a, &hub_b),
        pct(&me_a, &me_b),
        me_b.as_ref().map_or_else(|| "?".into(), |s| mib(s.rss_kib)),
    );
    Ok(())
}

/// `--logs`: setup and an admin token first (the registrations sign in again).
async fn run_logs(mut args: Args, net: Arc<Net>, stats: Arc<Stats>) -> Result<()> {
    let admin = admin_token(&net, &args).await.context("admin API token")?;
    args.setup_token_file = None;
    let (keys, registration) = credentials(&args, &net, &stats).await?;
    println!("bench-logs: registration {registration}");
    let agents = keys
        .iter()
        .map(|(&i, key)| Arc::new(Agent::new(i, key)))
        .collect();
    let bench = logs::LogBench {
        total: args.logs,
        batch: args.log_batch.clamp(1, 5000),
        searches: args.searches.max(1),
        hub_pid: args.hub_pid.map(|p| p.to_string()),
        metrics: args.metrics,
        admin,
    };
    logs::run(bench, net, stats, agents).await
}
