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

use std::future::Future;

use bytes::Bytes;

/// Position of a record in a channel's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogOffset(pub i64);

impl std::fmt::Display for LogOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

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
}

/// A channel's ordered, durable log.
pub trait Log: Send + Sync + 'static {
    /// The reader type this log hands out.
    type Reader: LogReader;

    /// Appends one record and resolves with its offset once the record is durable.
    fn append(&self, record: Bytes) -> impl Future<Output = Result<LogOffset, LogError>> + Send;

    /// Opens a reader positioned at `from`.
    fn reader(
        &self,
        from: ReadFrom,
    ) -> impl Future<Output = Result<Self::Reader, LogError>> + Send;
}

/// Reads a log in offset order.
pub trait LogReader: Send + 'static {
    /// The next record, waiting for it if it has not been written yet.
    fn next(&mut self) -> impl Future<Output = Result<LogRecord, LogError>> + Send;
}
