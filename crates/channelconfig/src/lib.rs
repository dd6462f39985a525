//! Channel configuration: the config tree of a channel decoded into a [`Bundle`] of
//! the values the orderer acts on, and genesis configs built from a profile.
//!
//! This crate decodes and validates configuration; it performs no I/O and knows
//! nothing of logs, ledgers or gRPC.

pub mod bundle;
pub mod configtx;
pub mod duration;
pub mod envelope;
pub mod genesis;
pub mod policies;

pub use bundle::{Bundle, ConfigError, OrdererValues, OrgValues, config_from_envelope};
pub use duration::{DurationError, format_go_duration, parse_go_duration};
pub use genesis::{ChannelProfile, EnvelopeStamp, OrgProfile, genesis_envelope};
