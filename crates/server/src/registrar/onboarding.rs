//! Joining a channel by a config block after its genesis block (onboarding): the
//! blocks up to the join block are pulled from the channel's other orderers into a
//! fresh ledger, each verified before it is written ([`crate::catchup`]), in the
//! background; the channel starts, reading its shared log from the offsets recorded
//! in the join block, once the join block itself is in place. Until then the
//! channel participation API reports it as `onboarding` and Broadcast and Deliver
//! do not serve it. A pull that fails is retried, with a growing pause, until it
//! succeeds or the channel is removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use korder_channelconfig::Bundle;
use korder_ledger::{BlockNumber, BlockStore};
use korder_proto::Message;
use korder_proto::common::Block;
use korder_types::sync::MutexExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ChannelInfo, ParticipationError, RELATION_OTHER, Registrar};
use crate::catchup::{BlockPuller, BlockVerifier, ClientTls, PullEnd, PullerConfig};

/// The channel participation API's status of a channel being onboarded.
pub const STATUS_ONBOARDING: &str = "onboarding";

/// First pause after a failed pull; it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(60);

/// One channel being onboarded.
pub(super) struct Onboarding {
    /// Set to stop the onboarding (removal, node halt).
    cancel: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Height of the ledger being filled.
    height: Arc<AtomicU64>,
    guard: Arc<LedgerGuard>,
}

/// Serialises every change of an onboarding channel's ledger. Work handed to the
/// blocking pool outlives a cancelled task: each step takes `lock` and checks
/// `stopped` first, and the removal of a stopped onboarding takes `lock` too, so
/// that nothing touches the ledger once it is being deleted.
#[derive(Default)]
struct LedgerGuard {
    stopped: std::sync::atomic::AtomicBool,
    lock: std::sync::Mutex<()>,
}

impl LedgerGuard {
    /// Runs `f` on the ledger unless the onboarding was stopped.
    fn with<T>(&self, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
        let _held = self.lock.lock_unpoisoned();
        if self.stopped.load(Ordering::SeqCst) {
            return Err("the onboarding was stopped".into());
        }
        f()
    }
}

impl Registrar {
    /// Starts onboarding `bundle`'s channel up to `block` (its config block number
    /// N > 0); the channel's name is claimed. Refused when the channel's log is not
    /// shared with other orderers (a node's own log cannot continue a chain other
    /// nodes cut) or the block cannot anchor a chain. The join block is recorded in
    /// the ledger first, so that a node stopped before the channel serves resumes
    /// the onboarding at its next start.
    pub(super) async fn start_onboarding(
        &self,
        bundle: Bundle,
        block: Block,
    ) -> Result<ChannelInfo, ParticipationError> {
        let name = bundle.channel_id.clone();
        let shared = self
            .inner
            .logs
            .shared_log(&bundle)
            .map_err(ParticipationError::Failed)?;
        if !shared {
            return Err(ParticipationError::InvalidJoinBlock(format!(
                "channel {name} is ordered on this node's own log ({} consensus): it can only be joined by its genesis block",
                bundle.orderer.consensus_type
            )));
        }
        BlockVerifier::join(&block)
            .map_err(|e| ParticipationError::InvalidJoinBlock(e.to_string()))?;
        let ledgers = self.inner.node.ledgers.clone();
        let (channel, bytes) = (name.clone(), block.encode_to_vec());
        tokio::task::spawn_blocking(move || ledgers.save_join_block(&channel, &bytes))
            .await
            .map_err(|e| ParticipationError::Failed(e.to_string()))?
            .map_err(|e| ParticipationError::Failed(format!("recording the join block: {e}")))?;
        Ok(self.begin_onboarding(bundle, block))
    }

    /// Resumes the onboardings a previous run of the node did not finish (their join
    /// blocks are still recorded): what they had pulled is deleted and they start
    /// over. A recorded block that no longer decodes or anchors a chain is dropped
    /// with a warning. Called at start-up, before any channel is loaded.
    pub(super) fn resume_onboardings(&self) -> Result<Vec<String>, super::RegistrarError> {
        let ledgers = &self.inner.node.ledgers;
        let mut resumed = Vec::new();
        for (name, bytes) in ledgers.join_blocks()? {
            ledgers.remove(&name)?;
            let checked = Block::decode(bytes.as_slice())
                .map_err(|e| e.to_string())
                .and_then(|block| {
                    let (bundle, _) = super::validate_join_block(&block)?;
                    BlockVerifier::join(&block).map_err(|e| e.to_string())?;
                    if bundle.channel_id != name {
                        return Err(format!("it is a block of channel {}", bundle.channel_id));
                    }
                    Ok((bundle, block))
                });
            match checked {
                Ok((bundle, block)) => {
                    self.inner.node.claim(&name);
                    tracing::info!(channel = %name, "resuming an onboarding the node did not finish");
                    self.begin_onboarding(bundle, block);
                    resumed.push(name);
                }
                Err(reason) => {
                    tracing::warn!(channel = %name, %reason, "the recorded join block is damaged: the channel is dropped; join it again");
                    ledgers.remove_join_block(&name)?;
                }
            }
        }
        Ok(resumed)
    }

    /// Spawns the onboarding task of `bundle`'s channel and lists it.
    fn begin_onboarding(&self, bundle: Bundle, block: Block) -> ChannelInfo {
        let name = bundle.channel_id.clone();
        let (cancel, cancelled) = watch::channel(false);
        let height = Arc::new(AtomicU64::new(0));
        let guard = Arc::new(LedgerGuard::default());
        let task = self.inner.runtime.spawn(self.clone().onboard(
            bundle,
            block,
            height.clone(),
            guard.clone(),
            cancelled,
        ));
        self.inner.onboarding.lock_unpoisoned().insert(
            name.clone(),
            Onboarding {
                cancel,
                task,
                height,
                guard,
            },
        );
        tracing::info!(channel = %name, "onboarding: pulling the blocks before the join block from other orderers");
        ChannelInfo {
            name,
            consensus_relation: RELATION_OTHER,
            status: STATUS_ONBOARDING,
            height: 0,
        }
    }

    /// What the channel participation API reports of a channel being onboarded.
    pub(super) fn onboarding_info(&self, name: &str) -> Option<ChannelInfo> {
        let map = self.inner.onboarding.lock_unpoisoned();
        map.get(name).map(|o| ChannelInfo {
            name: name.to_string(),
            consensus_relation: RELATION_OTHER,
            status: STATUS_ONBOARDING,
            height: o.height.load(Ordering::Relaxed),
        })
    }

    /// Names of the channels being onboarded.
    pub(super) fn onboarding_ids(&self) -> Vec<String> {
        self.inner
            .onboarding
            .lock_unpoisoned()
            .keys()
            .cloned()
            .collect()
    }

    /// Takes `name` out of the onboardings, if it is one, and stops it; the caller
    /// holds the participation lock, so the onboarding cannot be finishing at the
    /// same time. Complete the stop with [`Registrar::finish_stop`] after releasing
    /// the lock.
    pub(super) fn take_onboarding(&self, name: &str) -> Option<Onboarding> {
        let onboarding = self.inner.onboarding.lock_unpoisoned().remove(name)?;
        onboarding.guard.stopped.store(true, Ordering::SeqCst);
        onboarding.cancel.send_replace(true);
        Some(onboarding)
    }

    /// Waits for a stopped onboarding's task and deletes what it pulled and its
    /// join block; the name is free again afterwards.
    pub(super) async fn finish_stop(
        &self,
        name: &str,
        onboarding: Onboarding,
    ) -> Result<(), String> {
        if let Err(e) = onboarding.task.await {
            tracing::error!(channel = %name, error = %e, "the onboarding task failed");
        }
        let ledgers = self.inner.node.ledgers.clone();
        let channel = name.to_string();
        let guard = onboarding.guard;
        let removed = tokio::task::spawn_blocking(move || {
            let _held = guard.lock.lock_unpoisoned();
            ledgers.remove(&channel)?;
            ledgers.remove_join_block(&channel)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        self.inner.node.release(name);
        if removed.is_ok() {
            tracing::info!(channel = %name, "onboarding stopped and its blocks deleted");
        }
        removed
    }

    /// Stops every onboarding without waiting (the node halts).
    pub(super) fn cancel_onboardings(&self) {
        for o in self.inner.onboarding.lock_unpoisoned().values() {
            o.guard.stopped.store(true, Ordering::SeqCst);
            o.cancel.send_replace(true);
        }
    }

    /// The onboarding task: pull, verify and write the blocks through the join
    /// block, then start the channel; retry a failed pull after a pause.
    async fn onboard(
        self,
        bundle: Bundle,
        block: Block,
        height: Arc<AtomicU64>,
        guard: Arc<LedgerGuard>,
        mut cancelled: watch::Receiver<bool>,
    ) {
        let name = bundle.channel_id.clone();
        let mut pause = FIRST_RETRY_PAUSE;
        let mut round = 0usize;
        loop {
            let attempt = tokio::select! {
                r = self.pull_through(&bundle, &block, &height, &guard, round) => Some(r),
                _ = cancelled.wait_for(|c| *c) => None,
            };
            let store = match attempt {
                None => return,
                Some(Ok(store)) => store,
                Some(Err(reason)) => {
                    tracing::warn!(channel = %name, %reason, retry_in = ?pause, "onboarding: the blocks could not be pulled; retrying");
                    let ledgers = self.inner.node.ledgers.clone();
                    let channel = name.clone();
                    let g = guard.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        g.with(|| ledgers.remove(&channel).map_err(|e| e.to_string()))
                    })
                    .await;
                    height.store(0, Ordering::Relaxed);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = cancelled.wait_for(|c| *c) => return,
                    }
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                    round += 1;
                    continue;
                }
            };
            self.finish_onboarding(bundle, store, &cancelled).await;
            return;
        }
    }

    /// Starts the onboarded channel's chain and makes it visible, unless the
    /// onboarding was stopped meanwhile.
    async fn finish_onboarding(
        &self,
        bundle: Bundle,
        store: BlockStore,
        cancelled: &watch::Receiver<bool>,
    ) {
        let name = bundle.channel_id.clone();
        // Held until the channel is visible and no longer an onboarding: a removal
        // either stopped this onboarding before (seen here) or finds a channel.
        let _one = self.inner.participation.lock().await;
        if *cancelled.borrow() {
            store.close();
            return;
        }
        // Block N is in place: the ledger is anchored and loads like any other from
        // now on, so the join block is no longer needed.
        let ledgers = self.inner.node.ledgers.clone();
        let done = name.clone();
        match tokio::task::spawn_blocking(move || ledgers.remove_join_block(&done)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(channel = %name, error = %e, "cannot forget the join block: the next start pulls the channel again");
            }
            Err(e) => {
                tracing::warn!(channel = %name, error = %e, "forgetting the join block failed")
            }
        }
        let me = self.clone();
        let started =
            tokio::task::spawn_blocking(move || me.start_channel(bundle, store.clone())).await;
        let channel = match started {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(channel = %name, error = %e, "onboarding: the channel's chain cannot start; remove the channel and join it again");
                return;
            }
            Err(e) => {
                tracing::error!(channel = %name, error = %e, "onboarding: starting the chain panicked");
                return;
            }
        };
        if !self.wait_started(&channel).await {
            tracing::warn!(channel = %name, "the onboarded channel's chain has not started yet; serving it anyway");
        }
        self.insert(channel.clone());
        self.inner.onboarding.lock_unpoisoned().remove(&name);
        tracing::info!(channel = %name, height = channel.store.height(), "onboarding done: channel joined");
        if *self.inner.shutdown.borrow() {
            let _ = tokio::task::spawn_blocking(move || channel.chain.halt()).await;
        }
    }

    /// How this node pulls `bundle`'s channel from its other orderers: with its own
    /// identity and client TLS, skipping its own endpoint, reporting to the node's
    /// metrics. Round `round` starts with the `round`-th orderer of the list, so that
    /// an orderer that cannot help is not asked first every time.
    pub(super) fn puller_config(
        &self,
        bundle: &Bundle,
        round: usize,
    ) -> Result<PullerConfig, String> {
        let node = &self.inner.node;
        let mut config = PullerConfig::for_channel(bundle, node.signer.clone());
        if !config.endpoints.is_empty() {
            let first = round % config.endpoints.len();
            config.endpoints.rotate_left(first);
        }
        config.own_endpoint = node.catch_up.own_endpoint.clone();
        config.tls = match &node.catch_up.tls {
            Some(tls) => Some(Arc::new(
                ClientTls::for_channel(bundle, tls).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        config.metrics = Some(self.inner.metrics.clone());
        Ok(config)
    }

    /// One pull of blocks 0..=N into a fresh ledger; the ledger, or why not. Each
    /// `round` starts with the next orderer of the list: an orderer that serves a
    /// chain the join block does not end (whose blocks up to N−1 pass, so that
    /// the others' block N is then refused) is not asked first every time.
    async fn pull_through(
        &self,
        bundle: &Bundle,
        block: &Block,
        height: &Arc<AtomicU64>,
        guard: &Arc<LedgerGuard>,
        round: usize,
    ) -> Result<BlockStore, String> {
        let name = bundle.channel_id.clone();
        let number = BlockNumber::new(block.header.as_ref().map_or(0, |h| h.number));
        let ledgers = self.inner.node.ledgers.clone();
        let g = guard.clone();
        let store = tokio::task::spawn_blocking(move || {
            g.with(|| {
                // A ledger left by an earlier attempt or channel of this name is not
                // trusted: the verifier starts from nothing.
                ledgers.remove(&name).map_err(|e| e.to_string())?;
                ledgers.open(&name).map_err(|e| e.to_string())
            })
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("preparing the ledger: {e}"))?;
        let mut verifier = BlockVerifier::join(block).map_err(|e| e.to_string())?;
        let config = self.puller_config(bundle, round)?;
        let sink_store = store.clone();
        let sink_height = height.clone();
        let g = guard.clone();
        let sink = move |b: &Block| -> Result<(), String> {
            g.with(|| {
                sink_store.append(b).map_err(|e| e.to_string())?;
                sink_height.store(sink_store.height(), Ordering::Relaxed);
                Ok(())
            })
        };
        match BlockPuller::new(config)
            .pull(&mut verifier, PullEnd::Through(number), sink)
            .await
        {
            Ok(_) if store.height() == number.height() => Ok(store),
            Ok(report) => {
                store.close();
                Err(format!(
                    "the pull ended at block {} before the join block {number}",
                    report.next
                ))
            }
            Err(e) => {
                store.close();
                Err(e.to_string())
            }
        }
    }
}
