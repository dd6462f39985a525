//! Newtypes for the numbers that are easy to mix up.

use std::fmt;

pub use korder_types::ids::{BlockNumber, ConfigSeq, LogOffset};

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
