//! The simplest alternative, measured: lines as JSON in sled under time-ordered keys
//! (`ts_us BE | device | seq BE`), each batch made durable by sled's flush plus
//! syncfs(2) like the main store, and text search by a newest-first full scan.

use crate::{gen, pct, Phase, Res};
use std::path::Path;
use std::time::Instant;
use watchgrid_store::durable::DiskSync;

#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    device_id: String,
    received_at_us: u64,
    message: String,
    unit: Option<String>,
    seq: u64,
    ts_us: u64,
    source: String,
}

pub fn run(dir: &Path, lines: u64, devices: u64, batch: u64) -> Res<()> {
    let path = dir.join("sled-baseline");
    let db = sled::Config::new()
        .path(&path)
        .flush_every_ms(None)
        .open()?;
    let sync = DiskSync::open(dir)?;
    let plan = gen::Plan::new(lines, devices, batch);
    let batches = plan.batches();
    let phase = Phase::start();
    let mut n = 0u64;
    for (device, batch) in &batches {
        let mut b = sled::Batch::default();
        for l in batch {
            let mut key = l.ts_us.to_be_bytes().to_vec();
            key.extend_from_slice(device.as_bytes());
            key.extend_from_slice(&l.seq.to_be_bytes());
            let row = Row {
                device_id: device.clone(),
                received_at_us: gen::NOW,
                message: l.message.clone(),
                unit: l.unit.clone(),
                seq: l.seq,
                ts_us: l.ts_us,
                source: l.source.clone(),
            };
            b.insert(key, serde_json::to_vec(&row)?);
            n += 1;
        }
        db.apply_batch(b)?;
        db.flush()?;
        sync.sync()?;
    }
    let (wall, _, cores) = phase.end();
    let bytes = db.size_on_disk()?;
    println!(
        "sled baseline: ingest {:.0} lines/s (one caller, {cores:.2} cores), {:.1} bytes/line on disk",
        n as f64 / wall,
        bytes as f64 / n.max(1) as f64
    );
    let mut rng = gen::Rng(11);
    let mut scans = Vec::new();
    for _ in 0..5 {
        let needle = gen::user(&mut rng);
        let t = Instant::now();
        let found = scan(&db, &needle, 100)?;
        scans.push(t.elapsed());
        let _ = found;
    }
    let mut absent = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        scan(&db, &format!("absent{i}"), 100)?;
        absent.push(t.elapsed());
    }
    let full = pct(&mut absent, 50.0).as_secs_f64();
    println!(
        "sled baseline: text by full scan: rare word p50 {:.0} ms, absent word {:.0} ms \
         ({:.0} lines/s scanned; at 5,000,000 lines: {:.1} s)",
        pct(&mut scans, 50.0).as_secs_f64() * 1e3,
        full * 1e3,
        n as f64 / full,
        full * 5e6 / n.max(1) as f64
    );
    drop(db);
    std::fs::remove_dir_all(&path)?;
    Ok(())
}

/// Newest first until `limit` lines contain `needle` (case-insensitive substring).
fn scan(db: &sled::Db, needle: &str, limit: usize) -> Res<usize> {
    let needle = needle.to_lowercase();
    let mut found = 0;
    for kv in db.iter().rev() {
        let (_, v) = kv?;
        let row: Row = serde_json::from_slice(&v)?;
        if row.message.to_lowercase().contains(&needle) {
            found += 1;
            if found == limit {
                break;
            }
        }
    }
    Ok(found)
}
