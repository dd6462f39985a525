//! The registrar: the channels this node serves, and where Broadcast routes a
//! message. Channels are loaded from the ledger at start, bootstrapped from a
//! genesis block on a fresh node, and started at run time when a chain reports
//! that the system channel created one ([`ChainEvent::ChannelCreated`], consumed by
//! the registrar's event task) or when an administrator joins one by its genesis
//! block ([`Registrar::join`], the channel participation API); [`Registrar::remove`]
//! takes one away. The registrar is never called from a chain.

use korder_ledger::BlockNumber;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use korder_channelconfig::Bundle;
use korder_ledger::block::last_config_index;
use korder_ledger::{BlockStore, Ledgers};
use korder_msp::signer::SigningIdentity;
use korder_proto::common::Block;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::chain::{ChainHandle, ChainParams, StartError};
use crate::channel::ChannelState;
use crate::metrics::Metrics;
use crate::msgprocessor::Parsed;
use crate::processor::{ChainEvent, ChannelProcessor, NewChannel, NodeOptions, NodeShared};
use crate::status::ProcessError;
use korder_consensus::MsgClass;
use korder_types::sync::{MutexExt, RwLockExt};

mod catching_up;
mod onboarding;
pub use onboarding::STATUS_ONBOARDING;

/// How long a created channel stays hidden while its chain starts; after that it
/// is served anyway.
const CREATED_CHANNEL_START_LIMIT: Duration = Duration::from_secs(30);

/// Most chain events waiting for the registrar.
const EVENT_QUEUE: usize = 64;

/// Most threads loading the ledger's channels at start-up.
const MAX_LOAD_THREADS: usize = 8;

/// Opens a channel's log and starts its chain over it. The node decides here which
/// log backs which channel (the embedded log, or a Kafka topic).
pub trait LogFactory: Send + Sync + 'static {
    /// Starts the chain for `params.state`'s channel (with
    /// [`crate::chain::start_chain`], choosing the log and the start-up retry policy).
    fn start_chain(&self, bundle: &Bundle, params: ChainParams) -> Result<ChainHandle, StartError>;

    /// Deletes what the node keeps of `bundle`'s channel's log (the embedded log's
    /// files; a Kafka topic is shared with other nodes and stays). Called once the
    /// channel's chain has halted, on removal, and before a joined channel's chain
    /// starts, so that a joined channel never reads records left by an earlier one
    /// of the same name.
    fn remove_log(&self, bundle: &Bundle) -> Result<(), String> {
        let _ = bundle;
        Ok(())
    }

    /// Whether `bundle`'s channel's log is shared with the channel's other orderers
    /// (a Kafka topic): only such a channel can be joined by a config block after
    /// its genesis block, continuing from the offsets that block records. A log of
    /// the node's own (the embedded log) holds nothing another node ordered.
    fn shared_log(&self, bundle: &Bundle) -> Result<bool, String> {
        let _ = bundle;
        Ok(false)
    }
}

/// Why the registrar could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrarError {
    #[error("genesis block: {0}")]
    BadGenesis(String),
    #[error("ledger: {0}")]
    Ledger(#[from] korder_ledger::LedgerError),
    #[error("channel {channel}: {reason}")]
    Config { channel: String, reason: String },
    #[error("more than one system channel: {0} and {1}")]
    TwoSystemChannels(String, String),
    #[error("{0}")]
    Start(#[from] StartError),
}

/// Why a join or a removal was refused. The texts of the first four are Fabric's
/// (the channel participation API answers them after "cannot join: " or "cannot
/// remove: ").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParticipationError {
    /// Joins and removals of application channels are refused while the node has a
    /// system channel.
    #[error("system channel exists")]
    SystemChannelExists,
    #[error("channel already exists")]
    ChannelAlreadyExists,
    /// A system channel is joined only by a node that has no channel yet.
    #[error("application channels already exist")]
    AppChannelsAlreadyExist,
    #[error("channel does not exist")]
    ChannelNotExist,
    /// The block cannot be a join block (not a config block, or a config that is
    /// neither an application nor a system channel's).
    #[error("{0}")]
    InvalidJoinBlock(String),
    /// The channel's consensus type is not one korder runs.
    #[error(
        "consensus type {0} is not supported: korder orders channels of consensus type kafka and solo"
    )]
    UnsupportedConsensusType(String),
    /// Fabric 2.5 removes only an etcdraft system channel; korder's are kafka or solo.
    #[error("cannot remove {consensus_type} system channel: {channel}")]
    SystemChannelRemoval {
        consensus_type: String,
        channel: String,
    },
    /// The node failed while joining or removing (storage, the chain's start).
    #[error("{0}")]
    Failed(String),
}

/// What the channel participation API reports of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    /// Always `other`: kafka and solo are not cluster consensus types.
    pub consensus_relation: &'static str,
    /// `active` while the channel is served.
    pub status: &'static str,
    pub height: u64,
}

/// A block named by the channel participation API's block fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockTarget {
    Oldest,
    Newest,
    /// The last config block (the one the newest block's LAST_CONFIG names).
    Config,
    /// A block number as given (a negative one is never in the ledger).
    Number(i64),
}

/// Fabric's consensus relation of a channel ordered by Kafka or solo.
pub const RELATION_OTHER: &str = "other";
/// Fabric's status of a channel the node orders.
pub const STATUS_ACTIVE: &str = "active";

/// The channel id, bundle and kind of a block offered to [`Registrar::join`], checked
/// as Fabric checks a join block: a config block whose config has an Application
/// group (an application channel) or a Consortiums group (a system channel).
pub fn validate_join_block(block: &Block) -> Result<(Bundle, bool), String> {
    if !is_config_block(block) {
        return Err("block is not a config block".into());
    }
    let bundle = bundle_of_config_block(block)?;
    let is_app = bundle
        .config
        .channel_group
        .as_ref()
        .is_some_and(|g| g.groups.contains_key("Application"));
    if !bundle.is_system_channel() && !is_app {
        return Err("invalid config: must have at least one of application or consortiums".into());
    }
    Ok((bundle, is_app))
}

/// Whether `block`'s first envelope is a CONFIG transaction.
fn is_config_block(block: &Block) -> bool {
    use korder_proto::Message;
    use korder_proto::common::{ChannelHeader, Envelope, HeaderType, Payload};
    let Some(first) = block.data.as_ref().and_then(|d| d.data.first()) else {
        return false;
    };
    let header = Envelope::decode(first.as_ref())
        .ok()
        .and_then(|e| Payload::decode(e.payload.as_ref()).ok())
        .and_then(|p| p.header)
        .and_then(|h| ChannelHeader::decode(h.channel_header.as_ref()).ok());
    header.is_some_and(|h| h.r#type == HeaderType::Config as i32)
}

/// Whether a channel of `consensus_type` can be joined: korder runs kafka and solo.
fn joinable_consensus_type(consensus_type: &str) -> bool {
    consensus_type.eq_ignore_ascii_case("kafka") || consensus_type.eq_ignore_ascii_case("solo")
}

/// One channel served by this node.
#[derive(Debug)]
pub struct Channel {
    pub state: Arc<ChannelState>,
    pub store: BlockStore,
    pub chain: ChainHandle,
    /// The channel's filters and config-update paths, shared with its chain.
    pub processor: ChannelProcessor,
}

struct Inner {
    channels: RwLock<BTreeMap<String, Arc<Channel>>>,
    system_channel: RwLock<Option<String>>,
    logs: Arc<dyn LogFactory>,
    runtime: Handle,
    metrics: Arc<Metrics>,
    node: Arc<NodeShared>,
    /// Handed to every chain; the registrar's event task holds the receiver.
    events: mpsc::Sender<ChainEvent>,
    /// Set by [`Registrar::halt_all`]: no chain starts any more.
    shutdown: watch::Sender<bool>,
    /// Bumped whenever a channel becomes visible.
    loaded: watch::Sender<u64>,
    /// Held by a join or a removal from start to end: one at a time.
    participation: tokio::sync::Mutex<()>,
    /// Channels joined by a later config block, still pulling their blocks.
    onboarding: std::sync::Mutex<BTreeMap<String, onboarding::Onboarding>>,
    /// Channels catching their ledgers up from other orderers.
    catching_up: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// All channels of this node.
#[derive(Clone)]
pub struct Registrar {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("channels", &self.channel_ids())
            .finish()
    }
}

/// The channel id and config bundle of a config block (its single CONFIG envelope).
pub fn bundle_of_config_block(block: &Block) -> Result<Bundle, String> {
    let env = block
        .data
        .as_ref()
        .and_then(|d| d.data.first())
        .ok_or("the config block holds no envelope")?;
    Bundle::from_config_envelope(env).map_err(|e| e.to_string())
}

impl Registrar {
    /// Loads every channel of `ledgers`, bootstrapping from `genesis` when the ledger
    /// has none, and starts their chains.
    pub fn start(
        ledgers: Ledgers,
        genesis: Option<Block>,
        logs: Arc<dyn LogFactory>,
        signer: Arc<SigningIdentity>,
        runtime: Handle,
        metrics: Arc<Metrics>,
        options: impl Into<NodeOptions>,
    ) -> Result<Registrar, RegistrarError> {
        // A channel still being joined by a later config block has a ledger that is
        // not anchored yet: it is onboarded again below, never loaded.
        let joining: Vec<String> = ledgers.join_blocks()?.into_iter().map(|(n, _)| n).collect();
        let mut names: Vec<String> = ledgers
            .channels()?
            .into_iter()
            .filter(|n| !joining.contains(n))
            .collect();
        if names.is_empty()
            && let Some(genesis) = genesis
        {
            let bundle = bundle_of_config_block(&genesis).map_err(RegistrarError::BadGenesis)?;
            if !bundle.is_system_channel() {
                return Err(RegistrarError::BadGenesis(
                    "the block isn't a system channel block because it lacks ConsortiumsConfig"
                        .into(),
                ));
            }
            let store = ledgers.open(&bundle.channel_id)?;
            store.append(&genesis)?;
            tracing::info!(channel = %bundle.channel_id, "bootstrapped the system channel from the genesis block");
            names = vec![bundle.channel_id];
        }
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            channels: RwLock::new(BTreeMap::new()),
            system_channel: RwLock::new(None),
            logs,
            runtime,
            metrics,
            node: Arc::new(NodeShared::new(signer, options.into(), ledgers)),
            events,
            shutdown,
            loaded: watch::channel(0).0,
            participation: tokio::sync::Mutex::new(()),
            onboarding: std::sync::Mutex::new(BTreeMap::new()),
            catching_up: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        });
        let registrar = Registrar { inner };
        // Every channel of the ledger is claimed before any chain starts: a system
        // channel replaying the creation of one of them must not create it again.
        for name in &names {
            registrar.inner.node.claim(name);
        }
        registrar.load_channels(names)?;
        registrar.resume_onboardings()?;
        if registrar.channel_count() == 0 {
            tracing::info!("no channel: channels are joined through the channel participation API");
        } else if registrar.inner.system_channel.read_unpoisoned().is_none() {
            tracing::warn!("no system channel: channel creation is not available");
        }
        registrar
            .inner
            .runtime
            .spawn(registrar.clone().consume_events(events_rx));
        Ok(registrar)
    }

    /// Loads `names` on a few threads at once (twice the cores: a load waits on the
    /// disk too): a channel's load reads its ledger's tail and config and opens its
    /// log, and a node may have many channels. The
    /// first failure is returned once every load has ended.
    fn load_channels(&self, names: Vec<String>) -> Result<(), RegistrarError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get() * 2)
            .clamp(1, MAX_LOAD_THREADS)
            .min(names.len());
        if threads <= 1 {
            for name in names {
                self.load_channel(&name)?;
            }
            return Ok(());
        }
        let queue = Mutex::new(names.into_iter());
        let failure = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    // Runtime context for the logs a chain opens.
                    let _rt = self.inner.runtime.enter();
                    loop {
                        let Some(name) = queue.lock_unpoisoned().next() else {
                            return;
                        };
                        if failure.lock_unpoisoned().is_some() {
                            return;
                        }
                        if let Err(e) = self.load_channel(&name) {
                            failure.lock_unpoisoned().get_or_insert(e);
                        }
                    }
                });
            }
        });
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn load_channel(&self, name: &str) -> Result<Arc<Channel>, RegistrarError> {
        let store = self.inner.node.ledgers.open(name)?;
        let bundle = config_of_ledger(name, &store)?;
        let channel = self.start_channel(bundle, store)?;
        self.insert(channel.clone());
        Ok(channel)
    }
}

/// The config in force at the end of `store`, channel `name`'s ledger: the bundle of
/// the config block its last block points to.
fn config_of_ledger(name: &str, store: &BlockStore) -> Result<Bundle, RegistrarError> {
    let cfg_err = |reason: String| RegistrarError::Config {
        channel: name.to_string(),
        reason,
    };
    let last = store
        .last_block_number()
        .ok_or_else(|| cfg_err("the ledger is empty".into()))?;
    let last_block = store.block(last)?;
    let index = if last == BlockNumber::GENESIS {
        BlockNumber::GENESIS
    } else {
        last_config_index(&last_block).map_err(|e| cfg_err(e.to_string()))?
    };
    let config_block = if index == last {
        last_block
    } else {
        store.block(index)?
    };
    let bundle = bundle_of_config_block(&config_block).map_err(cfg_err)?;
    if bundle.channel_id != name {
        return Err(cfg_err(format!(
            "its config block is for channel {}",
            bundle.channel_id
        )));
    }
    Ok(bundle)
}

impl Registrar {
    /// Starts the chain of a channel whose ledger holds at least its genesis block.
    fn start_channel(
        &self,
        bundle: Bundle,
        store: BlockStore,
    ) -> Result<Arc<Channel>, RegistrarError> {
        let name = bundle.channel_id.clone();
        if bundle.is_system_channel() {
            let mut sys = self.inner.system_channel.write_unpoisoned();
            if let Some(existing) = sys.as_ref()
                && existing != &name
            {
                return Err(RegistrarError::TwoSystemChannels(existing.clone(), name));
            }
            *sys = Some(name.clone());
        }
        if let Err(reason) = check_block_signer(&bundle, &self.inner.node.signer) {
            tracing::warn!(
                channel = %name,
                reason,
                "the node's signing identity does not satisfy {BLOCK_VALIDATION}: peers will reject the blocks it signs (General.LocalMSPDir/LocalMSPID should be an identity of the channel's orderer organizations)"
            );
        }
        let state = Arc::new(ChannelState::new(bundle.clone()));
        let processor = ChannelProcessor::new(state.clone(), self.inner.node.clone());
        let params = ChainParams {
            processor: processor.clone(),
            store: store.clone(),
            events: self.inner.events.clone(),
            runtime: self.inner.runtime.clone(),
            metrics: self.inner.metrics.clone(),
        };
        let chain = self.inner.logs.start_chain(&bundle, params)?;
        Ok(Arc::new(Channel {
            state,
            store,
            chain,
            processor,
        }))
    }

    /// Makes `channel` visible to Broadcast and Deliver.
    fn insert(&self, channel: Arc<Channel>) {
        let name = channel.state.id().to_string();
        let height = channel.store.height();
        self.inner
            .channels
            .write_unpoisoned()
            .insert(name.clone(), channel);
        self.inner.loaded.send_modify(|n| *n += 1);
        tracing::info!(channel = %name, height, "channel loaded");
    }

    /// Consumes the chains' events until the registrar halts.
    async fn consume_events(self, mut events: mpsc::Receiver<ChainEvent>) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = shutdown.wait_for(|s| *s) => None,
            };
            match event {
                None => return,
                Some(ChainEvent::ConfigApplied { channel, sequence }) => {
                    tracing::info!(channel = %channel, %sequence, "config applied");
                }
                Some(ChainEvent::ChannelCreated(new)) => {
                    tokio::spawn(self.clone().start_created(new));
                }
                Some(ChainEvent::Behind { channel, reason }) => {
                    tokio::spawn(self.clone().catch_up(channel, reason));
                }
            }
        }
    }

    /// Starts a channel the system channel created. It becomes visible once its
    /// chain serves: until then clients get NOT_FOUND (which they retry), never a
    /// SERVICE_UNAVAILABLE from a chain that is still starting.
    async fn start_created(self, new: Box<NewChannel>) {
        let name = new.bundle.channel_id.clone();
        let me = self.clone();
        let started = tokio::task::spawn_blocking(move || {
            let NewChannel { bundle, store } = *new;
            me.start_channel(bundle, store)
        })
        .await;
        let channel = match started {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(channel = %name, error = %e, "cannot start the created channel");
                return;
            }
            Err(e) => {
                tracing::error!(channel = %name, error = %e, "starting the created channel panicked");
                return;
            }
        };
        if !self.wait_started(&channel).await {
            tracing::warn!(channel = %name, "the created channel's chain has not started yet; serving it anyway");
        }
        self.insert(channel.clone());
        tracing::info!(channel = %name, "created channel");
        if *self.inner.shutdown.borrow() {
            // Halted while the chain started: halt_all may not have seen it.
            let _ = tokio::task::spawn_blocking(move || channel.chain.halt()).await;
        }
    }

    /// Waits (bounded by [`CREATED_CHANNEL_START_LIMIT`], or until the registrar
    /// halts) for `channel`'s chain to serve or to fail.
    async fn wait_started(&self, channel: &Channel) -> bool {
        let mut status = channel.chain.status();
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::select! {
            r = tokio::time::timeout(
                CREATED_CHANNEL_START_LIMIT,
                status.wait_for(|s| s.started || s.halted || s.error.is_some()),
            ) => r.is_ok(),
            _ = shutdown.wait_for(|s| *s) => true,
        }
    }

    /// Joins the channel whose genesis config block is `block`, as Fabric 2.5's
    /// channel participation does for a member of the channel: the block becomes
    /// the channel's block 0 and its chain starts. Refused while the node has a
    /// system channel, for a channel it has, for a system channel when it has other
    /// channels, for a block after the genesis block and for a consensus type korder
    /// does not run. The channel is visible once its chain serves (or after a bound).
    pub async fn join(&self, block: Block) -> Result<ChannelInfo, ParticipationError> {
        let (bundle, is_app) =
            validate_join_block(&block).map_err(ParticipationError::InvalidJoinBlock)?;
        let _one = self.inner.participation.lock().await;
        let name = bundle.channel_id.clone();
        if self.system_channel_id().is_some() {
            return Err(ParticipationError::SystemChannelExists);
        }
        if self.channel(&name).is_some() || self.onboarding_info(&name).is_some() {
            return Err(ParticipationError::ChannelAlreadyExists);
        }
        if !is_app && self.channel_count() > 0 {
            return Err(ParticipationError::AppChannelsAlreadyExist);
        }
        let number = block.header.as_ref().map_or(0, |h| h.number);
        if number != 0 && !is_app {
            return Err(ParticipationError::InvalidJoinBlock(format!(
                "a system channel is joined by its genesis block, not by block {number}"
            )));
        }
        let consensus_type = bundle.orderer.consensus_type.clone();
        if !joinable_consensus_type(&consensus_type) {
            return Err(ParticipationError::UnsupportedConsensusType(consensus_type));
        }
        if !self.inner.node.claim(&name) {
            // The system channel is creating it (or a removal is under way).
            return Err(ParticipationError::ChannelAlreadyExists);
        }
        if number != 0 {
            return self.start_onboarding(bundle, block).await.inspect_err(|_| {
                self.inner.node.release(&name);
            });
        }
        let me = self.clone();
        let started = tokio::task::spawn_blocking(move || me.start_joined(bundle, &block)).await;
        let channel = match started {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.inner.node.release(&name);
                return Err(e);
            }
            Err(e) => {
                self.inner.node.release(&name);
                return Err(ParticipationError::Failed(format!(
                    "starting the channel panicked: {e}"
                )));
            }
        };
        if !self.wait_started(&channel).await {
            tracing::warn!(channel = %name, "the joined channel's chain has not started yet; serving it anyway");
        }
        let info = self.info_of(&channel);
        self.insert(channel.clone());
        tracing::info!(channel = %name, "joined channel");
        if *self.inner.shutdown.borrow() {
            // Halted while the chain started: halt_all may not have seen it.
            let _ = tokio::task::spawn_blocking(move || channel.chain.halt()).await;
        }
        Ok(info)
    }

    /// Writes the genesis block to a fresh ledger and starts the chain; undoes both
    /// on failure. Blocking.
    fn start_joined(
        &self,
        bundle: Bundle,
        block: &Block,
    ) -> Result<Arc<Channel>, ParticipationError> {
        let name = bundle.channel_id.clone();
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            ParticipationError::Failed(format!("{what} of channel {name}: {e}"))
        };
        let ledgers = &self.inner.node.ledgers;
        // A ledger or a log left by an earlier channel of this name (a removal that
        // failed half way) is not this channel's.
        ledgers
            .remove(&name)
            .map_err(|e| failed("removing an old ledger", &e))?;
        self.inner
            .logs
            .remove_log(&bundle)
            .map_err(|e| failed("removing an old log", &e))?;
        let undo = |store: Option<&BlockStore>| {
            if let Some(s) = store {
                s.close();
            }
            if let Err(e) = ledgers.remove(&name) {
                tracing::warn!(channel = %name, error = %e, "cannot remove the ledger of a failed join");
            }
        };
        let store = ledgers
            .open(&name)
            .map_err(|e| failed("creating the ledger", &e))?;
        if let Err(e) = store.append(block) {
            undo(Some(&store));
            return Err(failed("writing the genesis block", &e));
        }
        match self.start_channel(bundle, store.clone()) {
            Ok(c) => Ok(c),
            Err(e) => {
                undo(Some(&store));
                Err(failed("starting the chain", &e))
            }
        }
    }

    /// Removes `name`: Broadcast and Deliver see NOT_FOUND at once, then its chain
    /// halts, its ledger and (on the embedded log) its log are deleted, as Fabric
    /// 2.5 deletes a removed channel's ledger. The name can be joined again. Refused
    /// for an application channel while the node has a system channel, and for the
    /// system channel itself (Fabric 2.5 removes only an etcdraft system channel).
    pub async fn remove(&self, name: &str) -> Result<(), ParticipationError> {
        let one = self.inner.participation.lock().await;
        if let Some(onboarding) = self.take_onboarding(name) {
            drop(one);
            return self
                .finish_stop(name, onboarding)
                .await
                .map_err(ParticipationError::Failed);
        }
        if let Some(system) = self.system_channel_id() {
            if system != name {
                return Err(ParticipationError::SystemChannelExists);
            }
            let consensus_type = self
                .channel(&system)
                .map(|c| c.state.bundle().orderer.consensus_type.clone())
                .unwrap_or_default();
            return Err(ParticipationError::SystemChannelRemoval {
                consensus_type,
                channel: system,
            });
        }
        let Some(channel) = self.inner.channels.write_unpoisoned().remove(name) else {
            return Err(ParticipationError::ChannelNotExist);
        };
        tracing::info!(channel = %name, "removing channel");
        let metrics = self.inner.metrics.clone();
        let ledgers = self.inner.node.ledgers.clone();
        let logs = self.inner.logs.clone();
        let removed = tokio::task::spawn_blocking(move || {
            channel.chain.halt();
            channel.store.close();
            let bundle = channel.state.bundle();
            metrics.report_removed(&bundle.channel_id);
            ledgers
                .remove(&bundle.channel_id)
                .map_err(|e| format!("removing the ledger: {e}"))?;
            logs.remove_log(&bundle)
                .map_err(|e| format!("removing the log: {e}"))
        })
        .await
        .map_err(|e| format!("removal panicked: {e}"))
        .and_then(|r| r);
        // The name is free again even when deleting failed: a later join removes
        // what is left before it writes the new ledger.
        self.inner.node.release(name);
        match removed {
            Ok(()) => {
                tracing::info!(channel = %name, "removed channel");
                Ok(())
            }
            Err(e) => {
                tracing::error!(channel = %name, error = %e, "removing the channel's data failed");
                Err(ParticipationError::Failed(e))
            }
        }
    }

    fn info_of(&self, channel: &Channel) -> ChannelInfo {
        ChannelInfo {
            name: channel.state.id().to_string(),
            consensus_relation: RELATION_OTHER,
            status: STATUS_ACTIVE,
            height: channel.store.height(),
        }
    }

    /// What the channel participation API reports of `name`.
    pub fn channel_info(&self, name: &str) -> Option<ChannelInfo> {
        self.channel(name)
            .map(|c| self.info_of(&c))
            .or_else(|| self.onboarding_info(name))
    }

    /// The block `target` of channel `name`, for the channel participation API's
    /// block fetch; the error is the text of its 404 answer (Fabric's where one
    /// applies).
    pub fn fetch_block(&self, name: &str, target: BlockTarget) -> Result<Block, String> {
        let Some(channel) = self.channel(name) else {
            return Err(if self.onboarding_info(name).is_some() {
                "channel is not ready, he is a follower".into()
            } else {
                ParticipationError::ChannelNotExist.to_string()
            });
        };
        let store = &channel.store;
        let last = BlockNumber::last_of(store.height())
            .ok_or_else(|| format!("channel {name} has no block"))?;
        let number = match target {
            BlockTarget::Oldest => BlockNumber::GENESIS,
            BlockTarget::Newest => last,
            BlockTarget::Config if last == BlockNumber::GENESIS => last,
            BlockTarget::Config => {
                let newest = store.block(last).map_err(|e| e.to_string())?;
                last_config_index(&newest).map_err(|e| e.to_string())?
            }
            BlockTarget::Number(n) => u64::try_from(n).map(BlockNumber::new).map_err(|_| {
                format!("block {n} is not in the ledger (height {})", store.height())
            })?,
        };
        store.block(number).map_err(|e| e.to_string())
    }

    /// Every channel the channel participation API lists: those served and those
    /// being onboarded, by name.
    pub fn participation_ids(&self) -> Vec<String> {
        let mut ids = self.channel_ids();
        ids.extend(self.onboarding_ids());
        ids.sort();
        ids
    }

    /// The node's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// Number of channels, the system channel included.
    pub fn channel_count(&self) -> u64 {
        self.inner.channels.read_unpoisoned().len() as u64
    }

    /// The channel called `id`.
    pub fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        self.inner.channels.read_unpoisoned().get(id).cloned()
    }

    /// The channel called `id` once it is served (a created channel becomes visible
    /// when its chain has started).
    pub async fn served_channel(&self, id: &str) -> Arc<Channel> {
        let mut loaded = self.inner.loaded.subscribe();
        loop {
            if let Some(c) = self.channel(id) {
                return c;
            }
            // The sender lives as long as `self`: changed() cannot fail here.
            let _ = loaded.changed().await;
        }
    }

    /// Ids of every channel.
    pub fn channel_ids(&self) -> Vec<String> {
        self.inner
            .channels
            .read_unpoisoned()
            .keys()
            .cloned()
            .collect()
    }

    /// The system channel's id, if this node has one.
    pub fn system_channel_id(&self) -> Option<String> {
        self.inner.system_channel.read_unpoisoned().clone()
    }

    /// Where Broadcast sends a parsed message: its channel, or the system channel for
    /// an unknown one (whose processor takes a CONFIG_UPDATE as a channel creation
    /// and refuses a normal message NOT_FOUND).
    pub fn broadcast_target(&self, parsed: &Parsed) -> Result<Arc<Channel>, ProcessError> {
        let id = &parsed.channel_header.channel_id;
        let channel = match self.channel(id) {
            Some(c) => c,
            None => match self.system_channel_id().and_then(|s| self.channel(&s)) {
                Some(sys) => sys,
                None if parsed.class() == MsgClass::ConfigUpdate => {
                    return Err(ProcessError::bad(
                        "channel creation request not allowed because the orderer system channel is not defined",
                    ));
                }
                None => return Err(ProcessError::ChannelNotFound),
            },
        };
        Ok(channel)
    }

    /// Halts every chain (each writes its block in flight) and stops starting
    /// created channels. Blocking.
    pub fn halt_all(&self) {
        self.inner.shutdown.send_replace(true);
        self.cancel_onboardings();
        let channels: Vec<_> = self
            .inner
            .channels
            .read_unpoisoned()
            .values()
            .cloned()
            .collect();
        for c in channels {
            c.chain.halt();
        }
    }
}

/// The policy a peer checks every block's signature against.
pub const BLOCK_VALIDATION: &str = "/Channel/Orderer/BlockValidation";

/// Whether a block signed by `signer` would meet `bundle`'s [`BLOCK_VALIDATION`]
/// policy, as peers check it: the policy is evaluated on a signature of `signer`
/// over a probe message. `Err` says why not.
pub fn check_block_signer(bundle: &Bundle, signer: &SigningIdentity) -> Result<(), String> {
    let probe = bytes::Bytes::from_static(b"korder block signer check");
    let signature = signer.sign(&probe).map_err(|e| e.to_string())?;
    let signed = korder_channelconfig::policies::SignedData {
        data: probe,
        identity: signer.serialized(),
        signature,
    };
    bundle
        .evaluate(BLOCK_VALIDATION, &[signed])
        .map_err(|e| e.to_string())
}
