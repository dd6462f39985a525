//! The ordered log behind every channel.
//!
//! A channel's records (CONNECT, TIMETOCUT, REGULAR, encoded as `orderer.KafkaMessage`)
//! are totally ordered by one log: a Kafka topic partition in a cluster, or korder's
//! embedded file log on a single node. The chain state machine only ever sees this
//! trait, so it cannot know, and must not care, which log it runs on.
//!
//! Contract shared by every implementation:
//! - offsets start at 0 and grow by one per record, with no gaps;
//! - `append` resolves only once the record is durable (on disk for the embedded
//!   log, acknowledged by all in-sync replicas for Kafka) and reports its offset;
//! - a reader returns records in offset order, each exactly once, and waits for
//!   records that do not exist yet.
//!
//! This crate provides:
//! - [`MemLog`]: in memory, not durable, with injectable append failures; for tests.
//! - [`EmbeddedLog`]: the durable file log, one directory per channel.
//!
//! The embedded log reaches the disk only through `korder_storage::Storage`, so its
//! tests run it over that crate's crash simulator (feature `test-support`) and crash
//! it at every write and sync.
//!
//! It never interprets record values: bytes in, the same bytes out.
//!
//! # The embedded log
//!
//! A log owns no thread. `append` puts the record on the log's bounded queue and
//! waits. A small pool of writer threads, shared by every embedded log of the process
//! (at most [`WRITER_THREADS`], started as work needs them), does the writes: a log
//! with queued records is handed to the pool, and one pool thread takes everything
//! queued (up to a batch limit), writes it with one positional write, calls
//! `fdatasync` once, and only then hands each waiter its offset: **group commit**, so
//! many concurrent appenders share one fsync. A log is worked on by one thread at a
//! time, so it has at most one batch in flight; an idle log costs no thread, and
//! opening a log needs no async runtime. Readers read the files with positional reads
//! on the blocking pool and see only records already made durable; they wait on a
//! watch of the durable end.
//!
//! Durability contract:
//! - an `Ok(offset)` from `append` means the record is on disk at that offset and will
//!   be there, unchanged, after a crash or restart;
//! - an `Err` means the record was not acknowledged. After `Io` (a failed write or
//!   fsync, e.g. a full disk) the writer cuts the file back to its last durable end,
//!   so the record is not in the log and the log stays usable. A record whose append
//!   was interrupted by a crash may or may not be present after restart (never in
//!   part, never at another offset);
//! - after each group commit's records the writer appends a *commit frame* and only
//!   then fsyncs: records followed by a valid commit frame were acknowledged. Damage
//!   after the last valid commit frame of the last segment is a torn write that was
//!   never acknowledged: it is cut (and logged). Damage anywhere else is reported as
//!   [`LogError::Corrupt`] naming the file and byte position, never repaired, and no
//!   damaged record is ever returned;
//! - what is verified when: **on open**, the last segment: its header and every
//!   record and commit frame (it is the only one a torn write can end, since a
//!   segment is synced before the next one is created). Damage found there refuses
//!   the open until an operator decides ([`EmbeddedLog::check`],
//!   [`EmbeddedLog::truncate`], [`EmbeddedLog::reset`]). The older, sealed segments
//!   are only listed at open, not read: each is verified in full (its header, every
//!   checksum, commit frame and offset, and that it ends where the next segment
//!   starts) **the first time a reader reads it**, which also builds its index;
//!   damage found then fails that read, and every later read of the segment, with
//!   `Corrupt`. Every record is also
//!   checked against its checksum each time it is read. [`EmbeddedLog::check`] and
//!   [`EmbeddedLog::truncate`] verify every segment. Opening writes and syncs nothing
//!   unless it repairs something (a torn tail, an interrupted segment creation) or
//!   creates the first segment;
//! - segments that hold only records already in the ledger may be removed, oldest
//!   first ([`EmbeddedLog::remove_segments_below`]); the log then starts at the oldest
//!   remaining segment.
//!
//! # FORMAT
//!
//! A log directory holds segment files named `log_` followed by the offset of the
//! segment's first record as 20 decimal digits (`log_00000000000000000000`,
//! `log_00000000000000021845`, ...). Offsets continue without a gap from one segment
//! to the next; a new segment starts once the current one reaches
//! `segment_size_bytes` (64 MiB by default), between two group commits.
//! All integers are big-endian. Segment files are created with mode 0660, like the
//! ledger's block files.
//!
//! ```text
//! segment  = header (record+ commit)*
//! header   = magic[8] = "KORDLOG2"   base_offset: u64          (16 bytes)
//! record   = value_len: u32   crc: u32   offset: u64   value[value_len]
//! crc      = CRC32C (Castagnoli) of value_len ‖ offset ‖ value, as encoded above
//! commit   = 0xFFFFFFFF   ccrc: u32   next_offset: u64   position: u64   (24 bytes)
//! ccrc     = CRC32C of 0xFFFFFFFF ‖ next_offset ‖ position
//! ```
//!
//! A record's `offset` must be the previous record's plus one (the segment's
//! `base_offset` for the first); a commit frame's `next_offset` is the offset after
//! the record before it, and its `position` is its own byte position in the file (so
//! a copy elsewhere does not check). A record is valid only if its frame fits in the
//! file and its checksum matches. Records are at most 4294967294 bytes, so a value
//! length of 0xFFFFFFFF always marks a commit frame.
//!
//! Format 1 (`"KORDLOG1"`) segments hold records only. They are still read; new
//! records always go to a format 2 segment. In a format 1 last segment a damaged
//! record cannot be told from a torn write, so the tail from there is cut, as before. Nothing else is stored: the offset index (one entry per
//! `index_interval_bytes` of records) is rebuilt in memory when the log opens.

use std::future::Future;

use bytes::Bytes;

mod embedded;
mod format;
mod mem;

pub use embedded::{
    EmbeddedLog, EmbeddedLogOptions, EmbeddedLogStats, EmbeddedReader, LogCheck, LogDamage,
    WRITER_THREADS,
};
pub use mem::{MemLog, MemReader};

pub use korder_types::ids::LogOffset;

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// The oldest record the log still holds.
    Oldest,
    /// This exact offset. The next offset to be written is allowed (the reader waits);
    /// anything beyond it, or below the oldest retained record, is `OffsetOutOfRange`.
    Offset(LogOffset),
}

/// One record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub offset: LogOffset,
    pub value: Bytes,
}

/// Errors a log reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The requested start offset is not in the log.
    #[error("offset {requested} is out of range: the log holds offsets {oldest}..{next}")]
    OffsetOutOfRange {
        requested: i64,
        oldest: i64,
        next: i64,
    },
    /// The record is larger than the log accepts.
    #[error("record of {size} bytes exceeds the log's limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    /// The log has been closed (shutdown or halt).
    #[error("the log is closed")]
    Closed,
    /// The log cannot be used right now; the operation may succeed later.
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// An I/O error on the embedded log's files.
    #[error("log I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The log's stored data is damaged beyond what recovery may repair.
    #[error("log corrupted: {0}")]
    Corrupt(String),
    /// A failed write could not be undone; the log accepts nothing more until reopened.
    #[error("log stopped after an I/O error it could not undo ({0}); reopen it to recover")]
    Broken(String),
    /// The log's options are not usable.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
}

/// A channel's ordered, durable log.
pub trait Log: Send + Sync + 'static {
    /// The reader type this log hands out.
    type Reader: LogReader;

    /// Appends one record and resolves with its offset once the record is durable.
    ///
    /// The record is queued by the call itself, before the returned future is first
    /// polled: records appended one after another by one caller reach the log in the
    /// order of the calls, while their futures are awaited together (pipelining).
    /// If the record cannot be queued (too large, closed, queue full) the future
    /// resolves to that error and nothing is written. Dropping the future does not
    /// withdraw a queued record.
    fn append(
        &self,
        record: Bytes,
    ) -> impl Future<Output = Result<LogOffset, LogError>> + Send + 'static;

    /// Opens a reader positioned at `from`.
    fn reader(&self, from: ReadFrom)
    -> impl Future<Output = Result<Self::Reader, LogError>> + Send;
}

/// Reads a log in offset order.
pub trait LogReader: Send + 'static {
    /// The next record, waiting for it if it has not been written yet.
    fn next(&mut self) -> impl Future<Output = Result<LogRecord, LogError>> + Send;
}
