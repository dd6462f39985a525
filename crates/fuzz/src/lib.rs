//! The bodies of korder's fuzz targets, with the invariants each one checks.
//!
//! Every public function here takes the raw bytes libFuzzer hands a target and
//! panics only when korder breaks an invariant (a decoder panicking counts). The
//! cargo-fuzz targets in `fuzz/fuzz_targets/` are one-line calls into this crate, so
//! the same bodies also run, on stable Rust, over the committed seeds and every
//! input that once crashed a target (`tests/regressions.rs`): a target that stops
//! building or a finding that comes back fails the normal test suite.
//!
//! Structure-aware targets decode their input with [`arbitrary`], so that the
//! fuzzer spends its time past the first length check.

pub mod block;
pub mod block_file_scan;
pub mod broadcast_filters;
pub mod cert;
pub mod chain;
pub mod config_update;
pub mod deliver_seek;
pub mod log_segments;
pub mod orderer_yaml;
pub mod participation_join;
pub mod pulled_blocks;
pub mod seeds;

/// A target body: the bytes libFuzzer hands it.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/<name>.rs` and the seed and
/// regression directories name it.
pub const TARGETS: &[(&str, Target)] = &[
    ("block_decode", block::block_decode),
    ("x509_cert", cert::x509_cert),
    ("ecdsa_signature", cert::ecdsa_signature),
    ("chain_records", chain::chain_records),
    ("config_update", config_update::config_update),
    ("orderer_yaml", orderer_yaml::orderer_yaml),
    ("log_segments", log_segments::log_segments),
    ("broadcast_filters", broadcast_filters::broadcast_filters),
    ("deliver_seek", deliver_seek::deliver_seek),
    ("block_file_scan", block_file_scan::block_file_scan),
    ("participation_join", participation_join::participation_join),
    ("pulled_blocks", pulled_blocks::pulled_blocks),
];
