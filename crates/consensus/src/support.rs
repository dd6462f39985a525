//! What the chain needs from its channel: config values and validation.
//!
//! The caller implements [`ConsenterSupport`] over the channel's current config
//! bundle. The chain only reads through it; config changes reach it when the caller
//! applies a config block (see [`crate::chain::Command::WriteConfigBlock`]).

use std::time::Duration;

use bytes::Bytes;
use korder_proto::common::HeaderType;
use korder_proto::orderer::BatchSize;

use crate::types::ConfigSeq;

/// How a message is handled, by the type in its channel header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgClass {
    /// Anything that is not config: transactions.
    Normal,
    /// CONFIG and ORDERER_TRANSACTION envelopes.
    Config,
    /// CONFIG_UPDATE: must never reach the log.
    ConfigUpdate,
}

/// The standard classification: CONFIG_UPDATE → ConfigUpdate; CONFIG and
/// ORDERER_TRANSACTION → Config; anything else → Normal.
pub fn classify_header_type(header_type: i32) -> MsgClass {
    if header_type == HeaderType::ConfigUpdate as i32 {
        MsgClass::ConfigUpdate
    } else if header_type == HeaderType::Config as i32
        || header_type == HeaderType::OrdererTransaction as i32
    {
        MsgClass::Config
    } else {
        MsgClass::Normal
    }
}

/// A message the channel's filters refuse under the current config.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejected {
    pub reason: String,
}

impl Rejected {
    /// A rejection with this reason.
    pub fn new(reason: impl Into<String>) -> Rejected {
        Rejected {
            reason: reason.into(),
        }
    }
}

/// The channel as the chain sees it.
///
/// Every method must be a function of the channel's committed config (and, for
/// validation, of the envelope): nodes that share the config give the same answers.
pub trait ConsenterSupport {
    /// The current config sequence.
    fn sequence(&self) -> ConfigSeq;

    /// The current `Orderer/BatchSize`; `None` if the config cannot be read, which
    /// stops the chain.
    fn batch_size(&self) -> Option<BatchSize>;

    /// The current `Orderer/BatchTimeout`.
    fn batch_timeout(&self) -> Duration;

    /// Whether the channel's orderer capabilities (V1_1, V1_4_2 or V2_0) enable
    /// resubmission; without them the chain runs in compatibility mode.
    fn resubmission_enabled(&self) -> bool;

    /// Classifies a message by its channel header type.
    fn classify(&self, header_type: i32) -> MsgClass {
        classify_header_type(header_type)
    }

    /// Re-runs the channel's filters on a normal envelope; the sequence it was
    /// validated at.
    fn process_normal(&self, envelope: &Bytes) -> Result<ConfigSeq, Rejected>;

    /// Re-proposes the config update behind a config envelope against the current
    /// config: a newly built config envelope and the sequence it was built at.
    fn process_config(&self, envelope: &Bytes) -> Result<(Bytes, ConfigSeq), Rejected>;
}
