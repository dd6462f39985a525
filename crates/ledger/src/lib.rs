//! Fabric blocks and the file ledger that stores them.
//!
//! What this crate is for:
//! - [`block`]: assembling blocks and computing what Fabric computes over them — the
//!   ASN.1 DER header and its SHA-256 hash, the data hash, the metadata slots
//!   (SIGNATURES, LAST_CONFIG, ORDERER) and the exact bytes a block signature covers.
//!   Pure functions, no I/O.
//! - [`store`]: Fabric's file block store, one per channel, byte-compatible with a
//!   Fabric orderer's `chains/<channel>/blockfile_NNNNNN` files, with a redb index,
//!   crash recovery, and blocking, async and non-blocking iterators.
//! - [`writer`]: a pipelined writer thread, one block in flight.
//! - [`mod@verify`]: an end-to-end check of a channel's ledger for `korder ledger verify`.
//!
//! The store reaches the disk only through `korder_storage::Storage`, so its tests run
//! it over that crate's crash simulator (feature `test-support`) and crash it at every
//! write and sync.
//!
//! What it must never do:
//! - re-marshal bytes that are hashed or signed (data entries, metadata values,
//!   signature headers are kept exactly as given);
//! - parse certificates or verify signatures (that is `korder-msp`; [`block::signed_entries`]
//!   only extracts what to verify);
//! - report a block durable before its record is fsynced, or change anything when a
//!   block is refused or a write fails;
//! - panic on bad bytes from disk: damage is a typed error naming file, offset and block.
//!
//! ```text
//! append(block) ─▶ check number/previous hash ─▶ write record ─▶ fsync
//!                 ─▶ index (redb, derived) ─▶ publish height ─▶ wake iterators
//! ```

pub mod block;
pub mod error;
mod index;
pub mod record;
pub mod store;
pub mod verify;
pub mod writer;

pub use block::{BlockBuilder, BlockError, SignedEntry};
pub use error::LedgerError;
pub use index::Location;
pub use korder_types::ids::BlockNumber;
pub use store::{BlockIterator, BlockStore, IteratorCloser, Ledgers, StoreOptions, Watched};
pub use verify::{VerifyReport, verify};
pub use writer::PipelinedWriter;
