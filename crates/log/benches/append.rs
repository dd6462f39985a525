//! Append throughput of the embedded log with fsync on, for 3 KB records and 1, 8 and
//! 64 concurrent appenders. Prints appends/s, MB/s, fsyncs/s and records per fsync
//! (group commit at work).
//!
//! Run: `cargo bench -p korder-log` (set `KORDER_BENCH_DIR` to measure another disk,
//! `KORDER_BENCH_SECS` to change the time per case, default 5).

// Benchmark code: a failed unwrap aborts the run, which is what we want.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_log::{EmbeddedLog, EmbeddedLogOptions, Log};

const RECORD_BYTES: usize = 3 * 1024;

fn main() {
    let secs: u64 = std::env::var("KORDER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let base = std::env::var_os("KORDER_BENCH_DIR").map(std::path::PathBuf::from);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "embedded log append, {RECORD_BYTES}-byte records, fsync on, {secs} s per case, dir {}",
        base.as_ref().map_or_else(
            || std::env::temp_dir().display().to_string(),
            |p| p.display().to_string()
        )
    );
    println!(
        "{:>10} {:>10} {:>12} {:>9} {:>10} {:>12} {:>14}",
        "appenders", "records", "appends/s", "MB/s", "fsyncs", "fsyncs/s", "records/fsync"
    );
    for appenders in [1usize, 8, 64] {
        let dir = match &base {
            Some(b) => tempfile::tempdir_in(b).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
        let run_for = Duration::from_secs(secs);
        let start = Instant::now();
        let deadline = start + run_for;
        let records = rt.block_on(async {
            let mut tasks = Vec::new();
            for a in 0..appenders {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let record = Bytes::from(vec![(a % 251) as u8; RECORD_BYTES]);
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        log.append(record.clone()).await.unwrap();
                        n += 1;
                    }
                    n
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total
        });
        let elapsed = start.elapsed().as_secs_f64();
        let stats = log.stats();
        rt.block_on(log.close());
        assert_eq!(stats.records, records);
        let mb = (records as f64 * RECORD_BYTES as f64) / 1e6;
        println!(
            "{:>10} {:>10} {:>12.0} {:>9.1} {:>10} {:>12.0} {:>14.1}",
            appenders,
            records,
            records as f64 / elapsed,
            mb / elapsed,
            stats.fsyncs,
            stats.fsyncs as f64 / elapsed,
            records as f64 / stats.commits.max(1) as f64,
        );
    }
}
