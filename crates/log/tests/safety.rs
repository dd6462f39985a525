//! Damage to the embedded log's files: a flipped bit in acknowledged data is refused
//! with the file and byte named (never cut), a torn last write is cut, format 1 logs
//! still open, the recovery operations (check, truncate, reset) do what they say, and
//! removing old segments survives a crash at every step.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use korder_log::{EmbeddedLog, EmbeddedLogOptions, Log, LogError, LogOffset, LogReader, ReadFrom};
use korder_storage::sim::{CrashMode, SimStorage};

const BOUND: Duration = Duration::from_secs(30);
const FIRST: &str = "log_00000000000000000000";

fn value(i: usize) -> Bytes {
    let mut v = format!("record-{i}-").into_bytes();
    v.resize(40 + i % 23, b'a' + (i % 26) as u8);
    Bytes::from(v)
}

fn options() -> EmbeddedLogOptions {
    EmbeddedLogOptions {
        segment_size_bytes: 700,
        index_interval_bytes: 100,
        ..EmbeddedLogOptions::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Appends `n` records one after another (each its own group commit).
fn fill(storage: &SimStorage, n: usize) -> BTreeMap<i64, Bytes> {
    rt().block_on(async {
        let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), options()).unwrap();
        let start = log.next_offset().get() as usize;
        let mut acked = BTreeMap::new();
        for i in start..start + n {
            let off = log.append(value(i)).await.unwrap();
            acked.insert(off.get(), value(i));
        }
        log.close().await;
        acked
    })
}

/// Every record from `from` on, read back after opening `storage`.
fn read_from(log: &EmbeddedLog, from: i64) -> Vec<(i64, Bytes)> {
    try_read_from(log, from).unwrap()
}

/// Every record from `from` on, or the first read error (damage in a segment that was
/// sealed at open is found when it is first read).
fn try_read_from(log: &EmbeddedLog, from: i64) -> Result<Vec<(i64, Bytes)>, LogError> {
    rt().block_on(async {
        let end = log.next_offset().get();
        let mut reader = log
            .reader(ReadFrom::Offset(LogOffset::new(from)))
            .await
            .unwrap();
        let mut out = Vec::new();
        for _ in from..end {
            let r = tokio::time::timeout(BOUND, reader.next()).await.unwrap()?;
            out.push((r.offset.get(), r.value));
        }
        Ok(out)
    })
}

fn close(log: EmbeddedLog) {
    rt().block_on(log.close());
}

/// A bit flipped at any byte of any segment either is refused with that file named (at
/// open, or when a segment sealed at open is first read), or (in the last commit frame
/// only) reads back every acknowledged record intact.
#[test]
fn a_flipped_bit_anywhere_is_refused_or_harmless() {
    let base = SimStorage::new();
    let acked = fill(&base, 30);
    let names = base.file_names();
    assert!(names.len() >= 3, "expected several segments: {names:?}");
    let mut refused = 0;
    for name in &names {
        let bytes = base.file_bytes(name).unwrap();
        for pos in 0..bytes.len() {
            let storage = base.crash_image(CrashMode::AllWrites);
            let mut damaged = bytes.clone();
            damaged[pos] ^= 1 << (pos % 8);
            storage.set_file_bytes(name, damaged);
            match EmbeddedLog::open_with_storage(Arc::new(storage), options()) {
                Err(LogError::Corrupt(msg)) => {
                    assert!(msg.contains(name), "{msg}");
                    refused += 1;
                }
                Err(other) => panic!("{name} byte {pos}: unexpected error {other}"),
                Ok(log) => {
                    match try_read_from(&log, 0) {
                        Err(LogError::Corrupt(msg)) => {
                            assert!(msg.contains(name), "{msg}");
                            refused += 1;
                        }
                        Err(other) => panic!("{name} byte {pos}: unexpected read error {other}"),
                        Ok(got) => {
                            let got: BTreeMap<i64, Bytes> = got.into_iter().collect();
                            assert_eq!(
                                got, acked,
                                "{name} byte {pos}: acknowledged records changed"
                            );
                        }
                    }
                    close(log);
                }
            }
        }
    }
    assert!(refused > 0);
}

/// The reproduction of the lost records: many acknowledged batches, one bit flipped
/// well inside them; the log refuses to open and names the file and the byte.
#[test]
fn damage_inside_acknowledged_records_is_named() {
    let storage = SimStorage::new();
    let big = EmbeddedLogOptions::default();
    rt().block_on(async {
        let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), big.clone()).unwrap();
        for i in 0..200 {
            log.append(value(i)).await.unwrap();
        }
        log.close().await;
    });
    let mut bytes = storage.file_bytes(FIRST).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    storage.set_file_bytes(FIRST, bytes.clone());
    match EmbeddedLog::open_with_storage(Arc::new(storage.clone()), big).err() {
        Some(LogError::Corrupt(msg)) => {
            assert!(msg.contains(&format!("sim:{FIRST} at byte")), "{msg}");
            assert!(msg.contains("acknowledged records follow"), "{msg}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(storage.file_bytes(FIRST).unwrap(), bytes, "nothing was cut");
}

/// A last write torn at any byte (never acknowledged) is cut silently and every
/// acknowledged record stays.
#[test]
fn a_torn_last_write_is_cut() {
    let base = SimStorage::new();
    let acked = fill(&base, 5);
    let before = base.file_bytes(FIRST).unwrap();
    let extra = fill(&base, 3);
    let after = base.file_bytes(FIRST).unwrap();
    assert_eq!(after.len() > before.len(), !extra.is_empty());
    for cut in before.len()..after.len() {
        let storage = base.crash_image(CrashMode::AllWrites);
        storage.set_file_bytes(FIRST, after[..cut].to_vec());
        let log = EmbeddedLog::open_with_storage(Arc::new(storage), options()).unwrap();
        let got: BTreeMap<i64, Bytes> = read_from(&log, 0).into_iter().collect();
        for (off, v) in &acked {
            assert_eq!(got.get(off), Some(v), "cut at {cut}: record {off}");
        }
        close(log);
    }
}

/// Encodes a format 1 segment holding `values` from offset `base`.
fn v1_segment(base: i64, values: &[Bytes]) -> Vec<u8> {
    let mut out = b"KORDLOG1".to_vec();
    out.extend_from_slice(&(base as u64).to_be_bytes());
    for (i, v) in values.iter().enumerate() {
        let off = (base + i as i64) as u64;
        let len = v.len() as u32;
        let crc = crc32c::crc32c(&len.to_be_bytes());
        let crc = crc32c::crc32c_append(crc, &off.to_be_bytes());
        let crc = crc32c::crc32c_append(crc, v);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&crc.to_be_bytes());
        out.extend_from_slice(&off.to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// A format 1 log opens, reads back, takes new records (in a new format 2 segment)
/// and opens again.
#[test]
fn format_1_logs_still_open() {
    let storage = SimStorage::new();
    let old: Vec<Bytes> = (0..5).map(value).collect();
    storage.set_file_bytes(FIRST, v1_segment(0, &old));
    let new = fill(&storage, 4);
    assert_eq!(new.keys().copied().collect::<Vec<_>>(), vec![5, 6, 7, 8]);
    assert_eq!(
        storage.file_names().len(),
        2,
        "new records go to a new segment"
    );
    assert_eq!(&storage.file_bytes(FIRST).unwrap()[..8], b"KORDLOG1");
    let log = EmbeddedLog::open_with_storage(Arc::new(storage), options()).unwrap();
    let got = read_from(&log, 0);
    assert_eq!(got.len(), 9);
    assert_eq!(got[4].1, old[4]);
    assert_eq!(got[8].1, new[&8]);
    close(log);
}

/// check reports the first damage without changing anything; truncate cuts there and
/// the log opens with the records before it; reset restarts the log at a given offset.
#[test]
fn check_truncate_and_reset_recover_a_damaged_log() {
    let storage = SimStorage::new();
    let acked = fill(&storage, 30);
    let clean = EmbeddedLog::check_storage(&storage).unwrap();
    assert_eq!(clean.damage, None);
    assert_eq!(clean.next, 30);
    let mut bytes = storage.file_bytes(FIRST).unwrap();
    bytes[200] ^= 0x20;
    storage.set_file_bytes(FIRST, bytes.clone());
    let report = EmbeddedLog::check_storage(&storage).unwrap();
    let damage = report.damage.expect("damage reported");
    assert_eq!(damage.file, format!("sim:{FIRST}"));
    assert!(damage.byte <= 200, "{damage}");
    assert_eq!(
        storage.file_bytes(FIRST).unwrap(),
        bytes,
        "check changes nothing"
    );

    let cut = EmbeddedLog::truncate_storage(&storage).unwrap().unwrap();
    assert_eq!(cut, damage);
    assert_eq!(storage.file_names(), vec![FIRST.to_owned()]);
    let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), options()).unwrap();
    assert_eq!(log.next_offset().get(), damage.offset);
    for (off, v) in read_from(&log, 0) {
        assert_eq!(acked[&off], v);
    }
    close(log);
    assert_eq!(EmbeddedLog::truncate_storage(&storage).unwrap(), None);

    assert_eq!(EmbeddedLog::reset_storage(&storage, 1234).unwrap(), 1);
    let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), options()).unwrap();
    assert_eq!(log.next_offset(), LogOffset::new(1234));
    assert_eq!(log.oldest_offset(), LogOffset::new(1234));
    close(log);
    let more = fill(&storage, 2);
    assert_eq!(more.keys().copied().collect::<Vec<_>>(), vec![1234, 1235]);
}

/// Removing the segments below an offset keeps the segment holding it and every
/// later record; disk use shrinks; the log reopens at the new oldest offset.
#[test]
fn old_segments_are_removed() {
    let storage = SimStorage::new();
    let acked = fill(&storage, 60);
    let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), options()).unwrap();
    let (bytes_before, segs_before) = log.disk_usage();
    assert!(segs_before > 4);
    let removed = log.remove_segments_below(LogOffset::new(40)).unwrap();
    assert!(removed > 0);
    let (bytes_after, segs_after) = log.disk_usage();
    assert_eq!(segs_after, segs_before - removed);
    assert!(bytes_after < bytes_before);
    assert!(log.oldest_offset().get() <= 40);
    let got = read_from(&log, 40);
    assert_eq!(got.len(), 20);
    let err = rt()
        .block_on(log.reader(ReadFrom::Offset(LogOffset::new(0))))
        .err();
    assert!(matches!(err, Some(LogError::OffsetOutOfRange { .. })));
    // Never the segment being written, even past the end.
    log.remove_segments_below(LogOffset::new(1000)).unwrap();
    assert_eq!(log.disk_usage().1, 1);
    close(log);
    let log = EmbeddedLog::open_with_storage(Arc::new(storage), options()).unwrap();
    assert_eq!(log.next_offset(), LogOffset::new(60));
    let oldest = log.oldest_offset().get();
    for (off, v) in read_from(&log, oldest) {
        assert_eq!(acked[&off], v);
    }
    close(log);
}

/// A crash at every step of removing old segments, in every crash mode, leaves a log
/// that opens, holds every record from the removal point on, and takes new records.
#[test]
fn removing_segments_survives_a_crash_at_every_step() {
    let base = SimStorage::new();
    let acked = fill(&base, 60);
    let ops_before = {
        let probe = base.crash_image(CrashMode::AllWrites);
        let log = EmbeddedLog::open_with_storage(Arc::new(probe.clone()), options()).unwrap();
        let start = probe.ops();
        log.remove_segments_below(LogOffset::new(45)).unwrap();
        let n = probe.ops() - start;
        close(log);
        n
    };
    assert!(ops_before >= 2);
    for step in 0..ops_before {
        for mode in CrashMode::FIXED {
            let storage = base.crash_image(CrashMode::AllWrites);
            let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), options()).unwrap();
            storage.crash_at(storage.ops() + step);
            assert!(log.remove_segments_below(LogOffset::new(45)).is_err());
            close(log);
            let image = storage.crash_image(mode);
            let log = EmbeddedLog::open_with_storage(Arc::new(image.clone()), options())
                .unwrap_or_else(|e| panic!("step {step} {mode:?}: {e}"));
            assert_eq!(log.next_offset(), LogOffset::new(60));
            assert!(log.oldest_offset().get() <= 45);
            for (off, v) in read_from(&log, 45) {
                assert_eq!(acked[&off], v, "step {step} {mode:?}");
            }
            let next = rt().block_on(log.append(value(60))).unwrap();
            assert_eq!(next, LogOffset::new(60));
            close(log);
        }
    }
}
