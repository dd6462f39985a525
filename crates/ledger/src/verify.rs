//! `verify`: walks a channel's ledger end to end without changing anything —
//! record framing and decoding, numbering, the hash chain, data hashes, and the index
//! against the files — and names the first bad block, its file and offset.

use korder_proto::common::{Block, BlockHeader};
use korder_types::ids::BlockNumber;

use crate::block::{data_hash, header_hash};
use crate::error::LedgerError;
use crate::index::Index;
use crate::store::{Ledgers, Step, file_path, index_path, list_block_files, read_step};

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBlock {
    /// Number of the block expected at that place.
    pub number: BlockNumber,
    /// Block file (relative to the ledger root).
    pub file: String,
    /// Offset of the record's length prefix.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// State of the index compared with the block files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexStatus {
    /// No index file: it will be rebuilt at the next open.
    Missing,
    /// The index cannot be opened read-only (for instance after a crash, before the
    /// next open repairs it).
    Unreadable(String),
    /// Every indexed block points at its record; `last_indexed` is the last block.
    Consistent { last_indexed: Option<BlockNumber> },
    /// Entries agree with the files but stop before the last block (normal after a
    /// crash; the next open catches up).
    Behind { last_indexed: Option<BlockNumber> },
    /// An entry points somewhere else than its block's record.
    Mismatch { number: BlockNumber, reason: String },
}

/// Where the last file ends in an incomplete record (a torn write the next open cuts off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: String,
    pub offset: u64,
    pub bytes: u64,
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub channel: String,
    /// Blocks that passed every check.
    pub blocks_ok: u64,
    /// Block files walked.
    pub files: u32,
    /// Bytes of block records walked.
    pub bytes: u64,
    pub torn_tail: Option<TornTail>,
    pub index: IndexStatus,
    /// The first bad block; the walk stops there.
    pub first_bad: Option<BadBlock>,
}

impl VerifyReport {
    /// Whether the ledger is sound (a torn tail or a lagging index is not a fault).
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none() && !matches!(self.index, IndexStatus::Mismatch { .. })
    }
}

/// Per-block hook: returns a reason to reject the block (the CLI checks signatures here).
pub type BlockHook<'a> = &'a mut dyn FnMut(&Block) -> Result<(), String>;

/// Walks `channel`'s ledger. `progress` is called with each good block's number.
/// Fails only when files cannot be read; damage is reported in the report.
pub fn verify(
    ledgers: &Ledgers,
    channel: &str,
    progress: &mut dyn FnMut(BlockNumber),
    mut hook: Option<BlockHook<'_>>,
) -> Result<VerifyReport, LedgerError> {
    let storage = ledgers.storage();
    let ix_path = index_path(channel);
    let index = if !storage.exists(&ix_path) {
        Err(IndexStatus::Missing)
    } else {
        let file = storage
            .open(&ix_path)
            .map_err(LedgerError::io("open", &ix_path))?;
        Index::open_read_only(file).map_err(|e| IndexStatus::Unreadable(e.to_string()))
    };
    let last_indexed = match &index {
        Ok(ix) => ix
            .last_indexed()
            .map_err(LedgerError::index(&ix_path))?
            .map(BlockNumber::new),
        Err(_) => None,
    };
    let mut index_status = match &index {
        Ok(_) => None,
        Err(s) => Some(s.clone()),
    };

    let suffixes = list_block_files(&**storage, channel)?;
    let mut report = VerifyReport {
        channel: channel.to_owned(),
        blocks_ok: 0,
        files: suffixes.len() as u32,
        bytes: 0,
        torn_tail: None,
        index: IndexStatus::Missing,
        first_bad: None,
    };
    let mut expected = BlockNumber::GENESIS;
    let mut prev: Option<BlockHeader> = None;
    'files: for &suffix in &suffixes {
        let p = file_path(channel, suffix);
        let file = storage.open(&p).map_err(LedgerError::io("open", &p))?;
        let len = file.len().map_err(LedgerError::io("stat", &p))?;
        let mut off = 0u64;
        loop {
            let bad = |reason: String| BadBlock {
                number: expected,
                file: p.clone(),
                offset: off,
                reason,
            };
            match read_step(&*file, &p, len, off)? {
                Step::End => break,
                Step::Torn if suffix + 1 == suffixes.len() as u32 => {
                    report.torn_tail = Some(TornTail {
                        file: p.clone(),
                        offset: off,
                        bytes: len - off,
                    });
                    break;
                }
                Step::Torn => {
                    report.first_bad = Some(bad(
                        "incomplete record in a block file that is not the last".into(),
                    ));
                    break 'files;
                }
                Step::Bad(reason) => {
                    report.first_bad = Some(bad(reason));
                    break 'files;
                }
                Step::Record(block, rec_len) => {
                    if let Some(reason) = check_block(&block, expected, prev.as_ref()) {
                        report.first_bad = Some(bad(reason));
                        break 'files;
                    }
                    if let Some(h) = hook.as_mut()
                        && let Err(reason) = h(&block)
                    {
                        report.first_bad = Some(bad(reason));
                        break 'files;
                    }
                    if index_status.is_none()
                        && last_indexed.is_some_and(|c| expected <= c)
                        && let Ok(ix) = &index
                    {
                        let got = ix
                            .get(expected.get())
                            .map_err(LedgerError::index(&ix_path))?;
                        if got.is_none_or(|l| (l.suffix, l.offset, l.len) != (suffix, off, rec_len))
                        {
                            index_status = Some(IndexStatus::Mismatch {
                                number: expected,
                                reason: format!(
                                    "index holds {got:?}, the record is in {p} at offset {off}, {rec_len} bytes"
                                ),
                            });
                        }
                    }
                    progress(expected);
                    report.blocks_ok += 1;
                    report.bytes += rec_len;
                    prev = block.header;
                    expected = expected.next();
                    off += rec_len;
                }
            }
        }
    }
    report.index = index_status.unwrap_or_else(|| {
        let height = report.blocks_ok;
        match last_indexed {
            Some(c) if c.height() > height && report.first_bad.is_none() => IndexStatus::Mismatch {
                number: c,
                reason: format!("index reaches block {c} but the files hold {height} blocks"),
            },
            c if c.map_or(0, BlockNumber::height) == height => {
                IndexStatus::Consistent { last_indexed: c }
            }
            c => IndexStatus::Behind { last_indexed: c },
        }
    });
    Ok(report)
}

fn check_block(block: &Block, expected: BlockNumber, prev: Option<&BlockHeader>) -> Option<String> {
    let header = block.header.as_ref()?;
    if header.number != expected.get() {
        return Some(format!(
            "found block {} where block {expected} belongs",
            header.number
        ));
    }
    match prev {
        Some(p) if header.previous_hash[..] != header_hash(p)[..] => {
            return Some("previous_hash does not match the header hash of the block before".into());
        }
        None if !header.previous_hash.is_empty() => {
            return Some("block 0 has a non-empty previous_hash".into());
        }
        _ => {}
    }
    let computed = block
        .data
        .as_ref()
        .map(data_hash)
        .unwrap_or_else(|| data_hash(&Default::default()));
    if header.data_hash[..] != computed[..] {
        return Some(format!(
            "data_hash {} does not match the hash {} of the block's data",
            hex::encode(&header.data_hash),
            hex::encode(computed)
        ));
    }
    None
}
