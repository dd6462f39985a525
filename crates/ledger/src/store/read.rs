//! Reading blocks back: the record at an offset of a block file, a block by number,
//! and iterators that wait (blocking or async) for blocks not written yet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use korder_proto::common::Block;
use korder_storage::StorageFile;
use korder_types::ids::BlockNumber;
use korder_types::sync::MutexExt;

use super::wait::{wait_async, wait_blocking};
use super::{BlockStore, file_path};
use crate::error::LedgerError;
use crate::index::Location;
use crate::record::{Framing, MAX_VARINT_LEN, decode_body, framing};

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

impl BlockStore {
    fn read_file(&self, suffix: u32) -> Result<Arc<dyn StorageFile>, LedgerError> {
        let mut files = self.inner.read_files.lock_unpoisoned();
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
    fn locate(&self, number: BlockNumber) -> Result<Location, LedgerError> {
        self.inner
            .index
            .get(number.get())
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
    fn read_next(
        &self,
        cursor: &mut (u32, u64),
        expected: BlockNumber,
    ) -> Result<Block, LedgerError> {
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
                    if number != expected.get() {
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
    pub fn block(&self, number: BlockNumber) -> Result<Block, LedgerError> {
        let height = self.height();
        if number.get() >= height {
            return Err(LedgerError::NotFound { number, height });
        }
        let loc = self.locate(number)?;
        self.read_next(&mut (loc.suffix, loc.offset), number)
    }

    /// An iterator starting at block `start` (which may be at or beyond the height:
    /// it then waits, or returns `None` from `try_next`).
    pub fn iter_from(&self, start: BlockNumber) -> BlockIterator {
        BlockIterator {
            store: self.clone(),
            next: start,
            cursor: None,
            closed: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Reads blocks in order from a start number. The blocking and async `next` variants
/// wait for blocks not written yet; `try_next` does not.
#[derive(Debug)]
pub struct BlockIterator {
    store: BlockStore,
    next: BlockNumber,
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
    pub fn next_number(&self) -> BlockNumber {
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
        self.next = self.next.next();
        Ok(block)
    }

    /// The next block if it exists now; `None` if it has not been written yet or the
    /// iterator is closed.
    pub fn try_next(&mut self) -> Result<Option<Block>, LedgerError> {
        if self.is_closed() || self.next.get() >= self.store.height() {
            return Ok(None);
        }
        self.read().map(Some)
    }

    /// The next block, blocking the thread until it exists. `None` once the iterator
    /// or the store is closed.
    pub fn next_blocking(&mut self) -> Result<Option<Block>, LedgerError> {
        match wait_blocking(&self.store.inner, self.next.height(), Some(&self.closed)) {
            Ok(_) if !self.is_closed() => self.read().map(Some),
            Ok(_) | Err(LedgerError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next block, waiting asynchronously until it exists. `None` once the
    /// iterator or the store is closed. The read itself is a short blocking file read.
    pub async fn next_async(&mut self) -> Result<Option<Block>, LedgerError> {
        match wait_async(&self.store.inner, self.next.height(), Some(&self.closed)).await {
            Ok(_) if !self.is_closed() => self.read().map(Some),
            Ok(_) | Err(LedgerError::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
