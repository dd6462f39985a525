//! The ledger's block file scan and recovery at open, fed damaged files.
//!
//! Two modes, on real files in a scratch directory (under `/dev/shm` when it
//! exists, so that fsync costs nothing):
//! - **written, then damaged**: the two real blocks of the fixtures' v2.5.16
//!   system channel and a few more chained after them are written through the
//!   ledger's pipelined writer (small block files, so that there are several);
//!   the input then damages the files: the last file cut short or extended (a torn
//!   write), bytes changed or overwritten anywhere, a block file removed, the
//!   index removed, cut or overwritten;
//! - **raw**: arbitrary bytes as the block file of a channel.
//!
//! Opening must either succeed or refuse with `LedgerError::Corrupt` naming a block
//! file and an offset inside it (for a missing file: the file's name). When it
//! opens: every block below the height reads back, directly and through an
//! iterator, chained by header hash with a matching data hash; headers and data
//! equal the originals (only metadata is outside the hashes); when only the tail
//! was damaged, the height is at least the number of blocks whose records lie
//! wholly in the undamaged prefix, and those blocks are unchanged; opening again
//! gives the same ledger, and the next block appends and survives a reopen. A
//! torn tail alone (the last file cut, or zeros after a record boundary) always
//! opens. When it refuses after tail damage only, the offset it names is not
//! inside the undamaged prefix.

use korder_ledger::BlockNumber;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use korder_ledger::block::{BlockBuilder, data_hash, header_hash};
use korder_ledger::record::{Varint, decode_body, encode_record, get_varint};
use korder_ledger::store::block_file_name;
use korder_ledger::{BlockStore, LedgerError, Ledgers, PipelinedWriter, StoreOptions};
use korder_proto::common::Block;

const CHANNEL: &str = "ch";
const FIXTURE_FILE: &[u8] = include_bytes!(
    "../../../tests/fixtures/fabric-v2.5.16/orderer-ledger/chains/system-channel/blockfile_000000"
);
const MAX_EXTRA_BLOCKS: usize = 8;
const MAX_ENTRY_BYTES: usize = 256;

/// The real blocks of the fixture's system channel.
fn fixture_blocks() -> &'static [Block] {
    static BLOCKS: OnceLock<Vec<Block>> = OnceLock::new();
    BLOCKS.get_or_init(|| {
        let mut blocks = Vec::new();
        let mut rest = FIXTURE_FILE;
        while !rest.is_empty() {
            let Varint::Value(len, n) = get_varint(rest) else {
                panic!("the fixture's record prefix does not decode");
            };
            let end = n + usize::try_from(len).expect("record length");
            blocks
                .push(decode_body(Bytes::copy_from_slice(&rest[n..end])).expect("fixture record"));
            rest = &rest[end..];
        }
        blocks
    })
}

/// How the written ledger is damaged.
#[derive(Arbitrary, Debug)]
enum Damage {
    /// Cut the last block file to `at` (modulo its length + 1).
    Truncate {
        at: u32,
    },
    /// Append bytes to the last block file.
    Append {
        bytes: Vec<u8>,
    },
    /// XOR `mask` (never 0) into one byte of a block file.
    Flip {
        file: u8,
        at: u32,
        mask: u8,
    },
    /// Overwrite bytes of a block file from `at`, its length kept.
    Overwrite {
        file: u8,
        at: u32,
        bytes: Vec<u8>,
    },
    /// Remove a block file.
    RemoveFile {
        file: u8,
    },
    RemoveIndex,
    TruncateIndex {
        at: u32,
    },
    OverwriteIndex {
        bytes: Vec<u8>,
    },
}

impl Damage {
    fn tail_only(&self) -> bool {
        matches!(
            self,
            Damage::Truncate { .. }
                | Damage::Append { .. }
                | Damage::RemoveIndex
                | Damage::TruncateIndex { .. }
                | Damage::OverwriteIndex { .. }
        )
    }
}

#[derive(Arbitrary, Debug)]
struct Written {
    /// Entries of the blocks written after the two real ones (one block each).
    extra: Vec<Vec<Vec<u8>>>,
    max_file_size: u16,
    index_sync_every: u8,
    damage: Vec<Damage>,
}

/// A scratch ledger directory, emptied; one per process.
fn scratch() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!(
        "korder-fuzz-ledger-{}-{}",
        std::process::id(),
        n % 2
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chain_dir(root: &Path) -> PathBuf {
    root.join("chains").join(CHANNEL)
}

fn index_file(root: &Path) -> PathBuf {
    root.join("index").join(format!("{CHANNEL}.redb"))
}

fn block_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chain_dir(root))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn options(max_file_size: u64, index_sync_every: u64) -> StoreOptions {
    StoreOptions {
        max_file_size_bytes: max_file_size.max(1),
        index_sync_every_blocks: index_sync_every.max(1),
    }
}

fn open(root: &Path, opts: &StoreOptions) -> Result<BlockStore, LedgerError> {
    Ledgers::open_dir(root, opts.clone())?.open(CHANNEL)
}

/// Runs one input: a structured write-then-damage case (first byte even) or the
/// bytes of one block file (odd); see the module docs for what it checks.
pub fn block_file_scan(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        let root = Scratch(scratch());
        raw(&root.0, rest);
        return;
    }
    let Ok(input) = Written::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let root = Scratch(scratch());
    written(&root.0, &input);
}

fn raw(root: &Path, bytes: &[u8]) {
    let dir = chain_dir(root);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    std::fs::write(dir.join(block_file_name(0)), bytes).expect("write block file");
    let lens = [bytes.len() as u64];
    let opts = options(1 << 20, 16);
    match open(root, &opts) {
        Ok(store) => {
            let blocks = read_all(&store);
            check_chain(&blocks);
            drop(store);
            reopen_and_extend(root, &opts, &blocks, None);
        }
        Err(e) => check_refusal(&e, &lens, None),
    }
}

/// What the files held before damage: each block file's records, in order.
struct Layout {
    /// Per file: the end offset of each record and the block's number.
    records: Vec<Vec<(u64, usize)>>,
}

fn layout(root: &Path, blocks: &[Block]) -> Layout {
    let mut records = Vec::new();
    let mut next = 0;
    for path in block_files(root) {
        let len = std::fs::metadata(&path).expect("block file").len();
        let mut file = Vec::new();
        let mut end = 0;
        while end < len {
            end += encode_record(&blocks[next]).len() as u64;
            file.push((end, next));
            next += 1;
        }
        assert_eq!(end, len, "the writer's files hold the records back to back");
        records.push(file);
    }
    assert_eq!(next, blocks.len(), "every written block is in a file");
    Layout { records }
}

fn written(root: &Path, w: &Written) {
    let opts = options(
        u64::from(w.max_file_size) * 8,
        u64::from(w.index_sync_every % 8),
    );
    let mut blocks: Vec<Block> = fixture_blocks().to_vec();
    let mut builder = BlockBuilder::after(
        blocks
            .last()
            .and_then(|b| b.header.clone())
            .expect("fixture header"),
    );
    for entries in w.extra.iter().take(MAX_EXTRA_BLOCKS) {
        let entries = entries
            .iter()
            .take(4)
            .map(|e| Bytes::copy_from_slice(&e[..e.len().min(MAX_ENTRY_BYTES)]))
            .collect();
        blocks.push(builder.build(entries));
    }
    {
        let store = open(root, &opts).expect("a new ledger opens");
        let writer = PipelinedWriter::new(store).expect("writer");
        for b in &blocks {
            writer.submit(b.clone()).expect("submit");
        }
        writer.close().expect("every block written");
    }
    let layout = layout(root, &blocks);
    let files = block_files(root);
    let last = files.len() - 1;

    // Damage, tracking how much of the last file is still what the writer wrote.
    let mut intact = std::fs::metadata(&files[last]).expect("last file").len();
    let mut appended_nonzero = false;
    let mut appended_at_cut = None;
    let mut tail_only = true;
    for d in w.damage.iter().take(4) {
        tail_only &= d.tail_only();
        apply(
            root,
            &files,
            d,
            &mut intact,
            &mut appended_nonzero,
            &mut appended_at_cut,
        );
    }
    let lens: Vec<u64> = files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .collect();
    // Blocks wholly in the undamaged prefix, and where that prefix ends.
    let mut leading = 0;
    for file in &layout.records[..last] {
        leading += file.len();
    }
    let mut prefix_end = 0;
    for &(end, _) in &layout.records[last] {
        if end <= intact {
            leading += 1;
            prefix_end = end;
        }
    }
    let at_boundary = appended_at_cut.is_none_or(|cut| cut == prefix_end);
    let must_open = tail_only && !appended_nonzero && at_boundary;

    match open(root, &opts) {
        Ok(store) => {
            let read = read_all(&store);
            check_chain(&read);
            for (got, want) in read.iter().zip(&blocks) {
                assert_eq!(got.header, want.header, "a block header changed");
                assert_eq!(got.data, want.data, "a block's data changed");
            }
            if tail_only {
                assert!(
                    read.len() >= leading,
                    "recovery lost blocks: height {} but {leading} blocks were intact",
                    read.len()
                );
                assert_eq!(
                    read[..leading],
                    blocks[..leading],
                    "an intact block changed"
                );
            }
            drop(store);
            reopen_and_extend(root, &opts, &read, Some(&blocks));
        }
        Err(e) => {
            assert!(
                !must_open,
                "a torn tail alone must open, got: {e} (intact {intact} bytes of the last file)"
            );
            let intact_prefix = tail_only.then_some((last, prefix_end));
            check_refusal(&e, &lens, intact_prefix);
        }
    }
}

fn apply(
    root: &Path,
    files: &[PathBuf],
    d: &Damage,
    intact: &mut u64,
    appended_nonzero: &mut bool,
    appended_at_cut: &mut Option<u64>,
) {
    use std::io::Write;
    let last = &files[files.len() - 1];
    let pick = |i: u8| &files[usize::from(i) % files.len()];
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    match d {
        Damage::Truncate { at } => {
            if !last.exists() {
                return; // removed by an earlier damage
            }
            let len = read(last).len() as u64;
            let cut = u64::from(*at) % (len + 1);
            std::fs::OpenOptions::new()
                .write(true)
                .open(last)
                .and_then(|f| f.set_len(cut))
                .expect("truncate");
            *intact = (*intact).min(cut);
        }
        Damage::Append { bytes } => {
            if !last.exists() {
                return; // removed by an earlier damage
            }
            let len = read(last).len() as u64;
            if !bytes.is_empty() {
                appended_at_cut.get_or_insert(len.min(*intact));
            }
            *appended_nonzero |= bytes.iter().any(|b| *b != 0);
            std::fs::OpenOptions::new()
                .append(true)
                .open(last)
                .and_then(|mut f| f.write_all(bytes))
                .expect("append");
        }
        Damage::Flip { file, at, mask } => {
            let p = pick(*file);
            let mut b = read(p);
            if !b.is_empty() {
                let i = *at as usize % b.len();
                b[i] ^= mask | 1;
                let _ = std::fs::write(p, b);
            }
        }
        Damage::Overwrite { file, at, bytes } => {
            let p = pick(*file);
            let mut b = read(p);
            if !b.is_empty() {
                let from = *at as usize % b.len();
                for (dst, src) in b[from..].iter_mut().zip(bytes) {
                    *dst = *src;
                }
                let _ = std::fs::write(p, b);
            }
        }
        Damage::RemoveFile { file } => {
            let _ = std::fs::remove_file(pick(*file));
        }
        Damage::RemoveIndex => {
            let _ = std::fs::remove_file(index_file(root));
        }
        Damage::TruncateIndex { at } => {
            let p = index_file(root);
            let len = read(&p).len() as u64;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_len(u64::from(*at) % (len + 1)));
        }
        Damage::OverwriteIndex { bytes } => {
            let _ = std::fs::write(index_file(root), bytes);
        }
    }
}

/// Every block below the height, read directly and through an iterator.
fn read_all(store: &BlockStore) -> Vec<Block> {
    let height = store.height();
    let mut blocks = Vec::new();
    for n in 0..height {
        let b = store
            .block(BlockNumber::new(n))
            .unwrap_or_else(|e| panic!("block {n} below height {height} does not read: {e}"));
        assert_eq!(b.header.as_ref().map(|h| h.number), Some(n));
        blocks.push(b);
    }
    let mut iter = store.iter_from(BlockNumber::GENESIS);
    for want in &blocks {
        let got = iter
            .try_next()
            .unwrap_or_else(|e| panic!("iterator failed below the height: {e}"))
            .expect("a block below the height");
        assert_eq!(&got, want, "iterator and direct read disagree");
    }
    assert!(
        matches!(iter.try_next(), Ok(None)),
        "a block past the height"
    );
    assert!(
        store.block(BlockNumber::new(height)).is_err(),
        "a block at the height reads"
    );
    blocks
}

/// Numbers follow each other, each block's previous hash is its predecessor's
/// header hash and its data hash matches its data.
fn check_chain(blocks: &[Block]) {
    for (i, b) in blocks.iter().enumerate() {
        let h = b.header.as_ref().expect("a stored block has a header");
        assert_eq!(h.number, i as u64);
        let data = b.data.clone().unwrap_or_default();
        assert_eq!(
            h.data_hash.as_ref(),
            data_hash(&data),
            "data hash of block {i}"
        );
        if i > 0 {
            let prev = blocks[i - 1].header.as_ref().expect("header");
            assert_eq!(
                h.previous_hash.as_ref(),
                header_hash(prev),
                "hash chain broken at block {i}"
            );
        }
    }
}

/// Opening again gives the same blocks; the next block appends and survives
/// another reopen.
fn reopen_and_extend(
    root: &Path,
    opts: &StoreOptions,
    read: &[Block],
    originals: Option<&[Block]>,
) {
    let store = open(root, opts).expect("a ledger that opened opens again");
    assert_eq!(
        store.height(),
        read.len() as u64,
        "reopening changed the height"
    );
    assert_eq!(read_all(&store), read, "reopening changed the blocks");
    let next = match originals {
        Some(o) if o.len() > read.len() => o[read.len()].clone(),
        _ => match read.last().and_then(|b| b.header.clone()) {
            Some(h) => BlockBuilder::after(h).build(vec![Bytes::from_static(b"next")]),
            None => BlockBuilder::new().build(vec![Bytes::from_static(b"first")]),
        },
    };
    store
        .append(&next)
        .unwrap_or_else(|e| panic!("the recovered ledger refuses its next block: {e}"));
    drop(store);
    let store = open(root, opts).expect("reopen after append");
    assert_eq!(store.height(), read.len() as u64 + 1);
    assert_eq!(
        store
            .block(BlockNumber::new(read.len() as u64))
            .expect("the appended block"),
        next,
        "the appended block changed"
    );
}

/// A refusal names a block file and an offset inside it (or a missing file), and,
/// when only the tail was damaged, not an offset inside the intact prefix of the
/// last file (`(index, end)`).
fn check_refusal(e: &LedgerError, lens: &[u64], intact_prefix: Option<(usize, u64)>) {
    let LedgerError::Corrupt { file, offset, .. } = e else {
        panic!("recovery refused with an error other than Corrupt: {e}");
    };
    let name = file
        .strip_prefix(&format!("chains/{CHANNEL}/"))
        .unwrap_or_else(|| panic!("the refusal names {file}, not a block file"));
    let index = (0..=lens.len())
        .find(|i| block_file_name(u32::try_from(*i).expect("small")) == name)
        .unwrap_or_else(|| panic!("the refusal names {file}, not one of the block files"));
    if let Some(len) = lens.get(index) {
        assert!(
            *offset <= *len,
            "offset {offset} past the end of {file} ({len})"
        );
    }
    if let Some((last, end)) = intact_prefix {
        assert!(
            index == last && *offset >= end,
            "refused at {file} offset {offset}, inside the intact prefix (file {last}, {end} bytes): {e}"
        );
    }
}
