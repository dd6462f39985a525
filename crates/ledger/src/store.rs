//! Fabric's file block store, one per channel, under a ledger root:
//!
//! ```text
//! <root>/chains/<channel>/blockfile_000000, blockfile_000001, …   block records
//! <root>/index/<channel>.redb                                     block-number index
//! ```
//!
//! Appending: check number and previous hash → write the record → fsync → index →
//! publish (height advances, waiters wake). A block is durable when `append` returns.
//! Opening: the block files are the truth. The last file is scanned from the last
//! indexed block on, a torn last record is cut off, the index is caught up, and the
//! height is the last complete block + 1. See `docs/ledger-format.md` for the bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use korder_proto::common::{Block, BlockHeader, BlockchainInfo};
use tokio::sync::watch;

use crate::block::{data_hash_of, header_hash};
use crate::error::LedgerError;
use crate::index::{Index, Location};
use crate::record::{
    Framing, MAX_VARINT_LEN, decode_body, decode_body_prefix, encode_record, framing,
};
use korder_storage::{FsStorage, RecoverPoison, Storage, StorageFile};

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

/// What sits at an offset of a block file.
pub(crate) enum Step {
    /// A complete, decodable record of `len` bytes.
    Record(Block, u64),
    /// End of file.
    End,
    /// An incomplete record or a zero-filled tail: what a crash during a write leaves.
    Torn,
    /// Bytes that a crash cannot explain.
    Bad(String),
}

fn zero_tail(file: &dyn StorageFile, path: &str, from: u64, len: u64) -> Result<bool, LedgerError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(LedgerError::io("read", path))?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Reads the record at `offset` of a file of `len` bytes.
pub(crate) fn read_step(
    file: &dyn StorageFile,
    path: &str,
    len: u64,
    offset: u64,
) -> Result<Step, LedgerError> {
    if offset >= len {
        return Ok(Step::End);
    }
    let remaining = len - offset;
    let mut head = [0u8; MAX_VARINT_LEN];
    let head_len = remaining.min(MAX_VARINT_LEN as u64) as usize;
    file.read_exact_at(&mut head[..head_len], offset)
        .map_err(LedgerError::io("read", path))?;
    let (prefix_len, body_len) = match framing(&head[..head_len], remaining) {
        Framing::Truncated => return Ok(Step::Torn),
        Framing::BadPrefix => {
            return if zero_tail(file, path, offset, len)? {
                Ok(Step::Torn)
            } else {
                Ok(Step::Bad("invalid record length prefix".into()))
            };
        }
        Framing::Complete {
            prefix_len,
            body_len,
        } => (prefix_len, body_len),
    };
    if body_len == 0 {
        return if zero_tail(file, path, offset, len)? {
            Ok(Step::Torn)
        } else {
            Ok(Step::Bad("empty record".into()))
        };
    }
    let mut body = vec![0u8; body_len as usize];
    file.read_exact_at(&mut body, offset + prefix_len as u64)
        .map_err(LedgerError::io("read", path))?;
    match decode_body(Bytes::from(body)) {
        Ok(block) => Ok(Step::Record(block, prefix_len as u64 + body_len)),
        Err(e) => Ok(Step::Bad(format!("record does not decode: {e}"))),
    }
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
        Ok(Self { storage, opts })
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

    /// Opens (creating if needed) the block store of `channel`, running recovery.
    pub fn open(&self, channel: &str) -> Result<BlockStore, LedgerError> {
        BlockStore::open(self.storage.clone(), channel, self.opts.clone())
    }

    /// The underlying storage.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
}

/// Opens the index, deleting and recreating it when it cannot be opened.
fn open_index(storage: &dyn Storage, path: &str) -> Result<Index, LedgerError> {
    let file = if storage.exists(path) {
        storage.open(path)
    } else {
        storage.create(path)
    };
    let file = file.map_err(LedgerError::io("open", path))?;
    match Index::open(file) {
        Ok(ix) => return Ok(ix),
        Err(e) => {
            tracing::warn!(path, error = %e, "block index unreadable; rebuilding it from the block files");
        }
    }
    storage
        .remove(path)
        .map_err(LedgerError::io("remove", path))?;
    let file = storage
        .create(path)
        .map_err(LedgerError::io("create", path))?;
    Index::open(file).map_err(LedgerError::index(path))
}

/// The block store of one channel. Clones share the store.
#[derive(Debug, Clone)]
pub struct BlockStore {
    inner: Arc<Inner>,
}

impl BlockStore {
    fn open(
        storage: Arc<dyn Storage>,
        channel: &str,
        opts: StoreOptions,
    ) -> Result<Self, LedgerError> {
        check_channel(channel)?;
        let dir = channel_dir(channel);
        storage
            .create_dir_all(&dir)
            .map_err(LedgerError::io("create directory", &dir))?;
        storage
            .create_dir_all(INDEX_DIR)
            .map_err(LedgerError::io("create directory", INDEX_DIR))?;
        let mut suffixes = list_block_files(&*storage, channel)?;
        if suffixes.is_empty() {
            let p = file_path(channel, 0);
            storage.create(&p).map_err(LedgerError::io("create", &p))?;
            storage
                .sync_dir(&dir)
                .map_err(LedgerError::io("sync directory", &dir))?;
            // The channel directory's own entry must survive a crash too.
            storage
                .sync_dir(CHAINS_DIR)
                .map_err(LedgerError::io("sync directory", CHAINS_DIR))?;
            suffixes.push(0);
        }
        let last_suffix = suffixes.len() as u32 - 1;
        let ix_path = index_path(channel);
        let index = open_index(&*storage, &ix_path)?;

        let start = Self::index_start(&*storage, channel, &index, &ix_path, last_suffix)?;
        if start.is_none() {
            index.clear().map_err(LedgerError::index(&ix_path))?;
        }
        let (tip, writer) =
            Self::recover(&*storage, channel, &index, &ix_path, start, last_suffix)?;
        index.persist().map_err(LedgerError::index(&ix_path))?;
        tracing::info!(
            channel,
            height = tip.height,
            files = last_suffix + 1,
            "block store opened"
        );

        let (watch, _) = watch::channel(Watched {
            height: tip.height,
            closed: false,
        });
        Ok(Self {
            inner: Arc::new(Inner {
                storage,
                channel: channel.to_owned(),
                opts,
                index_path: ix_path,
                index,
                writer: Mutex::new(writer),
                tip: Mutex::new(tip),
                cond: Condvar::new(),
                watch,
                read_files: Mutex::new(BTreeMap::new()),
                last_suffix: AtomicU32::new(last_suffix),
            }),
        })
    }

    /// The last indexed block and its location, if the index is trustworthy: the
    /// location must hold a record of that very block.
    fn index_start(
        storage: &dyn Storage,
        channel: &str,
        index: &Index,
        ix_path: &str,
        last_suffix: u32,
    ) -> Result<Option<(u64, Location)>, LedgerError> {
        let Some(c) = index.last_indexed().map_err(LedgerError::index(ix_path))? else {
            return Ok(None);
        };
        let Some(loc) = index.get(c).map_err(LedgerError::index(ix_path))? else {
            return Ok(None);
        };
        if loc.suffix > last_suffix {
            return Ok(None);
        }
        let p = file_path(channel, loc.suffix);
        let file = storage.open(&p).map_err(LedgerError::io("open", &p))?;
        let len = file.len().map_err(LedgerError::io("stat", &p))?;
        match read_step(&*file, &p, len, loc.offset)? {
            Step::Record(b, rec_len)
                if rec_len == loc.len && b.header.as_ref().is_some_and(|h| h.number == c) =>
            {
                Ok(Some((c, loc)))
            }
            _ => {
                tracing::warn!(
                    channel,
                    block = c,
                    "block index disagrees with the block files; rebuilding it"
                );
                Ok(None)
            }
        }
    }

    /// Scans every block file from the beginning, checking each block's number, hash
    /// chain and data hash, truncating a torn tail of the last file and indexing every
    /// block past the index checkpoint `start`.
    fn recover(
        storage: &dyn Storage,
        channel: &str,
        index: &Index,
        ix_path: &str,
        start: Option<(u64, Location)>,
        last_suffix: u32,
    ) -> Result<(Tip, Writer), LedgerError> {
        const INDEX_BATCH: usize = 1024;
        // Every block is read and checked, not only those past the index checkpoint:
        // a flipped bit anywhere in the block files is found at open.
        let first_suffix = 0;
        let mut expected = 0;
        let mut prev: Option<BlockHeader> = None;
        let mut pending: Vec<(u64, Location)> = Vec::new();
        let mut last_file = None;
        let mut end_size = 0;
        for suffix in first_suffix..=last_suffix {
            let p = file_path(channel, suffix);
            let file = storage.open(&p).map_err(LedgerError::io("open", &p))?;
            let len = file.len().map_err(LedgerError::io("stat", &p))?;
            let mut off = 0;
            loop {
                match read_step(&*file, &p, len, off)? {
                    Step::End => break,
                    Step::Torn if suffix == last_suffix => {
                        if let Some(reason) =
                            whole_block_after(&*file, &p, len, off, expected, prev.as_ref())?
                        {
                            return Err(LedgerError::Corrupt {
                                file: p,
                                offset: off,
                                block: Some(expected),
                                reason,
                            });
                        }
                        tracing::warn!(file = %p, offset = off, dropped_bytes = len - off, "cutting off a torn last record");
                        file.set_len(off).map_err(LedgerError::io("truncate", &p))?;
                        file.sync_data().map_err(LedgerError::io("sync", &p))?;
                        break;
                    }
                    Step::Torn => {
                        return Err(LedgerError::Corrupt {
                            file: p,
                            offset: off,
                            block: Some(expected),
                            reason: "incomplete record in a block file that is not the last".into(),
                        });
                    }
                    Step::Bad(reason) => {
                        return Err(LedgerError::Corrupt {
                            file: p,
                            offset: off,
                            block: Some(expected),
                            reason,
                        });
                    }
                    Step::Record(block, rec_len) => {
                        let header = block.header.clone().unwrap_or_default();
                        check_link(&p, off, expected, prev.as_ref(), &header)?;
                        check_data_hash(&p, off, &block, &header)?;
                        if start.is_none_or(|(c, _)| header.number > c) {
                            let loc = Location {
                                suffix,
                                offset: off,
                                len: rec_len,
                            };
                            pending.push((header.number, loc));
                        }
                        if pending.len() >= INDEX_BATCH {
                            index
                                .put(&pending, false)
                                .map_err(LedgerError::index(ix_path))?;
                            pending.clear();
                        }
                        expected = header.number + 1;
                        prev = Some(header);
                        off += rec_len;
                    }
                }
            }
            if suffix == last_suffix {
                end_size = off;
                last_file = Some(file);
            }
        }
        index
            .put(&pending, false)
            .map_err(LedgerError::index(ix_path))?;
        let file = last_file.expect("the scan always visits the last block file");
        let last_hash = prev.as_ref().map(header_hash);
        let height = if prev.is_some() { expected } else { 0 };
        Ok((
            Tip {
                height,
                last: prev,
                last_hash,
                closed: false,
            },
            Writer {
                suffix: last_suffix,
                file,
                size: end_size,
                since_index_persist: 0,
                poisoned: None,
            },
        ))
    }

    /// Name of the channel.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    fn tip(&self) -> Tip {
        self.inner.tip.lock().recover_poison().clone()
    }

    /// Number of blocks (the next block's number).
    pub fn height(&self) -> u64 {
        self.inner.tip.lock().recover_poison().height
    }

    /// Number of the first block (`None` when empty).
    pub fn first_block_number(&self) -> Option<u64> {
        (self.height() > 0).then_some(0)
    }

    /// Number of the last block (`None` when empty).
    pub fn last_block_number(&self) -> Option<u64> {
        self.height().checked_sub(1)
    }

    /// Header of the last block.
    pub fn last_header(&self) -> Option<BlockHeader> {
        self.inner.tip.lock().recover_poison().last.clone()
    }

    /// Header hash of the last block: the `previous_hash` the next block must carry.
    pub fn current_hash(&self) -> Option<[u8; 32]> {
        self.inner.tip.lock().recover_poison().last_hash
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

    /// Appends `block`, which must be block number `height` chained onto the last
    /// block. Durable when this returns `Ok`. A refused block or a failed write
    /// changes nothing.
    pub fn append(&self, block: &Block) -> Result<(), LedgerError> {
        let inner = &*self.inner;
        let mut w = inner.writer.lock().recover_poison();
        if let Some(p) = &w.poisoned {
            return Err(LedgerError::Poisoned(p.clone()));
        }
        let t = self.tip();
        if t.closed {
            return Err(LedgerError::Closed);
        }
        let header = block.header.as_ref().ok_or(LedgerError::MissingHeader)?;
        if header.number != t.height {
            return Err(LedgerError::WrongNumber {
                expected: t.height,
                got: header.number,
            });
        }
        let expected_prev: &[u8] = t.last_hash.as_ref().map_or(&[], |h| &h[..]);
        if header.previous_hash[..] != *expected_prev {
            return Err(LedgerError::WrongPreviousHash {
                number: header.number,
                expected: hex::encode(expected_prev),
                got: hex::encode(&header.previous_hash),
            });
        }
        let record = encode_record(block);
        let rec_len = record.len() as u64;
        if w.size > 0 && w.size + rec_len > inner.opts.max_file_size_bytes {
            self.roll(&mut w)?;
        }
        let offset = w.size;
        let path = file_path(&inner.channel, w.suffix);
        if let Err(e) = w
            .file
            .write_all_at(&record, offset)
            .and_then(|()| w.file.sync_data())
        {
            if let Err(undo) = w.file.set_len(offset).and_then(|()| w.file.sync_data()) {
                w.poisoned = Some(format!(
                    "could not truncate {path} back to {offset} after a failed write: {undo}"
                ));
            }
            return Err(LedgerError::Io {
                op: "append block to",
                path,
                source: e,
            });
        }
        w.size += rec_len;
        let loc = Location {
            suffix: w.suffix,
            offset,
            len: rec_len,
        };
        w.since_index_persist += 1;
        let durable = w.since_index_persist >= inner.opts.index_sync_every_blocks;
        let indexed = inner.index.put(&[(header.number, loc)], durable);
        if durable && indexed.is_ok() {
            w.since_index_persist = 0;
        }
        self.publish(header);
        if let Err(e) = indexed {
            // The block is durable and published; only lookups by number miss it
            // until a reopen catches the index up.
            w.poisoned = Some(format!(
                "index update failed for block {}: {e}",
                header.number
            ));
            return Err(LedgerError::index(&inner.index_path)(e));
        }
        Ok(())
    }

    fn roll(&self, w: &mut Writer) -> Result<(), LedgerError> {
        let inner = &*self.inner;
        let next = w.suffix + 1;
        let p = file_path(&inner.channel, next);
        let file = inner
            .storage
            .create(&p)
            .map_err(LedgerError::io("create", &p))?;
        let dir = channel_dir(&inner.channel);
        inner
            .storage
            .sync_dir(&dir)
            .map_err(LedgerError::io("sync directory", &dir))?;
        w.suffix = next;
        w.file = file;
        w.size = 0;
        inner.last_suffix.store(next, Ordering::Release);
        Ok(())
    }

    fn publish(&self, header: &BlockHeader) {
        let inner = &*self.inner;
        let height = {
            let mut t = inner.tip.lock().recover_poison();
            t.height = header.number + 1;
            t.last_hash = Some(header_hash(header));
            t.last = Some(header.clone());
            t.height
        };
        inner.cond.notify_all();
        inner.watch.send_modify(|w| w.height = height);
    }

    /// Closes the store: appends fail, waiting iterators return. Reads still work.
    pub fn close(&self) {
        self.inner.tip.lock().recover_poison().closed = true;
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

    /// Waits (async, holding no lock across the await) until the height is at least
    /// `height`; returns the height then. Fails with `Closed` when the store closes.
    /// Cancel by dropping the future.
    pub async fn wait_for_height(&self, height: u64) -> Result<u64, LedgerError> {
        wait_async(&self.inner, height, None).await
    }

    /// Blocks the thread until the height is at least `height` or the store closes.
    pub fn wait_for_height_blocking(&self, height: u64) -> Result<u64, LedgerError> {
        wait_blocking(&self.inner, height, None)
    }

    fn read_file(&self, suffix: u32) -> Result<Arc<dyn StorageFile>, LedgerError> {
        let mut files = self.inner.read_files.lock().recover_poison();
        if let Some(f) = files.get(&suffix) {
            return Ok(f.clone());
        }
        let p = file_path(&self.inner.channel, suffix);
        let f = self
            .inner
            .storage
            .open(&p)
            .map_err(LedgerError::io("open", &p))?;
        files.insert(suffix, f.clone());
        Ok(f)
    }

    /// Location of block `number` (which must be below the height).
    fn locate(&self, number: u64) -> Result<Location, LedgerError> {
        self.inner
            .index
            .get(number)
            .map_err(LedgerError::index(&self.inner.index_path))?
            .ok_or_else(|| LedgerError::Corrupt {
                file: self.inner.index_path.clone(),
                offset: 0,
                block: Some(number),
                reason: "block below the height is missing from the index".into(),
            })
    }

    /// Reads the record at `*cursor` (moving to the next file at the end of one),
    /// checks it is block `expected`, and advances the cursor past it.
    fn read_next(&self, cursor: &mut (u32, u64), expected: u64) -> Result<Block, LedgerError> {
        let last_suffix = self.inner.last_suffix.load(Ordering::Acquire);
        loop {
            let p = file_path(&self.inner.channel, cursor.0);
            let file = self.read_file(cursor.0)?;
            let len = file.len().map_err(LedgerError::io("stat", &p))?;
            match read_step(&*file, &p, len, cursor.1)? {
                Step::End if cursor.0 < last_suffix => {
                    *cursor = (cursor.0 + 1, 0);
                }
                Step::Record(block, rec_len) => {
                    let number = block.header.as_ref().map_or(0, |h| h.number);
                    if number != expected {
                        return Err(LedgerError::Corrupt {
                            file: p,
                            offset: cursor.1,
                            block: Some(expected),
                            reason: format!("found block {number} where block {expected} belongs"),
                        });
                    }
                    cursor.1 += rec_len;
                    return Ok(block);
                }
                Step::End | Step::Torn => {
                    return Err(LedgerError::Corrupt {
                        file: p,
                        offset: cursor.1,
                        block: Some(expected),
                        reason: "a durable block is missing from the block file".into(),
                    });
                }
                Step::Bad(reason) => {
                    return Err(LedgerError::Corrupt {
                        file: p,
                        offset: cursor.1,
                        block: Some(expected),
                        reason,
                    });
                }
            }
        }
    }

    /// Block `number`, or `NotFound` when it is not in the ledger yet.
    pub fn block(&self, number: u64) -> Result<Block, LedgerError> {
        let height = self.height();
        if number >= height {
            return Err(LedgerError::NotFound { number, height });
        }
        let loc = self.locate(number)?;
        self.read_next(&mut (loc.suffix, loc.offset), number)
    }

    /// An iterator starting at block `start` (which may be at or beyond the height:
    /// it then waits, or returns `None` from `try_next`).
    pub fn iter_from(&self, start: u64) -> BlockIterator {
        BlockIterator {
            store: self.clone(),
            next: start,
            cursor: None,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn notify_all(&self) {
        let _t = self.inner.tip.lock().recover_poison();
        self.inner.cond.notify_all();
        drop(_t);
        self.inner.watch.send_modify(|_| {});
    }

    /// Blocks until `pred` holds for the height, the store closes, or `stop()` is true
    /// (checked after every wake-up; whoever makes it true must call `notify_all`).
    pub(crate) fn wait_until(
        &self,
        height: u64,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<u64>, LedgerError> {
        let mut t = self.inner.tip.lock().recover_poison();
        loop {
            if t.height >= height {
                return Ok(Some(t.height));
            }
            if t.closed {
                return Err(LedgerError::Closed);
            }
            if stop() {
                return Ok(None);
            }
            t = self.inner.cond.wait(t).recover_poison();
        }
    }
}

/// Whether the block's data hashes to the data hash its header records.
fn check_data_hash(
    path: &str,
    offset: u64,
    block: &Block,
    header: &BlockHeader,
) -> Result<(), LedgerError> {
    let entries = block.data.as_ref().map_or(&[][..], |d| &d.data[..]);
    if header.data_hash[..] != data_hash_of(entries)[..] {
        return Err(LedgerError::Corrupt {
            file: path.to_owned(),
            offset,
            block: Some(header.number),
            reason: "the block's data does not match the data hash in its header".into(),
        });
    }
    Ok(())
}

/// A last record that looks cut short is a torn write only if the bytes after its
/// length prefix do not start with the whole expected block: when they do, the
/// length prefix itself was damaged and the block (and whatever follows it) was
/// written completely. Returns why the record is damaged, or `None` for a torn write.
fn whole_block_after(
    file: &dyn StorageFile,
    path: &str,
    len: u64,
    offset: u64,
    expected: u64,
    prev: Option<&BlockHeader>,
) -> Result<Option<String>, LedgerError> {
    let mut rest = vec![0u8; (len - offset) as usize];
    file.read_exact_at(&mut rest, offset)
        .map_err(LedgerError::io("read", path))?;
    let rest = Bytes::from(rest);
    for prefix_len in 1..=MAX_VARINT_LEN.min(rest.len().saturating_sub(1)) {
        let Ok((block, _)) = decode_body_prefix(rest.slice(prefix_len..)) else {
            continue;
        };
        let header = block.header.clone().unwrap_or_default();
        if check_link(path, offset, expected, prev, &header).is_ok()
            && check_data_hash(path, offset, &block, &header).is_ok()
        {
            return Ok(Some(format!(
                "the length prefix of block {expected} is damaged (the block's bytes are all there)"
            )));
        }
    }
    Ok(None)
}

fn check_link(
    path: &str,
    offset: u64,
    expected: u64,
    prev: Option<&BlockHeader>,
    header: &BlockHeader,
) -> Result<(), LedgerError> {
    if header.number != expected {
        return Err(LedgerError::Corrupt {
            file: path.to_owned(),
            offset,
            block: Some(expected),
            reason: format!(
                "found block {} where block {expected} belongs",
                header.number
            ),
        });
    }
    if let Some(p) = prev
        && header.previous_hash[..] != header_hash(p)[..]
    {
        return Err(LedgerError::Corrupt {
            file: path.to_owned(),
            offset,
            block: Some(expected),
            reason: "previous_hash does not match the header hash of the block before".into(),
        });
    }
    Ok(())
}

fn wait_blocking(
    inner: &Inner,
    height: u64,
    closed: Option<&AtomicBool>,
) -> Result<u64, LedgerError> {
    let mut t = inner.tip.lock().recover_poison();
    loop {
        if t.height >= height {
            return Ok(t.height);
        }
        if t.closed || closed.is_some_and(|c| c.load(Ordering::Acquire)) {
            return Err(LedgerError::Closed);
        }
        t = inner.cond.wait(t).recover_poison();
    }
}

async fn wait_async(
    inner: &Inner,
    height: u64,
    closed: Option<&AtomicBool>,
) -> Result<u64, LedgerError> {
    let mut rx = inner.watch.subscribe();
    loop {
        {
            let w = rx.borrow_and_update();
            if w.height >= height {
                return Ok(w.height);
            }
            if w.closed || closed.is_some_and(|c| c.load(Ordering::Acquire)) {
                return Err(LedgerError::Closed);
            }
        }
        rx.changed().await.map_err(|_| LedgerError::Closed)?;
    }
}

/// Reads blocks in order from a start number. The blocking and async `next` variants
/// wait for blocks not written yet; `try_next` does not.
#[derive(Debug)]
pub struct BlockIterator {
    store: BlockStore,
    next: u64,
    cursor: Option<(u32, u64)>,
    closed: Arc<AtomicBool>,
}

/// Closes a [`BlockIterator`] from another thread or task, waking it if it waits.
#[derive(Debug, Clone)]
pub struct IteratorCloser {
    store: BlockStore,
    closed: Arc<AtomicBool>,
}

impl IteratorCloser {
    /// Closes the iterator: a waiting or later `next` returns `None`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.store.notify_all();
    }
}

impl BlockIterator {
    /// Number of the block the next call returns.
    pub fn next_number(&self) -> u64 {
        self.next
    }

    /// A handle that closes this iterator.
    pub fn closer(&self) -> IteratorCloser {
        IteratorCloser {
            store: self.store.clone(),
            closed: self.closed.clone(),
        }
    }

    /// Closes the iterator.
    pub fn close(&self) {
        self.closer().close();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn read(&mut self) -> Result<Block, LedgerError> {
        let cursor = match self.cursor {
            Some(c) => c,
            None => {
                let loc = self.store.locate(self.next)?;
                (loc.suffix, loc.offset)
            }
        };
        let mut c = cursor;
        let block = self.store.read_next(&mut c, self.next)?;
        self.cursor = Some(c);
        self.next += 1;
        Ok(block)
    }

    /// The next block if it exists now; `None` if it has not been written yet or the
    /// iterator is closed.
    pub fn try_next(&mut self) -> Result<Option<Block>, LedgerError> {
        if self.is_closed() || self.next >= self.store.height() {
            return Ok(None);
        }
        self.read().map(Some)
    }

    /// The next block, blocking the thread until it exists. `None` once the iterator
    /// or the store is closed.
    pub fn next_blocking(&mut self) -> Result<Option<Block>, LedgerError> {
        match wait_blocking(&self.store.inner, self.next + 1, Some(&self.closed)) {
            Ok(_) if !self.is_closed() => self.read().map(Some),
            Ok(_) | Err(LedgerError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next block, waiting asynchronously until it exists. `None` once the
    /// iterator or the store is closed. The read itself is a short blocking file read.
    pub async fn next_async(&mut self) -> Result<Option<Block>, LedgerError> {
        match wait_async(&self.store.inner, self.next + 1, Some(&self.closed)).await {
            Ok(_) if !self.is_closed() => self.read().map(Some),
            Ok(_) | Err(LedgerError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
