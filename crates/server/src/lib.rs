//! The korder ordering node.
//!
//! ```text
//! gRPC ─▶ service ─▶ broadcast ─▶ msgprocessor (parse, classify, filters)
//!                        │              │
//!                        │         registrar (channels) ─▶ chain (per channel)
//!                        │                                   │ Log: embedded or Kafka
//!                        ▼                                   ▼
//!                     deliver ◀── ledger ◀── blockwriter ◀── state machine
//! ```
//!
//! The node owns the channels and their chains; it decides nothing about block
//! boundaries (that is the pure state machine in `korder-consensus`) and knows no
//! log implementation (that is behind `korder_log::Log` and [`registrar::LogFactory`]).

pub mod blockwriter;
pub mod broadcast;
pub mod chain;
pub mod channel;
pub mod connections;
pub mod deliver;
pub mod metrics;
pub mod msgprocessor;
pub mod operations;
pub mod registrar;
pub mod resume;
pub mod seek;
pub mod service;
pub mod signer;
pub mod status;
pub mod tls;

pub use chain::{
    ChainHandle, ChainParams, ChainStatus, ConfigHooks, start_chain, start_chain_checked,
};
pub use channel::ChannelState;
pub use deliver::DeliverConfig;
pub use metrics::Metrics;
pub use registrar::{Channel, LogFactory, Registrar, RegistrarError};
pub use service::AtomicBroadcastService;
pub use signer::{SignError, Signer};
pub use status::{ConsenterError, ProcessError};
