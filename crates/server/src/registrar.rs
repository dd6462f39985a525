//! The registrar: every channel this node serves, loaded from the ledger at start,
//! bootstrapped from a genesis block on a fresh node, and created at run time when
//! the system channel orders a channel creation.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};

use bytes::Bytes;
use korder_channelconfig::configtx::validate_config_envelope;
use korder_channelconfig::{Bundle, config_from_envelope};
use korder_ledger::block::{last_config_index, next_block};
use korder_ledger::{BlockStore, Ledgers};
use korder_proto::Message;
use korder_proto::common::{Block, ChannelHeader, Envelope, HeaderType, Payload};
use tokio::runtime::Handle;

use crate::chain::{ChainHandle, ChainParams, ConfigHooks, StartError};
use crate::channel::ChannelState;
use crate::metrics::Metrics;
use crate::msgprocessor::{
    FilterOptions, Parsed, last_update_of, process_channel_creation, process_config_update,
    revalidate_normal,
};
use crate::signer::Signer;
use crate::status::ProcessError;
use korder_consensus::MsgClass;

/// How long channel creation waits for the new chain to start before the channel
/// is served anyway.
const CREATED_CHANNEL_START_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens a channel's log and starts its chain over it. The node decides here which
/// log backs which channel (the embedded log, or a Kafka topic).
pub trait LogFactory: Send + Sync + 'static {
    /// Starts the chain for `params.state`'s channel (with
    /// [`crate::chain::start_chain`], choosing the log and the start-up retry policy).
    fn start_chain(&self, bundle: &Bundle, params: ChainParams) -> Result<ChainHandle, StartError>;
}

/// Why the registrar could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrarError {
    #[error("the ledger holds no channel and no genesis block was given")]
    NoGenesis,
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

/// One channel served by this node.
#[derive(Debug)]
pub struct Channel {
    pub state: Arc<ChannelState>,
    pub store: BlockStore,
    pub chain: ChainHandle,
}

struct Inner {
    channels: RwLock<BTreeMap<String, Arc<Channel>>>,
    system_channel: RwLock<Option<String>>,
    ledgers: Ledgers,
    logs: Arc<dyn LogFactory>,
    signer: Arc<dyn Signer>,
    runtime: Handle,
    metrics: Arc<Metrics>,
    filters: FilterOptions,
    myself: Weak<Inner>,
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

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Registrar {
    /// Loads every channel of `ledgers`, bootstrapping from `genesis` when the ledger
    /// has none, and starts their chains.
    pub fn start(
        ledgers: Ledgers,
        genesis: Option<Block>,
        logs: Arc<dyn LogFactory>,
        signer: Arc<dyn Signer>,
        runtime: Handle,
        metrics: Arc<Metrics>,
        filters: FilterOptions,
    ) -> Result<Registrar, RegistrarError> {
        let mut names = ledgers.channels()?;
        if names.is_empty() {
            let genesis = genesis.ok_or(RegistrarError::NoGenesis)?;
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
        let inner = Arc::new_cyclic(|me| Inner {
            channels: RwLock::new(BTreeMap::new()),
            system_channel: RwLock::new(None),
            ledgers,
            logs,
            signer,
            runtime,
            metrics,
            filters,
            myself: me.clone(),
        });
        let registrar = Registrar { inner };
        for name in names {
            registrar.load_channel(&name)?;
        }
        if read_lock(&registrar.inner.system_channel).is_none() {
            tracing::warn!("no system channel: channel creation is not available");
        }
        Ok(registrar)
    }

    fn load_channel(&self, name: &str) -> Result<Arc<Channel>, RegistrarError> {
        let cfg_err = |reason: String| RegistrarError::Config {
            channel: name.to_string(),
            reason,
        };
        let store = self.inner.ledgers.open(name)?;
        let last = store
            .last_block_number()
            .ok_or_else(|| cfg_err("the ledger is empty".into()))?;
        let last_block = store.block(last)?;
        let index = if last == 0 {
            0
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
        self.start_channel(bundle, store, false)
    }

    fn start_channel(
        &self,
        bundle: Bundle,
        store: BlockStore,
        wait_started: bool,
    ) -> Result<Arc<Channel>, RegistrarError> {
        let name = bundle.channel_id.clone();
        if bundle.is_system_channel() {
            let mut sys = write_lock(&self.inner.system_channel);
            if let Some(existing) = sys.as_ref()
                && existing != &name
            {
                return Err(RegistrarError::TwoSystemChannels(existing.clone(), name));
            }
            *sys = Some(name.clone());
        }
        let state = Arc::new(ChannelState::new(bundle.clone()));
        let params = ChainParams {
            state: state.clone(),
            store: store.clone(),
            signer: self.inner.signer.clone(),
            hooks: Arc::new(Hooks {
                registrar: self.inner.myself.clone(),
            }),
            runtime: self.inner.runtime.clone(),
            retry: crate::chain::RetryPolicy::ONCE,
            read_timeout: std::time::Duration::from_secs(30),
            append_timeout: crate::chain::DEFAULT_APPEND_TIMEOUT,
            metrics: self.inner.metrics.clone(),
        };
        let chain = self.inner.logs.start_chain(&bundle, params)?;
        if wait_started {
            // A channel created at run time becomes visible once its chain serves:
            // until then clients get NOT_FOUND (which they retry), never a
            // SERVICE_UNAVAILABLE from a chain that is still starting.
            let mut status = chain.status();
            let ready = self.inner.runtime.block_on(async move {
                tokio::time::timeout(
                    CREATED_CHANNEL_START_LIMIT,
                    status.wait_for(|s| s.started || s.halted || s.error.is_some()),
                )
                .await
                .is_ok()
            });
            if !ready {
                tracing::warn!(channel = %name, "the created channel's chain has not started yet; serving it anyway");
            }
        }
        let channel = Arc::new(Channel {
            state,
            store,
            chain,
        });
        write_lock(&self.inner.channels).insert(name.clone(), channel.clone());
        tracing::info!(channel = %name, height = channel.store.height(), "channel loaded");
        Ok(channel)
    }

    /// The node's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// The node's signing identity.
    pub fn signer(&self) -> Arc<dyn Signer> {
        self.inner.signer.clone()
    }

    /// The filter settings.
    pub fn filters(&self) -> FilterOptions {
        self.inner.filters
    }

    /// Number of channels, the system channel included.
    pub fn channel_count(&self) -> u64 {
        read_lock(&self.inner.channels).len() as u64
    }

    /// Validates a CONFIG_UPDATE routed to `channel` (see
    /// [`Registrar::broadcast_target`]): an update of that channel, or — on the
    /// system channel for an unknown channel id — a channel creation. Returns the
    /// orderer-built envelope to order on `channel` and its config sequence.
    pub fn process_config_update(
        &self,
        channel: &Channel,
        update: &Envelope,
        update_channel_id: &str,
    ) -> Result<(Envelope, u64), ProcessError> {
        let bundle = channel.state.bundle();
        if update_channel_id == bundle.channel_id {
            process_config_update(
                update,
                &bundle,
                self.inner.signer.as_ref(),
                &self.inner.filters,
            )
        } else {
            process_channel_creation(
                update,
                &bundle,
                self.channel_count(),
                self.inner.signer.as_ref(),
                &self.inner.filters,
            )
        }
    }

    /// The channel called `id`.
    pub fn channel(&self, id: &str) -> Option<Arc<Channel>> {
        read_lock(&self.inner.channels).get(id).cloned()
    }

    /// Ids of every channel.
    pub fn channel_ids(&self) -> Vec<String> {
        read_lock(&self.inner.channels).keys().cloned().collect()
    }

    /// The system channel's id, if this node has one.
    pub fn system_channel_id(&self) -> Option<String> {
        read_lock(&self.inner.system_channel).clone()
    }

    /// Where Broadcast sends a parsed message: its channel, or the system channel for
    /// an unknown one (channel creation; NOT_FOUND for normal messages).
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
        if parsed.class() == MsgClass::Config {
            return Err(ProcessError::bad(
                "message is of type that cannot be processed directly",
            ));
        }
        Ok(channel)
    }

    /// Halts every chain (each writes its block in flight). Blocking.
    pub fn halt_all(&self) {
        let channels: Vec<_> = read_lock(&self.inner.channels).values().cloned().collect();
        for c in channels {
            c.chain.halt();
        }
    }

    fn create_channel(&self, config_envelope: &Bytes) -> Result<(), String> {
        let (channel_id, _) = config_from_envelope(config_envelope).map_err(|e| e.to_string())?;
        if self.channel(&channel_id).is_some() {
            // Replaying a creation this node already performed.
            return Ok(());
        }
        let store = self
            .inner
            .ledgers
            .open(&channel_id)
            .map_err(|e| e.to_string())?;
        if store.height() == 0 {
            let genesis = next_block(None, vec![config_envelope.clone()]);
            store.append(&genesis).map_err(|e| e.to_string())?;
        }
        let bundle = Bundle::from_config_envelope(config_envelope).map_err(|e| e.to_string())?;
        self.start_channel(bundle, store, true)
            .map_err(|e| e.to_string())?;
        tracing::info!(channel = %channel_id, "created channel");
        Ok(())
    }
}

struct Hooks {
    registrar: Weak<Inner>,
}

impl Hooks {
    fn registrar(&self) -> Result<Registrar, ProcessError> {
        self.registrar
            .upgrade()
            .map(|inner| Registrar { inner })
            .ok_or_else(|| ProcessError::bad("the node is shutting down"))
    }
}

impl ConfigHooks for Hooks {
    fn process_normal(
        &self,
        channel: &ChannelState,
        envelope: &Bytes,
    ) -> Result<u64, ProcessError> {
        let registrar = self.registrar()?;
        revalidate_normal(envelope, &channel.bundle(), &registrar.inner.filters)
    }

    fn process_config(
        &self,
        channel: &ChannelState,
        envelope: &Bytes,
    ) -> Result<(Bytes, u64), ProcessError> {
        let registrar = self.registrar()?;
        let update = last_update_of(envelope)?;
        let update_channel = crate::msgprocessor::parse(update.clone())?
            .channel_header
            .channel_id;
        let bundle = channel.bundle();
        let (tx, seq) = if update_channel == bundle.channel_id {
            process_config_update(
                &update,
                &bundle,
                registrar.inner.signer.as_ref(),
                &registrar.inner.filters,
            )?
        } else {
            process_channel_creation(
                &update,
                &bundle,
                registrar.channel_count(),
                registrar.inner.signer.as_ref(),
                &registrar.inner.filters,
            )?
        };
        Ok((tx.encode_to_vec().into(), seq))
    }

    fn apply_config(&self, channel: &ChannelState, envelope: &Bytes) -> Result<(), String> {
        let env = Envelope::decode(envelope.as_ref()).map_err(|e| e.to_string())?;
        let payload = Payload::decode(env.payload.as_ref()).map_err(|e| e.to_string())?;
        let header = payload.header.ok_or("config envelope has no header")?;
        let ch =
            ChannelHeader::decode(header.channel_header.as_ref()).map_err(|e| e.to_string())?;
        if ch.r#type == HeaderType::OrdererTransaction as i32 {
            let inner = self
                .registrar
                .upgrade()
                .ok_or("the registrar has shut down")?;
            return Registrar { inner }.create_channel(&payload.data);
        }
        if ch.r#type != HeaderType::Config as i32 {
            return Err(format!(
                "a config block holds an envelope of type {}",
                ch.r#type
            ));
        }
        let (id, config) = config_from_envelope(envelope).map_err(|e| e.to_string())?;
        if id != channel.id() {
            return Err(format!(
                "config for channel {id} in channel {}",
                channel.id()
            ));
        }
        let bundle =
            validate_config_envelope(&channel.bundle(), &config).map_err(|e| e.to_string())?;
        channel.swap(bundle);
        Ok(())
    }
}
