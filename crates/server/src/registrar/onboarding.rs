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
use korder_ledger::{BlockNumber, BlockStore, LedgerError};
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
}

impl Registrar {
    /// Starts onboarding `bundle`'s channel up to `block` (its config block number
    /// N > 0); the channel's name is claimed. Refused when the channel's log is not
    /// shared with other orderers (a node's own log cannot continue a chain other
    /// nodes cut) or the block cannot anchor a chain.
    pub(super) fn start_onboarding(
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
        let (cancel, cancelled) = watch::channel(false);
        let height = Arc::new(AtomicU64::new(0));
        let task = self.inner.runtime.spawn(self.clone().onboard(
            bundle,
            block,
            height.clone(),
            cancelled,
        ));
        self.inner.onboarding.lock_unpoisoned().insert(
            name.clone(),
            Onboarding {
                cancel,
                task,
                height,
            },
        );
        tracing::info!(channel = %name, "onboarding: pulling the blocks before the join block from other orderers");
        Ok(ChannelInfo {
            name,
            consensus_relation: RELATION_OTHER,
            status: STATUS_ONBOARDING,
            height: 0,
        })
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

    /// Stops onboarding `name`, if it is being onboarded, and deletes what it pulled;
    /// `None` when it is not. The caller must not hold the participation lock: the
    /// onboarding takes it to start the channel.
    pub(super) async fn stop_onboarding(&self, name: &str) -> Option<Result<(), String>> {
        let onboarding = self.inner.onboarding.lock_unpoisoned().remove(name)?;
        onboarding.cancel.send_replace(true);
        if let Err(e) = onboarding.task.await {
            tracing::error!(channel = %name, error = %e, "the onboarding task failed");
        }
        let ledgers = self.inner.node.ledgers.clone();
        let channel = name.to_string();
        let removed = tokio::task::spawn_blocking(move || ledgers.remove(&channel))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        self.inner.node.release(name);
        if removed.is_ok() {
            tracing::info!(channel = %name, "onboarding stopped and its blocks deleted");
        }
        Some(removed)
    }

    /// Stops every onboarding without waiting (the node halts).
    pub(super) fn cancel_onboardings(&self) {
        for o in self.inner.onboarding.lock_unpoisoned().values() {
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
        mut cancelled: watch::Receiver<bool>,
    ) {
        let name = bundle.channel_id.clone();
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let attempt = tokio::select! {
                r = self.pull_through(&bundle, &block, &height) => Some(r),
                _ = cancelled.wait_for(|c| *c) => None,
            };
            let store = match attempt {
                None => return,
                Some(Ok(store)) => store,
                Some(Err(reason)) => {
                    tracing::warn!(channel = %name, %reason, retry_in = ?pause, "onboarding: the blocks could not be pulled; retrying");
                    let ledgers = self.inner.node.ledgers.clone();
                    let channel = name.clone();
                    let _ = tokio::task::spawn_blocking(move || ledgers.remove(&channel)).await;
                    height.store(0, Ordering::Relaxed);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = cancelled.wait_for(|c| *c) => return,
                    }
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
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
        let _one = self.inner.participation.lock().await;
        if *cancelled.borrow() {
            store.close();
            return;
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

    /// One pull of blocks 0..=N into a fresh ledger; the ledger, or why not.
    async fn pull_through(
        &self,
        bundle: &Bundle,
        block: &Block,
        height: &Arc<AtomicU64>,
    ) -> Result<BlockStore, String> {
        let name = bundle.channel_id.clone();
        let number = BlockNumber::new(block.header.as_ref().map_or(0, |h| h.number));
        let ledgers = self.inner.node.ledgers.clone();
        let store = tokio::task::spawn_blocking(move || {
            // A ledger left by an earlier attempt or channel of this name is not
            // trusted: the verifier starts from nothing.
            ledgers.remove(&name)?;
            ledgers.open(&name)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("preparing the ledger: {e}"))?;
        let mut verifier = BlockVerifier::join(block).map_err(|e| e.to_string())?;
        let node = &self.inner.node;
        let mut config = PullerConfig::for_channel(bundle, node.signer.clone());
        config.own_endpoint = node.catch_up.own_endpoint.clone();
        config.tls = match &node.catch_up.tls {
            Some(tls) => Some(Arc::new(
                ClientTls::for_channel(bundle, tls).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        config.metrics = Some(self.inner.metrics.clone());
        let sink_store = store.clone();
        let sink_height = height.clone();
        let sink = move |b: &Block| -> Result<(), LedgerError> {
            sink_store.append(b)?;
            sink_height.store(sink_store.height(), Ordering::Relaxed);
            Ok(())
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
