//! Channel configuration for korder: a channel's config tree decoded into a
//! [`Bundle`], the channel's policies, config-update validation, channel creation
//! through the system channel, and genesis configs built from a profile.
//!
//! ```text
//! Config ──Bundle::new──▶ Bundle { values, MspManager, PolicyManager }
//!                              │
//!   Broadcast signature filter ├─ bundle.evaluate("/Channel/Writers", &signed)
//!   Deliver access control     ├─ bundle.evaluate("/Channel/Readers", &signed)
//!   CONFIG_UPDATE, existing    ├─ configtx::propose_config_update(&bundle, &env) → ConfigEnvelope
//!   CONFIG_UPDATE, new channel ├─ configtx::new_channel_config(&system, &env) → ConfigEnvelope
//!                              │    then envelope::config_tx / orderer_tx, configtx::check_channel_creation
//!   block writer, CONFIG       └─ configtx::validate_config_envelope(&bundle, &ce) → next Bundle
//! ```
//!
//! - [`bundle`]: values by key name, structural rules, capabilities, MSP setup and
//!   policy compilation of one config.
//! - [`policies`]: signed data, the channel MSP manager, signature and
//!   implicit-meta policies, the policy manager tree and its path rules.
//! - [`configtx`]: read set / delta / mod_policy checks, rebuilding the tree, commit
//!   re-validation, `validate_new`, the channel-creation template.
//! - [`envelope`]: CONFIG and ORDERER_TRANSACTION envelopes signed by the orderer.
//! - [`genesis`]: configtxgen-like profiles and genesis envelopes.
//! - [`update`]: the config update taking one config to another (configtxlator's
//!   `compute_update`), and the update a channel-creation request carries.
//!
//! This crate must never do I/O: no files, sockets, logs of its own or global
//! state; time and randomness enter only through the caller (timestamps, signers)
//! or the explicit `EnvelopeStamp::now` convenience. Every result is a function of the
//! config and the messages given; nothing is cached across bundles. Signature
//! checks are CPU work: callers on an async runtime run them on a blocking pool.

pub mod bundle;
pub mod configtx;
pub mod envelope;
pub mod genesis;
pub mod policies;
pub mod update;

pub use bundle::{Bundle, ConfigError, OrdererValues, OrgValues, config_from_envelope};
pub use configtx::{
    ConfigTxError, check_channel_creation, check_channel_limit, new_channel_config,
    propose_config_update, validate_config_envelope, validate_new,
};
pub use envelope::{config_tx, orderer_tx};
pub use genesis::{ChannelProfile, EnvelopeStamp, OrgProfile, genesis_envelope};
pub use policies::{MspManager, PolicyError, PolicyManager, SignedData};
pub use update::{
    ConsensusState, EditError, OrdererChanges, UpdateError, compute_update, creation_update,
    diff_groups, group_update,
};
