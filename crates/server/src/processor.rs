//! One channel's message processor: its current config (the bundle), the node's
//! signer and the filter settings, as one value that Broadcast and the chain both
//! call.
//!
//! Broadcast calls [`ChannelProcessor::process`] on an envelope from a client; the
//! chain calls [`ChannelProcessor::revalidate_normal`] and
//! [`ChannelProcessor::revalidate_config`] on a stale record it reads back from the
//! log (resubmission), and [`ChannelProcessor::apply_config`] on a config block
//! before it is written. The decision "an update of this channel, or a channel
//! creation on the system channel" is made once, in
//! [`ChannelProcessor::process_config_update`].
//!
//! Applying an ORDERER_TRANSACTION writes the new channel's genesis block (so that
//! the creation is durable before the system channel's block that orders it) and
//! returns the new channel; the chain hands it to the registrar as a
//! [`ChainEvent`], and the registrar starts it. Nothing here calls back into the
//! registrar.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use korder_channelconfig::configtx::validate_config_envelope;
use korder_channelconfig::{Bundle, config_from_envelope};
use korder_consensus::{ConfigSeq, MsgClass};
use korder_ledger::block::next_block;
use korder_ledger::{BlockStore, Ledgers};
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Envelope, HeaderType};

use crate::blockwriter::MetadataLayout;
use crate::channel::ChannelState;
use crate::msgprocessor::{
    FilterOptions, Parsed, last_update_of, parse, process_channel_creation, process_config_update,
    process_normal,
};
use crate::status::ProcessError;
use korder_types::sync::MutexExt;

/// What a validated envelope is ordered as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A transaction: ordered with `ChainHandle::order`.
    Normal,
    /// An orderer-built CONFIG or ORDERER_TRANSACTION: ordered with
    /// `ChainHandle::configure`.
    Config,
}

/// What validation made of an envelope: the record to order and the config
/// sequence it was validated at.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    /// The envelope to order: the client's bytes for a normal message, the
    /// orderer-built envelope for a config update.
    pub envelope: Bytes,
    /// The config sequence the envelope was validated at.
    pub config_seq: ConfigSeq,
    pub kind: MessageKind,
}

/// A channel that a config block of the system channel created: its ledger holds
/// its genesis block; its chain is not started yet.
#[derive(Debug)]
pub struct NewChannel {
    pub bundle: Bundle,
    pub store: BlockStore,
}

/// What applying a config block's envelope did.
#[derive(Debug)]
pub enum ConfigApplied {
    /// A CONFIG: the channel's bundle was replaced.
    Updated { sequence: ConfigSeq },
    /// An ORDERER_TRANSACTION: a channel was created.
    Created(Box<NewChannel>),
    /// An ORDERER_TRANSACTION for a channel this node already has (a replay).
    AlreadyCreated { channel: String },
}

/// What a chain reports to the registrar.
#[derive(Debug)]
pub enum ChainEvent {
    /// A config block changed `channel`'s config.
    ConfigApplied {
        channel: String,
        sequence: ConfigSeq,
    },
    /// A config block of the system channel created a channel; the registrar
    /// starts its chain.
    ChannelCreated(Box<NewChannel>),
    /// `channel`'s chain stopped because its log no longer holds the records it
    /// needs next; the registrar catches its ledger up from the channel's other
    /// orderers, then starts a new chain.
    Behind { channel: String, reason: String },
}

/// How the node reaches the channel's other orderers to catch up from them.
#[derive(Clone, Debug, Default)]
pub struct CatchUpSettings {
    /// The node's own Broadcast/Deliver address as the channel configs list it
    /// (`host:port`), skipped when pulling.
    pub own_endpoint: Option<String>,
    /// The node's `General.TLS` material, presented as its client certificate;
    /// `None` pulls over plain TCP.
    pub tls: Option<Arc<crate::tls::TlsSettings>>,
}

/// Node-wide settings every channel follows.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// How envelopes are checked.
    pub filters: FilterOptions,
    /// The block metadata layout of channels without the `V2_0` orderer capability
    /// (`Korder.BlockMetadata`).
    pub block_metadata: MetadataLayout,
    /// The early-cut horizon (`Korder.EarlyCut`); `None` cuts by BatchTimeout only.
    pub early_cut: Option<Duration>,
    /// How to pull blocks from other orderers (joins by a later config block).
    pub catch_up: CatchUpSettings,
}

impl From<FilterOptions> for NodeOptions {
    fn from(filters: FilterOptions) -> Self {
        NodeOptions {
            filters,
            ..NodeOptions::default()
        }
    }
}

/// What every channel's processor shares: the node's identity, its settings, its
/// ledgers and the names of its channels.
pub(crate) struct NodeShared {
    pub(crate) signer: Arc<SigningIdentity>,
    pub(crate) filters: FilterOptions,
    pub(crate) block_metadata: MetadataLayout,
    pub(crate) early_cut: Option<Duration>,
    pub(crate) catch_up: CatchUpSettings,
    pub(crate) ledgers: Ledgers,
    /// Every channel this node has or is creating: what the channel limit counts,
    /// and the names a creation must not reuse.
    names: Mutex<BTreeSet<String>>,
}

impl NodeShared {
    pub(crate) fn new(
        signer: Arc<SigningIdentity>,
        options: NodeOptions,
        ledgers: Ledgers,
    ) -> Self {
        NodeShared {
            signer,
            filters: options.filters,
            block_metadata: options.block_metadata,
            early_cut: options.early_cut,
            catch_up: options.catch_up,
            ledgers,
            names: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records that the node has `channel`; false if it already had it.
    pub(crate) fn claim(&self, channel: &str) -> bool {
        self.names.lock_unpoisoned().insert(channel.to_string())
    }

    pub(crate) fn release(&self, channel: &str) {
        self.names.lock_unpoisoned().remove(channel);
    }

    fn channel_count(&self) -> u64 {
        self.names.lock_unpoisoned().len() as u64
    }
}

/// The message processor of one channel. Clones share the channel's state.
#[derive(Clone)]
pub struct ChannelProcessor {
    state: Arc<ChannelState>,
    node: Arc<NodeShared>,
}

impl std::fmt::Debug for ChannelProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelProcessor")
            .field("channel", &self.state.id())
            .finish()
    }
}

impl ChannelProcessor {
    pub(crate) fn new(state: Arc<ChannelState>, node: Arc<NodeShared>) -> Self {
        ChannelProcessor { state, node }
    }

    /// The channel's state (its current bundle).
    pub fn state(&self) -> &Arc<ChannelState> {
        &self.state
    }

    /// The node's signing identity.
    pub fn signer(&self) -> &Arc<SigningIdentity> {
        &self.node.signer
    }

    /// The node's early-cut horizon (`Korder.EarlyCut`), if it cuts early.
    pub fn early_cut(&self) -> Option<Duration> {
        self.node.early_cut
    }

    /// The metadata layout of the channel's next block, as its config stands now.
    pub fn block_metadata(&self) -> MetadataLayout {
        MetadataLayout::for_channel(
            self.node.block_metadata,
            self.state.bundle().orderer.capabilities.iter(),
        )
    }

    /// Validates an envelope a client broadcast to this channel (`raw` is its bytes
    /// as received): the filters for a normal message; for a CONFIG_UPDATE, the
    /// orderer-signed config envelope to order. CPU work (signature checks).
    pub fn process(&self, parsed: &Parsed, raw: &Bytes) -> Result<Validated, ProcessError> {
        match parsed.class() {
            MsgClass::ConfigUpdate => {
                let (envelope, config_seq) = self.process_config_update(parsed)?;
                Ok(Validated {
                    envelope: envelope.encode_to_vec().into(),
                    config_seq,
                    kind: MessageKind::Config,
                })
            }
            MsgClass::Normal => Ok(Validated {
                envelope: raw.clone(),
                config_seq: self.process_normal(parsed)?,
                kind: MessageKind::Normal,
            }),
            MsgClass::Config => Err(ProcessError::bad(
                "message is of type that cannot be processed directly",
            )),
        }
    }

    fn process_normal(&self, parsed: &Parsed) -> Result<ConfigSeq, ProcessError> {
        process_normal(
            &parsed.envelope,
            &parsed.channel_header.channel_id,
            &self.state.bundle(),
            &self.node.filters,
        )
    }

    /// A client's CONFIG_UPDATE against this channel's current config: an update of
    /// this channel, or — when it names another channel (the registrar routes those
    /// to the system channel) — a channel creation. The orderer-built envelope and
    /// the sequence it was built at.
    pub fn process_config_update(
        &self,
        update: &Parsed,
    ) -> Result<(Envelope, ConfigSeq), ProcessError> {
        let bundle = self.state.bundle();
        let signer = self.node.signer.as_ref();
        let filters = &self.node.filters;
        if update.channel_header.channel_id == bundle.channel_id {
            process_config_update(&update.envelope, &bundle, signer, filters)
        } else {
            let channels = self.node.channel_count();
            process_channel_creation(&update.envelope, &bundle, channels, signer, filters)
        }
    }

    /// Re-runs the filters on a normal envelope read back from the log (validated
    /// under an older config); the sequence it is valid at.
    pub fn revalidate_normal(&self, envelope: &Bytes) -> Result<ConfigSeq, ProcessError> {
        let envelope = Envelope::decode(envelope.as_ref())
            .map_err(|e| ProcessError::bad(format!("envelope does not decode: {e}")))?;
        self.process_normal(&parse(envelope)?)
    }

    /// Re-proposes the client update behind a stale config envelope read back from
    /// the log against the current config: the rebuilt envelope and its sequence.
    pub fn revalidate_config(&self, envelope: &Bytes) -> Result<(Bytes, ConfigSeq), ProcessError> {
        let update = parse(last_update_of(envelope)?)?;
        let (envelope, seq) = self.process_config_update(&update)?;
        Ok((envelope.encode_to_vec().into(), seq))
    }

    /// Applies a config block's envelope before the block is written: a CONFIG
    /// replaces the channel's bundle; an ORDERER_TRANSACTION writes the new
    /// channel's genesis block into the ledger and returns the new channel.
    pub fn apply_config(&self, envelope: &Bytes) -> Result<ConfigApplied, String> {
        let parsed = Envelope::decode(envelope.as_ref())
            .map_err(|e| e.to_string())
            .and_then(|env| parse(env).map_err(|e| e.to_string()))?;
        let header_type = parsed.channel_header.r#type;
        if header_type == HeaderType::OrdererTransaction as i32 {
            return self.create_channel(&parsed.payload.data);
        }
        if header_type != HeaderType::Config as i32 {
            return Err(format!(
                "a config block holds an envelope of type {header_type}"
            ));
        }
        let (id, config) = config_from_envelope(envelope).map_err(|e| e.to_string())?;
        if id != self.state.id() {
            return Err(format!(
                "config for channel {id} in channel {}",
                self.state.id()
            ));
        }
        let bundle =
            validate_config_envelope(&self.state.bundle(), &config).map_err(|e| e.to_string())?;
        let sequence = bundle.sequence;
        self.state.swap(bundle);
        Ok(ConfigApplied::Updated { sequence })
    }

    /// Writes the genesis block of the channel `config_envelope` configures, unless
    /// the node has that channel already.
    fn create_channel(&self, config_envelope: &Bytes) -> Result<ConfigApplied, String> {
        let bundle = Bundle::from_config_envelope(config_envelope).map_err(|e| e.to_string())?;
        let channel = bundle.channel_id.clone();
        if !self.node.claim(&channel) {
            return Ok(ConfigApplied::AlreadyCreated { channel });
        }
        let created = self.node.ledgers.open(&channel).and_then(|store| {
            if store.height() == 0 {
                store.append(&next_block(None, vec![config_envelope.clone()]))?;
            }
            Ok(store)
        });
        match created {
            Ok(store) => Ok(ConfigApplied::Created(Box::new(NewChannel {
                bundle,
                store,
            }))),
            Err(e) => {
                self.node.release(&channel);
                Err(format!("creating channel {channel}: {e}"))
            }
        }
    }
}
