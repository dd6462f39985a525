//! Crash simulation: crash the embedded log at every write and fsync point of a run
//! of concurrent, group-committed appends, rebuild the disk a restarted process would
//! find (in every way unsynced data may survive), reopen, and check the invariants.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use korder_log::{EmbeddedLog, EmbeddedLogOptions, Log, LogError, LogOffset, LogReader, ReadFrom};
use korder_storage::sim::{CrashMode, SimStorage};

const BOUND: Duration = Duration::from_secs(30);
const TASKS: usize = 4;
const PER_TASK: usize = 20;

fn options() -> EmbeddedLogOptions {
    EmbeddedLogOptions {
        segment_size_bytes: 600,
        index_interval_bytes: 100,
        max_batch_records: 5,
        ..EmbeddedLogOptions::default()
    }
}

fn value(task: usize, i: usize) -> Bytes {
    let mut v = format!("t{task}-r{i}:").into_bytes();
    v.resize(20 + (task * 37 + i * 11) % 120, b'0' + (i % 10) as u8);
    Bytes::from(v)
}

/// The crash images tried at crash point `point`: every fixed mode, and two whose
/// outcome (per file: a prefix of the unsynced writes, the next one torn or
/// zero-filled; per unsynced directory entry: kept or lost) is drawn from a seed.
fn modes(point: u64) -> impl Iterator<Item = CrashMode> {
    CrashMode::FIXED
        .into_iter()
        .chain([CrashMode::Seeded(point), CrashMode::Seeded(point | 1 << 32)])
}

/// Runs the workload on `storage`; returns the acknowledged (offset, value) pairs.
fn workload(storage: &SimStorage, tasks_n: usize) -> BTreeMap<i64, Bytes> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = match EmbeddedLog::open_with_storage(Arc::new(storage.clone()), options()) {
            Ok(log) => log,
            Err(LogError::Io { .. }) => return BTreeMap::new(),
            Err(other) => panic!("open failed with {other}"),
        };
        let mut tasks = Vec::new();
        for t in 0..tasks_n {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..PER_TASK {
                    match log.append(value(t, i)).await {
                        Ok(off) => acked.push((off.get(), value(t, i))),
                        Err(LogError::Io { .. } | LogError::Broken(_)) => {}
                        Err(other) => panic!("unexpected append error {other}"),
                    }
                }
                acked
            }));
        }
        let mut acked = BTreeMap::new();
        for t in tasks {
            for (off, v) in t.await.unwrap() {
                assert!(
                    acked.insert(off, v).is_none(),
                    "offset {off} acknowledged twice"
                );
            }
        }
        log.close().await;
        acked
    })
}

/// Reopens `image` and checks every invariant against what was appended and acknowledged.
fn check(image: SimStorage, acked: &BTreeMap<i64, Bytes>, appended: &BTreeSet<Bytes>, what: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = EmbeddedLog::open_with_storage(Arc::new(image.clone()), options())
            .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        let n = log.next_offset().get();
        let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
        let mut seen = BTreeSet::new();
        for expected in 0..n {
            let rec = tokio::time::timeout(BOUND, reader.next())
                .await
                .unwrap_or_else(|_| panic!("{what}: record {expected} not readable"))
                .unwrap_or_else(|e| panic!("{what}: reading record {expected}: {e}"));
            assert_eq!(
                rec.offset,
                LogOffset::new(expected),
                "{what}: offsets not contiguous"
            );
            assert!(
                appended.contains(&rec.value),
                "{what}: record {expected} was never appended"
            );
            assert!(
                seen.insert(rec.value.clone()),
                "{what}: record {expected} appears twice"
            );
            if let Some(v) = acked.get(&expected) {
                assert_eq!(
                    &rec.value, v,
                    "{what}: acknowledged record {expected} changed"
                );
            }
        }
        if let Some((&last, _)) = acked.last_key_value() {
            assert!(
                last < n,
                "{what}: acknowledged record {last} lost (log ends at {n})"
            );
        }
        // The recovered log accepts appends at the next offset and survives another reopen.
        let extra = Bytes::from_static(b"after-recovery");
        assert_eq!(
            log.append(extra.clone()).await.unwrap(),
            LogOffset::new(n),
            "{what}"
        );
        log.close().await;
        let again = EmbeddedLog::open_with_storage(Arc::new(image), options()).unwrap();
        assert_eq!(
            again.next_offset(),
            LogOffset::new(n + 1),
            "{what}: second reopen"
        );
        let mut reader = again
            .reader(ReadFrom::Offset(LogOffset::new(n)))
            .await
            .unwrap();
        let rec = tokio::time::timeout(BOUND, reader.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.value, extra, "{what}");
        again.close().await;
    });
}

/// Crashing at every write and fsync point loses no acknowledged record, invents none,
/// keeps offsets contiguous from 0, and always recovers to a usable log.
#[test]
fn crash_at_every_point() {
    let appended: BTreeSet<Bytes> = (0..TASKS)
        .flat_map(|t| (0..PER_TASK).map(move |i| value(t, i)))
        .collect();
    let clean = SimStorage::new();
    let acked = workload(&clean, TASKS);
    assert_eq!(
        acked.len(),
        TASKS * PER_TASK,
        "a run without a crash acknowledges everything"
    );
    for mode in modes(u64::MAX) {
        check(
            clean.crash_image(mode),
            &acked,
            &appended,
            &format!("no crash, {mode:?}"),
        );
    }
    // Concurrency changes the number of group commits from run to run; go well past
    // the clean run's count so every point of a longer run is covered too.
    let points = clean.ops() + clean.ops() / 2;
    let mut crashed_runs = 0;
    for crash_at in 0..points {
        let storage = SimStorage::new();
        storage.crash_at(crash_at);
        let acked = workload(&storage, TASKS);
        if storage.has_crashed() {
            crashed_runs += 1;
        }
        for mode in modes(crash_at) {
            check(
                storage.crash_image(mode),
                &acked,
                &appended,
                &format!("crash at op {crash_at}, {mode:?}"),
            );
        }
    }
    assert!(
        crashed_runs as u64 >= clean.ops() / 2,
        "most runs must actually crash"
    );
}

/// With one appender the operation sequence is fixed, so every crash point of the run
/// is visited exactly; the same invariants hold at each.
#[test]
fn crash_at_every_point_sequential() {
    let appended: BTreeSet<Bytes> = (0..PER_TASK).map(|i| value(0, i)).collect();
    let clean = SimStorage::new();
    let acked = workload(&clean, 1);
    assert_eq!(acked.len(), PER_TASK);
    for crash_at in 0..clean.ops() {
        let storage = SimStorage::new();
        storage.crash_at(crash_at);
        let acked = workload(&storage, 1);
        assert!(
            storage.has_crashed(),
            "op {crash_at} is reached in every run"
        );
        for mode in modes(crash_at) {
            check(
                storage.crash_image(mode),
                &acked,
                &appended,
                &format!("sequential, crash at op {crash_at}, {mode:?}"),
            );
        }
    }
}
