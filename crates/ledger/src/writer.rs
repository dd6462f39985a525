//! A pipelined block writer: one thread owns the appends, so the caller can hand over
//! block N+1 and go on building block N+2 while N+1 is written and fsynced.
//!
//! ```text
//! caller ── submit(N+1) ──▶ [rendezvous] ──▶ writer thread: append(N+1) … fsync … publish
//! caller builds N+2 … submit(N+2) waits here until the thread is free again
//! ```
//!
//! At most one block is in flight: the hand-over channel has no buffer, so `submit`
//! returns once the writer thread has taken the block, which it only does when the
//! previous block is durable. A failed append stops the writer; every later call
//! reports that failure.

use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use korder_proto::common::Block;
use korder_types::ids::BlockNumber;
use korder_types::sync::MutexExt;

use crate::error::LedgerError;
use crate::store::BlockStore;

#[derive(Debug, Default)]
struct Shared {
    failure: Mutex<Option<Arc<LedgerError>>>,
}

impl Shared {
    fn failure(&self) -> Option<Arc<LedgerError>> {
        self.failure.lock_unpoisoned().clone()
    }
}

/// Appends blocks to a [`BlockStore`] on a dedicated thread, one block in flight.
#[derive(Debug)]
pub struct PipelinedWriter {
    store: BlockStore,
    tx: Option<SyncSender<Block>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl PipelinedWriter {
    /// Starts the writer thread for `store`.
    pub fn new(store: BlockStore) -> Result<Self, LedgerError> {
        Self::observed(store, |_| {})
    }

    /// Starts the writer thread for `store`; `commit_time` learns how long each
    /// block's append (write, index and fsync) took.
    pub fn observed(
        store: BlockStore,
        commit_time: impl Fn(std::time::Duration) + Send + 'static,
    ) -> Result<Self, LedgerError> {
        let (tx, rx) = mpsc::sync_channel::<Block>(0);
        let shared = Arc::new(Shared::default());
        let thread_store = store.clone();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ledger-writer-{}", store.channel()))
            .spawn(move || {
                for block in rx {
                    let began = std::time::Instant::now();
                    let appended = thread_store.append(&block);
                    commit_time(began.elapsed());
                    if let Err(e) = appended {
                        let number = block.header.as_ref().map_or(0, |h| h.number);
                        tracing::error!(channel = %thread_store.channel(), block = number, error = %e, "block append failed; the writer stops");
                        *thread_shared
                            .failure
                            .lock_unpoisoned() = Some(Arc::new(e));
                        thread_store.notify_all();
                        return;
                    }
                }
            })
            .map_err(|e| LedgerError::Io {
                op: "spawn writer thread for",
                path: store.channel().to_owned(),
                source: e,
            })?;
        Ok(Self {
            store,
            tx: Some(tx),
            shared,
            thread: Some(thread),
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

    /// Hands `block` to the writer thread. Returns once the thread has taken it,
    /// which is as soon as the previous block is durable. Fails if an earlier block
    /// failed (the block is then not written).
    pub fn submit(&self, block: Block) -> Result<(), LedgerError> {
        if let Some(f) = self.failure() {
            return Err(LedgerError::WriterFailed(f));
        }
        let tx = self.tx.as_ref().ok_or(LedgerError::Closed)?;
        if tx.send(block).is_err() {
            return Err(self
                .failure()
                .map_or(LedgerError::Closed, LedgerError::WriterFailed));
        }
        Ok(())
    }

    /// Blocks until block `number` is durable, or the writer or store has failed or
    /// closed.
    pub fn wait_durable(&self, number: BlockNumber) -> Result<(), LedgerError> {
        let shared = &self.shared;
        let stop = || shared.failure().is_some();
        match self.store.wait_until(number.height(), &stop)? {
            Some(_) => Ok(()),
            None => Err(self
                .failure()
                .map_or(LedgerError::Closed, LedgerError::WriterFailed)),
        }
    }

    /// Stops the writer thread after the block in flight, reporting a failure if one
    /// happened.
    pub fn close(mut self) -> Result<(), LedgerError> {
        self.shutdown();
        match self.failure() {
            Some(f) => Err(LedgerError::WriterFailed(f)),
            None => Ok(()),
        }
    }

    fn shutdown(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!(channel = %self.store.channel(), "ledger writer thread panicked");
        }
    }
}

impl Drop for PipelinedWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}
