//! An in-memory log, for tests of the code that drives a [`Log`].
//!
//! Nothing is durable. Appends can be made to fail on demand, to test how callers
//! handle a log that refuses records.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use korder_types::sync::MutexExt;
use tokio::sync::watch;

use crate::{Log, LogError, LogOffset, LogReader, LogRecord, ReadFrom};

/// A log held in memory; clones share the same records.
#[derive(Clone)]
pub struct MemLog {
    inner: Arc<MemInner>,
}

struct MemInner {
    state: Mutex<MemState>,
    /// Number of records, and whether the log is closed; readers wait on it.
    len: watch::Sender<(i64, bool)>,
    max_record_bytes: usize,
}

#[derive(Default)]
struct MemState {
    records: Vec<Bytes>,
    /// Offset of the oldest record still held (records below it were removed).
    oldest: i64,
    failing_appends: usize,
    closed: bool,
}

impl Default for MemLog {
    fn default() -> Self {
        Self::new()
    }
}

impl MemLog {
    /// An empty log accepting records of any size.
    pub fn new() -> Self {
        Self::with_max_record_bytes(usize::MAX)
    }

    /// An empty log that refuses records larger than `max_record_bytes`.
    pub fn with_max_record_bytes(max_record_bytes: usize) -> Self {
        let (len, _) = watch::channel((0, false));
        Self {
            inner: Arc::new(MemInner {
                state: Mutex::new(MemState::default()),
                len,
                max_record_bytes,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, MemState> {
        self.inner.state.lock_unpoisoned()
    }

    /// The next `n` appends fail with `Unavailable` and write nothing.
    pub fn fail_next_appends(&self, n: usize) {
        self.state().failing_appends = n;
    }

    /// Refuses further appends with `Closed`; readers read what exists, then get `Closed`.
    pub fn close(&self) {
        self.state().closed = true;
        self.inner.len.send_modify(|(_, closed)| *closed = true);
    }

    /// The offset the next append will get.
    pub fn next_offset(&self) -> LogOffset {
        LogOffset::new(self.state().records.len() as i64)
    }

    /// Removes the records below `offset`, as Kafka's retention or DeleteRecords
    /// does: a reader can no longer start below it. Readers already open go on.
    pub fn remove_records_below(&self, offset: LogOffset) {
        let mut st = self.state();
        let len = st.records.len() as i64;
        st.oldest = st.oldest.max(offset.get().min(len));
    }

    /// A copy of every record, in offset order (removed ones included).
    pub fn records(&self) -> Vec<Bytes> {
        self.state().records.clone()
    }
    /// Appends at once; the record is readable when this returns.
    fn append_now(&self, record: Bytes) -> Result<LogOffset, LogError> {
        if record.len() > self.inner.max_record_bytes {
            return Err(LogError::RecordTooLarge {
                size: record.len(),
                max: self.inner.max_record_bytes,
            });
        }
        let next = {
            let mut st = self.state();
            if st.closed {
                return Err(LogError::Closed);
            }
            if st.failing_appends > 0 {
                st.failing_appends -= 1;
                return Err(LogError::Unavailable("injected append failure".to_owned()));
            }
            st.records.push(record);
            st.records.len() as i64
        };
        // Published under no lock: the watch only ever moves forward.
        self.inner
            .len
            .send_modify(|(len, _)| *len = (*len).max(next));
        Ok(LogOffset::new(next).prev())
    }
}

impl Log for MemLog {
    type Reader = MemReader;

    fn append(
        &self,
        record: Bytes,
    ) -> impl std::future::Future<Output = Result<LogOffset, LogError>> + Send + 'static {
        std::future::ready(self.append_now(record))
    }

    async fn reader(&self, from: ReadFrom) -> Result<MemReader, LogError> {
        let (oldest, len) = {
            let st = self.state();
            (st.oldest, st.records.len() as i64)
        };
        let start = match from {
            ReadFrom::Oldest => oldest,
            ReadFrom::Offset(o) => o.get(),
        };
        if !(oldest..=len).contains(&start) {
            return Err(LogError::OffsetOutOfRange {
                requested: start,
                oldest,
                next: len,
            });
        }
        Ok(MemReader {
            log: self.clone(),
            len: self.inner.len.subscribe(),
            next: start,
        })
    }
}

/// Reads a [`MemLog`] in offset order.
pub struct MemReader {
    log: MemLog,
    len: watch::Receiver<(i64, bool)>,
    next: i64,
}

impl LogReader for MemReader {
    async fn next(&mut self) -> Result<LogRecord, LogError> {
        let next = self.next;
        let available = self
            .len
            .wait_for(|&(len, closed)| len > next || closed)
            .await
            .map_err(|_| LogError::Closed)?
            .0;
        if available <= next {
            return Err(LogError::Closed);
        }
        let index = usize::try_from(next).map_err(|_| LogError::Closed)?;
        let value = self.log.state().records[index].clone();
        self.next += 1;
        Ok(LogRecord {
            offset: LogOffset::new(next),
            value,
        })
    }
}
