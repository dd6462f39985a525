//! Errors of the block store.

use std::sync::Arc;

use korder_types::ids::BlockNumber;

/// Errors of the block store, its writer and `verify`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A file operation failed.
    #[error("ledger I/O error: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The index database failed.
    #[error("ledger index {path}: {source}")]
    Index {
        path: String,
        #[source]
        source: Box<redb::Error>,
    },
    /// Stored data is damaged in a way a crash cannot explain.
    #[error("ledger corrupted: {file} at offset {offset}{}: {reason}", block_suffix(*.block))]
    Corrupt {
        file: String,
        offset: u64,
        block: Option<BlockNumber>,
        reason: String,
    },
    /// `append` was given a block whose number is not the ledger's height.
    #[error("cannot append block {got}: the ledger expects block {expected}")]
    WrongNumber {
        expected: BlockNumber,
        got: BlockNumber,
    },
    /// `append` was given a block that does not chain onto the last block.
    #[error(
        "cannot append block {number}: previous_hash {got} does not match the hash {expected} of block {}", number.get().wrapping_sub(1)
    )]
    WrongPreviousHash {
        number: BlockNumber,
        expected: String,
        got: String,
    },
    /// The block has no header.
    #[error("cannot append a block without a header")]
    MissingHeader,
    /// The requested block is not in the ledger.
    #[error("block {number} is not in the ledger (height {height})")]
    NotFound { number: BlockNumber, height: u64 },
    /// The channel name cannot be a directory name.
    #[error("invalid channel name {0:?}")]
    InvalidChannel(String),
    /// The store or iterator has been closed.
    #[error("the ledger is closed")]
    Closed,
    /// An earlier failure left the store unable to append until it is reopened.
    #[error("the ledger refuses appends after an earlier failure: {0}")]
    Poisoned(String),
    /// The pipelined writer failed on an earlier block.
    #[error("block writer failed: {0}")]
    WriterFailed(Arc<LedgerError>),
}

fn block_suffix(block: Option<BlockNumber>) -> String {
    block.map_or_else(String::new, |n| format!(" (block {n})"))
}

impl LedgerError {
    pub(crate) fn io(op: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| LedgerError::Io { op, path, source }
    }

    pub(crate) fn index<E: Into<redb::Error>>(path: &str) -> impl FnOnce(E) -> Self {
        let path = path.to_owned();
        move |e| LedgerError::Index {
            path,
            source: Box::new(e.into()),
        }
    }
}
