//! The orderer's local configuration.
//!
//! korder reads an `orderer.yaml` in the shape of Fabric's (sections `General`,
//! `FileLedger`, `RAMLedger`, `Kafka`, `Debug`, `Consensus`, `Operations`,
//! `Metrics`, `Admin`, `ChannelParticipation`), plus a `Korder` section of its own,
//! so an operator's existing file and habits carry over. Every key of every Fabric
//! release from 1.4 to 3.1 is known: korder honours it, accepts it with a start-up
//! note ([`Config::ignored_settings`]) when it does not apply, or refuses a value it
//! cannot honour safely ([`Config::validate`]). The full key reference is
//! `docs/configuration.md`.
//!
//! ```text
//! orderer.yaml ──parse──▶ value tree ──ORDERER_* overrides──▶ value tree
//!      ──decode (defaults, unknown keys refused)──▶ Config ──resolve relative paths──▶ Config
//! ```
//!
//! - Keys are matched ignoring case, as Fabric does. A key korder does not know is an
//!   error naming its full path (`General.ListenPortt: unknown key`).
//! - Durations use Go's syntax (`10s`, `1h30m`, `250ms`).
//! - Unset or zero values take Fabric's defaults.
//! - `ORDERER_<SECTION>_<KEY>` environment variables override the file; the
//!   environment is passed in as a map, so nothing here reads the process
//!   environment unless asked to ([`env_from_process`]).
//!
//! This crate only describes the configuration: it opens no socket and starts
//! nothing, and it must never log secrets (see [`Config::summary`]).

mod config;
mod duration;
mod error;
mod general;
mod kafka;
mod node;
mod sections;

pub use config::{Config, ENV_PREFIX, env_from_process};
pub use duration::{format_duration, parse_duration};
pub use error::ConfigError;
pub use general::{
    Authentication, Backoff, Bccsp, Bootstrap, BootstrapMethod, Cluster, General, GenesisMethod,
    Keepalive, Pkcs11Opts, PluginOpts, Profile, SwOpts, Throttling, Tls,
};
pub use kafka::{Kafka, KafkaRetry, KafkaTls, KafkaVersion, PemSource, SaslPlain};
pub use sections::{
    Admin, BlockMetadata, ChannelParticipation, Debug, FileLedger, Korder, LogBackend, Metrics,
    MetricsProvider, Operations, RamLedger, ResolvedLog, Statsd, UnsupportedConsensusType,
};
