//! Appending a block: check its number and previous hash, write its record, fsync,
//! index it, then publish the new height.

use std::sync::atomic::Ordering;

use korder_proto::common::{Block, BlockHeader};
use korder_types::ids::BlockNumber;
use korder_types::sync::MutexExt;

use super::{BlockStore, Writer, channel_dir, file_path};
use crate::block::header_hash;
use crate::error::LedgerError;
use crate::index::Location;
use crate::record::encode_record;

impl BlockStore {
    /// Appends `block`, which must be block number `height` chained onto the last
    /// block. Durable when this returns `Ok`. A refused block or a failed write
    /// changes nothing.
    pub fn append(&self, block: &Block) -> Result<(), LedgerError> {
        let inner = &*self.inner;
        let mut w = inner.writer.lock_unpoisoned();
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
                expected: BlockNumber::new(t.height),
                got: BlockNumber::new(header.number),
            });
        }
        let expected_prev: &[u8] = t.last_hash.as_ref().map_or(&[], |h| &h[..]);
        if header.previous_hash[..] != *expected_prev {
            return Err(LedgerError::WrongPreviousHash {
                number: BlockNumber::new(header.number),
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
            let mut t = inner.tip.lock_unpoisoned();
            t.height = header.number + 1;
            t.last_hash = Some(header_hash(header));
            t.last = Some(header.clone());
            t.height
        };
        inner.cond.notify_all();
        inner.watch.send_modify(|w| w.height = height);
    }
}
