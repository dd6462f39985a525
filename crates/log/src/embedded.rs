//! The embedded log: durable segment files, one writer thread with group commit.
//!
//! ```text
//!  append() ──bounded queue──▶ writer thread ──write + fdatasync──▶ segment file
//!     ▲                          │ one fsync per batch
//!     └──── oneshot(offset) ◀────┤
//!                                └──▶ watch(durable end) ──▶ readers (pread, blocking pool)
//! ```

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::format::{
    RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, decode_record_header,
    decode_segment_header, encode_record, encode_segment_header, parse_segment_name, segment_name,
};
use crate::storage::{FsStorage, Storage, StorageFile};
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
    /// Appends that may wait for the writer thread before `append` itself waits.
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
        if self.max_record_bytes == 0 || u32::try_from(self.max_record_bytes).is_err() {
            return bad("max_record_bytes must be between 1 and 4294967295");
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

/// Counters of the writer thread, for benchmarks and metrics.
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
    path: String,
    file: Arc<dyn StorageFile>,
    state: Mutex<SegmentState>,
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
}

impl Segment {
    fn state(&self) -> MutexGuard<'_, SegmentState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Reads and checks the frame header of record `expected` at `pos`.
    fn read_header(&self, pos: u64, expected: i64, end_pos: u64) -> Result<RecordHeader, LogError> {
        let mut head = [0u8; RECORD_HEADER_LEN as usize];
        self.file
            .read_exact_at(&mut head, pos)
            .map_err(|e| self.io(e))?;
        let header = decode_record_header(&head)
            .ok_or_else(|| self.corrupt(pos, "record offset field out of range"))?;
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
        Ok(header)
    }

    /// Reads record `expected` at `pos` and verifies its checksum.
    fn read_record(
        &self,
        pos: u64,
        expected: i64,
        end_pos: u64,
    ) -> Result<(RecordHeader, Vec<u8>), LogError> {
        let header = self.read_header(pos, expected, end_pos)?;
        let mut value = vec![0u8; header.value_len as usize];
        self.file
            .read_exact_at(&mut value, pos + RECORD_HEADER_LEN)
            .map_err(|e| self.io(e))?;
        if !header.checks(&value) {
            return Err(self.corrupt(pos, format!("checksum mismatch in record {expected}")));
        }
        Ok((header, value))
    }
}

/// State shared by the log handle, the writer thread and the readers.
struct Shared {
    options: EmbeddedLogOptions,
    segments: RwLock<Vec<Arc<Segment>>>,
    durable: watch::Sender<Durable>,
    closed: AtomicBool,
    counters: Counters,
}

impl Shared {
    fn segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read().unwrap_or_else(|p| p.into_inner())
    }

    fn oldest(&self) -> i64 {
        let segs = self.segments();
        assert!(!segs.is_empty(), "an open log always has a segment");
        segs[0].base
    }

    /// The segment that holds `offset` (or would, for the next offset).
    fn segment_for(&self, offset: i64) -> Arc<Segment> {
        let segs = self.segments();
        let i = segs.partition_point(|s| s.base <= offset);
        assert!(i > 0, "offset {offset} precedes the oldest segment");
        segs[i - 1].clone()
    }
}

enum Request {
    Append {
        value: Bytes,
        reply: oneshot::Sender<Result<LogOffset, LogError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// A durable, append-only file log for one channel.
///
/// Cloning gives another handle to the same log. The writer thread stops when
/// [`EmbeddedLog::close`] is called or the last handle is dropped (after writing
/// what was queued).
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Request>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EmbeddedLog {
    /// Opens (or creates) the log in directory `dir`, recovering from a crash if needed.
    /// Blocking: it scans the segment files.
    pub fn open(dir: impl AsRef<Path>, options: EmbeddedLogOptions) -> Result<Self, LogError> {
        let dir = dir.as_ref();
        let storage = FsStorage::new(dir).map_err(|source| LogError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Self::open_with_storage(Arc::new(storage), options)
    }

    /// Opens the log on any [`Storage`] (tests use [`crate::sim::SimStorage`]).
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        options: EmbeddedLogOptions,
    ) -> Result<Self, LogError> {
        options.validate()?;
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
            options: options.clone(),
            segments: RwLock::new(recovered.segments),
            durable,
            closed: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let (tx, rx) = mpsc::channel(options.queue_capacity);
        let end_pos = active.end().1;
        let writer = Writer {
            shared: shared.clone(),
            storage,
            rx,
            active,
            next_offset: next,
            end_pos,
            broken: None,
            buf: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("korder-log-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| LogError::Io {
                path: "writer thread".to_owned(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                tx,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Puts an append request on the writer's queue; the receiver yields its result.
    fn queue(
        &self,
        record: Bytes,
    ) -> Result<oneshot::Receiver<Result<LogOffset, LogError>>, LogError> {
        let shared = &self.inner.shared;
        if record.len() > shared.options.max_record_bytes {
            return Err(LogError::RecordTooLarge {
                size: record.len(),
                max: shared.options.max_record_bytes,
            });
        }
        if shared.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        match self.inner.tx.try_send(Request::Append {
            value: record,
            reply,
        }) {
            Ok(()) => Ok(answer),
            Err(mpsc::error::TrySendError::Full(_)) => Err(LogError::Unavailable(format!(
                "the embedded log's append queue is full ({} records waiting)",
                shared.options.queue_capacity
            ))),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(LogError::Closed),
        }
    }

    /// The offset the next append will get (everything below it is durable).
    pub fn next_offset(&self) -> LogOffset {
        LogOffset(self.inner.shared.durable.borrow().next)
    }

    /// The oldest offset the log holds.
    pub fn oldest_offset(&self) -> LogOffset {
        LogOffset(self.inner.shared.oldest())
    }

    /// Appends queued for the writer thread and not yet taken into a commit.
    pub fn queued_appends(&self) -> usize {
        self.inner.tx.max_capacity() - self.inner.tx.capacity()
    }

    /// Counters of the writer thread so far.
    pub fn stats(&self) -> EmbeddedLogStats {
        let c = &self.inner.shared.counters;
        EmbeddedLogStats {
            records: c.records.load(Ordering::Relaxed),
            value_bytes: c.value_bytes.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// Stops the log: appends queued before this call are written and acknowledged,
    /// later ones fail with `Closed`; then the writer thread exits. Readers may still
    /// read every durable record, then get `Closed`. Calling it again does nothing.
    pub async fn close(&self) {
        self.inner.shared.closed.store(true, Ordering::SeqCst);
        let (reply, done) = oneshot::channel();
        if self.inner.tx.send(Request::Close { reply }).await.is_ok() {
            // An error means the writer already stopped; either way it is done.
            let _ = done.await;
        }
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            // The writer has answered the close request and only returns now.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Log for EmbeddedLog {
    type Reader = EmbeddedReader;

    /// Queues the record for the writer thread at once (so appends keep the order of
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
        let shared = self.inner.shared.clone();
        let oldest = shared.oldest();
        let durable = shared.durable.subscribe();
        let next = durable.borrow().next;
        let start = match from {
            ReadFrom::Oldest => oldest,
            ReadFrom::Offset(LogOffset(o)) => o,
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
        LogOffset(self.next - self.buffered.len() as i64)
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
            let seg = shared.segment_for(offset);
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
        let (header, value) = cur.seg.read_record(cur.pos, offset, end_pos)?;
        cur.pos += header.frame_len();
        bytes += value.len();
        out.push(LogRecord {
            offset: LogOffset(offset),
            value: Bytes::from(value),
        });
        offset += 1;
    }
    Ok((out, cur))
}

/// Finds the file position of durable record `offset` through the sparse index.
fn locate(shared: &Shared, offset: i64) -> Result<Cursor, LogError> {
    let seg = shared.segment_for(offset);
    let (mut o, mut pos) = seg.index_floor(offset);
    let (_, end_pos) = seg.end();
    while o < offset {
        let header = seg.read_header(pos, o, end_pos)?;
        pos += header.frame_len();
        o += 1;
    }
    Ok(Cursor { seg, pos })
}

/// The thread that owns all writes.
struct Writer {
    shared: Arc<Shared>,
    storage: Arc<dyn Storage>,
    rx: mpsc::Receiver<Request>,
    active: Arc<Segment>,
    next_offset: i64,
    /// Durable length of the active segment.
    end_pos: u64,
    /// Set when a failed write could not be undone: nothing more is written.
    broken: Option<String>,
    buf: Vec<u8>,
}

type Waiter = (Bytes, oneshot::Sender<Result<LogOffset, LogError>>);

impl Writer {
    fn run(mut self) {
        let mut batch: Vec<Waiter> = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            let mut close = None;
            let mut bytes = 0usize;
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Append { value, reply } => {
                        bytes += value.len();
                        batch.push((value, reply));
                    }
                    Request::Close { reply } => {
                        close = Some(reply);
                        break;
                    }
                }
                if batch.len() < self.shared.options.max_batch_records
                    && bytes < self.shared.options.max_batch_bytes
                {
                    next = self.rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            if let Some(reply) = close {
                self.shutdown();
                let _ = reply.send(());
                return;
            }
        }
        self.shutdown();
    }

    /// Refuses what is still queued and tells readers the log is closed.
    fn shutdown(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.rx.close();
        while let Some(req) = self.rx.blocking_recv() {
            match req {
                Request::Append { reply, .. } => {
                    let _ = reply.send(Err(LogError::Closed));
                }
                Request::Close { reply } => {
                    let _ = reply.send(());
                }
            }
        }
        self.shared.durable.send_modify(|d| d.closed = true);
        tracing::info!(next = self.next_offset, "embedded log closed");
    }

    /// Writes the batch with one write and one fsync, then answers every waiter.
    fn commit(&mut self, batch: &mut Vec<Waiter>) {
        if let Some(reason) = &self.broken {
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(LogError::Broken(reason.clone())));
            }
            return;
        }
        let full = self.end_pos >= self.shared.options.segment_size_bytes;
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
            let _ = reply.send(Ok(LogOffset(first + i as i64)));
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
        self.storage.sync_dir().map_err(err)?;
        self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let seg = Arc::new(Segment {
            base: self.next_offset,
            path: path.clone(),
            file,
            state: Mutex::new(SegmentState::new(
                self.next_offset,
                self.shared.options.index_interval_bytes,
            )),
        });
        self.shared
            .segments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(seg.clone());
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

struct Recovered {
    segments: Vec<Arc<Segment>>,
    next_offset: i64,
}

/// Opens every segment, checks the chain of offsets, rebuilds the indexes and cuts a
/// torn tail off the last segment.
fn recover(storage: &dyn Storage, options: &EmbeddedLogOptions) -> Result<Recovered, LogError> {
    let io_err = |path: String| move |source| LogError::Io { path, source };
    let mut bases: Vec<i64> = storage
        .list()
        .map_err(io_err(storage.describe("")))?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    bases.sort_unstable();
    if bases.is_empty() {
        let seg = create_segment(storage, 0, options)?;
        return Ok(Recovered {
            segments: vec![seg],
            next_offset: 0,
        });
    }
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    let last = bases.len() - 1;
    for (i, &base) in bases.iter().enumerate() {
        let name = segment_name(base);
        let path = storage.describe(&name);
        if let Some(prev) = segments.last() {
            let (prev_end, _) = prev.end();
            if prev_end != base {
                return Err(LogError::Corrupt(format!(
                    "{path} starts at offset {base} but {} ends at offset {prev_end}",
                    prev.path
                )));
            }
        }
        let file = storage.open(&name).map_err(io_err(path.clone()))?;
        let seg = Arc::new(Segment {
            base,
            path: path.clone(),
            file,
            state: Mutex::new(SegmentState::new(base, options.index_interval_bytes)),
        });
        if i == last {
            recover_last(&seg)?;
        } else {
            scan_sealed(&seg)?;
        }
        segments.push(seg);
    }
    let next_offset = segments.last().map_or(0, |s| s.end().0);
    Ok(Recovered {
        segments,
        next_offset,
    })
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
    storage.sync_dir().map_err(io_err)?;
    Ok(Arc::new(Segment {
        base,
        path: path.clone(),
        file,
        state: Mutex::new(SegmentState::new(base, options.index_interval_bytes)),
    }))
}

/// Why a scan stopped before the end of the file.
struct BadRecord {
    pos: u64,
    reason: String,
}

/// Walks the records of `seg` from its start, adding each good one to its state.
/// With `verify`, values are read and checksums checked; otherwise only frames.
fn scan(seg: &Segment, len: u64, verify: bool) -> Result<Option<BadRecord>, LogError> {
    let mut st = seg.state();
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
        seg.file
            .read_exact_at(&mut head, pos)
            .map_err(|e| seg.io(e))?;
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
        if verify {
            let mut value = vec![0u8; header.value_len as usize];
            seg.file
                .read_exact_at(&mut value, pos + RECORD_HEADER_LEN)
                .map_err(|e| seg.io(e))?;
            if !header.checks(&value) {
                return bad(format!("checksum mismatch in record {expected}"));
            }
        }
        st.push(expected, pos, end);
    }
}

/// Reads and checks the segment header. `Ok(false)` if it is missing or invalid.
fn header_ok(seg: &Segment, len: u64) -> Result<bool, LogError> {
    if len < SEGMENT_HEADER_LEN {
        return Ok(false);
    }
    let mut head = [0u8; SEGMENT_HEADER_LEN as usize];
    seg.file
        .read_exact_at(&mut head, 0)
        .map_err(|e| seg.io(e))?;
    Ok(decode_segment_header(&head) == Some(seg.base))
}

/// A sealed segment was fully synced before the next one was created: any damage is
/// corruption, never a torn write. Checksums are verified when records are read.
fn scan_sealed(seg: &Segment) -> Result<(), LogError> {
    let len = seg.file.len().map_err(|e| seg.io(e))?;
    if !header_ok(seg, len)? {
        return Err(seg.corrupt(0, "missing or invalid segment header"));
    }
    if let Some(bad) = scan(seg, len, false)? {
        return Err(seg.corrupt(bad.pos, bad.reason));
    }
    Ok(())
}

/// The last segment may end with a write that a crash interrupted: verify every
/// record and cut the file after the last good one.
fn recover_last(seg: &Segment) -> Result<(), LogError> {
    let len = seg.file.len().map_err(|e| seg.io(e))?;
    if !header_ok(seg, len)? {
        // A segment is fully written and synced before any record goes into it, so a
        // short or damaged header with nothing after it is an interrupted creation.
        if len > SEGMENT_HEADER_LEN {
            return Err(seg.corrupt(0, "invalid segment header"));
        }
        tracing::warn!(path = %seg.path, len, "rewriting the header of an interrupted segment creation");
        let file = &seg.file;
        file.set_len(0)
            .and_then(|()| file.write_all_at(&encode_segment_header(seg.base), 0))
            .and_then(|()| file.sync_data())
            .map_err(|e| seg.io(e))?;
        return Ok(());
    }
    let Some(bad) = scan(seg, len, true)? else {
        return Ok(());
    };
    let (records, _) = seg.end();
    tracing::warn!(
        path = %seg.path,
        at_byte = bad.pos,
        cut_bytes = len - bad.pos,
        next_offset = records,
        reason = %bad.reason,
        "cutting a torn or corrupt tail off the log"
    );
    seg.file
        .set_len(bad.pos)
        .and_then(|()| seg.file.sync_data())
        .map_err(|e| seg.io(e))?;
    Ok(())
}
