//! One channel's shared state: its current config bundle, swapped atomically when a
//! config block is written.

use std::sync::{Arc, RwLock};

use korder_channelconfig::Bundle;
use tokio::sync::watch;

use korder_types::ids::ConfigSeq;
use korder_types::sync::RwLockExt;

/// The current config of one channel, readable from any thread.
///
/// The sequence is also published on a watch channel so that Deliver sessions can
/// re-check access when the config changes.
#[derive(Debug)]
pub struct ChannelState {
    id: String,
    bundle: RwLock<Arc<Bundle>>,
    sequence: watch::Sender<ConfigSeq>,
}

impl ChannelState {
    /// State for `bundle`'s channel.
    pub fn new(bundle: Bundle) -> Self {
        let (sequence, _) = watch::channel(bundle.sequence);
        ChannelState {
            id: bundle.channel_id.clone(),
            bundle: RwLock::new(Arc::new(bundle)),
            sequence,
        }
    }

    /// The channel id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The current bundle.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.bundle.read_unpoisoned().clone()
    }

    /// The current config sequence.
    pub fn sequence(&self) -> ConfigSeq {
        self.bundle().sequence
    }

    /// Replaces the bundle (a config block was applied).
    pub fn swap(&self, bundle: Bundle) {
        let seq = bundle.sequence;
        let new = Arc::new(bundle);
        *self.bundle.write_unpoisoned() = new;
        self.sequence.send_replace(seq);
    }

    /// Watches the config sequence.
    pub fn watch_sequence(&self) -> watch::Receiver<ConfigSeq> {
        self.sequence.subscribe()
    }
}
