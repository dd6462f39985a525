//! Behaviour of the embedded file log on a real directory and on simulated storage.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use korder_log::{EmbeddedLog, EmbeddedLogOptions, Log, LogError, LogOffset, LogReader, ReadFrom};
use korder_storage::sim::{CrashMode, SimStorage};

/// Upper bound on any wait in these tests; reaching it is a failure, not a timing check.
/// Bytes of the commit frame that follows every group commit.
const COMMIT_FRAME: u64 = 24;
const BOUND: Duration = Duration::from_secs(30);

fn value(i: usize, len: usize) -> Bytes {
    let mut v = format!("record-{i}-").into_bytes();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    Bytes::from(v)
}

fn small_segments() -> EmbeddedLogOptions {
    EmbeddedLogOptions {
        segment_size_bytes: 1024,
        index_interval_bytes: 200,
        ..EmbeddedLogOptions::default()
    }
}

async fn read_n<R: LogReader>(reader: &mut R, n: usize) -> Vec<korder_log::LogRecord> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let rec = tokio::time::timeout(BOUND, reader.next())
            .await
            .expect("record within the bound")
            .expect("record");
        out.push(rec);
    }
    out
}

async fn read_all(log: &EmbeddedLog) -> Vec<korder_log::LogRecord> {
    let n = log.next_offset().get() as usize;
    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    read_n(&mut reader, n).await
}

/// Polls a future once; true if it is still pending.
async fn is_pending<F: Future + Unpin>(fut: &mut F) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx).is_pending()))
        .await
}

/// Records come back in the order they were appended, with offsets 0, 1, 2, ...
#[tokio::test]
async fn append_then_read_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    for i in 0..100 {
        let off = log.append(value(i, 10 + i)).await.unwrap();
        assert_eq!(off, LogOffset::new(i as i64));
    }
    let records = read_all(&log).await;
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(rec.offset, LogOffset::new(i as i64));
        assert_eq!(rec.value, value(i, 10 + i));
    }
    assert_eq!(log.stats().records, 100);
    log.close().await;
}

/// Many tasks appending at once get distinct, contiguous offsets, each holding its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..20 {
                let v = value(t * 1000 + i, 40);
                got.push((log.append(v.clone()).await.unwrap(), v));
            }
            got
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let offsets: BTreeSet<i64> = acked.iter().map(|(o, _)| o.get()).collect();
    assert_eq!(offsets.len(), 64 * 20);
    assert_eq!(offsets, (0..64 * 20).collect::<BTreeSet<_>>());
    let records = read_all(&log).await;
    for (off, v) in &acked {
        assert_eq!(&records[off.get() as usize].value, v);
    }
    let stats = log.stats();
    assert_eq!(stats.records, 64 * 20);
    assert!(stats.commits <= stats.records);
    log.close().await;
}

/// Appends that queue up while an fsync is in progress are written by one commit with
/// one fsync, each still getting its own offset.
#[tokio::test]
async fn queued_appends_share_one_fsync() {
    let storage = SimStorage::new();
    let log =
        EmbeddedLog::open_with_storage(Arc::new(storage.clone()), EmbeddedLogOptions::default())
            .unwrap();
    let before = log.stats();
    storage.hold_syncs();
    let first = tokio::spawn({
        let log = log.clone();
        async move { log.append(value(0, 3000)).await }
    });
    wait_until(|| storage.syncs_waiting() == 1).await;
    let mut rest = Vec::new();
    for i in 1..10 {
        let log = log.clone();
        rest.push(tokio::spawn(
            async move { log.append(value(i, 3000)).await },
        ));
    }
    wait_until(|| log.queued_appends() == 9).await;
    storage.release_syncs();
    assert_eq!(first.await.unwrap().unwrap(), LogOffset::new(0));
    let mut offsets = BTreeSet::new();
    for t in rest {
        offsets.insert(t.await.unwrap().unwrap().get());
    }
    assert_eq!(offsets, (1..10).collect::<BTreeSet<_>>());
    let stats = log.stats();
    assert_eq!(stats.records - before.records, 10);
    assert_eq!(
        stats.commits - before.commits,
        2,
        "one commit for the first, one for the nine queued"
    );
    assert_eq!(stats.fsyncs - before.fsyncs, 2);
    log.close().await;
}

/// Waits, within the bound, until `cond` holds (it is changed by another thread).
async fn wait_until(cond: impl Fn() -> bool) {
    tokio::time::timeout(BOUND, async {
        while !cond() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("condition within the bound");
}

/// A reader at the end waits, and wakes with the record once it is appended.
#[tokio::test]
async fn reader_waits_then_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    let mut reader = log
        .reader(ReadFrom::Offset(LogOffset::new(0)))
        .await
        .unwrap();
    let mut next = Box::pin(reader.next());
    assert!(is_pending(&mut next).await, "nothing to read yet");
    log.append(Bytes::from_static(b"first")).await.unwrap();
    let rec = tokio::time::timeout(BOUND, next).await.unwrap().unwrap();
    assert_eq!(rec.offset, LogOffset::new(0));
    assert_eq!(rec.value, Bytes::from_static(b"first"));
    log.close().await;
}

/// Everything appended survives close and reopen, and appends continue at the next offset.
#[tokio::test]
async fn reopen_preserves_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
        for i in 0..50 {
            log.append(value(i, 70)).await.unwrap();
        }
        log.close().await;
    }
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.next_offset(), LogOffset::new(50));
    assert_eq!(log.append(value(50, 70)).await.unwrap(), LogOffset::new(50));
    let records = read_all(&log).await;
    assert_eq!(records.len(), 51);
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(rec.value, value(i, 70));
    }
    log.close().await;
}

/// Dropping every handle without close still leaves every acknowledged record on disk.
#[tokio::test]
async fn drop_without_close_keeps_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
        for i in 0..5 {
            log.append(value(i, 30)).await.unwrap();
        }
    }
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    assert_eq!(log.next_offset(), LogOffset::new(5));
    log.close().await;
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("log_"))
        .collect();
    names.sort();
    names.pop().unwrap()
}

async fn ten_records(dir: &std::path::Path) {
    let log = EmbeddedLog::open(dir, EmbeddedLogOptions::default()).unwrap();
    for i in 0..10 {
        log.append(value(i, 50)).await.unwrap();
    }
    log.close().await;
}

/// A file cut in the middle of the last record (before its commit frame) loses that
/// record only, and the log goes on.
#[tokio::test]
async fn torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    ten_records(dir.path()).await;
    let seg = last_segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(len - COMMIT_FRAME - 20).unwrap();
    drop(file);
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    assert_eq!(log.next_offset(), LogOffset::new(9));
    assert_eq!(
        log.append(Bytes::from_static(b"after")).await.unwrap(),
        LogOffset::new(9)
    );
    let records = read_all(&log).await;
    assert_eq!(records[8].value, value(8, 50));
    assert_eq!(records[9].value, Bytes::from_static(b"after"));
    log.close().await;
}

/// Bytes after the last record that are not a valid record are cut; every record stays.
#[tokio::test]
async fn garbage_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    ten_records(dir.path()).await;
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let good_len = bytes.len() as u64;
    bytes.extend((0..1000u32).map(|i| (i * 37 % 251) as u8));
    std::fs::write(&seg, &bytes).unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    assert_eq!(log.next_offset(), LogOffset::new(10));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    let records = read_all(&log).await;
    assert_eq!(records[9].value, value(9, 50));
    log.close().await;
}

/// A flipped bit in the last acknowledged record of the last segment is refused at
/// open, naming the file and byte, never cut.
#[tokio::test]
async fn corrupt_last_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    ten_records(dir.path()).await;
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    let record = n - COMMIT_FRAME as usize - (16 + 50);
    bytes[n - COMMIT_FRAME as usize - 3] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    match EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).err() {
        Some(LogError::Corrupt(msg)) => {
            assert!(msg.contains(seg.to_str().unwrap()), "{msg}");
            assert!(msg.contains(&format!("byte {record}")), "{msg}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was cut");
}

/// A flipped bit in the last commit frame leaves every record, which all check.
#[tokio::test]
async fn damaged_last_commit_frame_keeps_the_records() {
    let dir = tempfile::tempdir().unwrap();
    ten_records(dir.path()).await;
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    assert_eq!(log.next_offset(), LogOffset::new(10));
    log.close().await;
}

/// Records spread over many segments read back from any offset, before and after reopen.
#[tokio::test]
async fn rollover_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let n = 200usize;
    {
        let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
        for i in 0..n {
            log.append(value(i, 60 + i % 50)).await.unwrap();
        }
        let segments = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(segments > 10, "expected many segments, found {segments}");
        for start in [0usize, 1, 13, 14, 99, 150, 199] {
            let mut reader = log
                .reader(ReadFrom::Offset(LogOffset::new(start as i64)))
                .await
                .unwrap();
            let records = read_n(&mut reader, n - start).await;
            for (k, rec) in records.iter().enumerate() {
                assert_eq!(rec.offset.get() as usize, start + k);
                assert_eq!(rec.value, value(start + k, 60 + (start + k) % 50));
            }
        }
        log.close().await;
    }
    let log = EmbeddedLog::open(dir.path(), small_segments()).unwrap();
    for start in [0usize, 57, 198] {
        let mut reader = log
            .reader(ReadFrom::Offset(LogOffset::new(start as i64)))
            .await
            .unwrap();
        let records = read_n(&mut reader, n - start).await;
        assert_eq!(records[0].value, value(start, 60 + start % 50));
        assert_eq!(records.last().unwrap().offset, LogOffset::new(n as i64 - 1));
    }
    log.close().await;
}

/// Start offsets below 0 or past the next offset are refused; the next offset itself is allowed.
#[tokio::test]
async fn out_of_range_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    for i in 0..3 {
        log.append(value(i, 10)).await.unwrap();
    }
    for bad in [-1i64, 4, 100] {
        match log.reader(ReadFrom::Offset(LogOffset::new(bad))).await {
            Err(LogError::OffsetOutOfRange {
                requested,
                oldest,
                next,
            }) => {
                assert_eq!((requested, oldest, next), (bad, 0, 3));
            }
            Err(other) => panic!("unexpected error for offset {bad}: {other}"),
            Ok(_) => panic!("offset {bad} should be out of range"),
        }
    }
    let mut at_end = log
        .reader(ReadFrom::Offset(LogOffset::new(3)))
        .await
        .unwrap();
    let mut next = Box::pin(at_end.next());
    assert!(is_pending(&mut next).await);
    drop(next);
    log.close().await;
}

/// A record over the size limit is refused and the log keeps working.
#[tokio::test]
async fn oversize_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedLogOptions {
        max_record_bytes: 1000,
        ..EmbeddedLogOptions::default()
    };
    let log = EmbeddedLog::open(dir.path(), options).unwrap();
    match log.append(Bytes::from(vec![0u8; 1001])).await {
        Err(LogError::RecordTooLarge { size, max }) => assert_eq!((size, max), (1001, 1000)),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(
        log.append(Bytes::from(vec![1u8; 1000])).await.unwrap(),
        LogOffset::new(0)
    );
    assert_eq!(log.append(Bytes::new()).await.unwrap(), LogOffset::new(1));
    let records = read_all(&log).await;
    assert_eq!(records[0].value.len(), 1000);
    assert!(records[1].value.is_empty());
    log.close().await;
}

/// Options that cannot work are refused when the log opens.
#[test]
fn invalid_options_are_refused() {
    let options = EmbeddedLogOptions {
        queue_capacity: 0,
        ..EmbeddedLogOptions::default()
    };
    let err = EmbeddedLog::open_with_storage(Arc::new(SimStorage::new()), options).err();
    assert!(matches!(err, Some(LogError::InvalidConfig(_))), "{err:?}");
}

/// Sixty records in small segments, the log closed; returns the first segment's name.
async fn sealed_segments(storage: &SimStorage) -> &'static str {
    let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), small_segments()).unwrap();
    for i in 0..60 {
        log.append(value(i, 80)).await.unwrap();
    }
    log.close().await;
    assert!(storage.file_names().len() > 2, "several segments");
    "log_00000000000000000000"
}

/// Damage in a sealed segment: the log opens (only the last segment is verified at
/// open), a read of the damaged segment fails with `Corrupt` naming the file and byte
/// (the first time and every time after), never with other records; reads of later
/// segments still work; `check` reports the same damage.
async fn sealed_damage_is_reported_on_read(
    storage: SimStorage,
    first: &str,
    at: usize,
    what: &str,
) {
    let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), small_segments()).unwrap();
    assert_eq!(log.next_offset(), LogOffset::new(60), "the log opens whole");
    for attempt in 0..2 {
        let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
        let mut got = Vec::new();
        let err = loop {
            match tokio::time::timeout(BOUND, reader.next()).await.unwrap() {
                Ok(record) => got.push(record),
                Err(e) => break e,
            }
        };
        match err {
            LogError::Corrupt(msg) => {
                assert!(msg.contains(first), "attempt {attempt}: {msg}");
                assert!(
                    msg.contains(&format!("byte {at}")),
                    "attempt {attempt}: {msg}"
                );
                assert!(msg.contains(what), "attempt {attempt}: {msg}");
            }
            other => panic!("attempt {attempt}: expected Corrupt, got {other:?}"),
        }
        assert!(
            got.is_empty(),
            "no record of a damaged segment is served: {got:?}"
        );
    }
    let mut reader = log
        .reader(ReadFrom::Offset(LogOffset::new(59)))
        .await
        .unwrap();
    let last = read_n(&mut reader, 1).await;
    assert_eq!(last[0].value, value(59, 80), "the last segment reads back");
    log.close().await;
    let report = EmbeddedLog::check_storage(&storage).unwrap();
    let damage = report.damage.expect("check reports the damage");
    assert_eq!(damage.file, format!("sim:{first}"));
    assert_eq!(damage.byte, at as u64);
}

/// Damage to a record's offset field in a sealed segment is reported as corruption
/// naming the file when the segment is read, and by `check`.
#[tokio::test]
async fn corrupt_sealed_segment_is_reported_on_read() {
    let storage = SimStorage::new();
    let first = sealed_segments(&storage).await;
    let mut bytes = storage.file_bytes(first).unwrap();
    // The offset field of the second record (after the 16-byte header and one frame).
    let second = 16 + 16 + 80 + COMMIT_FRAME as usize;
    bytes[second + 15] ^= 0x01;
    storage.set_file_bytes(first, bytes);
    sealed_damage_is_reported_on_read(storage, first, second, "expected").await;
}

/// A damaged value in a sealed segment fails its checksum when the segment is read,
/// naming file and byte; `check` reports it too.
#[tokio::test]
async fn corrupt_value_in_sealed_segment_is_refused_on_read() {
    let storage = SimStorage::new();
    let first = sealed_segments(&storage).await;
    let mut bytes = storage.file_bytes(first).unwrap();
    let third = 16 + 2 * (16 + 80 + COMMIT_FRAME as usize);
    bytes[third + 16 + 5] ^= 0x40;
    storage.set_file_bytes(first, bytes);
    sealed_damage_is_reported_on_read(storage, first, third, "checksum").await;
}

/// A damaged header of a sealed segment (not read at open) is reported like damaged
/// records: on read, and by `check`.
#[tokio::test]
async fn damaged_sealed_segment_header_is_reported_on_read() {
    let storage = SimStorage::new();
    let first = sealed_segments(&storage).await;
    let mut bytes = storage.file_bytes(first).unwrap();
    bytes[3] ^= 0x01;
    storage.set_file_bytes(first, bytes);
    sealed_damage_is_reported_on_read(storage, first, 0, "segment header").await;
}

/// Opening a clean log of several segments writes and syncs nothing.
#[tokio::test]
async fn opening_a_clean_log_writes_nothing() {
    let storage = SimStorage::new();
    sealed_segments(&storage).await;
    let before = storage.ops();
    let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), small_segments()).unwrap();
    assert_eq!(storage.ops(), before, "no write or sync at open");
    assert_eq!(read_all(&log).await.len(), 60);
    log.close().await;
}

/// After close, appends fail with Closed and readers drain what is durable, then get Closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_completes_or_refuses_pending_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..50 {
                let v = value(t * 100 + i, 20);
                results.push((log.append(v.clone()).await, v));
            }
            results
        }));
    }
    log.close().await;
    let mut acked = Vec::new();
    for t in tasks {
        for (res, v) in t.await.unwrap() {
            match res {
                Ok(off) => acked.push((off, v)),
                Err(LogError::Closed) => {}
                Err(other) => panic!("unexpected error {other}"),
            }
        }
    }
    assert!(matches!(
        log.append(Bytes::from_static(b"late")).await,
        Err(LogError::Closed)
    ));
    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    let records = read_n(&mut reader, acked.len()).await;
    for (off, v) in &acked {
        assert_eq!(&records[off.get() as usize].value, v);
    }
    let end = tokio::time::timeout(BOUND, reader.next()).await.unwrap();
    assert!(matches!(end, Err(LogError::Closed)), "{end:?}");
    log.close().await;
    drop(log);
    let reopened = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    assert_eq!(reopened.next_offset().get() as usize, acked.len());
    reopened.close().await;
}

/// A failed write (full disk) fails its appends with Io, is cut back, and the log goes on.
#[tokio::test]
async fn full_disk_fails_appends_and_log_recovers() {
    let storage = SimStorage::new();
    let log =
        EmbeddedLog::open_with_storage(Arc::new(storage.clone()), EmbeddedLogOptions::default())
            .unwrap();
    assert_eq!(log.append(value(0, 100)).await.unwrap(), LogOffset::new(0));
    let durable_len = storage
        .file_bytes("log_00000000000000000000")
        .unwrap()
        .len();
    // The next operation is the write of the next group commit.
    storage.fail_at(storage.ops());
    match log.append(value(1, 100)).await {
        Err(LogError::Io { path, source }) => {
            assert!(path.contains("log_00000000000000000000"), "{path}");
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert_eq!(log.next_offset(), LogOffset::new(1));
    let after_failure = storage
        .file_bytes("log_00000000000000000000")
        .unwrap()
        .len();
    assert_eq!(
        after_failure, durable_len,
        "the half-written batch is cut back"
    );
    assert_eq!(log.append(value(2, 100)).await.unwrap(), LogOffset::new(1));
    let records = read_all(&log).await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].value, value(2, 100));
    log.close().await;
    for mode in CrashMode::FIXED {
        let image = storage.crash_image(mode);
        let log =
            EmbeddedLog::open_with_storage(Arc::new(image), EmbeddedLogOptions::default()).unwrap();
        let records = read_all(&log).await;
        assert_eq!(records.len(), 2, "{mode:?}");
        assert_eq!(records[1].value, value(2, 100), "{mode:?}");
        log.close().await;
    }
}

/// Directory files that are not segments are left alone and do not disturb the log.
#[tokio::test]
async fn foreign_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), b"not a segment").unwrap();
    ten_records(dir.path()).await;
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    assert_eq!(log.next_offset(), LogOffset::new(10));
    log.close().await;
}

mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any mix of record sizes, segment sizes and index spacing reads back the same, from
        /// any start offset, before and after reopening.
        #[test]
        fn round_trip(
            sizes in proptest::collection::vec(0usize..400, 1..80),
            segment_size_bytes in 40u64..2000,
            index_interval_bytes in 1u64..600,
            start_pick in any::<proptest::sample::Index>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let options = EmbeddedLogOptions {
                    segment_size_bytes,
                    index_interval_bytes,
                    ..EmbeddedLogOptions::default()
                };
                let storage = SimStorage::new();
                let values: Vec<Bytes> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| Bytes::from((0..n).map(|k| (i * 31 + k) as u8).collect::<Vec<_>>()))
                    .collect();
                let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), options.clone()).unwrap();
                for (i, v) in values.iter().enumerate() {
                    prop_assert_eq!(log.append(v.clone()).await.unwrap(), LogOffset::new(i as i64));
                }
                let start = start_pick.index(values.len());
                let mut reader = log.reader(ReadFrom::Offset(LogOffset::new(start as i64))).await.unwrap();
                let got = read_n(&mut reader, values.len() - start).await;
                for (k, rec) in got.iter().enumerate() {
                    prop_assert_eq!(&rec.value, &values[start + k]);
                }
                log.close().await;
                let log = EmbeddedLog::open_with_storage(Arc::new(storage), options).unwrap();
                let all = read_all(&log).await;
                prop_assert_eq!(all.len(), values.len());
                for (rec, v) in all.iter().zip(&values) {
                    prop_assert_eq!(&rec.value, v);
                }
                log.close().await;
                Ok(())
            })?;
        }
    }
}

/// The futures of `append`, `close` and a read can be spawned on a multi-threaded
/// runtime (they are `Send`), as the node does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_futures_are_send() {
    let log =
        EmbeddedLog::open_with_storage(Arc::new(SimStorage::new()), small_segments()).unwrap();
    let appended = tokio::spawn({
        let log = log.clone();
        async move { log.append(value(0, 10)).await }
    });
    assert_eq!(appended.await.unwrap().unwrap(), LogOffset::new(0));
    let read = tokio::spawn({
        let log = log.clone();
        async move { read_all(&log).await.len() }
    });
    assert_eq!(read.await.unwrap(), 1);
    tokio::spawn({
        let log = log.clone();
        async move { log.close().await }
    })
    .await
    .unwrap();
    assert!(matches!(
        log.append(value(1, 10)).await,
        Err(LogError::Closed)
    ));
}
