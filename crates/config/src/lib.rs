//! The orderer's local configuration.
//!
//! korder reads an `orderer.yaml` in the shape of Fabric's (sections `General`,
//! `FileLedger`, `RAMLedger`, `Kafka`, `Debug`, `Consensus`, `Operations`,
//! `Metrics`), plus a `Korder` section of its own, so an operator's existing file
//! and habits carry over. The full key reference is `docs/configuration.md`.
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
    Authentication, Bccsp, Bootstrap, BootstrapMethod, Cluster, General, GenesisMethod, Keepalive,
    Pkcs11Opts, Profile, SwOpts, Tls,
};
pub use kafka::{Kafka, KafkaRetry, KafkaTls, KafkaVersion, PemSource, SaslPlain};
pub use sections::{
    Debug, FileLedger, Korder, LogBackend, Metrics, MetricsProvider, Operations, RamLedger,
    ResolvedLog, Statsd, UnsupportedConsensusType,
};
