//! A pipelined block writer: the caller hands over block N+1 and goes on building
//! block N+2 while N+1 is written and fsynced.
//!
//! ```text
//! caller ── submit(N+1) ──▶ append pool: append(N+1) … fsync … publish
//! caller builds N+2 … submit(N+2) waits here until N+1 is durable
//! ```
//!
//! At most one block of a writer is in flight: `submit` waits until the previous
//! block is durable, then hands the block to the process's append pool and returns.
//! The pool is shared by every writer of the process, so a node's threads do not
//! grow with its channel count: at most [`MAX_APPEND_THREADS`] threads, started as
//! appends need them. Each writer has both a blocking API (for threads) and an async
//! one (for tasks). A failed append stops the writer; every later call reports that
//! failure.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use korder_proto::common::Block;
use korder_types::ids::BlockNumber;
use korder_types::sync::{CondvarExt, MutexExt};
use tokio::sync::Notify;

use crate::error::LedgerError;
use crate::store::BlockStore;

/// Most threads the append pool runs: blocks of this many channels are written and
/// synced at once (the file system batches concurrent syncs into one journal commit).
pub const MAX_APPEND_THREADS: usize = 8;

type Job = Box<dyn FnOnce() + Send>;

/// The threads that append blocks for every writer of the process.
struct Pool {
    tx: Sender<Job>,
    rx: Arc<Mutex<Receiver<Job>>>,
    /// Threads started, and how many of them wait for a job.
    threads: Mutex<(usize, usize)>,
}

impl Pool {
    fn get() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            Pool {
                tx,
                rx: Arc::new(Mutex::new(rx)),
                threads: Mutex::new((0, 0)),
            }
        })
    }

    /// Queues `job`, starting a thread if none is idle and the pool is below its cap.
    fn run(&'static self, job: Job) -> Result<(), std::io::Error> {
        {
            let mut t = self.threads.lock_unpoisoned();
            let (started, idle) = *t;
            if idle == 0 && started < MAX_APPEND_THREADS {
                let spawned = std::thread::Builder::new()
                    .name(format!("ledger-append-{started}"))
                    .spawn(move || self.work());
                match spawned {
                    Ok(_) => t.0 += 1,
                    // Another thread will take the job; with none at all it cannot run.
                    Err(e) if started == 0 => return Err(e),
                    Err(_) => {}
                }
            }
        }
        self.tx
            .send(job)
            .map_err(|_| std::io::Error::other("the append pool has stopped"))
    }

    fn work(&self) {
        loop {
            self.threads.lock_unpoisoned().1 += 1;
            let job = self.rx.lock_unpoisoned().recv();
            self.threads.lock_unpoisoned().1 -= 1;
            match job {
                Ok(job) => job(),
                Err(_) => return,
            }
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    failure: Mutex<Option<Arc<LedgerError>>>,
    /// Whether a block is being appended.
    busy: Mutex<bool>,
    idle: Condvar,
    idle_async: Notify,
}

impl Shared {
    fn failure(&self) -> Option<Arc<LedgerError>> {
        self.failure.lock_unpoisoned().clone()
    }

    fn wait_idle(&self) {
        let mut busy = self.busy.lock_unpoisoned();
        while *busy {
            busy = self.idle.wait_unpoisoned(busy);
        }
    }

    async fn wait_idle_async(&self) {
        loop {
            let notified = self.idle_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !*self.busy.lock_unpoisoned() {
                return;
            }
            notified.await;
        }
    }

    fn set_idle(&self) {
        *self.busy.lock_unpoisoned() = false;
        self.idle.notify_all();
        self.idle_async.notify_waiters();
    }
}

type Observer = Arc<dyn Fn(std::time::Duration) + Send + Sync>;

/// Appends blocks to a [`BlockStore`] on the shared append pool, one block in flight.
pub struct PipelinedWriter {
    store: BlockStore,
    shared: Arc<Shared>,
    commit_time: Observer,
    closed: bool,
}

impl std::fmt::Debug for PipelinedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelinedWriter")
            .field("store", &self.store)
            .field("shared", &self.shared)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl PipelinedWriter {
    /// A writer for `store`.
    pub fn new(store: BlockStore) -> Result<Self, LedgerError> {
        Self::observed(store, |_| {})
    }

    /// A writer for `store`; `commit_time` learns how long each block's append
    /// (write, index and fsync) took.
    pub fn observed(
        store: BlockStore,
        commit_time: impl Fn(std::time::Duration) + Send + Sync + 'static,
    ) -> Result<Self, LedgerError> {
        Ok(Self {
            store,
            shared: Arc::new(Shared::default()),
            commit_time: Arc::new(commit_time),
            closed: false,
        })
    }

    /// The store being written.
    pub fn store(&self) -> &BlockStore {
        &self.store
    }

    /// The failure that stopped the writer, if any.
    pub fn failure(&self) -> Option<Arc<LedgerError>> {
        self.shared.failure()
    }

    /// Hands `block` to the append pool. Returns once the previous block is durable
    /// and this one is on its way. Fails if an earlier block failed (the block is
    /// then not written). Blocking: for threads.
    pub fn submit(&self, block: Block) -> Result<(), LedgerError> {
        self.shared.wait_idle();
        self.dispatch(block)
    }

    /// [`PipelinedWriter::submit`] for tasks: waits for the previous block without
    /// blocking a thread.
    pub async fn submit_async(&self, block: Block) -> Result<(), LedgerError> {
        self.shared.wait_idle_async().await;
        self.dispatch(block)
    }

    fn dispatch(&self, block: Block) -> Result<(), LedgerError> {
        if let Some(f) = self.failure() {
            return Err(LedgerError::WriterFailed(f));
        }
        if self.closed {
            return Err(LedgerError::Closed);
        }
        *self.shared.busy.lock_unpoisoned() = true;
        let store = self.store.clone();
        let shared = self.shared.clone();
        let commit_time = self.commit_time.clone();
        let job = Box::new(move || {
            let began = std::time::Instant::now();
            let appended = store.append(&block);
            commit_time(began.elapsed());
            if let Err(e) = appended {
                let number = block.header.as_ref().map_or(0, |h| h.number);
                tracing::error!(channel = %store.channel(), block = number, error = %e, "block append failed; the writer stops");
                *shared.failure.lock_unpoisoned() = Some(Arc::new(e));
                store.notify_all();
            }
            // The job's handle on the store goes before the writer reads idle: once
            // `close` returns, no pool thread holds the store (whose last handle
            // closes its files).
            drop(store);
            shared.set_idle();
        });
        Pool::get().run(job).map_err(|source| {
            self.shared.set_idle();
            LedgerError::Io {
                op: "start an append thread for",
                path: self.store.channel().to_owned(),
                source,
            }
        })
    }

    /// Blocks until block `number` is durable, or the writer or store has failed or
    /// closed.
    pub fn wait_durable(&self, number: BlockNumber) -> Result<(), LedgerError> {
        let shared = &self.shared;
        let stop = || shared.failure().is_some();
        match self.store.wait_until(number.height(), &stop)? {
            Some(_) => Ok(()),
            None => Err(self.stopped()),
        }
    }

    /// [`PipelinedWriter::wait_durable`] for tasks.
    pub async fn wait_durable_async(&self, number: BlockNumber) -> Result<(), LedgerError> {
        let mut watch = self.store.watch();
        loop {
            {
                let w = watch.borrow_and_update();
                if w.height >= number.height() {
                    return Ok(());
                }
                if w.closed {
                    return Err(LedgerError::Closed);
                }
            }
            if self.failure().is_some() {
                return Err(self.stopped());
            }
            if watch.changed().await.is_err() {
                return Err(LedgerError::Closed);
            }
        }
    }

    fn stopped(&self) -> LedgerError {
        self.failure()
            .map_or(LedgerError::Closed, LedgerError::WriterFailed)
    }

    /// Stops the writer after the block in flight, reporting a failure if one
    /// happened. Blocking: for threads.
    pub fn close(mut self) -> Result<(), LedgerError> {
        self.shared.wait_idle();
        self.closed = true;
        self.outcome()
    }

    /// [`PipelinedWriter::close`] for tasks.
    pub async fn close_async(mut self) -> Result<(), LedgerError> {
        self.shared.wait_idle_async().await;
        self.closed = true;
        self.outcome()
    }

    fn outcome(&self) -> Result<(), LedgerError> {
        match self.failure() {
            Some(f) => Err(LedgerError::WriterFailed(f)),
            None => Ok(()),
        }
    }
}
