//! The small pieces of vocabulary several korder crates share and none of them owns:
//!
//! - [`duration`]: durations in Go's syntax, read as `time.ParseDuration` reads them and
//!   written as `time.Duration.String` writes them. orderer.yaml and channel configs
//!   (`BatchTimeout`) both carry them, so there is exactly one parser and one formatter.
//! - [`ids`]: the newtypes for numbers that are easy to mix up (`BlockNumber`,
//!   `ConfigSeq`, `LogOffset`), shared by the log, the consensus core, the ledger and
//!   the server.
//! - [`sync`]: taking a lock whose previous holder panicked.
//!
//! This crate is a leaf: it depends on std only, does no I/O and holds no policy.

pub mod duration;
pub mod ids;
pub mod sync;
