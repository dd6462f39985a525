//! The embedded log's segment scan and recovery, fed damaged files.
//!
//! A log of a few records is written through [`EmbeddedLog`] into in-memory storage
//! (small segments, so that there are several), every append acknowledged. The
//! input then damages the files: bytes changed anywhere, whole files overwritten
//! (their lengths kept), and bytes appended to the last segment as a write torn by a crash. Opening the
//! damaged log and reading all of it must end one of two ways:
//! - it opens, and reading every record yields every acknowledged record at its
//!   offset, unchanged (a torn tail is cut; records after the acknowledged ones may
//!   exist only if the appended bytes happen to form valid records). Under more than
//!   one fault the records of the last batch may be missing (damage to a record and
//!   to its commit frame is what a torn write looks like), but none is ever changed;
//! - it refuses with [`LogError::Corrupt`], naming one of the damaged files: at open
//!   (damage in the last segment), or, since the segments sealed at open are
//!   verified when first read, at the read that reaches the damage. Every record returned before that is acknowledged and
//!   unchanged.
//!
//! With only a torn tail and no other damage, it must open and read back whole. It
//! never panics. (A segment damaged into format 1, which has no commit frames, is
//! left out.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use korder_log::{EmbeddedLog, EmbeddedLogOptions, Log, LogError, LogOffset, LogReader, ReadFrom};
use korder_storage::sim::{CrashMode, SimStorage};

/// How one file is damaged.
#[derive(Arbitrary, Debug)]
enum Damage {
    /// XOR `mask` into the byte at `at` (modulo the file's length).
    Flip { file: u8, at: u16, mask: u8 },
    /// Replace the file's content by `bytes`, repeated to the file's length (zeros
    /// when empty). Damage keeps lengths: a file cut short is what a torn write
    /// looks like, and only an unacknowledged one can be told from damage.
    Overwrite { file: u8, bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Record values, appended one by one (at most 24 are used).
    records: Vec<Vec<u8>>,
    /// Segment size beyond the header, so that segments roll over.
    segment_extra: u16,
    damage: Vec<Damage>,
    /// Bytes appended to the last segment, as an unacknowledged write cut short.
    torn_tail: Vec<u8>,
}

const MAX_RECORDS: usize = 24;
const MAX_RECORD_BYTES: usize = 512;
const BOUND: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs one input; see the module docs for what it checks.
pub fn log_segments(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let options = EmbeddedLogOptions {
        segment_size_bytes: 64 + u64::from(input.segment_extra % 2048),
        index_interval_bytes: 64,
        ..EmbeddedLogOptions::default()
    };
    let rt = runtime();
    let storage = SimStorage::new();
    let acked: BTreeMap<i64, Bytes> = rt.block_on(async {
        let log = EmbeddedLog::open_with_storage(Arc::new(storage.clone()), options.clone())
            .expect("a new log opens");
        let mut acked = BTreeMap::new();
        for value in input.records.iter().take(MAX_RECORDS) {
            let mut value = value.clone();
            value.truncate(MAX_RECORD_BYTES);
            let value = Bytes::from(value);
            let offset = log.append(value.clone()).await.expect("append");
            acked.insert(offset.get(), value);
        }
        log.close().await;
        acked
    });

    let image = storage.crash_image(CrashMode::AllWrites);
    let mut names = image.file_names();
    names.sort();
    let mut damaged_files = Vec::new();
    for d in &input.damage {
        if names.is_empty() {
            break;
        }
        let (file, new) = match d {
            Damage::Flip { file, at, mask } => {
                let name = &names[usize::from(*file) % names.len()];
                let mut bytes = image.file_bytes(name).unwrap_or_default();
                if bytes.is_empty() || *mask == 0 {
                    continue;
                }
                let at = usize::from(*at) % bytes.len();
                bytes[at] ^= mask;
                (name.clone(), bytes)
            }
            Damage::Overwrite { file, bytes } => {
                let name = &names[usize::from(*file) % names.len()];
                let old = image.file_bytes(name).unwrap_or_default();
                let new: Vec<u8> = if bytes.is_empty() {
                    vec![0; old.len()]
                } else {
                    bytes.iter().copied().cycle().take(old.len()).collect()
                };
                if new == old {
                    continue;
                }
                (name.clone(), new)
            }
        };
        image.set_file_bytes(&file, new);
        damaged_files.push(file);
    }
    let torn = !input.torn_tail.is_empty() && !names.is_empty();
    if let Some(last) = names.last().filter(|_| torn) {
        let mut bytes = image.file_bytes(last).unwrap_or_default();
        bytes.extend_from_slice(&input.torn_tail);
        image.set_file_bytes(last, bytes);
    }

    // A format 1 segment has no commit frames: damage in its last records cannot be
    // told from a torn write (documented), so such an image checks nothing here.
    if names.iter().any(|n| {
        image
            .file_bytes(n)
            .is_some_and(|b| b.starts_with(b"KORDLOG1"))
    }) {
        return;
    }

    let refused = |message: &str| {
        assert!(
            !damaged_files.is_empty(),
            "a log with only a torn tail was refused: {message}"
        );
        assert!(
            damaged_files.iter().any(|f| message.contains(f.as_str())),
            "the refusal names none of the damaged files {damaged_files:?}: {message}"
        );
    };
    match EmbeddedLog::open_with_storage(Arc::new(image), options) {
        Err(LogError::Corrupt(message)) => refused(&message),
        Err(other) => panic!("opening a damaged log failed without naming the damage: {other}"),
        Ok(log) => {
            let (got, error) = rt.block_on(read_all(&log));
            if let Some(error) = error {
                match error {
                    LogError::Corrupt(message) => refused(&message),
                    other => {
                        panic!("reading a damaged log failed without naming the damage: {other}")
                    }
                }
                // What was served before the damage was reached is acknowledged and
                // unchanged.
                for (offset, value) in &got {
                    assert_eq!(
                        acked.get(offset),
                        Some(value),
                        "record {offset} served before the damage is not the acknowledged one (damaged: {damaged_files:?})"
                    );
                }
                rt.block_on(log.close());
                return;
            }
            for (offset, value) in &acked {
                if damaged_files.len() > 1 && !got.contains_key(offset) {
                    // Two faults can damage a last batch's record and its commit
                    // frame alike, which is what a torn write looks like.
                    continue;
                }
                assert_eq!(
                    got.get(offset),
                    Some(value),
                    "acknowledged record {offset} lost or changed (damaged: {damaged_files:?}, torn tail: {torn})"
                );
            }
            if !torn {
                let extra: Vec<&i64> = got.keys().filter(|o| !acked.contains_key(o)).collect();
                assert!(
                    extra.is_empty(),
                    "records appeared that were never appended: {extra:?}"
                );
            }
            rt.block_on(log.close());
        }
    }
}

/// Every record the log holds, by offset, up to the first read error (returned too).
async fn read_all(log: &EmbeddedLog) -> (BTreeMap<i64, Bytes>, Option<LogError>) {
    let (from, end) = (log.oldest_offset().get(), log.next_offset().get());
    let mut out = BTreeMap::new();
    if from >= end {
        return (out, None);
    }
    let mut reader = log
        .reader(ReadFrom::Offset(LogOffset::new(from)))
        .await
        .expect("a reader on an opened log");
    for _ in from..end {
        let record = tokio::time::timeout(BOUND, reader.next())
            .await
            .expect("a record within the bound");
        match record {
            Ok(record) => {
                out.insert(record.offset.get(), record.value);
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}
