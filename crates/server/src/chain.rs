//! The chain runtime: drives one channel's pure state machine
//! ([`korder_consensus::Chain`]) over a [`Log`], and executes what it asks for.
//!
//! ```text
//!  Broadcast ──order()/configure()──▶ log.append ─┐
//!                                                 ▼
//!   chain task:   reader.next() ─▶ Chain::on_record ─▶ commands
//!                 batch timer ───▶ Chain::on_timer_fired   │
//!      Append ──▶ log.append (TIMETOCUT, resubmissions) ◀──┤
//!      WriteBlock / WriteConfigBlock ──▶ BlockWriter ──▶ ledger (one block in flight)
//!      SetIngress / Stop ──▶ ChainStatus (WaitReady, Errored for Deliver)
//! ```
//!
//! Each channel's state machine runs as a task on the node's runtime, so that a
//! node's threads do not grow with its channel count. The task never blocks a
//! runtime thread: the log is read and appended through futures, a block is handed
//! to the ledger's shared append pool and the wait for the previous block's fsync
//! is a future too, and the rare synchronous work (applying a config block, which
//! may create a channel's ledger) runs on the blocking pool.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_consensus::{
    BlockNumber, Chain, Command, ConfigSeq, ConsenterSupport, Rejected, TimerId, configure_record,
    connect_record, order_record,
};
use korder_ledger::BlockStore;
use korder_ledger::block::consenter_metadata;
use korder_log::{Log, LogError, LogOffset, LogReader, LogRecord};
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc, watch};

use crate::blockwriter::{BlockWriter, WriteError};
use crate::metrics::Metrics;
use crate::processor::{ChainEvent, ChannelProcessor, ConfigApplied};
use crate::resume::{ResumeError, ResumePoint};
use crate::status::ConsenterError;
use korder_types::sync::{CondvarExt, MutexExt};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What Broadcast and Deliver see of a chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainStatus {
    /// Start-up finished: the log is readable and records are being processed.
    pub started: bool,
    /// The chain was halted; it takes nothing more.
    pub halted: bool,
    /// Ingress is open (closed while a config resubmission is in flight).
    pub ingress_open: bool,
    /// The chain is not following its log (not started, stopped, or failed).
    pub errored: bool,
    /// Why the chain stopped, if it did.
    pub error: Option<String>,
}

/// How a start-up attempt cut short by its phase's end reports itself.
const NO_ANSWER: &str = "no answer within";

/// Longest a Broadcast waits for a chain to take envelopes (while a config
/// resubmission has closed ingress) before it is answered SERVICE_UNAVAILABLE.
pub const READY_WAIT: Duration = Duration::from_secs(3);

/// Default bound on one log append as Broadcast sees it.
pub const DEFAULT_APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// First pause before a chain stopped by an I/O error rebuilds itself.
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(250);

/// Longest pause between two rebuilds of a chain stopped by I/O errors.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A chain that ran this long before its I/O error starts over from the shortest pause.
const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(30);

/// Everything a chain needs besides its log and the log's timing.
pub struct ChainParams {
    /// The channel's message processor (its state, the node's signer, the filters).
    pub processor: ChannelProcessor,
    pub store: BlockStore,
    /// Where the chain reports applied configs and created channels.
    pub events: mpsc::Sender<ChainEvent>,
    pub runtime: Handle,
    pub metrics: Arc<Metrics>,
}

/// How a chain waits on its log: chosen by the log backend alone
/// ([`LogTiming::LOCAL`] for the embedded log, `Kafka.Retry` for Kafka).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTiming {
    /// How start-up retries opening the log and posting CONNECT.
    pub retry: RetryPolicy,
    /// How long the log may fail to deliver records before the chain reports itself
    /// errored (Deliver then answers SERVICE_UNAVAILABLE); `Kafka.Retry.NetworkTimeouts.ReadTimeout`.
    pub read_timeout: Duration,
    /// Longest a Broadcast waits for its envelope's log append before it is answered
    /// SERVICE_UNAVAILABLE (the record may still be ordered: the client resubmits).
    pub append_timeout: Duration,
}

impl LogTiming {
    /// A log on the node's own disk: one start-up attempt (a local failure does not
    /// heal by waiting), Fabric's default read timeout, [`DEFAULT_APPEND_TIMEOUT`].
    pub const LOCAL: LogTiming = LogTiming {
        retry: RetryPolicy::ONCE,
        read_timeout: Duration::from_secs(30),
        append_timeout: DEFAULT_APPEND_TIMEOUT,
    };
}

/// Start-up retries: a short phase, then a long one (Fabric's `Kafka.Retry`).
/// Each phase tries at once, then on every interval until its total has elapsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub short_interval: Duration,
    pub short_total: Duration,
    pub long_interval: Duration,
    pub long_total: Duration,
}

impl RetryPolicy {
    /// One attempt, no retry (the embedded log: a local failure does not heal by waiting).
    pub const ONCE: RetryPolicy = RetryPolicy {
        short_interval: Duration::from_secs(1),
        short_total: Duration::ZERO,
        long_interval: Duration::from_secs(1),
        long_total: Duration::ZERO,
    };
}

/// The first tick of a ticker started at `start` with `interval` that is not
/// before `now` (ticks missed while an attempt ran are dropped, as a ticker does).
/// `None` for a zero interval.
fn next_tick(start: Instant, interval: Duration, now: Instant) -> Option<Instant> {
    if interval.is_zero() {
        return None;
    }
    let elapsed = now.saturating_duration_since(start);
    let ticks = elapsed.as_nanos() / interval.as_nanos() + 1;
    let ticks = u32::try_from(ticks).ok()?;
    interval.checked_mul(ticks).map(|d| start + d)
}

/// Opens a channel's log; called again on failure, per the chain's [`RetryPolicy`].
pub type LogOpener<L> = Box<dyn Fn() -> BoxFuture<'static, Result<Arc<L>, String>> + Send + Sync>;

/// Why a chain could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("channel {channel}: cannot read the last block's consenter metadata: {reason}")]
    Metadata { channel: String, reason: String },
    #[error("channel {channel}: {source}")]
    Writer {
        channel: String,
        #[source]
        source: WriteError,
    },
    #[error("channel {channel}: cannot open its log: {reason}")]
    Log { channel: String, reason: String },
    /// The node does not run this channel at all (e.g. its consensus type is one
    /// korder does not implement); `reason` names the channel and says why.
    #[error("{reason}")]
    NotServed { channel: String, reason: String },
}

trait Appender: Send + Sync {
    fn append(&self, record: Bytes) -> BoxFuture<'static, Result<LogOffset, LogError>>;
}

struct LogAppender<L: Log>(Arc<L>);

impl<L: Log> Appender for LogAppender<L> {
    fn append(&self, record: Bytes) -> BoxFuture<'static, Result<LogOffset, LogError>> {
        Box::pin(self.0.append(record))
    }
}

struct Shared {
    channel: String,
    status: watch::Sender<ChainStatus>,
    halt: watch::Sender<bool>,
    /// The open log's append side; replaced when the chain rebuilds itself.
    appender: Mutex<Option<Arc<dyn Appender>>>,
    append_timeout: Duration,
    /// Set once the chain's task has ended (returned, panicked or was dropped).
    done: Done,
}

/// A latch set once, waited on by threads or tasks.
#[derive(Debug, Default)]
struct Done {
    set: Mutex<bool>,
    cond: Condvar,
    notify: Notify,
}

impl Done {
    fn set(&self) {
        *self.set.lock_unpoisoned() = true;
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    fn wait(&self) {
        let mut set = self.set.lock_unpoisoned();
        while !*set {
            set = self.cond.wait_unpoisoned(set);
        }
    }

    async fn wait_async(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if *self.set.lock_unpoisoned() {
                return;
            }
            notified.await;
        }
    }
}

/// Sets the chain's [`Done`] latch when the task ends, however it ends.
struct DoneOnDrop(Arc<Shared>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(channel = %self.0.channel, "chain task panicked");
        }
        self.0.done.set();
    }
}

impl Shared {
    fn set_appender(&self, appender: Arc<dyn Appender>) {
        *self.appender.lock_unpoisoned() = Some(appender);
    }

    fn appender(&self) -> Option<Arc<dyn Appender>> {
        self.appender.lock_unpoisoned().clone()
    }
}

/// Why ingress refuses now, if it does: halted, not started, or stopped by an error.
fn refusal(s: &ChainStatus) -> Option<ConsenterError> {
    if s.halted {
        Some(ConsenterError::Halted)
    } else if let (true, Some(e)) = (s.errored, &s.error) {
        Some(ConsenterError::Stopped(e.clone()))
    } else if !s.started {
        Some(ConsenterError::NotStarted)
    } else {
        None
    }
}

/// A running chain: the ingress side (WaitReady, Order, Configure) and its status.
#[derive(Clone)]
pub struct ChainHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ChainHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainHandle")
            .field("channel", &self.shared.channel)
            .field("status", &*self.shared.status.borrow())
            .finish()
    }
}

impl ChainHandle {
    /// Waits until ingress may proceed: refuses at once before start-up finished,
    /// after a halt and while the chain is stopped by an error; waits at most
    /// [`READY_WAIT`] while a config resubmission is in flight.
    pub async fn wait_ready(&self) -> Result<(), ConsenterError> {
        let mut rx = self.shared.status.subscribe();
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if let Some(e) = refusal(&s) {
                        return Err(e);
                    }
                    if s.ingress_open {
                        return Ok(());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(ConsenterError::Halted);
                }
            }
        };
        tokio::time::timeout(READY_WAIT, wait)
            .await
            .unwrap_or(Err(ConsenterError::NotReady(READY_WAIT)))
    }

    fn enqueue(&self, record: Bytes) -> BoxFuture<'static, Result<(), ConsenterError>> {
        let refused = refusal(&self.shared.status.borrow());
        if let Some(e) = refused {
            return Box::pin(async move { Err(e) });
        }
        let Some(appender) = self.shared.appender() else {
            return Box::pin(async { Err(ConsenterError::NotStarted) });
        };
        let append = appender.append(record);
        let limit = self.shared.append_timeout;
        Box::pin(async move {
            match tokio::time::timeout(limit, append).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(ConsenterError::CannotEnqueue(e.to_string())),
                Err(_) => Err(ConsenterError::CannotEnqueue(format!(
                    "the log did not confirm the append within {limit:?}"
                ))),
            }
        })
    }

    /// Orders a normal envelope validated at `config_seq`. Resolves once its record
    /// is durable in the log.
    pub fn order(
        &self,
        envelope: Bytes,
        config_seq: ConfigSeq,
    ) -> BoxFuture<'static, Result<(), ConsenterError>> {
        self.enqueue(order_record(envelope, config_seq))
    }

    /// Orders a config envelope (CONFIG or ORDERER_TRANSACTION) built at `config_seq`.
    pub fn configure(
        &self,
        envelope: Bytes,
        config_seq: ConfigSeq,
    ) -> BoxFuture<'static, Result<(), ConsenterError>> {
        self.enqueue(configure_record(envelope, config_seq))
    }

    /// The chain's status, updated as it changes.
    pub fn status(&self) -> watch::Receiver<ChainStatus> {
        self.shared.status.subscribe()
    }

    /// Stops the chain after the block in flight is written, and waits for it.
    /// Blocking: call it outside the async runtime (e.g. in `spawn_blocking`); the
    /// runtime the chain runs on must keep running meanwhile.
    pub fn halt(&self) {
        self.shared.halt.send_replace(true);
        self.shared.done.wait();
    }

    /// [`ChainHandle::halt`] for tasks.
    pub async fn halt_async(&self) {
        self.shared.halt.send_replace(true);
        self.shared.done.wait_async().await;
    }
}

/// Starts the chain of `params.processor`'s channel over the log `open` opens. The chain
/// reports "not started" (SERVICE_UNAVAILABLE to Broadcast, errored to Deliver)
/// until the log is open and CONNECT is posted.
pub fn start_chain<L: Log>(
    open: LogOpener<L>,
    params: ChainParams,
    timing: LogTiming,
) -> Result<ChainHandle, StartError> {
    start(open, params, timing, false)
}

/// [`start_chain`] for a log that other nodes share and that may be replaced under
/// the node (Kafka): before anything is written to it, the log is checked to be the
/// one the ledger was built from ([`crate::resume`]). A refusal stops the channel
/// with the reason, without retries and without writing.
pub fn start_chain_checked<L: Log>(
    open: LogOpener<L>,
    params: ChainParams,
    timing: LogTiming,
) -> Result<ChainHandle, StartError> {
    start(open, params, timing, true)
}

fn start<L: Log>(
    open: LogOpener<L>,
    params: ChainParams,
    timing: LogTiming,
    checked: bool,
) -> Result<ChainHandle, StartError> {
    let channel = params.processor.state().id().to_string();
    let (chain, writer, resume) = build(
        &channel,
        &params.store,
        &params.processor,
        checked,
        &params.metrics,
    )?;
    params
        .metrics
        .report_channel(&channel, params.store.height());
    let (status, _) = watch::channel(ChainStatus {
        errored: true,
        ..Default::default()
    });
    let (halt, halt_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        channel: channel.clone(),
        status,
        halt,
        appender: Mutex::new(None),
        append_timeout: timing.append_timeout,
        done: Done::default(),
    });
    let runner = Runner {
        open,
        resume,
        checked,
        retry: timing.retry,
        read_timeout: timing.read_timeout,
        failing_since: None,
        log: None,
        chain,
        writer: Some(writer),
        store: params.store,
        processor: params.processor,
        events: params.events,
        rt: params.runtime,
        shared: shared.clone(),
        halt: halt_rx,
        timer: None,
        metrics: params.metrics,
        pending_since: None,
        start_failed_io: false,
    };
    let runtime = runner.rt.clone();
    let guard = DoneOnDrop(shared.clone());
    runtime.spawn(async move {
        let _done = guard;
        runner.run().await;
    });
    Ok(ChainHandle { shared })
}

/// The state machine and block writer continuing `store`'s chain, and what the log
/// must hold for it (when `checked`): at start-up, and when a chain stopped by an
/// I/O error rebuilds itself from the ledger.
fn build(
    channel: &str,
    store: &BlockStore,
    processor: &ChannelProcessor,
    checked: bool,
    metrics: &Metrics,
) -> Result<(Chain, BlockWriter, ResumePoint), StartError> {
    let channel = channel.to_string();
    let height = store.height();
    let last_block = match store.last_block_number() {
        Some(n) => Some(store.block(n).map_err(|e| StartError::Metadata {
            channel: channel.clone(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let metadata = match &last_block {
        Some(block) => consenter_metadata(block).map_err(|e| StartError::Metadata {
            channel: channel.clone(),
            reason: e.to_string(),
        })?,
        None => None,
    };
    let has_metadata = metadata.is_some();
    let chain = Chain::new(metadata, height)
        .map_err(|e| StartError::Metadata {
            channel: channel.clone(),
            reason: e.to_string(),
        })?
        .with_early_cut(processor.early_cut());
    let resume = if checked {
        resume_point(last_block.as_ref(), has_metadata, &chain)
    } else {
        ResumePoint::Unchecked
    };
    if !has_metadata && height > 1 {
        // Only a block that switched the consensus type is written without
        // consenter metadata (besides a genesis block). Like Fabric's Kafka chain,
        // the chain then reads its log from the oldest record: the new consensus
        // type's log, which has never held this channel's records.
        tracing::warn!(
            channel = %channel,
            block = height - 1,
            "the last block carries no consenter metadata (it changed the consensus type): reading the log from its oldest record"
        );
    }
    let commit_time = metrics.ledger_commit_time.with_label_values(&[&channel]);
    let observe = move |d: std::time::Duration| commit_time.observe(d.as_secs_f64());
    let writer = BlockWriter::observed(
        store.clone(),
        processor.signer().clone(),
        processor.state().sequence(),
        observe,
    )
    .map_err(|source| StartError::Writer { channel, source })?;
    Ok((chain, writer, resume))
}

/// What the log must hold for `chain`, restored from the ledger whose last block is
/// `last_block` (`has_metadata`: whether that block carries consenter metadata).
fn resume_point(
    last_block: Option<&korder_proto::common::Block>,
    has_metadata: bool,
    chain: &Chain,
) -> ResumePoint {
    match (last_block, has_metadata, chain.persisted()) {
        (Some(_), false, _) if chain.last_cut() == BlockNumber::GENESIS => ResumePoint::Genesis,
        (Some(block), true, Some(offset)) => ResumePoint::After {
            block: chain.last_cut(),
            offset,
            last_envelope: block
                .data
                .as_ref()
                .and_then(|d| d.data.last().cloned())
                .unwrap_or_default(),
        },
        // No metadata past genesis, or metadata recording that nothing was persisted:
        // the chain reads from the oldest record and there is no record to check.
        _ => ResumePoint::Unchecked,
    }
}

struct Support<'a> {
    bundle: Arc<Bundle>,
    processor: &'a ChannelProcessor,
}

impl ConsenterSupport for Support<'_> {
    fn sequence(&self) -> ConfigSeq {
        self.bundle.sequence
    }

    fn batch_size(&self) -> Option<korder_proto::orderer::BatchSize> {
        Some(self.bundle.orderer.batch_size)
    }

    fn batch_timeout(&self) -> Duration {
        self.bundle.orderer.batch_timeout
    }

    fn resubmission_enabled(&self) -> bool {
        self.bundle.orderer.resubmission()
    }

    fn process_normal(&self, envelope: &Bytes) -> Result<ConfigSeq, Rejected> {
        self.processor
            .revalidate_normal(envelope)
            .map_err(|e| Rejected::new(e.to_string()))
    }

    fn process_config(&self, envelope: &Bytes) -> Result<(Bytes, ConfigSeq), Rejected> {
        self.processor
            .revalidate_config(envelope)
            .map_err(|e| Rejected::new(e.to_string()))
    }
}

enum Event {
    Halt,
    Record(Result<LogRecord, LogError>),
    Timer(TimerId),
    /// Time to look whether the ledger writer has failed since the last block.
    CheckWriter,
}

/// How often an idle chain looks whether its last block write failed: a failure
/// stops and rebuilds the chain within this bound rather than at the next block.
const WRITER_CHECK_INTERVAL: Duration = Duration::from_millis(250);

struct Runner<L: Log> {
    open: LogOpener<L>,
    /// What the log must hold before the chain writes to it.
    resume: ResumePoint,
    /// Whether the log is checked against the ledger before use (shared logs).
    checked: bool,
    retry: RetryPolicy,
    read_timeout: Duration,
    /// When the log started failing to deliver records (transient errors).
    failing_since: Option<Instant>,
    log: Option<Arc<L>>,
    chain: Chain,
    writer: Option<BlockWriter>,
    store: BlockStore,
    processor: ChannelProcessor,
    events: mpsc::Sender<ChainEvent>,
    rt: Handle,
    shared: Arc<Shared>,
    halt: watch::Receiver<bool>,
    timer: Option<(TimerId, Instant)>,
    metrics: Arc<Metrics>,
    /// When the pending batch got its first envelope (block fill duration).
    pending_since: Option<Instant>,
    /// The last start-up attempt failed on a local I/O error (the chain rebuilds
    /// itself and tries again rather than stopping for good).
    start_failed_io: bool,
}

/// Ends the chain's processing loop.
enum Exit {
    Halted,
    /// Stopped for good: retrying cannot help (a broken invariant, a refused log).
    Failed(String),
    /// Stopped by an I/O error (a full disk, say): the chain rebuilds itself from
    /// the ledger after a pause and goes on once writes succeed again.
    Io(String),
    /// The log lost the records the chain needs next: the registrar catches the
    /// ledger up from the channel's other orderers and starts a new chain.
    Behind(String),
}

/// Errors of the log that come from its storage and may heal (space freed).
fn is_io(e: &LogError) -> bool {
    matches!(e, LogError::Io { .. } | LogError::Broken(_))
}

impl<L: Log> Runner<L> {
    fn channel(&self) -> &str {
        &self.shared.channel
    }

    async fn run(mut self) {
        let mut backoff = RESTART_BACKOFF_MIN;
        loop {
            let began = Instant::now();
            let exit = match self.start().await {
                Ok(mut reader) => self.main_loop(&mut reader).await,
                Err(e) => Err(e),
            };
            let mut behind = false;
            let (error, restart) = match exit {
                Err(Exit::Failed(e)) => (Some(e), false),
                Err(Exit::Io(e)) => (Some(e), true),
                Err(Exit::Behind(e)) => {
                    behind = true;
                    (
                        Some(format!(
                            "{e}; catching up from the channel's other orderers"
                        )),
                        false,
                    )
                }
                Ok(()) | Err(Exit::Halted) => (None, false),
            };
            if let Some(w) = self.writer.take()
                && let Err(e) = w.close_async().await
            {
                tracing::error!(channel = %self.shared.channel, error = %e, "closing the block writer");
            }
            let halted = *self.halt.borrow();
            if restart && !halted {
                if began.elapsed() >= RESTART_BACKOFF_RESET {
                    backoff = RESTART_BACKOFF_MIN;
                }
                tracing::error!(
                    channel = %self.channel(),
                    error = error.as_deref().unwrap_or_default(),
                    retry_in = ?backoff,
                    "chain stopped by an I/O error; it rebuilds itself from the ledger and retries"
                );
                self.shared.status.send_modify(|s| {
                    s.started = false;
                    s.errored = true;
                    s.ingress_open = false;
                    s.error = error;
                });
                loop {
                    if !self.pause(backoff).await {
                        self.stopped(true, None);
                        return;
                    }
                    backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                    if self.rebuild() {
                        break;
                    }
                }
                continue;
            }
            if let Some(e) = &error {
                tracing::error!(channel = %self.channel(), error = %e, "chain stopped");
            }
            self.stopped(halted, error.clone());
            if behind && !halted {
                let event = ChainEvent::Behind {
                    channel: self.shared.channel.clone(),
                    reason: error.unwrap_or_default(),
                };
                if self.events.send(event).await.is_err() {
                    tracing::warn!(channel = %self.shared.channel, "the registrar has shut down; the channel stays stopped");
                }
            }
            return;
        }
    }

    /// Publishes the final status: ingress refused, Deliver errored.
    fn stopped(&self, halted: bool, error: Option<String>) {
        self.shared.status.send_modify(|s| {
            s.errored = true;
            s.started = false;
            s.halted = halted;
            s.ingress_open = false;
            if error.is_some() {
                s.error = error;
            }
        });
    }

    /// Sleeps `pause`; false if the chain was halted meanwhile.
    async fn pause(&self, pause: Duration) -> bool {
        let mut halt = self.halt.clone();
        tokio::select! {
            _ = halt.wait_for(|h| *h) => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }

    /// Rebuilds the state machine and the block writer from the ledger, and lets the
    /// next start-up reopen the log; false (logged) if the ledger cannot be read.
    fn rebuild(&mut self) -> bool {
        match build(
            &self.shared.channel,
            &self.store,
            &self.processor,
            self.checked,
            &self.metrics,
        ) {
            Ok((chain, writer, resume)) => {
                self.chain = chain;
                self.resume = resume;
                self.writer = Some(writer);
                self.log = None;
                self.timer = None;
                self.pending_since = None;
                self.failing_since = None;
                tracing::info!(channel = %self.channel(), height = self.store.height(), "chain rebuilt from the ledger");
                true
            }
            Err(e) => {
                tracing::error!(channel = %self.channel(), error = %e, "cannot rebuild the chain from the ledger");
                false
            }
        }
    }

    /// Opens the log, posts CONNECT and opens the reader where the ledger left off,
    /// retrying per the policy; a halt cuts the retries short.
    async fn start(&mut self) -> Result<L::Reader, Exit> {
        let from = match (&self.resume, self.chain.read_from()) {
            // From genesis the chain needs every record, from offset 0.
            (ResumePoint::Genesis, korder_log::ReadFrom::Oldest) => {
                korder_log::ReadFrom::Offset(LogOffset::FIRST)
            }
            (_, from) => from,
        };
        let mut last_error = String::new();
        let mut attempt = 0u32;
        let phases = [
            (self.retry.short_interval, self.retry.short_total),
            (self.retry.long_interval, self.retry.long_total),
        ];
        for (phase, (interval, total)) in phases.into_iter().enumerate() {
            if phase == 1 && total.is_zero() {
                break;
            }
            let phase_start = Instant::now();
            let phase_end = phase_start + total;
            let mut at = phase_start;
            loop {
                // An attempt may not outlast its phase (a phase of zero length still
                // gets its one attempt, unbounded).
                let budget = (!total.is_zero()).then(|| phase_end.max(at) - at);
                match self.attempt(from, at, budget).await {
                    None => return Err(Exit::Halted),
                    Some(Ok((log, reader))) => {
                        self.shared.set_appender(Arc::new(LogAppender(log.clone())));
                        self.log = Some(log);
                        return self.started(reader, from);
                    }
                    Some(Err(ResumeError::Refused(e))) => {
                        tracing::error!(channel = %self.channel(), error = %e, "the log is not the one the ledger was built from: nothing is written to it");
                        return Err(Exit::Failed(e));
                    }
                    Some(Err(ResumeError::Behind(e))) => {
                        tracing::warn!(channel = %self.channel(), error = %e, "the log no longer holds the records the chain needs: nothing is written to it; the node catches up from the channel's other orderers");
                        return Err(Exit::Behind(e));
                    }
                    Some(Err(ResumeError::Transient(e))) => {
                        tracing::warn!(channel = %self.channel(), attempt, error = %e, "chain start-up attempt failed");
                        // An attempt cut short by the end of its phase says less than
                        // one that failed with a cause (a refused TLS handshake, say).
                        if !e.starts_with(NO_ANSWER) || last_error.is_empty() {
                            last_error = e;
                        }
                        attempt += 1;
                    }
                }
                match next_tick(phase_start, interval, Instant::now()) {
                    Some(next) if next <= phase_end => at = next,
                    _ => break,
                }
            }
        }
        let error = format!("cannot start reading the log from {from:?}: {last_error}");
        if self.start_failed_io {
            Err(Exit::Io(error))
        } else {
            Err(Exit::Failed(error))
        }
    }

    /// One start-up attempt at `at`: open the log (unless open), check that it is
    /// the ledger's ([`crate::resume`]), post CONNECT, open the reader. Nothing is
    /// written before the check passes. `None` if halted meanwhile.
    #[allow(clippy::type_complexity)]
    async fn attempt(
        &mut self,
        from: korder_log::ReadFrom,
        at: Instant,
        budget: Option<Duration>,
    ) -> Option<Result<(Arc<L>, L::Reader), ResumeError>> {
        let mut halt = self.halt.clone();
        let opener = (self.open)();
        let existing = self.log.clone();
        let resume = self.resume.clone();
        let channel = self.shared.channel.clone();
        let read_timeout = self.read_timeout;
        // A local log (one attempt) that fails to open or to write is an I/O problem.
        let local = self.retry == RetryPolicy::ONCE;
        let mut io = false;
        let answer = {
            let work = async {
                tokio::time::sleep_until(at.into()).await;
                let log = match existing {
                    Some(l) => l,
                    None => opener.await.map_err(|e| {
                        io = local;
                        ResumeError::Transient(e)
                    })?,
                };
                crate::resume::check(&*log, &channel, &resume, read_timeout).await?;
                let step = async {
                    log.append(connect_record()).await?;
                    log.reader(from).await
                };
                match step.await {
                    Ok(reader) => Ok((log, reader)),
                    Err(e) => {
                        io = is_io(&e);
                        Err(ResumeError::Transient(format!("{e}")))
                    }
                }
            };
            let bounded = async {
                match budget {
                    Some(b) => tokio::time::timeout_at((at + b).into(), work)
                        .await
                        .unwrap_or_else(|_| {
                            Err(ResumeError::Transient(format!("{NO_ANSWER} {b:?}")))
                        }),
                    None => work.await,
                }
            };
            tokio::select! {
                _ = halt.wait_for(|h| *h) => None,
                r = bounded => Some(r),
            }
        };
        self.start_failed_io = io;
        answer
    }

    fn started(
        &mut self,
        reader: L::Reader,
        from: korder_log::ReadFrom,
    ) -> Result<L::Reader, Exit> {
        let ingress_open = self.chain.ingress_open();
        self.shared.status.send_modify(|s| {
            s.started = true;
            s.errored = false;
            s.ingress_open = ingress_open;
            s.error = None;
        });
        tracing::info!(channel = %self.channel(), from = ?from, "chain started");
        Ok(reader)
    }

    async fn next_event(&mut self, reader: &mut L::Reader) -> Event {
        let timer = self.timer;
        let mut halt = self.halt.clone();
        {
            let sleep = async {
                match timer {
                    Some((id, at)) => {
                        tokio::time::sleep_until(at.into()).await;
                        id
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = halt.wait_for(|h| *h) => Event::Halt,
                id = sleep => Event::Timer(id),
                r = reader.next() => Event::Record(r),
                () = tokio::time::sleep(WRITER_CHECK_INTERVAL) => Event::CheckWriter,
            }
        }
    }

    async fn main_loop(&mut self, reader: &mut L::Reader) -> Result<(), Exit> {
        loop {
            let commands = match self.next_event(reader).await {
                Event::Halt => return Err(Exit::Halted),
                Event::CheckWriter => {
                    if let Some(e) = self.writer.as_ref().and_then(BlockWriter::failure) {
                        return Err(Exit::Io(format!("writing a block: {e}")));
                    }
                    continue;
                }
                Event::Timer(id) => {
                    self.timer = None;
                    self.chain.on_timer_fired(id)
                }
                Event::Record(Ok(record)) => {
                    self.log_available();
                    let support = Support {
                        bundle: self.processor.state().bundle(),
                        processor: &self.processor,
                    };
                    let commands = self.chain.on_record(&support, record.offset, record.value);
                    if let Some(e) = self.chain.last_error() {
                        tracing::warn!(channel = %self.shared.channel, error = %e, "record dropped");
                    }
                    let started = self.chain.started_pending_batch();
                    self.execute(commands).await?;
                    if started {
                        self.pending_since = Some(Instant::now());
                    }
                    continue;
                }
                Event::Record(Err(LogError::Unavailable(e))) => {
                    self.log_unavailable(&e).await;
                    continue;
                }
                Event::Record(Err(e)) if is_io(&e) => {
                    return Err(Exit::Io(format!("reading the log: {e}")));
                }
                Event::Record(Err(e)) => {
                    return Err(Exit::Failed(format!("reading the log: {e}")));
                }
            };
            self.execute(commands).await?;
        }
    }

    /// Executes `commands` in order; what an append's outcome asks for runs before
    /// the commands after that append.
    async fn execute(&mut self, commands: Vec<Command>) -> Result<(), Exit> {
        let mut queue = VecDeque::from(commands);
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Append { record, purpose } => {
                    let log = self
                        .log
                        .clone()
                        .ok_or_else(|| Exit::Failed("the log is not open".into()))?;
                    let appended = log.append(record).await;
                    if let Err(e) = &appended {
                        tracing::warn!(channel = %self.channel(), ?purpose, error = %e, "log append failed");
                    }
                    let more = self.chain.on_append_result(purpose, appended.is_ok());
                    for c in more.into_iter().rev() {
                        queue.push_front(c);
                    }
                }
                Command::WriteBlock {
                    number,
                    envelopes,
                    metadata,
                    fill,
                } => {
                    let filled_s = match fill {
                        korder_consensus::Fill::Isolated => 0.0,
                        korder_consensus::Fill::Accumulated => self
                            .pending_since
                            .take()
                            .map_or(0.0, |t| t.elapsed().as_secs_f64()),
                    };
                    self.metrics
                        .block_fill_duration
                        .with_label_values(&[self.shared.channel.as_str()])
                        .observe(filled_s);
                    self.record_block(number.get(), &metadata);
                    tracing::debug!(
                        channel = %self.shared.channel,
                        block = number.get(),
                        envelopes = envelopes.len(),
                        last_offset = metadata.last_offset_persisted,
                        filled_s,
                        "block cut"
                    );
                    let sequence = self.processor.state().sequence();
                    let layout = self.processor.block_metadata();
                    let writer = self.writer_mut()?;
                    let block = writer.create_next_block(envelopes);
                    assert_eq!(
                        block.header.as_ref().map(|h| h.number),
                        Some(number.get()),
                        "the block writer and the chain disagree on the next block number"
                    );
                    writer
                        .write_block_async(block, Some(&metadata), sequence, layout)
                        .await
                        .map_err(|e| write_exit(format!("writing block {number}"), e))?;
                }
                Command::WriteConfigBlock {
                    number,
                    envelope,
                    metadata,
                } => {
                    self.record_block(number.get(), &metadata);
                    // Let the previous block land before the config changes.
                    if let Some(previous) = number.prev() {
                        self.writer_mut()?
                            .wait_durable_async(previous)
                            .await
                            .map_err(|e| write_exit(format!("writing block {previous}"), e))?;
                    }
                    let type_before = self
                        .processor
                        .state()
                        .bundle()
                        .orderer
                        .consensus_type
                        .clone();
                    // Applying a config may create a channel's ledger: file work, off
                    // the runtime's threads.
                    let processor = self.processor.clone();
                    let config = envelope.clone();
                    let applied = tokio::task::spawn_blocking(move || {
                        processor.apply_config(&config).map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                    .map_err(|e| Exit::Failed(format!("applying config block {number}: {e}")))?;
                    self.report(applied).await;
                    let bundle = self.processor.state().bundle();
                    let sequence = bundle.sequence;
                    // The block that switches the consensus type (a migration in
                    // maintenance mode) carries no consenter metadata, as in Fabric:
                    // the offsets of this log mean nothing to the next consenter.
                    let type_changed = bundle.orderer.consensus_type != type_before;
                    if type_changed {
                        tracing::warn!(
                            channel = %self.shared.channel,
                            block = number.get(),
                            from = %type_before,
                            to = %bundle.orderer.consensus_type,
                            "the consensus type changed; this node keeps ordering the channel on its current log until it restarts"
                        );
                    }
                    let consenter = (!type_changed).then_some(&metadata);
                    let layout = self.processor.block_metadata();
                    let writer = self.writer_mut()?;
                    let block = writer.create_next_block(vec![envelope]);
                    writer
                        .write_block_async(block, consenter, sequence, layout)
                        .await
                        .map_err(|e| write_exit(format!("writing config block {number}"), e))?;
                    writer
                        .wait_durable_async(number)
                        .await
                        .map_err(|e| write_exit(format!("writing config block {number}"), e))?;
                }
                Command::StartTimer { id, timeout } => {
                    self.timer = Some((id, Instant::now() + timeout));
                }
                Command::StopTimer { id } => {
                    if self.timer.is_some_and(|(t, _)| t == id) {
                        self.timer = None;
                    }
                }
                Command::SetIngress { open } => {
                    self.shared.status.send_modify(|s| s.ingress_open = open);
                }
                Command::Stop(e) => return Err(Exit::Failed(e.to_string())),
            }
        }
        Ok(())
    }

    /// A transient read failure: the log client keeps reconnecting. After
    /// `read_timeout` without a record the chain reports itself errored and posts a
    /// CONNECT record, so that the first record read once the log is back clears it.
    async fn log_unavailable(&mut self, error: &str) {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        tracing::warn!(channel = %self.shared.channel, error, "the log is unavailable; retrying");
        if since.elapsed() >= self.read_timeout && !self.shared.status.borrow().errored {
            tracing::error!(channel = %self.shared.channel, "no record for the read timeout: the chain is errored until the log is back");
            self.shared.status.send_modify(|s| s.errored = true);
            if let Some(log) = self.log.clone() {
                self.rt.spawn(async move {
                    let _ = log.append(connect_record()).await;
                });
            }
        }
        // Pace the retries: the client reports each failure as it happens.
        let mut halt = self.halt.clone();
        tokio::select! {
            _ = halt.wait_for(|h| *h) => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }

    fn log_available(&mut self) {
        if self.failing_since.take().is_some() && self.shared.status.borrow().errored {
            tracing::info!(channel = %self.shared.channel, "the log is available again");
            self.shared.status.send_modify(|s| s.errored = false);
        }
    }

    fn record_block(&self, number: u64, metadata: &korder_proto::orderer::KafkaMetadata) {
        let ch = [self.shared.channel.as_str()];
        self.metrics
            .kafka_last_offset_persisted
            .with_label_values(&ch)
            .set(metadata.last_offset_persisted);
        self.metrics
            .ledger_height
            .with_label_values(&ch)
            .set(i64::try_from(number + 1).unwrap_or(i64::MAX));
    }

    /// Hands what a config block did to the registrar. The chain never waits for
    /// the registrar: a created channel's ledger already holds its genesis block,
    /// and the registrar starts it on its own time.
    async fn report(&self, applied: ConfigApplied) {
        let event = match applied {
            ConfigApplied::Updated { sequence } => ChainEvent::ConfigApplied {
                channel: self.shared.channel.clone(),
                sequence,
            },
            ConfigApplied::Created(new) => ChainEvent::ChannelCreated(new),
            ConfigApplied::AlreadyCreated { channel } => {
                tracing::info!(channel = %self.shared.channel, created = %channel, "the node already has the channel this config block creates");
                return;
            }
        };
        // The registrar's consumer only spawns work per event, so the queue drains
        // without waiting on any chain.
        if self.events.send(event).await.is_err() {
            tracing::warn!(channel = %self.shared.channel, "the registrar has shut down; a config event is dropped");
        }
    }

    fn writer_mut(&mut self) -> Result<&mut BlockWriter, Exit> {
        self.writer
            .as_mut()
            .ok_or_else(|| Exit::Failed("the block writer is closed".into()))
    }
}

/// A failed block write: the ledger's errors (a full disk, say) may heal, so the
/// chain rebuilds itself; a signing failure does not.
fn write_exit(what: String, e: WriteError) -> Exit {
    match e {
        WriteError::Ledger(_) => Exit::Io(format!("{what}: {e}")),
        _ => Exit::Failed(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retries follow a ticker: the next attempt is the next tick after now, and
    /// ticks missed by a slow attempt are dropped rather than run back to back.
    #[test]
    fn next_tick_drops_missed_ticks() {
        let t0 = Instant::now();
        let i = Duration::from_millis(100);
        assert_eq!(next_tick(t0, i, t0), Some(t0 + i));
        assert_eq!(
            next_tick(t0, i, t0 + Duration::from_millis(50)),
            Some(t0 + i)
        );
        assert_eq!(
            next_tick(t0, i, t0 + Duration::from_millis(350)),
            Some(t0 + Duration::from_millis(400))
        );
        assert_eq!(next_tick(t0, Duration::ZERO, t0), None);
    }

    /// The resume check follows the restored chain: genesis needs offset 0, a block
    /// with metadata names its number, offset and last envelope, and metadata that
    /// records nothing persisted (Fabric's -3) or no metadata past genesis leave
    /// nothing to check.
    #[test]
    fn resume_point_follows_the_restored_chain() {
        use korder_proto::orderer::KafkaMetadata;
        let block = korder_ledger::block::next_block(None, vec![Bytes::from_static(b"last")]);
        let meta = |persisted| KafkaMetadata {
            last_offset_persisted: persisted,
            ..Default::default()
        };
        let chain = |m: Option<KafkaMetadata>, height| Chain::new(m, height).expect("chain");
        assert_eq!(
            resume_point(Some(&block), false, &chain(None, 1)),
            ResumePoint::Genesis
        );
        assert_eq!(
            resume_point(Some(&block), true, &chain(Some(meta(7)), 3)),
            ResumePoint::After {
                block: BlockNumber::new(2),
                offset: LogOffset::new(7),
                last_envelope: Bytes::from_static(b"last"),
            }
        );
        assert_eq!(
            resume_point(Some(&block), true, &chain(Some(meta(-3)), 3)),
            ResumePoint::Unchecked
        );
        assert_eq!(
            resume_point(Some(&block), false, &chain(None, 3)),
            ResumePoint::Unchecked
        );
    }
}
