//! Opening a channel's block store: the index is checked against the block files,
//! every block file is scanned (numbers, hash chain, data hashes), a torn last record
//! is cut off, and the index is caught up. See `docs/ledger-format.md`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use korder_proto::common::{Block, BlockHeader};
use korder_storage::{Storage, StorageFile};
use korder_types::ids::BlockNumber;
use tokio::sync::watch;

use super::read::{Step, read_step};
use super::{
    BlockStore, CHAINS_DIR, INDEX_DIR, Inner, StoreOptions, Tip, Watched, Writer, channel_dir,
    check_channel, file_path, index_path, list_block_files,
};
use crate::block::{data_hash_of, header_hash};
use crate::error::LedgerError;
use crate::index::{Index, Location};
use crate::record::{MAX_VARINT_LEN, decode_body_prefix};

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

impl BlockStore {
    pub(super) fn open(
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
        let indexed = |index: &crate::index::Index| {
            index.last_indexed().map_err(LedgerError::index(&ix_path))
        };
        let before = indexed(&index)?;
        let (tip, writer) =
            Self::recover(&*storage, channel, &index, &ix_path, start, last_suffix)?;
        // What recovery indexed is made durable; an index it left as it was needs no
        // commit (a node with many channels opens them all at start-up).
        if start.is_none() || indexed(&index)? != before {
            index.persist().map_err(LedgerError::index(&ix_path))?;
        }
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
        let mut expected = BlockNumber::GENESIS;
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
                        expected = BlockNumber::new(header.number).next();
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
        let height = prev
            .as_ref()
            .map_or(0, |h| BlockNumber::new(h.number).height());
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
            block: Some(BlockNumber::new(header.number)),
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
    expected: BlockNumber,
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
    expected: BlockNumber,
    prev: Option<&BlockHeader>,
    header: &BlockHeader,
) -> Result<(), LedgerError> {
    if header.number != expected.get() {
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
