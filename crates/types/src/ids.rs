//! Newtypes for the numbers that are easy to mix up: a block's number, a channel's
//! config sequence and a record's position in a channel's log.
//!
//! The fields are private: a value is built with `new`, read with `get`, and moved with
//! the named steps (`next`, `prev`) instead of arithmetic on a bare integer.

use std::fmt;

/// Number of a block in a channel's ledger (the genesis block is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockNumber(u64);

impl BlockNumber {
    /// The genesis block's number.
    pub const GENESIS: BlockNumber = BlockNumber(0);

    /// Block number `n`.
    pub const fn new(n: u64) -> BlockNumber {
        BlockNumber(n)
    }

    /// The number as an integer (as it is written in a block header).
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The block after this one.
    pub const fn next(self) -> BlockNumber {
        BlockNumber(self.0 + 1)
    }

    /// The block before this one; `None` for the genesis block.
    pub const fn prev(self) -> Option<BlockNumber> {
        match self.0.checked_sub(1) {
            Some(n) => Some(BlockNumber(n)),
            None => None,
        }
    }

    /// The last block of a ledger holding `height` blocks; `None` when it is empty.
    pub const fn last_of(height: u64) -> Option<BlockNumber> {
        match height.checked_sub(1) {
            Some(n) => Some(BlockNumber(n)),
            None => None,
        }
    }

    /// The height of a ledger whose last block is this one (its number + 1).
    pub const fn height(self) -> u64 {
        self.0 + 1
    }
}

impl fmt::Display for BlockNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A channel's config sequence: 0 at genesis, +1 per committed config block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigSeq(u64);

impl ConfigSeq {
    /// The genesis config's sequence.
    pub const GENESIS: ConfigSeq = ConfigSeq(0);

    /// Sequence `n`.
    pub const fn new(n: u64) -> ConfigSeq {
        ConfigSeq(n)
    }

    /// The sequence as an integer (as records and configs carry it).
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The sequence after one more config block.
    pub const fn next(self) -> ConfigSeq {
        ConfigSeq(self.0 + 1)
    }
}

impl fmt::Display for ConfigSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Position of a record in a channel's log. The first record of a log is at 0; the
/// type is signed because Kafka's offsets are, and Fabric's block metadata stores them
/// as such.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogOffset(i64);

impl LogOffset {
    /// The first position of a log.
    pub const FIRST: LogOffset = LogOffset(0);

    /// Offset `n`.
    pub const fn new(n: i64) -> LogOffset {
        LogOffset(n)
    }

    /// The offset as an integer (as Kafka and block metadata carry it).
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The position after this one.
    pub const fn next(self) -> LogOffset {
        LogOffset(self.0 + 1)
    }

    /// The position before this one.
    pub const fn prev(self) -> LogOffset {
        LogOffset(self.0 - 1)
    }

    /// The position `n` records after this one.
    pub const fn plus(self, n: i64) -> LogOffset {
        LogOffset(self.0 + n)
    }
}

impl fmt::Display for LogOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Block numbers step and convert to and from heights without off-by-one.
    #[test]
    fn block_number_steps() {
        assert_eq!(BlockNumber::new(4).next(), BlockNumber::new(5));
        assert_eq!(BlockNumber::new(4).prev(), Some(BlockNumber::new(3)));
        assert_eq!(BlockNumber::GENESIS.prev(), None);
        assert_eq!(BlockNumber::last_of(0), None);
        assert_eq!(BlockNumber::last_of(1), Some(BlockNumber::GENESIS));
        assert_eq!(BlockNumber::new(6).height(), 7);
        assert_eq!(BlockNumber::new(6).to_string(), "6");
    }

    /// Offsets and sequences step by one and print as their integer.
    #[test]
    fn offset_and_seq_steps() {
        assert_eq!(LogOffset::new(-1).next(), LogOffset::FIRST);
        assert_eq!(LogOffset::new(7).prev().get(), 6);
        assert_eq!(LogOffset::new(7).plus(3), LogOffset::new(10));
        assert_eq!(LogOffset::new(-3).to_string(), "-3");
        assert_eq!(ConfigSeq::GENESIS.next(), ConfigSeq::new(1));
        assert_eq!(ConfigSeq::new(2).get(), 2);
    }
}
