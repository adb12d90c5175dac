//! The log store's benchmark (scripts/bench-logs-store runs it):
//!
//! ```text
//! cargo run --release -p watchgrid-logstore --example bench -- --lines 5000000
//! ```
//!
//! Ingest: 100 simulated devices ship batches of 1000 syslog-like lines through
//! `--callers` concurrent threads (the API's blocking pool); every call returns only
//! once its lines are durable. Then: bytes on disk per line, and p50/p99 of text and
//! time-range searches (newest first, 100 lines a page) over everything stored, with the
//! process's CPU time for each phase. `--sled-baseline N` also measures the simplest
//! alternative (sled with time-ordered keys, text search by a full scan) on N lines.

mod gen;
mod sled_baseline;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use watchgrid_logstore::{LogLine, LogQuery, LogStore, Retention};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Args {
    lines: u64,
    devices: u64,
    batch: u64,
    callers: usize,
    queries: usize,
    dir: Option<PathBuf>,
    sled_baseline: u64,
}

fn args() -> Res<Args> {
    let mut a = Args {
        lines: 5_000_000,
        devices: 100,
        batch: 1000,
        callers: 8,
        queries: 200,
        dir: None,
        sled_baseline: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--lines" => a.lines = value()?.parse()?,
            "--devices" => a.devices = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--callers" => a.callers = value()?.parse()?,
            "--queries" => a.queries = value()?.parse()?,
            "--dir" => a.dir = Some(value()?.into()),
            "--sled-baseline" => a.sled_baseline = value()?.parse()?,
            other => return Err(format!("unknown flag {other}; see examples/bench.rs").into()),
        }
    }
    if a.devices == 0 || a.batch == 0 || a.callers == 0 {
        return Err("--devices, --batch and --callers must be at least 1".into());
    }
    Ok(a)
}

/// User plus system CPU time of this process.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Wall and CPU time of a phase.
pub struct Phase {
    wall: Instant,
    cpu: Duration,
}

impl Phase {
    pub fn start() -> Phase {
        Phase {
            wall: Instant::now(),
            cpu: cpu_time(),
        }
    }

    /// (wall seconds, CPU seconds, cores busy on average)
    pub fn end(&self) -> (f64, f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = (cpu_time() - self.cpu).as_secs_f64();
        (wall, cpu, cpu / wall.max(1e-9))
    }
}

fn main() -> Res<()> {
    let a = args()?;
    let tmp = tempfile::Builder::new()
        .prefix("logstore-bench")
        .tempdir_in(a.dir.clone().unwrap_or_else(|| PathBuf::from("target")))?;
    println!(
        "log store bench: {} lines, {} devices, batches of {}, {} concurrent callers, {} on {}",
        a.lines,
        a.devices,
        a.batch,
        a.callers,
        tmp.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if a.sled_baseline > 0 {
        sled_baseline::run(tmp.path(), a.sled_baseline, a.devices, a.batch)?;
    }
    let dir = tmp.path().join("logs");
    let store = Arc::new(LogStore::open(&dir, Retention::default())?);
    let span = ingest(&store, &a)?;
    report_size(&store, "after ingest");
    search(&store, &a, span)?;
    report_size(&store, "after searches (background merges went on)");
    Ok(())
}

fn report_size(store: &LogStore, when: &str) {
    let (bytes, lines) = (store.size_bytes(), store.line_count());
    println!(
        "store: {lines} lines, {:.1} MiB, {:.1} bytes/line ({when})",
        bytes as f64 / f64::from(1 << 20),
        bytes as f64 / lines.max(1) as f64
    );
}

/// Generates every batch, then ingests them from `callers` threads, each device's
/// batches in order (an agent waits for its acknowledgement before the next batch).
/// Returns the time span the lines cover.
fn ingest(store: &Arc<LogStore>, a: &Args) -> Res<(u64, u64)> {
    let generated = Instant::now();
    let plan = gen::Plan::new(a.lines, a.devices, a.batch);
    let queue: Vec<(String, Vec<LogLine>)> = plan.batches();
    println!(
        "generated {} batches in {:.1} s (not counted)",
        queue.len(),
        generated.elapsed().as_secs_f64()
    );
    let queue = Arc::new(Mutex::new(queue.into_iter()));
    let done = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let phase = Phase::start();
    let workers: Vec<_> = (0..a.callers)
        .map(|_| {
            let (store, queue, done, lat) = (
                store.clone(),
                queue.clone(),
                done.clone(),
                latencies.clone(),
            );
            std::thread::spawn(move || -> Res<()> {
                loop {
                    let next = queue.lock().map_err(|_| "queue poisoned")?.next();
                    let Some((device, lines)) = next else {
                        return Ok(());
                    };
                    let t = Instant::now();
                    store.ingest(&device, &lines, gen::NOW)?;
                    lat.lock().map_err(|_| "poisoned")?.push(t.elapsed());
                    done.fetch_add(lines.len(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "ingest worker panicked")??;
    }
    let (wall, cpu, cores) = phase.end();
    let n = done.load(Ordering::Relaxed) as f64;
    let mut lat = latencies.lock().map_err(|_| "poisoned")?.clone();
    println!(
        "ingest: {:.0} lines/s ({} lines in {wall:.1} s), CPU {cpu:.1} s = {cores:.2} cores; \
         per call (1000 lines, durable) p50 {:.1} ms p99 {:.1} ms",
        n / wall,
        n,
        pct(&mut lat, 50.0).as_secs_f64() * 1e3,
        pct(&mut lat, 99.0).as_secs_f64() * 1e3,
    );
    Ok(plan.span())
}

pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Draws one query of a kind.
type MakeQuery = Box<dyn Fn(&mut gen::Rng) -> LogQuery>;

/// Runs each kind of query `a.queries` times (parameters drawn at random) and prints
/// p50/p99 and the mean number of lines a page held.
fn search(store: &LogStore, a: &Args, (from, to): (u64, u64)) -> Res<()> {
    let mut rng = gen::Rng(7);
    let hour = 3600 * 1_000_000;
    let kinds: Vec<(&str, MakeQuery)> = vec![
        ("latest page, no filter", Box::new(|_| LogQuery::default())),
        (
            "text: rare word (a user)",
            Box::new(|r| text(&gen::user(r))),
        ),
        (
            "text: rare phrase (an IPv4 address)",
            Box::new(|r| text(&gen::ip(r))),
        ),
        (
            "text: common phrase \"failed password\"",
            Box::new(|_| text("failed password")),
        ),
        (
            "text: absent word",
            Box::new(|r| text(&format!("absent{}", r.below(1 << 30)))),
        ),
        ("range: 1 hour", Box::new(move |r| range(r, from, to, hour))),
        (
            "range: 1 day",
            Box::new(move |r| range(r, from, to, 24 * hour)),
        ),
        (
            "range: 1 hour + device",
            Box::new(move |r| LogQuery {
                device_id: Some(gen::device(r.below(100))),
                ..range(r, from, to, hour)
            }),
        ),
        (
            "range: 1 day + text \"session opened\"",
            Box::new(move |r| LogQuery {
                text: Some("session opened".into()),
                ..range(r, from, to, 24 * hour)
            }),
        ),
    ];
    for (name, make) in &kinds {
        let mut lat = Vec::with_capacity(a.queries);
        let mut found = 0usize;
        let phase = Phase::start();
        for _ in 0..a.queries {
            let q = make(&mut rng);
            let t = Instant::now();
            found += store.search(&q)?.lines.len();
            lat.push(t.elapsed());
        }
        let (_, _, cores) = phase.end();
        println!(
            "search {name:<42} p50 {:>7.2} ms  p99 {:>7.2} ms  ({:.0} lines/page, {cores:.2} cores)",
            pct(&mut lat, 50.0).as_secs_f64() * 1e3,
            pct(&mut lat, 99.0).as_secs_f64() * 1e3,
            found as f64 / a.queries.max(1) as f64,
        );
    }
    Ok(())
}

fn text(t: &str) -> LogQuery {
    LogQuery {
        text: Some(t.into()),
        ..LogQuery::default()
    }
}

fn range(r: &mut gen::Rng, from: u64, to: u64, width: u64) -> LogQuery {
    let start = from + r.below((to - from).saturating_sub(width).max(1));
    LogQuery {
        since_us: Some(start),
        until_us: Some(start + width),
        ..LogQuery::default()
    }
}
