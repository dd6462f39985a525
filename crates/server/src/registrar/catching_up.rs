//! Catching a running channel up from its other orderers. A chain on a shared log
//! (Kafka) that finds the log no longer holds the records it needs next — removed
//! by retention or `DeleteRecords`, or the node's data restored from an older copy —
//! stops before writing anything ([`crate::resume`]) and reports it. The registrar
//! then pulls the blocks the node lacks from the channel's other orderers, each
//! verified before it is written ([`crate::catchup`]), up to the height an orderer
//! has, and starts a new chain on the longer ledger: it reads the log from the
//! offsets recorded in its new last block. When that block's records are gone too
//! (every orderer is behind the log), the next round pulls again after a pause that
//! doubles from 1 s to 60 s. Meanwhile the channel answers SERVICE_UNAVAILABLE and
//! `/healthz` names it with the reason.

use std::sync::Arc;
use std::time::Duration;

use korder_ledger::BlockStore;
use korder_types::sync::MutexExt;

use super::{Channel, Registrar, config_of_ledger};
use crate::catchup::{BlockPuller, BlockVerifier, PullEnd};

/// First pause between two rounds of a channel's catch-up; it doubles up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// A channel's claim on its catch-up: one catch-up per channel at a time. The
/// claim is given up when the task ends, however it ends, or before the task
/// starts a new chain (whose own report of missing records must start a new
/// catch-up).
struct Running<'a> {
    registrar: &'a Registrar,
    name: String,
    held: bool,
}

impl<'a> Running<'a> {
    /// The claim on `name`'s catch-up, unless another task holds it.
    fn claim(registrar: &'a Registrar, name: &str) -> Option<Running<'a>> {
        let mut running = Running {
            registrar,
            name: name.to_string(),
            held: false,
        };
        running.reclaim().then_some(running)
    }

    fn reclaim(&mut self) -> bool {
        if !self.held {
            self.held = self
                .registrar
                .inner
                .catching_up
                .lock_unpoisoned()
                .insert(self.name.clone());
        }
        self.held
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            self.registrar
                .inner
                .catching_up
                .lock_unpoisoned()
                .remove(&self.name);
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

impl Registrar {
    /// Catches channel `name` up after its chain stopped because its log lost the
    /// records it needs (`reason`), then starts a new chain. One catch-up per channel
    /// at a time; it ends when the channel is removed or the node halts.
    pub(super) async fn catch_up(self, name: String, reason: String) {
        let Some(mut running) = Running::claim(&self, &name) else {
            return;
        };
        tracing::warn!(channel = %name, %reason, "catching up from the channel's other orderers");
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut pause = FIRST_PAUSE;
        let mut round = 0usize;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let Some(channel) = self.channel(&name) else {
                return;
            };
            match self.pull_missing(&channel, round).await {
                Ok(0) => {
                    tracing::warn!(channel = %name, height = channel.store.height(), retry_in = ?pause, "catch-up: no other orderer has blocks after this node's last block; the channel stays stopped");
                }
                Ok(pulled) => {
                    tracing::info!(channel = %name, pulled, height = channel.store.height(), "catch-up: blocks pulled from other orderers; restarting the chain");
                    running.release();
                    match self.restart(&name, &channel).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::error!(channel = %name, error = %e, retry_in = ?pause, "catch-up: the channel's chain cannot start")
                        }
                    }
                    if !running.reclaim() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(channel = %name, error = %e, retry_in = ?pause, "catch-up: pulling blocks failed; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            pause = (pause * 2).min(MAX_PAUSE);
            round += 1;
        }
    }

    /// One round: the blocks after the ledger's last one, from an orderer of the
    /// channel, verified and appended; how many.
    async fn pull_missing(&self, channel: &Channel, round: usize) -> Result<u64, String> {
        let store = channel.store.clone();
        let before = store.height();
        let last_number = store
            .last_block_number()
            .ok_or("the ledger is empty".to_string())?;
        let reader = store.clone();
        let last = tokio::task::spawn_blocking(move || reader.block(last_number))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading the last block: {e}"))?;
        let bundle = channel.state.bundle();
        let mut verifier =
            BlockVerifier::after(&last, bundle.clone()).map_err(|e| e.to_string())?;
        let config = self.puller_config(&bundle, round)?;
        let sink_store = store.clone();
        let sink = move |b: &korder_proto::common::Block| -> Result<(), String> {
            sink_store.append(b).map_err(|e| e.to_string())
        };
        let pulled = BlockPuller::new(config)
            .pull(&mut verifier, PullEnd::EndpointHeight, sink)
            .await;
        let appended = store.height() - before;
        match pulled {
            Ok(_) => Ok(appended),
            // What was verified and written stays: the next round continues after it.
            Err(e) if appended > 0 => {
                tracing::warn!(channel = %channel.state.id(), error = %e, appended, "catch-up: the pull ended early");
                Ok(appended)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Replaces the stopped channel `old` by a channel started on its (longer)
    /// ledger, under the config in force at its end; nothing if the channel was
    /// removed meanwhile.
    async fn restart(&self, name: &str, old: &Arc<Channel>) -> Result<(), String> {
        let _one = self.inner.participation.lock().await;
        let current = self.channel(name);
        if !current.is_some_and(|c| Arc::ptr_eq(&c, old)) || *self.inner.shutdown.borrow() {
            return Ok(());
        }
        let me = self.clone();
        let store: BlockStore = old.store.clone();
        let channel_name = name.to_string();
        let channel = tokio::task::spawn_blocking(move || {
            let bundle = config_of_ledger(&channel_name, &store).map_err(|e| e.to_string())?;
            me.start_channel(bundle, store).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        self.wait_started(&channel).await;
        self.insert(channel);
        Ok(())
    }
}
