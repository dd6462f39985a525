//! The embedded log: durable segment files, written by a small pool of threads
//! shared by every log of the process, with group commit.
//!
//! ```text
//!  append() ──queue (bounded)──▶ log ready ──▶ writer pool (≤ WRITER_THREADS threads)
//!     ▲                                          │ takes one batch of one log:
//!     │                                          │ write + fdatasync ──▶ segment file
//!     └──────── oneshot(offset) ◀────────────────┤
//!                                                └──▶ watch(durable end) ──▶ readers
//!                                                          (pread, blocking pool)
//! ```
//!
//! A log with nothing queued is in no thread: it is handed to the pool when an
//! append (or a close) is queued while it is idle, and a pool thread writes one
//! group commit of it, then hands it back to the pool if more is queued. A log is
//! never held by two threads, so it has at most one batch in flight.

use std::collections::VecDeque;
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};

use bytes::Bytes;
use korder_storage::{FsStorage, Storage, StorageFile};
use korder_types::sync::{CondvarExt, MutexExt, RwLockExt};
use tokio::sync::{oneshot, watch};

use crate::format::{
    COMMIT_FRAME_LEN, COMMIT_MARKER, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, Version,
    decode_commit, decode_record_header, decode_segment_header, encode_commit, encode_record,
    encode_segment_header, parse_segment_name, segment_name,
};
use crate::{Log, LogError, LogOffset, LogReader, LogRecord, ReadFrom};

/// Records a reader fetches from disk in one blocking call, at most.
const READ_BATCH_RECORDS: usize = 1024;
/// Value bytes a reader fetches from disk in one blocking call, at most (one record
/// may exceed it).
const READ_BATCH_BYTES: usize = 4 << 20;

/// Tunables of an [`EmbeddedLog`]. Every limit is explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedLogOptions {
    /// A new segment file is started once the current one holds this many bytes.
    pub segment_size_bytes: u64,
    /// Largest record value accepted; larger ones fail with `RecordTooLarge`.
    pub max_record_bytes: usize,
    /// Appends that may wait in the log's queue for a writer; more are refused with
    /// `Unavailable`.
    pub queue_capacity: usize,
    /// A group commit stops taking records once it holds this many value bytes.
    pub max_batch_bytes: usize,
    /// A group commit takes at most this many records.
    pub max_batch_records: usize,
    /// Distance in bytes between two entries of a segment's in-memory offset index.
    pub index_interval_bytes: u64,
}

impl Default for EmbeddedLogOptions {
    fn default() -> Self {
        Self {
            segment_size_bytes: 64 << 20,
            max_record_bytes: 100 << 20,
            queue_capacity: 16384,
            max_batch_bytes: 8 << 20,
            max_batch_records: 4096,
            index_interval_bytes: 64 << 10,
        }
    }
}

impl EmbeddedLogOptions {
    fn validate(&self) -> Result<(), LogError> {
        let bad = |what: &str| Err(LogError::InvalidConfig(what.to_owned()));
        if self.segment_size_bytes <= SEGMENT_HEADER_LEN {
            return bad("segment_size_bytes must exceed the 16-byte segment header");
        }
        let too_large = u32::try_from(self.max_record_bytes).map_or(true, |m| m == COMMIT_MARKER);
        if self.max_record_bytes == 0 || too_large {
            return bad("max_record_bytes must be between 1 and 4294967294");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1");
        }
        if self.max_batch_bytes == 0 || self.max_batch_records == 0 {
            return bad("max_batch_bytes and max_batch_records must be at least 1");
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be at least 1");
        }
        Ok(())
    }
}

/// Counters of a log's writes, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedLogStats {
    /// Records acknowledged as durable.
    pub records: u64,
    /// Value bytes of those records.
    pub value_bytes: u64,
    /// Group commits that succeeded (each wrote its records with one write and one fsync).
    pub commits: u64,
    /// Successful `fdatasync` calls, segment creation included.
    pub fsyncs: u64,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    value_bytes: AtomicU64,
    commits: AtomicU64,
    fsyncs: AtomicU64,
}

/// The durable end readers may read up to, and whether the writer has stopped.
#[derive(Clone, Copy, Debug)]
struct Durable {
    next: i64,
    closed: bool,
}

/// One segment file and what is known about its durable content.
struct Segment {
    base: i64,
    /// The segment's format, from its header; for a segment sealed at open, read when
    /// the segment is verified.
    version: OnceLock<Version>,
    path: String,
    file: Arc<dyn StorageFile>,
    state: Mutex<SegmentState>,
    /// Set for a segment that was already sealed when the log opened: its records are
    /// verified (and its index built) when it is first read, not at open.
    sealed: Option<Sealed>,
}

/// What a segment found sealed at open must hold, and whether that was checked yet.
struct Sealed {
    /// Base offset of the segment after it: where its records must end.
    next_base: i64,
    /// Its length in bytes when the log opened (a sealed segment never changes).
    len: u64,
    verified: Mutex<Verified>,
}

/// Whether a sealed segment's records were verified.
enum Verified {
    Not,
    Intact,
    /// The refusal reported to every read of the segment.
    Damaged(String),
}

struct SegmentState {
    /// Offset after the last durable record of the segment.
    end_offset: i64,
    /// File position after the last durable record of the segment.
    end_pos: u64,
    /// Sparse index: (offset, file position of that record), increasing.
    index: Vec<(i64, u64)>,
    index_interval_bytes: u64,
}

impl SegmentState {
    fn new(base: i64, index_interval_bytes: u64) -> Self {
        Self {
            end_offset: base,
            end_pos: SEGMENT_HEADER_LEN,
            index: Vec::new(),
            index_interval_bytes,
        }
    }

    /// Records that the record `offset` at `pos` is durable and ends at `end`.
    fn push(&mut self, offset: i64, pos: u64, end: u64) {
        assert_eq!(
            offset, self.end_offset,
            "records must be added in offset order"
        );
        assert_eq!(pos, self.end_pos, "records must be contiguous in the file");
        let due = self
            .index
            .last()
            .is_none_or(|&(_, last)| pos - last >= self.index_interval_bytes);
        if due {
            self.index.push((offset, pos));
        }
        self.end_offset = offset + 1;
        self.end_pos = end;
    }

    /// Records that a commit frame at the durable end is durable and ends at `end`.
    fn push_commit(&mut self, end: u64) {
        self.end_pos = end;
    }
}

impl Segment {
    fn new(
        base: i64,
        version: Option<Version>,
        path: String,
        file: Arc<dyn StorageFile>,
        options: &EmbeddedLogOptions,
        sealed: Option<Sealed>,
    ) -> Self {
        assert!(
            version.is_some() || sealed.is_some(),
            "only a segment sealed at open may have its header read later"
        );
        Self {
            base,
            version: version.map(OnceLock::from).unwrap_or_default(),
            path,
            file,
            state: Mutex::new(SegmentState::new(base, options.index_interval_bytes)),
            sealed,
        }
    }

    /// Makes sure the segment's records were verified before it is read: a segment
    /// sealed at open is scanned in full (checksums, commit frames, offsets, and its
    /// end against the next segment's start) the first time, which also builds its
    /// index. Damage found is reported as `Corrupt`, then and on every later read; an
    /// I/O error is not remembered (the next read tries again, from where this one
    /// stopped).
    fn verify_once(&self) -> Result<(), LogError> {
        let Some(sealed) = &self.sealed else {
            return Ok(());
        };
        let mut verified = sealed.verified.lock_unpoisoned();
        match &*verified {
            Verified::Intact => return Ok(()),
            Verified::Damaged(refusal) => return Err(LogError::Corrupt(refusal.clone())),
            Verified::Not => {}
        }
        let Some(damage) = self.find_damage(sealed)? else {
            *verified = Verified::Intact;
            tracing::debug!(path = %self.path, "log segment verified on first read");
            return Ok(());
        };
        let message = refusal(&damage);
        tracing::error!(%damage, "damaged log segment found on first read");
        *verified = Verified::Damaged(message.clone());
        Err(LogError::Corrupt(message))
    }

    /// Reads the header of a segment sealed at open and scans all of it; the first
    /// damage found, if any.
    fn find_damage(&self, sealed: &Sealed) -> Result<Option<LogDamage>, LogError> {
        let damage = |byte: u64, offset: i64, reason: String| LogDamage {
            file: self.path.clone(),
            byte,
            offset,
            reason,
        };
        if self.version.get().is_none() {
            let header =
                read_segment_header(self.file.as_ref(), sealed.len).map_err(|e| self.io(e))?;
            match header {
                Some((version, base)) if base == self.base => {
                    let _ = self.version.set(version);
                }
                _ => {
                    let reason = "missing or invalid segment header".to_owned();
                    return Ok(Some(damage(0, self.base, reason)));
                }
            }
        }
        if let Some(bad) = scan(self, sealed.len)? {
            return Ok(Some(damage(bad.pos, self.end().0, bad.reason)));
        }
        let end = self.end().0;
        Ok((end != sealed.next_base).then(|| {
            let reason = format!(
                "the segment ends at offset {end} but the next segment starts at offset {}",
                sealed.next_base
            );
            damage(sealed.len, end, reason)
        }))
    }

    /// The segment's format. Known for every segment that is read or written: a
    /// segment sealed at open is verified (its header read) before it is read.
    fn version(&self) -> Version {
        *self
            .version
            .get()
            .expect("a segment's format is known before it is read")
    }

    /// Bytes the segment holds on disk.
    fn disk_bytes(&self) -> u64 {
        match &self.sealed {
            Some(sealed) => sealed.len,
            None => self.end().1,
        }
    }

    fn state(&self) -> MutexGuard<'_, SegmentState> {
        self.state.lock_unpoisoned()
    }

    fn end(&self) -> (i64, u64) {
        let st = self.state();
        (st.end_offset, st.end_pos)
    }

    /// The indexed record at or before `offset`, or the segment start.
    fn index_floor(&self, offset: i64) -> (i64, u64) {
        let st = self.state();
        let i = st.index.partition_point(|&(o, _)| o <= offset);
        if i == 0 {
            (self.base, SEGMENT_HEADER_LEN)
        } else {
            st.index[i - 1]
        }
    }

    fn io(&self, source: io::Error) -> LogError {
        LogError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, pos: u64, what: impl std::fmt::Display) -> LogError {
        LogError::Corrupt(format!("{} at byte {pos}: {what}", self.path))
    }

    /// Reads and checks the frame header of record `expected` at `pos` or after the
    /// commit frames found there; returns the record's position and header.
    fn read_header(
        &self,
        mut pos: u64,
        expected: i64,
        end_pos: u64,
    ) -> Result<(u64, RecordHeader), LogError> {
        let mut head = [0u8; RECORD_HEADER_LEN as usize];
        let header = loop {
            self.file
                .read_exact_at(&mut head, pos)
                .map_err(|e| self.io(e))?;
            let header = decode_record_header(&head)
                .ok_or_else(|| self.corrupt(pos, "record offset field out of range"))?;
            if self.version() == Version::V1 || header.value_len != COMMIT_MARKER {
                break header;
            }
            if pos + COMMIT_FRAME_LEN > end_pos {
                return Err(self.corrupt(pos, "commit frame runs past the durable end"));
            }
            let mut frame = [0u8; COMMIT_FRAME_LEN as usize];
            self.file
                .read_exact_at(&mut frame, pos)
                .map_err(|e| self.io(e))?;
            if decode_commit(&frame, pos).is_none() {
                return Err(self.corrupt(pos, "damaged commit frame"));
            }
            pos += COMMIT_FRAME_LEN;
        };
        if header.offset != expected {
            return Err(self.corrupt(
                pos,
                format!(
                    "record holds offset {} where {expected} was expected",
                    header.offset
                ),
            ));
        }
        if pos + header.frame_len() > end_pos {
            return Err(self.corrupt(
                pos,
                format!(
                    "record {expected} of {} bytes runs past the durable end {end_pos}",
                    header.value_len
                ),
            ));
        }
        Ok((pos, header))
    }

    /// Reads record `expected` at `pos` and verifies its checksum.
    fn read_record(
        &self,
        pos: u64,
        expected: i64,
        end_pos: u64,
    ) -> Result<(u64, RecordHeader, Vec<u8>), LogError> {
        let (pos, header) = self.read_header(pos, expected, end_pos)?;
        let mut value = vec![0u8; header.value_len as usize];
        self.file
            .read_exact_at(&mut value, pos + RECORD_HEADER_LEN)
            .map_err(|e| self.io(e))?;
        if !header.checks(&value) {
            return Err(self.corrupt(pos, format!("checksum mismatch in record {expected}")));
        }
        Ok((pos, header, value))
    }
}

/// State shared by the log handles, the writer and the readers.
struct Shared {
    options: EmbeddedLogOptions,
    storage: Arc<dyn Storage>,
    segments: RwLock<Vec<Arc<Segment>>>,
    durable: watch::Sender<Durable>,
    closed: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read_unpoisoned()
    }

    fn oldest(&self) -> i64 {
        let segs = self.segments();
        assert!(!segs.is_empty(), "an open log always has a segment");
        segs[0].base
    }

    /// The segment that holds `offset` (or would, for the next offset).
    fn segment_for(&self, offset: i64) -> Result<Arc<Segment>, LogError> {
        let segs = self.segments();
        let i = segs.partition_point(|s| s.base <= offset);
        if i == 0 {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                oldest: segs.first().map_or(0, |s| s.base),
                next: self.durable.borrow().next,
            });
        }
        Ok(segs[i - 1].clone())
    }
}

enum Request {
    Append {
        value: Bytes,
        reply: oneshot::Sender<Result<LogOffset, LogError>>,
    },
    /// Stops the log after what was queued before it; the reply (none when the last
    /// handle was dropped) is sent once the log has stopped.
    Close { reply: Option<oneshot::Sender<()>> },
}

/// A durable, append-only file log for one channel.
///
/// Cloning gives another handle to the same log. The log stops when
/// [`EmbeddedLog::close`] is called or the last handle is dropped (after writing
/// what was queued). It owns no thread: its writes run on the writer threads shared
/// by every embedded log of the process (at most [`WRITER_THREADS`]).
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

/// The handles' part: dropping the last one stops the log.
struct Inner {
    core: Arc<LogCore>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let queue = self.core.queue.lock_unpoisoned();
        if !queue.stopped {
            self.core.enqueue(queue, Request::Close { reply: None });
        }
    }
}

impl EmbeddedLog {
    /// Opens (or creates) the log in directory `dir`, recovering from a crash if needed.
    /// Blocking: it reads the segment headers and scans the last segment. It needs no
    /// async runtime.
    pub fn open(dir: impl AsRef<Path>, options: EmbeddedLogOptions) -> Result<Self, LogError> {
        Self::open_with_storage(Arc::new(created(dir.as_ref())?), options)
    }

    /// Opens the log on any [`Storage`] (tests use the crash simulator of `korder-storage`).
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        options: EmbeddedLogOptions,
    ) -> Result<Self, LogError> {
        options.validate()?;
        POOL.start().map_err(|source| LogError::Io {
            path: "log writer thread".to_owned(),
            source,
        })?;
        let recovered = recover(storage.as_ref(), &options)?;
        let next = recovered.next_offset;
        tracing::info!(
            dir = %storage.describe(""),
            segments = recovered.segments.len(),
            oldest = recovered.segments.first().map_or(0, |s| s.base),
            next,
            ?options,
            "embedded log opened"
        );
        let active = recovered
            .segments
            .last()
            .cloned()
            .ok_or_else(|| LogError::Corrupt("recovery left no segment".to_owned()))?;
        let (durable, _) = watch::channel(Durable {
            next,
            closed: false,
        });
        let shared = Arc::new(Shared {
            options,
            storage: storage.clone(),
            segments: RwLock::new(recovered.segments),
            durable,
            closed: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let end_pos = active.end().1;
        let writer = Writer {
            shared: shared.clone(),
            storage,
            active,
            next_offset: next,
            end_pos,
            broken: None,
            buf: Vec::new(),
        };
        let core = Arc::new(LogCore {
            shared,
            queue: Mutex::new(Queue {
                requests: VecDeque::new(),
                appends: 0,
                scheduled: false,
                stopped: false,
            }),
            writer: Mutex::new(writer),
        });
        Ok(Self {
            inner: Arc::new(Inner { core }),
        })
    }

    /// Puts an append request on the log's queue; the receiver yields its result.
    fn queue(
        &self,
        record: Bytes,
    ) -> Result<oneshot::Receiver<Result<LogOffset, LogError>>, LogError> {
        let core = &self.inner.core;
        let options = &core.shared.options;
        if record.len() > options.max_record_bytes {
            return Err(LogError::RecordTooLarge {
                size: record.len(),
                max: options.max_record_bytes,
            });
        }
        let queue = core.queue.lock_unpoisoned();
        if queue.stopped || core.shared.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        if queue.appends >= options.queue_capacity {
            return Err(LogError::Unavailable(format!(
                "the embedded log's append queue is full ({} records waiting)",
                options.queue_capacity
            )));
        }
        let (reply, answer) = oneshot::channel();
        core.enqueue(
            queue,
            Request::Append {
                value: record,
                reply,
            },
        );
        Ok(answer)
    }

    /// The offset the next append will get (everything below it is durable).
    pub fn next_offset(&self) -> LogOffset {
        LogOffset::new(self.inner.core.shared.durable.borrow().next)
    }

    /// The oldest offset the log holds.
    pub fn oldest_offset(&self) -> LogOffset {
        LogOffset::new(self.inner.core.shared.oldest())
    }

    /// Appends queued and not yet taken into a commit.
    pub fn queued_appends(&self) -> usize {
        self.inner.core.queue.lock_unpoisoned().appends
    }

    /// Counters of the log's writes so far.
    pub fn stats(&self) -> EmbeddedLogStats {
        let c = &self.inner.core.shared.counters;
        EmbeddedLogStats {
            records: c.records.load(Ordering::Relaxed),
            value_bytes: c.value_bytes.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// Stops the log: appends queued before this call are written and acknowledged,
    /// later ones fail with `Closed`; it returns once the last write is done and no
    /// writer thread works on the log any more. Readers may still read every durable
    /// record, then get `Closed`. Calling it again does nothing.
    pub async fn close(&self) {
        let core = &self.inner.core;
        core.shared.closed.store(true, Ordering::SeqCst);
        let (reply, done) = oneshot::channel();
        {
            let queue = core.queue.lock_unpoisoned();
            if queue.stopped {
                return;
            }
            core.enqueue(queue, Request::Close { reply: Some(reply) });
        }
        // An error means the log stopped without answering (its writer panicked);
        // either way it is stopped.
        let _ = done.await;
    }
}

impl Log for EmbeddedLog {
    type Reader = EmbeddedReader;

    /// Queues the record for the writer at once (so appends keep the order of
    /// the calls) and resolves once it is on disk. A full queue is refused with
    /// `Unavailable` rather than waited for. Dropping the future does not withdraw
    /// the record.
    fn append(
        &self,
        record: Bytes,
    ) -> impl std::future::Future<Output = Result<LogOffset, LogError>> + Send + 'static {
        let queued = self.queue(record);
        async move {
            let answer = queued?;
            answer.await.map_err(|_| LogError::Closed)?
        }
    }

    async fn reader(&self, from: ReadFrom) -> Result<EmbeddedReader, LogError> {
        let shared = self.inner.core.shared.clone();
        let oldest = shared.oldest();
        let durable = shared.durable.subscribe();
        let next = durable.borrow().next;
        let start = match from {
            ReadFrom::Oldest => oldest,
            ReadFrom::Offset(o) => o.get(),
        };
        if start < oldest || start > next {
            return Err(LogError::OffsetOutOfRange {
                requested: start,
                oldest,
                next,
            });
        }
        Ok(EmbeddedReader {
            shared,
            durable,
            next: start,
            cursor: None,
            buffered: VecDeque::new(),
        })
    }
}

/// Position of a reader in the files: the record `next` starts at `pos` in `seg`.
struct Cursor {
    seg: Arc<Segment>,
    pos: u64,
}

/// Reads an [`EmbeddedLog`] in offset order; sees only durable records.
pub struct EmbeddedReader {
    shared: Arc<Shared>,
    durable: watch::Receiver<Durable>,
    next: i64,
    cursor: Option<Cursor>,
    buffered: VecDeque<LogRecord>,
}

impl EmbeddedReader {
    /// The offset of the record `next` will return.
    pub fn position(&self) -> LogOffset {
        LogOffset::new(self.next - self.buffered.len() as i64)
    }
}

impl LogReader for EmbeddedReader {
    async fn next(&mut self) -> Result<LogRecord, LogError> {
        if let Some(record) = self.buffered.pop_front() {
            return Ok(record);
        }
        let next = self.next;
        let target = {
            let durable = self
                .durable
                .wait_for(|d| d.next > next || d.closed)
                .await
                .map_err(|_| LogError::Closed)?;
            if durable.next <= next {
                return Err(LogError::Closed);
            }
            durable.next
        };
        let shared = self.shared.clone();
        let cursor = self.cursor.take();
        let (records, cursor) =
            tokio::task::spawn_blocking(move || read_batch(&shared, cursor, next, target))
                .await
                .map_err(|e| LogError::Unavailable(format!("log read task failed: {e}")))??;
        self.cursor = Some(cursor);
        self.next += records.len() as i64;
        self.buffered.extend(records);
        self.buffered
            .pop_front()
            .ok_or_else(|| LogError::Corrupt(format!("no record read at durable offset {next}")))
    }
}

/// Reads records from `next` (below `target`, the durable end), a bounded amount.
fn read_batch(
    shared: &Shared,
    cursor: Option<Cursor>,
    next: i64,
    target: i64,
) -> Result<(Vec<LogRecord>, Cursor), LogError> {
    let mut cur = match cursor {
        Some(c) => c,
        None => locate(shared, next)?,
    };
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut offset = next;
    while offset < target && out.len() < READ_BATCH_RECORDS && bytes < READ_BATCH_BYTES {
        let (seg_end, end_pos) = cur.seg.end();
        if offset >= seg_end {
            let seg = shared.segment_for(offset)?;
            seg.verify_once()?;
            assert_eq!(
                seg.base, offset,
                "offset {offset} is durable but no segment starts there"
            );
            cur = Cursor {
                seg,
                pos: SEGMENT_HEADER_LEN,
            };
            continue;
        }
        let (pos, header, value) = cur.seg.read_record(cur.pos, offset, end_pos)?;
        cur.pos = pos + header.frame_len();
        bytes += value.len();
        out.push(LogRecord {
            offset: LogOffset::new(offset),
            value: Bytes::from(value),
        });
        offset += 1;
    }
    Ok((out, cur))
}

/// Finds the file position of durable record `offset` through the sparse index
/// (verifying its segment first if that was not done yet).
fn locate(shared: &Shared, offset: i64) -> Result<Cursor, LogError> {
    let seg = shared.segment_for(offset)?;
    seg.verify_once()?;
    let (mut o, mut pos) = seg.index_floor(offset);
    let (_, end_pos) = seg.end();
    while o < offset {
        let (at, header) = seg.read_header(pos, o, end_pos)?;
        pos = at + header.frame_len();
        o += 1;
    }
    Ok(Cursor { seg, pos })
}

/// Writer threads shared by every embedded log of the process, at most. One is
/// started with the first log; more only while more logs wait than threads are free.
/// They live as long as the process.
pub const WRITER_THREADS: usize = 8;

/// The writer threads and the logs waiting for one.
static POOL: Pool = Pool {
    state: Mutex::new(PoolState {
        ready: VecDeque::new(),
        threads: 0,
        idle: 0,
    }),
    work: Condvar::new(),
};

struct Pool {
    state: Mutex<PoolState>,
    /// Signalled when a log is put on `ready`.
    work: Condvar,
}

struct PoolState {
    /// Logs with requests waiting, each at most once, in the order they got work.
    ready: VecDeque<Arc<LogCore>>,
    /// Writer threads started.
    threads: usize,
    /// Writer threads waiting for work.
    idle: usize,
}

impl Pool {
    /// Makes sure a writer thread runs, so that a log that opens can be written.
    fn start(&'static self) -> io::Result<()> {
        let mut st = self.state.lock_unpoisoned();
        if st.threads == 0 {
            self.spawn(&mut st)?;
        }
        Ok(())
    }

    fn spawn(&'static self, st: &mut PoolState) -> io::Result<()> {
        std::thread::Builder::new()
            .name("korder-log-writer".to_owned())
            .spawn(move || self.work())?;
        st.threads += 1;
        Ok(())
    }

    /// Hands a log with waiting requests to a writer thread. The caller has marked it
    /// scheduled, so that it is never on `ready` twice nor on two threads at once.
    fn schedule(&'static self, log: Arc<LogCore>) {
        let mut st = self.state.lock_unpoisoned();
        st.ready.push_back(log);
        // More logs waiting than threads free to take them: another thread, within
        // the limit, so that a burst on many logs is written in parallel.
        if st.ready.len() > st.idle
            && st.threads < WRITER_THREADS
            && let Err(e) = self.spawn(&mut st)
        {
            // The threads already running take the work.
            tracing::warn!(error = %e, threads = st.threads, "cannot start another log writer thread");
        }
        drop(st);
        self.work.notify_one();
    }

    /// A writer thread: one group commit of one ready log at a time.
    fn work(&'static self) {
        loop {
            let log = {
                let mut st = self.state.lock_unpoisoned();
                loop {
                    if let Some(log) = st.ready.pop_front() {
                        break log;
                    }
                    st.idle += 1;
                    st = self.work.wait_unpoisoned(st);
                    st.idle -= 1;
                }
            };
            // A panic is a bug in the log: that log stops (its appends fail with
            // Closed, as they would if it had its own thread), the others go on.
            if std::panic::catch_unwind(AssertUnwindSafe(|| log.run_once())).is_err() {
                tracing::error!("an embedded log's writer panicked; the log is stopped");
                log.shutdown();
            }
        }
    }
}

/// A log's write side: its queue of requests and the writer state that a pool
/// thread works on.
struct LogCore {
    shared: Arc<Shared>,
    queue: Mutex<Queue>,
    writer: Mutex<Writer>,
}

struct Queue {
    requests: VecDeque<Request>,
    /// Append requests among `requests` (bounded by `queue_capacity`).
    appends: usize,
    /// The log is on the pool's ready list or a writer thread is working on it.
    scheduled: bool,
    /// The log has stopped: nothing more is taken.
    stopped: bool,
}

type Waiter = (Bytes, oneshot::Sender<Result<LogOffset, LogError>>);

impl LogCore {
    /// Queues `request` behind the others and, if the log was idle, hands it to the pool.
    fn enqueue(self: &Arc<Self>, mut queue: MutexGuard<'_, Queue>, request: Request) {
        if matches!(request, Request::Append { .. }) {
            queue.appends += 1;
        }
        queue.requests.push_back(request);
        let idle = !std::mem::replace(&mut queue.scheduled, true);
        drop(queue);
        if idle {
            POOL.schedule(self.clone());
        }
    }

    /// Takes what is queued (up to the batch limits, and never past a close) and
    /// writes it as one group commit; then stops the log if a close was taken, or
    /// hands the log back to the pool if more is queued. Runs on a writer thread.
    fn run_once(self: &Arc<Self>) {
        let mut writer = self.writer.lock_unpoisoned();
        let (mut batch, close) = self.take_batch();
        if !batch.is_empty() {
            writer.commit(&mut batch);
        }
        drop(writer);
        if let Some(reply) = close {
            self.shutdown();
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
            return;
        }
        let mut queue = self.queue.lock_unpoisoned();
        if queue.requests.is_empty() {
            queue.scheduled = false;
            return;
        }
        drop(queue);
        POOL.schedule(self.clone());
    }

    /// The appends of the next group commit, and the close request that ends them, if
    /// one was reached.
    fn take_batch(&self) -> (Vec<Waiter>, Option<Option<oneshot::Sender<()>>>) {
        let options = &self.shared.options;
        let mut queue = self.queue.lock_unpoisoned();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while batch.len() < options.max_batch_records && bytes < options.max_batch_bytes {
            match queue.requests.pop_front() {
                None => break,
                Some(Request::Append { value, reply }) => {
                    queue.appends -= 1;
                    bytes += value.len();
                    batch.push((value, reply));
                }
                Some(Request::Close { reply }) => return (batch, Some(reply)),
            }
        }
        (batch, None)
    }

    /// Stops the log: refuses what is still queued and tells readers it is closed.
    fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let refused: Vec<Request> = {
            let mut queue = self.queue.lock_unpoisoned();
            queue.stopped = true;
            queue.scheduled = false;
            queue.appends = 0;
            queue.requests.drain(..).collect()
        };
        for request in refused {
            match request {
                Request::Append { reply, .. } => {
                    let _ = reply.send(Err(LogError::Closed));
                }
                Request::Close { reply } => {
                    if let Some(reply) = reply {
                        let _ = reply.send(());
                    }
                }
            }
        }
        self.shared.durable.send_modify(|d| d.closed = true);
        tracing::info!(
            next = self.shared.durable.borrow().next,
            "embedded log closed"
        );
    }
}

/// What a log's writes need between two group commits; a pool thread holds it while
/// it writes one.
struct Writer {
    shared: Arc<Shared>,
    storage: Arc<dyn Storage>,
    active: Arc<Segment>,
    next_offset: i64,
    /// Durable length of the active segment.
    end_pos: u64,
    /// Set when a failed write could not be undone: nothing more is written.
    broken: Option<String>,
    buf: Vec<u8>,
}

impl Writer {
    /// Writes the batch with one write and one fsync, then answers every waiter.
    fn commit(&mut self, batch: &mut Vec<Waiter>) {
        if let Some(reason) = &self.broken {
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(LogError::Broken(reason.clone())));
            }
            return;
        }
        let full = self.end_pos >= self.shared.options.segment_size_bytes
            || self.active.version() == Version::V1;
        let rolled = if full && self.next_offset > self.active.base {
            self.roll()
        } else {
            Ok(())
        };
        if let Err((path, e)) = rolled {
            tracing::error!(path, error = %e, "cannot start a new log segment");
            fail_all(batch, &path, &e);
            return;
        }
        let start = self.end_pos;
        self.buf.clear();
        let mut frames = Vec::with_capacity(batch.len());
        for (i, (value, _)) in batch.iter().enumerate() {
            let pos = start + self.buf.len() as u64;
            encode_record(&mut self.buf, self.next_offset + i as i64, value);
            frames.push((pos, start + self.buf.len() as u64, value.len()));
        }
        let commit_pos = start + self.buf.len() as u64;
        encode_commit(
            &mut self.buf,
            self.next_offset + batch.len() as i64,
            commit_pos,
        );
        let file = self.active.file.clone();
        let written = file
            .write_all_at(&self.buf, start)
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            tracing::error!(path = %self.active.path, error = %e, records = batch.len(), "log write failed");
            self.undo(start);
            fail_all(batch, &self.active.path, &e);
            return;
        }
        let counters = &self.shared.counters;
        counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        counters.commits.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = self.active.state();
            for (i, &(pos, end, _)) in frames.iter().enumerate() {
                st.push(self.next_offset + i as i64, pos, end);
            }
            st.push_commit(start + self.buf.len() as u64);
        }
        let first = self.next_offset;
        self.next_offset += batch.len() as i64;
        self.end_pos = start + self.buf.len() as u64;
        counters
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let value_bytes: usize = frames.iter().map(|f| f.2).sum();
        counters
            .value_bytes
            .fetch_add(value_bytes as u64, Ordering::Relaxed);
        let next = self.next_offset;
        self.shared.durable.send_modify(|d| d.next = next);
        for (i, (_, reply)) in batch.drain(..).enumerate() {
            let _ = reply.send(Ok(LogOffset::new(first + i as i64)));
        }
        // Keep a huge record's buffer from living on.
        if self.buf.capacity() > 2 * self.shared.options.max_batch_bytes {
            self.buf = Vec::new();
        }
    }

    /// Cuts the active segment back to its durable end after a failed write.
    fn undo(&mut self, durable_end: u64) {
        let file = &self.active.file;
        if let Err(e) = file.set_len(durable_end).and_then(|()| file.sync_data()) {
            let reason = format!(
                "{}: a failed write could not be cut back to byte {durable_end}: {e}",
                self.active.path
            );
            tracing::error!(%reason, "log stopped accepting appends");
            self.broken = Some(reason);
        }
    }

    /// Starts a new segment at the next offset and makes it durable before use.
    fn roll(&mut self) -> Result<(), (String, io::Error)> {
        let name = segment_name(self.next_offset);
        let path = self.storage.describe(&name);
        let err = |e: io::Error| (path.clone(), e);
        let file = self.storage.create(&name).map_err(err)?;
        file.write_all_at(&encode_segment_header(self.next_offset), 0)
            .map_err(err)?;
        file.sync_data().map_err(err)?;
        self.storage.sync_dir("").map_err(err)?;
        self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let seg = Arc::new(Segment::new(
            self.next_offset,
            Some(Version::V2),
            path.clone(),
            file,
            &self.shared.options,
            None,
        ));
        self.shared.segments.write_unpoisoned().push(seg.clone());
        tracing::debug!(path, base = self.next_offset, "new log segment");
        self.active = seg;
        self.end_pos = SEGMENT_HEADER_LEN;
        Ok(())
    }
}

fn fail_all(batch: &mut Vec<Waiter>, path: &str, e: &io::Error) {
    for (_, reply) in batch.drain(..) {
        let _ = reply.send(Err(LogError::Io {
            path: path.to_owned(),
            source: io::Error::new(e.kind(), e.to_string()),
        }));
    }
}

/// Where a log's stored data is damaged: the first place its records cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogDamage {
    /// The damaged segment file.
    pub file: String,
    /// Byte position of the damage in that file.
    pub byte: u64,
    /// Offset of the first record that cannot be read.
    pub offset: i64,
    /// What is wrong there.
    pub reason: String,
}

impl std::fmt::Display for LogDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {} (record {}): {}",
            self.file, self.byte, self.offset, self.reason
        )
    }
}

/// What [`EmbeddedLog::check`] found, without changing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCheck {
    /// Segment files.
    pub segments: usize,
    /// Bytes in the segment files.
    pub bytes: u64,
    /// Oldest offset held.
    pub oldest: i64,
    /// Offset after the last record that reads back intact (before any damage).
    pub next: i64,
    /// Damage in acknowledged data: opening the log refuses it.
    pub damage: Option<LogDamage>,
    /// An unacknowledged, incomplete last write that opening the log cuts off.
    pub torn_tail: Option<LogDamage>,
}

/// What a scan of every segment found.
enum Outcome {
    Clean,
    /// The last segment's header was never completely written.
    InterruptedCreation,
    /// The last segment ends with a write that was never acknowledged.
    TornTail(LogDamage),
    /// Acknowledged data is damaged in segment `index`.
    Damaged {
        index: usize,
        damage: LogDamage,
    },
}

struct Scanned {
    /// The segments up to the damaged one (included), each scanned up to its end or
    /// to the damage.
    segments: Vec<Arc<Segment>>,
    lens: Vec<u64>,
    outcome: Outcome,
}

fn storage_err(storage: &dyn Storage, name: &str) -> impl FnOnce(io::Error) -> LogError {
    let path = storage.describe(name);
    move |source| LogError::Io { path, source }
}

fn segment_bases(storage: &dyn Storage) -> Result<Vec<i64>, LogError> {
    let mut bases: Vec<i64> = storage
        .list("")
        .map_err(storage_err(storage, ""))?
        .iter()
        .filter(|n| storage.exists(n))
        .filter_map(|n| parse_segment_name(n))
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// How much of the log a scan verifies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Every record of every segment (`check`, `truncate`).
    All,
    /// What recovery needs (opening): the header and every record of the last
    /// segment, the only one a torn write can end. The sealed segments before it are
    /// verified when they are first read.
    Recovery,
}

/// Opens every segment and verifies what `verify` says (checksums included), without
/// changing anything.
fn scan_all(
    storage: &dyn Storage,
    options: &EmbeddedLogOptions,
    verify: Verify,
) -> Result<Scanned, LogError> {
    let bases = segment_bases(storage)?;
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    let mut lens = Vec::with_capacity(bases.len());
    let last = bases.len().saturating_sub(1);
    for (i, &base) in bases.iter().enumerate() {
        let name = segment_name(base);
        let path = storage.describe(&name);
        let file = storage.open(&name).map_err(storage_err(storage, &name))?;
        let len = file.len().map_err(storage_err(storage, &name))?;
        if verify == Verify::Recovery && i < last {
            // A sealed segment was completely synced before the next one was created:
            // recovery has nothing to do in it. Its header and records are verified
            // when it is first read.
            segments.push(Arc::new(Segment::new(
                base,
                None,
                path,
                file,
                options,
                Some(Sealed {
                    next_base: bases[i + 1],
                    len,
                    verified: Mutex::new(Verified::Not),
                }),
            )));
            lens.push(len);
            continue;
        }
        let damaged = |byte: u64, offset: i64, reason: String| Outcome::Damaged {
            index: i,
            damage: LogDamage {
                file: path.clone(),
                byte,
                offset,
                reason,
            },
        };
        let version =
            read_segment_header(file.as_ref(), len).map_err(storage_err(storage, &name))?;
        let version = match version {
            Some((v, b)) if b == base => v,
            _ if i == last && len <= SEGMENT_HEADER_LEN => {
                // A segment is fully written and synced before any record goes into
                // it: a short or damaged header alone is an interrupted creation.
                segments.push(Arc::new(Segment::new(
                    base,
                    Some(Version::V2),
                    path,
                    file,
                    options,
                    None,
                )));
                lens.push(len);
                return Ok(Scanned {
                    segments,
                    lens,
                    outcome: Outcome::InterruptedCreation,
                });
            }
            _ => {
                let outcome = damaged(0, base, "missing or invalid segment header".to_owned());
                segments.push(Arc::new(Segment::new(
                    base,
                    Some(Version::V2),
                    path,
                    file,
                    options,
                    None,
                )));
                lens.push(len);
                return Ok(Scanned {
                    segments,
                    lens,
                    outcome,
                });
            }
        };
        let seg = Arc::new(Segment::new(
            base,
            Some(version),
            path.clone(),
            file,
            options,
            None,
        ));
        // The end of a segment left unverified is checked against this base when the
        // segment is verified.
        let prev_end = segments
            .last()
            .filter(|p| p.sealed.is_none())
            .map(|p| p.end().0);
        let prev_path = segments.last().map(|p| p.path.clone());
        segments.push(seg.clone());
        lens.push(len);
        if let (Some(prev_end), Some(prev_path)) = (prev_end, prev_path)
            && prev_end != base
        {
            let outcome = damaged(
                0,
                prev_end,
                format!(
                    "the segment starts at offset {base} but {prev_path} ends at offset {prev_end}"
                ),
            );
            return Ok(Scanned {
                segments,
                lens,
                outcome,
            });
        }
        let Some(bad) = scan(&seg, len)? else {
            continue;
        };
        let offset = seg.end().0;
        let damage = LogDamage {
            file: path.clone(),
            byte: bad.pos,
            offset,
            reason: bad.reason,
        };
        let outcome = if i < last {
            // A sealed segment was completely synced before the next one was created:
            // nothing in it can be a torn write.
            Outcome::Damaged { index: i, damage }
        } else if version == Version::V1 {
            // Format 1 cannot tell a torn write from damage: the tail is cut, as it
            // always was for this format.
            Outcome::TornTail(damage)
        } else if let Some((at, upto)) = commit_after(&seg, bad.pos, len)? {
            Outcome::Damaged {
                index: i,
                damage: LogDamage {
                    reason: format!(
                        "{}; acknowledged records follow (the commit frame at byte {at} acknowledges records up to offset {})",
                        damage.reason,
                        upto - 1
                    ),
                    ..damage
                },
            }
        } else {
            Outcome::TornTail(damage)
        };
        return Ok(Scanned {
            segments,
            lens,
            outcome,
        });
    }
    Ok(Scanned {
        segments,
        lens,
        outcome: Outcome::Clean,
    })
}

fn read_segment_header(file: &dyn StorageFile, len: u64) -> io::Result<Option<(Version, i64)>> {
    if len < SEGMENT_HEADER_LEN {
        return Ok(None);
    }
    let mut head = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut head, 0)?;
    Ok(decode_segment_header(&head))
}

/// The last valid commit frame after byte `from` of `seg`: its position and the next
/// offset it records. Any such frame proves that what lies before it was acknowledged.
fn commit_after(seg: &Segment, from: u64, len: u64) -> Result<Option<(u64, i64)>, LogError> {
    let start = from + 1;
    if len < start + COMMIT_FRAME_LEN {
        return Ok(None);
    }
    let mut rest = vec![0u8; (len - start) as usize];
    seg.file
        .read_exact_at(&mut rest, start)
        .map_err(|e| seg.io(e))?;
    let marker = COMMIT_MARKER.to_be_bytes();
    let frame_len = COMMIT_FRAME_LEN as usize;
    for i in (0..=rest.len() - frame_len).rev() {
        if rest[i..i + 4] != marker {
            continue;
        }
        let mut frame = [0u8; COMMIT_FRAME_LEN as usize];
        frame.copy_from_slice(&rest[i..i + frame_len]);
        let pos = start + i as u64;
        if let Some(next) = decode_commit(&frame, pos) {
            return Ok(Some((pos, next)));
        }
    }
    Ok(None)
}

struct Recovered {
    segments: Vec<Arc<Segment>>,
    next_offset: i64,
}

/// Opens every segment, verifies the last one (its header and every record,
/// rebuilding its index) and cuts a torn tail off it; the sealed segments before it
/// are verified when first read. Damage found in acknowledged data is refused. Writes
/// and syncs nothing unless it repairs or creates something.
fn recover(storage: &dyn Storage, options: &EmbeddedLogOptions) -> Result<Recovered, LogError> {
    let scanned = scan_all(storage, options, Verify::Recovery)?;
    let mut segments = scanned.segments;
    match scanned.outcome {
        Outcome::Clean => {}
        Outcome::Damaged { damage, .. } => return Err(LogError::Corrupt(refusal(&damage))),
        Outcome::InterruptedCreation => {
            let seg = segments.pop().ok_or_else(|| {
                LogError::Corrupt("an interrupted segment creation without a segment".into())
            })?;
            tracing::warn!(path = %seg.path, "rewriting the header of an interrupted segment creation");
            segments.push(rewrite_empty(&seg, options)?);
        }
        Outcome::TornTail(torn) => {
            let seg = segments
                .last()
                .ok_or_else(|| LogError::Corrupt("a torn tail without a segment".into()))?;
            let len = scanned.lens.last().copied().unwrap_or(torn.byte);
            tracing::warn!(
                path = %seg.path,
                at_byte = torn.byte,
                cut_bytes = len - torn.byte,
                next_offset = torn.offset,
                reason = %torn.reason,
                "cutting an unacknowledged torn write off the end of the log"
            );
            seg.file
                .set_len(torn.byte)
                .and_then(|()| seg.file.sync_data())
                .map_err(|e| seg.io(e))?;
        }
    }
    if segments.is_empty() {
        segments.push(create_segment(storage, 0, options)?);
    }
    // A format 1 segment without records is rewritten in format 2, so that the writer
    // never puts commit frames into a format 1 segment.
    if let Some(last) = segments.last().cloned()
        && last.version() == Version::V1
        && last.end().0 == last.base
    {
        segments.pop();
        segments.push(rewrite_empty(&last, options)?);
    }
    let next_offset = segments.last().map_or(0, |s| s.end().0);
    Ok(Recovered {
        segments,
        next_offset,
    })
}

/// How a log refuses damage in acknowledged records, at open or on read.
fn refusal(damage: &LogDamage) -> String {
    format!(
        "{damage}; records from offset {} on cannot be read back ('korder log check' reports it, 'korder log truncate' or 'korder log reset' recovers)",
        damage.offset
    )
}

/// Rewrites `seg` as an empty format 2 segment with the same base offset.
fn rewrite_empty(seg: &Segment, options: &EmbeddedLogOptions) -> Result<Arc<Segment>, LogError> {
    let file = &seg.file;
    file.set_len(0)
        .and_then(|()| file.write_all_at(&encode_segment_header(seg.base), 0))
        .and_then(|()| file.sync_data())
        .map_err(|e| seg.io(e))?;
    Ok(Arc::new(Segment::new(
        seg.base,
        Some(Version::V2),
        seg.path.clone(),
        seg.file.clone(),
        options,
        None,
    )))
}

fn create_segment(
    storage: &dyn Storage,
    base: i64,
    options: &EmbeddedLogOptions,
) -> Result<Arc<Segment>, LogError> {
    let name = segment_name(base);
    let path = storage.describe(&name);
    let io_err = |source| LogError::Io {
        path: path.clone(),
        source,
    };
    let file = storage.create(&name).map_err(io_err)?;
    file.write_all_at(&encode_segment_header(base), 0)
        .map_err(io_err)?;
    file.sync_data().map_err(io_err)?;
    storage.sync_dir("").map_err(io_err)?;
    Ok(Arc::new(Segment::new(
        base,
        Some(Version::V2),
        path.clone(),
        file,
        options,
        None,
    )))
}

/// Why a scan stopped before the end of the file.
struct BadRecord {
    pos: u64,
    reason: String,
}

/// Walks the frames of `seg` from its start, verifying every checksum and adding
/// each good record (and commit frame) to its state.
fn scan(seg: &Segment, len: u64) -> Result<Option<BadRecord>, LogError> {
    let mut st = seg.state();
    let mut file = ChunkedReader::new(seg.file.as_ref(), len);
    loop {
        let pos = st.end_pos;
        let expected = st.end_offset;
        if pos == len {
            return Ok(None);
        }
        let bad = |reason: String| Ok(Some(BadRecord { pos, reason }));
        if len - pos < RECORD_HEADER_LEN {
            return bad(format!(
                "{} bytes, too short for a record header",
                len - pos
            ));
        }
        let mut head = [0u8; RECORD_HEADER_LEN as usize];
        head.copy_from_slice(
            file.bytes(pos, RECORD_HEADER_LEN as usize)
                .map_err(|e| seg.io(e))?,
        );
        if seg.version() == Version::V2 && head[..4] == COMMIT_MARKER.to_be_bytes() {
            if len - pos < COMMIT_FRAME_LEN {
                return bad("commit frame cut short".to_owned());
            }
            let mut frame = [0u8; COMMIT_FRAME_LEN as usize];
            frame.copy_from_slice(
                file.bytes(pos, COMMIT_FRAME_LEN as usize)
                    .map_err(|e| seg.io(e))?,
            );
            match decode_commit(&frame, pos) {
                Some(next) if next == expected => {
                    st.push_commit(pos + COMMIT_FRAME_LEN);
                    continue;
                }
                Some(next) => {
                    return bad(format!(
                        "commit frame records offset {next} where {expected} was expected"
                    ));
                }
                None => return bad("damaged commit frame".to_owned()),
            }
        }
        let Some(header) = decode_record_header(&head) else {
            return bad("record offset field out of range".to_owned());
        };
        if header.offset != expected {
            return bad(format!(
                "record holds offset {} where {expected} was expected",
                header.offset
            ));
        }
        let end = pos + header.frame_len();
        if end > len {
            return bad(format!(
                "record {expected} of {} bytes runs past the end of the file ({len} bytes)",
                header.value_len
            ));
        }
        let value = file
            .bytes(pos + RECORD_HEADER_LEN, header.value_len as usize)
            .map_err(|e| seg.io(e))?;
        if !header.checks(value) {
            return bad(format!("checksum mismatch in record {expected}"));
        }
        st.push(expected, pos, end);
    }
}

/// Bytes a scan reads from a segment file at once (a larger record is read whole).
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Reads a file front to back in chunks of [`SCAN_CHUNK_BYTES`], so that a scan makes
/// one read per chunk rather than two per record.
struct ChunkedReader<'a> {
    file: &'a dyn StorageFile,
    /// Length of the file: reads never go past it.
    len: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    start: u64,
}

impl<'a> ChunkedReader<'a> {
    fn new(file: &'a dyn StorageFile, len: u64) -> Self {
        Self {
            file,
            len,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The `n` bytes at `pos`, which the caller has checked lie within the file.
    fn bytes(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        let end = pos + n as u64;
        assert!(
            end <= self.len,
            "a scan reads within the file: {pos}+{n} > {}",
            self.len
        );
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            // `n` fits before the end, so the chunk holds it whole.
            let chunk = (n.max(SCAN_CHUNK_BYTES) as u64).min(self.len - pos) as usize;
            self.buf.resize(chunk, 0);
            if let Err(e) = self.file.read_exact_at(&mut self.buf, pos) {
                self.buf.clear();
                return Err(e);
            }
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        Ok(&self.buf[from..from + n])
    }
}

impl EmbeddedLog {
    /// Verifies every segment of the log in `dir` and reports the first damage,
    /// changing nothing. Blocking.
    pub fn check(dir: impl AsRef<Path>) -> Result<LogCheck, LogError> {
        Self::check_storage(&existing(dir.as_ref())?)
    }

    /// [`EmbeddedLog::check`] on any [`Storage`].
    pub fn check_storage(storage: &dyn Storage) -> Result<LogCheck, LogError> {
        let scanned = scan_all(storage, &EmbeddedLogOptions::default(), Verify::All)?;
        let all = segment_bases(storage)?.len();
        let bytes = scanned.lens.iter().sum::<u64>();
        let oldest = scanned.segments.first().map_or(0, |s| s.base);
        let next = scanned.segments.last().map_or(0, |s| s.end().0);
        let (damage, torn_tail) = match scanned.outcome {
            Outcome::Damaged { damage, .. } => (Some(damage), None),
            Outcome::TornTail(t) => (None, Some(t)),
            Outcome::Clean | Outcome::InterruptedCreation => (None, None),
        };
        Ok(LogCheck {
            segments: all,
            bytes,
            oldest,
            next,
            damage,
            torn_tail,
        })
    }

    /// Cuts the log in `dir` at its first damage, discarding every record from there
    /// on (later segments included), so that it opens again. Returns the damage cut,
    /// `None` if there was none. Blocking; the log must not be open.
    pub fn truncate(dir: impl AsRef<Path>) -> Result<Option<LogDamage>, LogError> {
        Self::truncate_storage(&existing(dir.as_ref())?)
    }

    /// [`EmbeddedLog::truncate`] on any [`Storage`].
    pub fn truncate_storage(storage: &dyn Storage) -> Result<Option<LogDamage>, LogError> {
        let scanned = scan_all(storage, &EmbeddedLogOptions::default(), Verify::All)?;
        let Outcome::Damaged { index, damage } = scanned.outcome else {
            return Ok(None);
        };
        // Later segments go first, newest first: a crash part way leaves a log whose
        // segments still follow one another.
        let bases = segment_bases(storage)?;
        let seg = &scanned.segments[index];
        for &base in bases.iter().rev().filter(|&&b| b > seg.base) {
            let name = segment_name(base);
            storage.remove(&name).map_err(storage_err(storage, &name))?;
            storage.sync_dir("").map_err(storage_err(storage, &name))?;
        }
        if damage.byte <= SEGMENT_HEADER_LEN {
            let name = segment_name(seg.base);
            storage.remove(&name).map_err(storage_err(storage, &name))?;
            storage.sync_dir("").map_err(storage_err(storage, &name))?;
            if index == 0 {
                create_segment(storage, seg.base, &EmbeddedLogOptions::default())?;
            }
        } else {
            seg.file
                .set_len(damage.byte)
                .and_then(|()| seg.file.sync_data())
                .map_err(|e| seg.io(e))?;
        }
        Ok(Some(damage))
    }

    /// Discards every record of the log in `dir`: it restarts empty, its next offset
    /// `next_offset`. Returns the number of segment files removed. Blocking; the log
    /// must not be open.
    pub fn reset(dir: impl AsRef<Path>, next_offset: i64) -> Result<usize, LogError> {
        Self::reset_storage(&created(dir.as_ref())?, next_offset)
    }

    /// [`EmbeddedLog::reset`] on any [`Storage`].
    pub fn reset_storage(storage: &dyn Storage, next_offset: i64) -> Result<usize, LogError> {
        if next_offset < 0 {
            return Err(LogError::InvalidConfig(format!(
                "next offset {next_offset} is negative"
            )));
        }
        let bases = segment_bases(storage)?;
        for &base in bases.iter().rev() {
            let name = segment_name(base);
            storage.remove(&name).map_err(storage_err(storage, &name))?;
        }
        storage.sync_dir("").map_err(storage_err(storage, ""))?;
        create_segment(storage, next_offset, &EmbeddedLogOptions::default())?;
        Ok(bases.len())
    }

    /// Removes the segment files that hold only records below `offset` (never the
    /// segment being written). Oldest first, each removal made durable: a crash at
    /// any point leaves a log whose segments still follow one another. Returns the
    /// number of segments removed. Blocking.
    pub fn remove_segments_below(&self, offset: LogOffset) -> Result<usize, LogError> {
        let shared = &self.inner.core.shared;
        let victims: Vec<Arc<Segment>> = {
            let mut segs = shared.segments.write_unpoisoned();
            let n = (1..segs.len())
                .take_while(|&i| segs[i].base <= offset.get())
                .count();
            segs.drain(..n).collect()
        };
        for seg in &victims {
            let name = segment_name(seg.base);
            shared
                .storage
                .remove(&name)
                .and_then(|()| shared.storage.sync_dir(""))
                .map_err(|e| seg.io(e))?;
            tracing::info!(path = %seg.path, below = offset.get(), "removed a log segment already in the ledger");
        }
        Ok(victims.len())
    }

    /// Bytes and segment files the log holds on disk.
    pub fn disk_usage(&self) -> (u64, usize) {
        let segs = self.inner.core.shared.segments();
        let bytes = segs.iter().map(|s| s.disk_bytes()).sum();
        (bytes, segs.len())
    }
}

/// The storage of an existing log directory (an error if there is none).
fn existing(dir: &Path) -> Result<FsStorage, LogError> {
    if !dir.is_dir() {
        return Err(LogError::Io {
            path: dir.display().to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such log directory"),
        });
    }
    Ok(FsStorage::new(dir))
}

/// The storage of log directory `dir`, created (with its parents) if missing.
fn created(dir: &Path) -> Result<FsStorage, LogError> {
    let storage = FsStorage::new(dir);
    storage.create_dir_all("").map_err(|source| LogError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(storage)
}
