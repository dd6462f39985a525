//! Fabric's file block store, one per channel, under a ledger root:
//!
//! ```text
//! <root>/chains/<channel>/blockfile_000000, blockfile_000001, …   block records
//! <root>/index/<channel>.redb                                     block-number index
//! ```
//!
//! Appending: check number and previous hash → write the record → fsync → index →
//! publish (height advances, waiters wake). A block is durable when `append` returns.
//! Opening: the block files are the truth. Every block file is scanned and checked, a
//! torn last record is cut off, the index is caught up from its last trustworthy
//! entry, and the height is the last complete block + 1. See `docs/ledger-format.md` for the bytes.
//!
//! The store's jobs, one file each:
//! - `recover`: opening a channel's store — the index checks, the scan of
//!   every block file, cutting a torn tail;
//! - `append`: checking, writing and fsyncing a block, then publishing the height;
//! - `read`: reading records from the block files, by number and through iterators;
//! - `wait`: waiting for a height (a condvar for threads, a watch for tasks).

mod append;
mod read;
mod recover;
mod wait;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use korder_proto::common::{BlockHeader, BlockchainInfo};
use korder_storage::{FsStorage, Storage, StorageFile};
use korder_types::ids::BlockNumber;
use korder_types::sync::MutexExt;
use tokio::sync::watch;

use crate::error::LedgerError;
use crate::index::Index;

pub use read::{BlockIterator, IteratorCloser};
pub(crate) use read::{Step, read_step};

/// Fabric's default maximum block file size (64 MiB).
pub const DEFAULT_MAX_FILE_SIZE_BYTES: u64 = 64 * 1024 * 1024;
/// Default number of appended blocks between durable index commits.
pub const DEFAULT_INDEX_SYNC_EVERY_BLOCKS: u64 = 128;

/// Tuning of a block store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A new block file is started when a record would make the current one larger
    /// than this (a record is never split; an oversized record gets a file of its own).
    pub max_file_size_bytes: u64,
    /// Index commits are non-durable except every this many blocks (the index is
    /// rebuilt from the block files after a crash).
    pub index_sync_every_blocks: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_file_size_bytes: DEFAULT_MAX_FILE_SIZE_BYTES,
            index_sync_every_blocks: DEFAULT_INDEX_SYNC_EVERY_BLOCKS,
        }
    }
}

pub(crate) const CHAINS_DIR: &str = "chains";
pub(crate) const INDEX_DIR: &str = "index";
/// Markers of channels being removed: `pendingremoval/<channel>`, written before the
/// first file of the channel is deleted and removed after the last.
pub(crate) const REMOVAL_DIR: &str = "pendingremoval";
/// Join blocks of channels being filled from other orderers: `joinblock/<channel>`,
/// the marshalled config block the channel was joined by. Written before the first
/// pulled block, removed once the channel holds the join block and serves.
pub(crate) const JOIN_BLOCK_DIR: &str = "joinblock";
const FILE_PREFIX: &str = "blockfile_";

/// `blockfile_NNNNNN`.
pub fn block_file_name(suffix: u32) -> String {
    format!("{FILE_PREFIX}{suffix:06}")
}

fn parse_suffix(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(FILE_PREFIX)?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn channel_dir(channel: &str) -> String {
    format!("{CHAINS_DIR}/{channel}")
}

pub(crate) fn index_path(channel: &str) -> String {
    format!("{INDEX_DIR}/{channel}.redb")
}

pub(crate) fn file_path(channel: &str, suffix: u32) -> String {
    format!("{}/{}", channel_dir(channel), block_file_name(suffix))
}

fn check_channel(channel: &str) -> Result<(), LedgerError> {
    let ok = !channel.is_empty()
        && channel != "."
        && channel != ".."
        && !channel.contains(['/', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        Err(LedgerError::InvalidChannel(channel.to_owned()))
    }
}

/// Sorted suffixes of the block files of a channel; they must be 0, 1, 2, … .
pub(crate) fn list_block_files(
    storage: &dyn Storage,
    channel: &str,
) -> Result<Vec<u32>, LedgerError> {
    let dir = channel_dir(channel);
    let mut suffixes: Vec<u32> = storage
        .list(&dir)
        .map_err(LedgerError::io("list", &dir))?
        .iter()
        .filter_map(|n| parse_suffix(n))
        .collect();
    suffixes.sort_unstable();
    for (i, s) in suffixes.iter().enumerate() {
        if *s as usize != i {
            return Err(LedgerError::Corrupt {
                file: file_path(channel, i as u32),
                offset: 0,
                block: None,
                reason: format!("block file missing (found {} instead)", block_file_name(*s)),
            });
        }
    }
    Ok(suffixes)
}

/// State of the last block and whether the store is closed.
#[derive(Debug, Clone, Default)]
struct Tip {
    height: u64,
    last: Option<BlockHeader>,
    last_hash: Option<[u8; 32]>,
    closed: bool,
}

/// Height and closed flag, as broadcast to async waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watched {
    /// Number of durable blocks.
    pub height: u64,
    /// Whether the store has been closed.
    pub closed: bool,
}

#[derive(Debug)]
struct Writer {
    suffix: u32,
    file: Arc<dyn StorageFile>,
    size: u64,
    since_index_persist: u64,
    poisoned: Option<String>,
}

#[derive(Debug)]
struct Inner {
    storage: Arc<dyn Storage>,
    channel: String,
    opts: StoreOptions,
    index_path: String,
    index: Index,
    writer: Mutex<Writer>,
    tip: Mutex<Tip>,
    cond: Condvar,
    watch: watch::Sender<Watched>,
    read_files: Mutex<BTreeMap<u32, Arc<dyn StorageFile>>>,
    /// Suffix of the file being appended to (readers must not wait on the writer lock).
    last_suffix: AtomicU32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.index.persist() {
            tracing::warn!(channel = %self.channel, error = %e, "could not persist the block index at close; it will be caught up at the next open");
        }
    }
}

/// The ledger root: one block store per channel.
#[derive(Debug, Clone)]
pub struct Ledgers {
    storage: Arc<dyn Storage>,
    opts: StoreOptions,
}

impl Ledgers {
    /// Ledgers under a directory of the real file system (created if missing).
    pub fn open_dir(root: impl Into<PathBuf>, opts: StoreOptions) -> Result<Self, LedgerError> {
        Self::with_storage(Arc::new(FsStorage::new(root)), opts)
    }

    /// Ledgers over any storage.
    pub fn with_storage(
        storage: Arc<dyn Storage>,
        opts: StoreOptions,
    ) -> Result<Self, LedgerError> {
        assert!(
            opts.max_file_size_bytes > 0,
            "max_file_size_bytes must be positive"
        );
        assert!(
            opts.index_sync_every_blocks > 0,
            "index_sync_every_blocks must be positive"
        );
        for dir in [CHAINS_DIR, INDEX_DIR] {
            if !storage.is_dir(dir) {
                storage
                    .create_dir_all(dir)
                    .map_err(LedgerError::io("create directory", dir))?;
                storage
                    .sync_dir("")
                    .map_err(LedgerError::io("sync directory", "(ledger root)"))?;
            }
        }
        let ledgers = Self { storage, opts };
        // A removal the process did not finish (it crashed) is finished now.
        let pending = ledgers
            .storage
            .list(REMOVAL_DIR)
            .map_err(LedgerError::io("list", REMOVAL_DIR))?;
        for channel in pending {
            tracing::info!(channel, "finishing the removal of a channel's ledger");
            ledgers.remove(&channel)?;
        }
        Ok(ledgers)
    }

    /// Names of the channels: the sub-directories of `chains/`.
    pub fn channels(&self) -> Result<Vec<String>, LedgerError> {
        let names = self
            .storage
            .list(CHAINS_DIR)
            .map_err(LedgerError::io("list", CHAINS_DIR))?;
        Ok(names
            .into_iter()
            .filter(|n| self.storage.is_dir(&channel_dir(n)))
            .collect())
    }

    /// Deletes `channel`'s ledger: its block files, its index and its directory. The
    /// channel's store must be closed first (handles still open keep reading the
    /// deleted files). A marker written before the first deletion makes the removal
    /// finish at the next open if the process stops half way. Removing a channel
    /// that has no ledger does nothing.
    pub fn remove(&self, channel: &str) -> Result<(), LedgerError> {
        let s = &*self.storage;
        let marker = format!("{REMOVAL_DIR}/{channel}");
        if !s.exists(&marker) {
            s.create_dir_all(REMOVAL_DIR)
                .map_err(LedgerError::io("create directory", REMOVAL_DIR))?;
            s.create(&marker)
                .map_err(LedgerError::io("create", &marker))?;
            s.sync_dir(REMOVAL_DIR)
                .map_err(LedgerError::io("sync directory", REMOVAL_DIR))?;
            s.sync_dir("")
                .map_err(LedgerError::io("sync directory", "(ledger root)"))?;
        }
        let ix = index_path(channel);
        if s.exists(&ix) {
            s.remove(&ix).map_err(LedgerError::io("remove", &ix))?;
            s.sync_dir(INDEX_DIR)
                .map_err(LedgerError::io("sync directory", INDEX_DIR))?;
        }
        let dir = channel_dir(channel);
        if s.is_dir(&dir) {
            let names = s.list(&dir).map_err(LedgerError::io("list", &dir))?;
            for name in names {
                let p = format!("{dir}/{name}");
                s.remove(&p).map_err(LedgerError::io("remove", &p))?;
            }
            s.sync_dir(&dir)
                .map_err(LedgerError::io("sync directory", &dir))?;
            s.remove_dir(&dir)
                .map_err(LedgerError::io("remove directory", &dir))?;
            s.sync_dir(CHAINS_DIR)
                .map_err(LedgerError::io("sync directory", CHAINS_DIR))?;
        }
        s.remove(&marker)
            .map_err(LedgerError::io("remove", &marker))?;
        s.sync_dir(REMOVAL_DIR)
            .map_err(LedgerError::io("sync directory", REMOVAL_DIR))?;
        tracing::info!(channel, "ledger removed");
        Ok(())
    }

    /// Records `block` (marshalled) as the block `channel` is being joined by, before
    /// any block of the channel is pulled: a node that stops before the channel
    /// serves finds it at the next start ([`Ledgers::join_blocks`]) and knows the
    /// channel's ledger is not anchored yet.
    pub fn save_join_block(&self, channel: &str, block: &[u8]) -> Result<(), LedgerError> {
        let s = &*self.storage;
        let path = format!("{JOIN_BLOCK_DIR}/{channel}");
        s.create_dir_all(JOIN_BLOCK_DIR)
            .map_err(LedgerError::io("create directory", JOIN_BLOCK_DIR))?;
        let file = s.create(&path).map_err(LedgerError::io("create", &path))?;
        file.write_all_at(block, 0)
            .map_err(LedgerError::io("write", &path))?;
        file.sync_data().map_err(LedgerError::io("sync", &path))?;
        s.sync_dir(JOIN_BLOCK_DIR)
            .map_err(LedgerError::io("sync directory", JOIN_BLOCK_DIR))?;
        s.sync_dir("")
            .map_err(LedgerError::io("sync directory", "(ledger root)"))?;
        Ok(())
    }

    /// The channels being joined by a later config block that were not done, with
    /// the bytes recorded for each (a torn write reads as damaged bytes: the caller
    /// decodes and checks them).
    pub fn join_blocks(&self) -> Result<Vec<(String, Vec<u8>)>, LedgerError> {
        let s = &*self.storage;
        let names = s
            .list(JOIN_BLOCK_DIR)
            .map_err(LedgerError::io("list", JOIN_BLOCK_DIR))?;
        let mut out = Vec::new();
        for name in names {
            let path = format!("{JOIN_BLOCK_DIR}/{name}");
            let file = s.open(&path).map_err(LedgerError::io("open", &path))?;
            let len = file.len().map_err(LedgerError::io("stat", &path))?;
            let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
            file.read_exact_at(&mut bytes, 0)
                .map_err(LedgerError::io("read", &path))?;
            out.push((name, bytes));
        }
        Ok(out)
    }

    /// Forgets `channel`'s join block (it serves, or it was removed).
    pub fn remove_join_block(&self, channel: &str) -> Result<(), LedgerError> {
        let s = &*self.storage;
        let path = format!("{JOIN_BLOCK_DIR}/{channel}");
        if s.exists(&path) {
            s.remove(&path).map_err(LedgerError::io("remove", &path))?;
            s.sync_dir(JOIN_BLOCK_DIR)
                .map_err(LedgerError::io("sync directory", JOIN_BLOCK_DIR))?;
        }
        Ok(())
    }

    /// Opens (creating if needed) the block store of `channel`, running recovery.
    pub fn open(&self, channel: &str) -> Result<BlockStore, LedgerError> {
        BlockStore::open(self.storage.clone(), channel, self.opts.clone())
    }

    /// The underlying storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
}

/// The block store of one channel. Clones share the store.
#[derive(Debug, Clone)]
pub struct BlockStore {
    inner: Arc<Inner>,
}

impl BlockStore {
    /// Name of the channel.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    fn tip(&self) -> Tip {
        self.inner.tip.lock_unpoisoned().clone()
    }

    /// Number of blocks (the next block's number).
    pub fn height(&self) -> u64 {
        self.inner.tip.lock_unpoisoned().height
    }

    /// Number of the first block (`None` when empty).
    pub fn first_block_number(&self) -> Option<BlockNumber> {
        (self.height() > 0).then_some(BlockNumber::GENESIS)
    }

    /// Number of the last block (`None` when empty).
    pub fn last_block_number(&self) -> Option<BlockNumber> {
        BlockNumber::last_of(self.height())
    }

    /// Header of the last block.
    pub fn last_header(&self) -> Option<BlockHeader> {
        self.inner.tip.lock_unpoisoned().last.clone()
    }

    /// Header hash of the last block: the `previous_hash` the next block must carry.
    pub fn current_hash(&self) -> Option<[u8; 32]> {
        self.inner.tip.lock_unpoisoned().last_hash
    }

    /// Height, current hash and previous hash, as Fabric reports them.
    pub fn info(&self) -> BlockchainInfo {
        let t = self.tip();
        BlockchainInfo {
            height: t.height,
            current_block_hash: t
                .last_hash
                .map(|h| Bytes::copy_from_slice(&h))
                .unwrap_or_default(),
            previous_block_hash: t.last.map(|h| h.previous_hash).unwrap_or_default(),
            bootstrapping_snapshot_info: None,
        }
    }
    /// Closes the store: appends fail, waiting iterators return. Reads still work.
    pub fn close(&self) {
        self.inner.tip.lock_unpoisoned().closed = true;
        self.inner.cond.notify_all();
        self.inner.watch.send_modify(|w| w.closed = true);
        if let Err(e) = self.inner.index.persist() {
            tracing::warn!(channel = %self.inner.channel, error = %e, "could not persist the block index at close");
        }
    }

    /// A receiver of the height and closed flag, for async waiting.
    pub fn watch(&self) -> watch::Receiver<Watched> {
        self.inner.watch.subscribe()
    }
}

#[cfg(test)]
mod tests;
