//! Newtypes for the numbers that are easy to mix up.

use std::fmt;

pub use korder_log::LogOffset;

/// Number of a block in a channel's ledger (the genesis block is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockNumber(pub u64);

impl BlockNumber {
    /// The block after this one.
    pub fn next(self) -> BlockNumber {
        BlockNumber(self.0 + 1)
    }
}

impl fmt::Display for BlockNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A channel's config sequence: 0 at genesis, +1 per committed config block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigSeq(pub u64);

impl fmt::Display for ConfigSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Identity of one batch timer started by the chain.
///
/// Every `StartTimer` carries a fresh id; a firing reported with any other id than the
/// running timer's is stale and ignored, so a runtime cannot cut on a timer that the
/// chain already stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(pub u64);

impl fmt::Display for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
