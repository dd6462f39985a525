//! The korder ordering node: the `AtomicBroadcast` service, the channels and their
//! chains.
//!
//! One envelope reads straight down (docs/architecture.md walks it file by file):
//!
//! ```text
//! gRPC ─▶ service ─▶ broadcast ─▶ registrar ─▶ processor (msgprocessor: parse,
//!            ▲                    (routing)     filters, config_update, migration)
//!            │                                       │ Validated
//!            │                                       ▼
//!            │                              chain (ChainHandle::order) ─▶ Log
//!            │                                                             │
//!            │                       chain thread ─▶ consensus state machine
//!            │                                                             │
//!         deliver ◀── ledger ◀── blockwriter ◀──── WriteBlock ◀────────────┘
//! ```
//!
//! The registrar is the channel map and the routing rule; it is never called from
//! a chain: a chain reports applied configs and created channels as
//! [`ChainEvent`]s that the registrar consumes. The node decides nothing about
//! block boundaries (that is the pure state machine in `korder-consensus`) and knows
//! no log implementation (that is behind `korder_log::Log` and
//! [`registrar::LogFactory`], which also chooses the log's timing).

pub mod blockwriter;
pub mod broadcast;
pub mod catchup;
pub mod chain;
pub mod channel;
pub mod connections;
pub mod deliver;
pub mod metrics;
pub mod msgprocessor;
pub mod operations;
pub mod operations_tls;
pub mod participation;
pub mod processor;
pub mod registrar;
pub mod resume;
pub mod seek;
pub mod service;
pub mod status;
pub mod throttle;
pub mod tls;

pub use chain::{
    ChainHandle, ChainParams, ChainStatus, LogTiming, start_chain, start_chain_checked,
};
pub use channel::ChannelState;
pub use deliver::DeliverConfig;
pub use metrics::Metrics;
pub use processor::{CatchUpSettings, ChainEvent, ChannelProcessor, NodeOptions, Validated};
pub use registrar::{Channel, LogFactory, ParticipationError, Registrar, RegistrarError};
pub use service::AtomicBroadcastService;
pub use status::{ConsenterError, ProcessError};
