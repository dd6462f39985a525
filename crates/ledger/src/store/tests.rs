use super::*;
use crate::block::BlockBuilder;
use crate::block::header_hash;
use crate::index::Location;
use crate::record::{Framing, encode_record, framing};
use crate::verify::{IndexStatus, verify};
use crate::writer::PipelinedWriter;
use korder_proto::Message;
use korder_proto::common::Block;
use korder_storage::Storage;
use korder_storage::sim::{CrashMode, SimRng, SimStorage};

const CH: &str = "mychannel";

fn chain(n: usize, env_size: usize) -> Vec<Block> {
    let mut b = BlockBuilder::new();
    (0..n)
        .map(|i| {
            let envs = (0..(i % 3) + 1)
                .map(|j| Bytes::from(vec![(i * 7 + j) as u8; env_size + i]))
                .collect();
            b.build(envs)
        })
        .collect()
}

fn opts(max: u64, sync_every: u64) -> StoreOptions {
    StoreOptions {
        max_file_size_bytes: max,
        index_sync_every_blocks: sync_every,
    }
}

fn sim_ledgers(sim: &SimStorage, o: StoreOptions) -> Result<Ledgers, LedgerError> {
    Ledgers::with_storage(Arc::new(sim.clone()), o)
}

fn open_sim(sim: &SimStorage, o: StoreOptions) -> Result<BlockStore, LedgerError> {
    sim_ledgers(sim, o)?.open(CH)
}

fn file0() -> String {
    file_path(CH, 0)
}

/// Reopening a ledger whose index is up to date makes no durable commit of
/// nothing: five mutating storage operations (the index database's open marker and
/// the write transaction that checks the index for damage), seven before; a node
/// with many channels opens them all at start-up.
#[test]
fn reopening_an_indexed_ledger_writes_nothing() {
    let sim = SimStorage::new();
    let opts = || StoreOptions {
        index_sync_every_blocks: 1,
        ..StoreOptions::default()
    };
    {
        let s = open_sim(&sim, opts()).unwrap();
        for b in &chain(5, 20) {
            s.append(b).unwrap();
        }
        s.close();
    }
    // The first reopen may complete what the last appends left to the index.
    drop(open_sim(&sim, opts()).unwrap());
    let before = sim.ops();
    let s = open_sim(&sim, opts()).unwrap();
    assert_eq!(s.height(), 5);
    let ops = sim.ops() - before;
    assert!(ops <= 5, "{ops} mutating operations at reopen");
}

/// Appended blocks read back by number and through iterators, before and after reopening.
#[test]
fn append_read_reopen() {
    let sim = SimStorage::new();
    let blocks = chain(10, 50);
    {
        let s = open_sim(&sim, StoreOptions::default()).unwrap();
        assert_eq!(s.height(), 0);
        assert_eq!(s.last_block_number(), None);
        for b in &blocks {
            s.append(b).unwrap();
        }
        assert_eq!(s.height(), 10);
        assert_eq!(s.block(BlockNumber::new(4)).unwrap(), blocks[4]);
    }
    let s = open_sim(&sim, StoreOptions::default()).unwrap();
    assert_eq!(s.height(), 10);
    assert_eq!(s.first_block_number(), Some(BlockNumber::GENESIS));
    assert_eq!(s.last_block_number(), Some(BlockNumber::new(9)));
    assert_eq!(s.last_header(), blocks[9].header);
    assert_eq!(
        s.current_hash(),
        Some(header_hash(blocks[9].header.as_ref().unwrap()))
    );
    let info = s.info();
    assert_eq!(info.height, 10);
    assert_eq!(
        info.previous_block_hash,
        blocks[9].header.as_ref().unwrap().previous_hash
    );
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(&s.block(BlockNumber::new(i as u64)).unwrap(), b);
    }
    assert!(matches!(
        s.block(BlockNumber::new(10)),
        Err(LedgerError::NotFound {
            number,
            height: 10
        }) if number == BlockNumber::new(10)
    ));
    let mut it = s.iter_from(BlockNumber::new(3));
    for b in &blocks[3..] {
        assert_eq!(it.try_next().unwrap().as_ref(), Some(b));
    }
    assert_eq!(it.try_next().unwrap(), None);
    let next = BlockBuilder::after(blocks[9].header.clone().unwrap())
        .build(vec![Bytes::from_static(b"more")]);
    s.append(&next).unwrap();
    assert_eq!(it.try_next().unwrap(), Some(next));
}

/// A block with the wrong number or previous hash is refused and changes nothing.
#[test]
fn refuses_unchained_blocks() {
    let sim = SimStorage::new();
    let blocks = chain(3, 10);
    let s = open_sim(&sim, StoreOptions::default()).unwrap();
    s.append(&blocks[0]).unwrap();
    s.append(&blocks[1]).unwrap();
    let before = sim.file_bytes(&file0()).unwrap();
    let e = s.append(&blocks[1]).unwrap_err();
    assert!(
        matches!(
            e,
            LedgerError::WrongNumber { expected, got }
                if (expected, got) == (BlockNumber::new(2), BlockNumber::new(1))
        ),
        "{e}"
    );
    let mut bad = blocks[2].clone();
    bad.header.as_mut().unwrap().previous_hash = Bytes::from_static(&[0; 32]);
    let e = s.append(&bad).unwrap_err();
    assert!(
        matches!(e, LedgerError::WrongPreviousHash { number, .. } if number == BlockNumber::new(2)),
        "{e}"
    );
    assert!(e.to_string().contains("block 1"), "{e}");
    let mut no_header = blocks[2].clone();
    no_header.header = None;
    assert!(matches!(
        s.append(&no_header),
        Err(LedgerError::MissingHeader)
    ));
    assert_eq!(s.height(), 2);
    assert_eq!(sim.file_bytes(&file0()).unwrap(), before);
    s.append(&blocks[2]).unwrap();
    assert_eq!(s.height(), 3);
    // Block 0 must have an empty previous hash.
    let s2 = sim_ledgers(&sim, StoreOptions::default())
        .unwrap()
        .open("other")
        .unwrap();
    assert!(matches!(
        s2.append(&blocks[1]),
        Err(LedgerError::WrongNumber { .. })
    ));
    let mut b0 = blocks[0].clone();
    b0.header.as_mut().unwrap().previous_hash = Bytes::from_static(&[1]);
    assert!(matches!(
        s2.append(&b0),
        Err(LedgerError::WrongPreviousHash { .. })
    ));
    assert_eq!(s2.height(), 0);
}

/// A failed write or fsync truncates back, leaves the height alone, and the next append works.
#[test]
fn failed_write_changes_nothing() {
    let blocks = chain(4, 10);
    for extra in 0..2 {
        let sim = SimStorage::new();
        let s = open_sim(&sim, opts(1 << 20, 1000)).unwrap();
        s.append(&blocks[0]).unwrap();
        let before = sim.file_bytes(&file0()).unwrap();
        // The next operations are the record write, then its fsync.
        sim.fail_at(sim.ops() + extra);
        let e = s.append(&blocks[1]).unwrap_err();
        assert!(matches!(e, LedgerError::Io { .. }), "{e}");
        assert!(e.to_string().contains("blockfile_000000"), "{e}");
        assert_eq!(s.height(), 1);
        assert_eq!(sim.file_bytes(&file0()).unwrap(), before);
        s.append(&blocks[1]).unwrap();
        s.append(&blocks[2]).unwrap();
        drop(s);
        let s = open_sim(&sim, opts(1 << 20, 1000)).unwrap();
        assert_eq!(s.height(), 3);
        assert_eq!(s.block(BlockNumber::new(1)).unwrap(), blocks[1]);
    }
}

/// With a small maximum size blocks roll over into further files, never split, and read back across files.
#[test]
fn rollover_into_second_file() {
    let sim = SimStorage::new();
    let blocks = chain(12, 100);
    let max = 700;
    {
        let s = open_sim(&sim, opts(max, 3)).unwrap();
        for b in &blocks {
            s.append(b).unwrap();
        }
    }
    let files = list_block_files(&sim, CH).unwrap();
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        let content = sim.file_bytes(&file_path(CH, *f)).unwrap();
        assert!(!content.is_empty());
        // Each file holds whole records only.
        let mut off = 0;
        while off < content.len() {
            let Framing::Complete {
                prefix_len,
                body_len,
            } = framing(
                &content[off..(off + 10).min(content.len())],
                (content.len() - off) as u64,
            )
            else {
                panic!("file {f} offset {off} is not a whole record")
            };
            off += prefix_len + body_len as usize;
        }
        assert!(content.len() as u64 <= max || files.len() == 1);
    }
    let s = open_sim(&sim, opts(max, 3)).unwrap();
    assert_eq!(s.height(), 12);
    let mut it = s.iter_from(BlockNumber::GENESIS);
    for b in &blocks {
        assert_eq!(it.try_next().unwrap().as_ref(), Some(b));
    }
    // An oversized record gets a fresh file of its own.
    let big = BlockBuilder::after(blocks[11].header.clone().unwrap())
        .build(vec![Bytes::from(vec![5u8; 2000])]);
    s.append(&big).unwrap();
    let last = *list_block_files(&sim, CH).unwrap().last().unwrap();
    assert_eq!(last, files.len() as u32);
    assert_eq!(s.block(BlockNumber::new(12)).unwrap(), big);
    let report = verify(
        &sim_ledgers(&sim, opts(max, 3)).unwrap(),
        CH,
        &mut |_| {},
        None,
    )
    .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.blocks_ok, 13);
}

/// A record cut anywhere at the end of the last file is dropped at open and the file truncated.
#[test]
fn truncated_tail_is_cut_off() {
    let blocks = chain(3, 40);
    let full = {
        let sim = SimStorage::new();
        let s = open_sim(&sim, StoreOptions::default()).unwrap();
        for b in &blocks {
            s.append(b).unwrap();
        }
        sim.file_bytes(&file0()).unwrap()
    };
    let two = encode_record(&blocks[0]).len() + encode_record(&blocks[1]).len();
    for cut in two + 1..full.len() {
        let sim = SimStorage::new();
        sim_ledgers(&sim, StoreOptions::default()).unwrap();
        sim.set_file_bytes(&file0(), full[..cut].to_vec());
        let s = open_sim(&sim, StoreOptions::default()).unwrap();
        assert_eq!(s.height(), 2, "cut at {cut}");
        assert_eq!(sim.file_bytes(&file0()).unwrap().len(), two);
        s.append(&blocks[2]).unwrap();
        assert_eq!(s.block(BlockNumber::new(2)).unwrap(), blocks[2]);
    }
}

/// A zero-filled tail is a torn write; non-zero garbage is corruption naming file, offset and block.
#[test]
fn garbage_tail_is_corruption() {
    let blocks = chain(2, 40);
    let sim = SimStorage::new();
    {
        let s = open_sim(&sim, StoreOptions::default()).unwrap();
        for b in &blocks {
            s.append(b).unwrap();
        }
    }
    let good = sim.file_bytes(&file0()).unwrap();
    let mut zeros = good.clone();
    zeros.extend_from_slice(&[0u8; 300]);
    sim.set_file_bytes(&file0(), zeros);
    let s = open_sim(&sim, StoreOptions::default()).unwrap();
    assert_eq!(s.height(), 2);
    assert_eq!(sim.file_bytes(&file0()).unwrap(), good);
    drop(s);

    // A complete record whose body is garbage.
    let mut garbage = good.clone();
    garbage.extend_from_slice(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff]);
    sim.set_file_bytes(&file0(), garbage);
    let e = open_sim(&sim, StoreOptions::default()).unwrap_err();
    match &e {
        LedgerError::Corrupt {
            file,
            offset,
            block,
            ..
        } => {
            assert_eq!(file, &file0());
            assert_eq!(*offset, good.len() as u64);
            assert_eq!(*block, Some(BlockNumber::new(2)));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(e.to_string().contains("blockfile_000000"), "{e}");
    // Nothing was truncated.
    assert_eq!(sim.file_bytes(&file0()).unwrap().len(), good.len() + 6);
}

/// A deleted index is rebuilt from the block files; a damaged middle block is then reported precisely.
#[test]
fn deleted_index_is_rebuilt() {
    let blocks = chain(6, 30);
    let sim = SimStorage::new();
    {
        let s = open_sim(&sim, opts(400, 2)).unwrap();
        for b in &blocks {
            s.append(b).unwrap();
        }
    }
    sim.remove(&index_path(CH)).unwrap();
    let l = sim_ledgers(&sim, opts(400, 2)).unwrap();
    assert_eq!(
        verify(&l, CH, &mut |_| {}, None).unwrap().index,
        IndexStatus::Missing
    );
    let s = l.open(CH).unwrap();
    assert_eq!(s.height(), 6);
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(&s.block(BlockNumber::new(i as u64)).unwrap(), b);
    }
    drop(s);
    let r = verify(&l, CH, &mut |_| {}, None).unwrap();
    assert_eq!(
        r.index,
        IndexStatus::Consistent {
            last_indexed: Some(BlockNumber::new(5))
        }
    );

    // Damage block 1's previous hash (same length), drop the index: open names block 1.
    let mut f = sim.file_bytes(&file0()).unwrap();
    let off1 = encode_record(&blocks[0]).len();
    let body1 = off1 + 1;
    // body: varint(1) raw(data_hash: 0x20 + 32 bytes) raw(prev: 0x20 + 32 bytes)
    f[body1 + 1 + 33 + 1] ^= 0xff;
    sim.set_file_bytes(&file0(), f);
    sim.remove(&index_path(CH)).unwrap();
    let e = l.open(CH).unwrap_err();
    assert!(
        matches!(&e, LedgerError::Corrupt { block: Some(b), offset, .. } if *b == BlockNumber::new(1) && *offset == off1 as u64),
        "{e}"
    );
    let r = verify(&l, CH, &mut |_| {}, None).unwrap();
    let bad = r.first_bad.unwrap();
    assert_eq!(
        (bad.number, bad.offset, bad.file.as_str()),
        (BlockNumber::new(1), off1 as u64, file0().as_str())
    );
}

/// An index that points at the wrong place is detected and rebuilt at open.
#[test]
fn wrong_index_is_rebuilt() {
    let blocks = chain(4, 30);
    let sim = SimStorage::new();
    let s = open_sim(&sim, opts(1 << 20, 1)).unwrap();
    for b in &blocks {
        s.append(b).unwrap();
    }
    s.inner
        .index
        .put(
            &[(
                3,
                Location {
                    suffix: 0,
                    offset: 1,
                    len: 10,
                },
            )],
            true,
        )
        .unwrap();
    drop(s);
    let l = sim_ledgers(&sim, opts(1 << 20, 1)).unwrap();
    assert!(matches!(
        verify(&l, CH, &mut |_| {}, None).unwrap().index,
        IndexStatus::Mismatch { number, .. } if number == BlockNumber::new(3)
    ));
    let s = l.open(CH).unwrap();
    assert_eq!(s.height(), 4);
    assert_eq!(s.block(BlockNumber::new(3)).unwrap(), blocks[3]);
    drop(s);
    assert!(verify(&l, CH, &mut |_| {}, None).unwrap().is_ok());
}

/// Crash at every write and fsync point, for several crash outcomes: nothing acknowledged is lost,
/// height never goes down, index and hash chain agree with the files.
///
/// The outcomes are every fixed crash mode but garbage in the unsynced tail (the block
/// file format has no checksum: a non-zero tail that does not decode is corruption and
/// is refused, see docs/ledger-format.md) and six drawn from seeds.
#[test]
fn crash_at_every_fault_point() {
    let blocks = chain(7, 60);
    let o = || opts(450, 2);
    let total = {
        let sim = SimStorage::new();
        let s = open_sim(&sim, o()).unwrap();
        for b in &blocks {
            s.append(b).unwrap();
        }
        drop(s);
        sim.ops()
    };
    assert!(total > 20, "only {total} fault points");
    // The fault points are independent: spread them over the cores, each worker
    // taking the next unclaimed one.
    let next = std::sync::atomic::AtomicU64::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tallies: Vec<[u64; 3]> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut tally = [0u64; 3];
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if k >= total {
                            return tally;
                        }
                        let t = crash_at_fault_point(k, total, &blocks, &o);
                        for (sum, v) in tally.iter_mut().zip(t) {
                            *sum += v;
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let [in_flight_kept, in_flight_lost, tails_cut] =
        tallies.iter().fold([0u64; 3], |mut acc, t| {
            for (a, v) in acc.iter_mut().zip(t) {
                *a += v;
            }
            acc
        });
    // The simulation reached the interesting outcomes.
    assert!(
        in_flight_kept > 0 && in_flight_lost > 0 && tails_cut > 0,
        "{in_flight_kept} {in_flight_lost} {tails_cut}"
    );
}

/// One fault point of [`crash_at_every_fault_point`] under every crash outcome: how
/// many outcomes kept the block in flight, lost it, and cut a torn tail.
fn crash_at_fault_point(
    k: u64,
    total: u64,
    blocks: &[Block],
    o: &impl Fn() -> StoreOptions,
) -> [u64; 3] {
    let (mut in_flight_kept, mut in_flight_lost, mut tails_cut) = (0, 0, 0);
    let fixed = CrashMode::FIXED
        .into_iter()
        .filter(|m| *m != CrashMode::GarbageTail);
    let modes = fixed.chain((0..6).map(|seed| CrashMode::Seeded(k * 1000 + seed)));
    for (i, mode) in modes.enumerate() {
        let sim = SimStorage::new();
        sim.crash_at(k);
        let mut acked = 0u64;
        if let Ok(s) = open_sim(&sim, o()) {
            for b in blocks {
                if s.append(b).is_err() {
                    break;
                }
                acked += 1;
            }
        }
        assert!(sim.has_crashed() || k >= total, "k={k}");
        let mut rng = SimRng::new(!(k * 1000 + i as u64));
        let disk = sim.crash_image(mode);
        let files_before: Vec<_> = list_block_files(&disk, CH)
            .unwrap_or_default()
            .iter()
            .map(|f| disk.file_bytes(&file_path(CH, *f)).map_or(0, |c| c.len()))
            .collect();
        let s =
            open_sim(&disk, o()).unwrap_or_else(|e| panic!("k={k} {mode:?}: reopen failed: {e}"));
        let h = s.height();
        let files_after: Vec<_> = files_before
            .iter()
            .enumerate()
            .map(|(f, _)| {
                disk.file_bytes(&file_path(CH, f as u32))
                    .map_or(0, |c| c.len())
            })
            .collect();
        if files_after != files_before {
            tails_cut += 1;
        }
        if h > acked {
            in_flight_kept += 1;
        } else if (acked as usize) < blocks.len() {
            in_flight_lost += 1;
        }
        assert!(
            h >= acked,
            "k={k} {mode:?}: height {h} < acknowledged {acked}"
        );
        assert!(
            h <= acked + 1,
            "k={k} {mode:?}: height {h} > acknowledged {acked} + in flight"
        );
        for (i, b) in blocks.iter().take(h as usize).enumerate() {
            assert_eq!(
                &s.block(BlockNumber::new(i as u64)).unwrap(),
                b,
                "k={k} {mode:?} block {i}"
            );
        }
        drop(s);
        let r = verify(&sim_ledgers(&disk, o()).unwrap(), CH, &mut |_| {}, None).unwrap();
        assert!(r.is_ok(), "k={k} {mode:?}: {r:?}");
        assert_eq!(r.blocks_ok, h);
        assert_eq!(r.torn_tail, None);
        assert_eq!(
            r.index,
            IndexStatus::Consistent {
                last_indexed: BlockNumber::last_of(h)
            },
            "k={k} {mode:?}"
        );
        // Crash again right after recovery: the height stays, and appending continues.
        let again = disk.crash_image(CrashMode::Seeded(rng.next_u64()));
        let s = open_sim(&again, o()).unwrap();
        assert_eq!(
            s.height(),
            h,
            "k={k} {mode:?}: height went down after a second crash"
        );
        for b in &blocks[h as usize..] {
            s.append(b).unwrap();
        }
        assert_eq!(s.height(), blocks.len() as u64);
    }
    [in_flight_kept, in_flight_lost, tails_cut]
}

/// A blocking iterator waits for the next block and a closer wakes it with None.
#[test]
fn blocking_iterator_waits_and_closes() {
    let sim = SimStorage::new();
    let blocks = chain(3, 10);
    let s = open_sim(&sim, StoreOptions::default()).unwrap();
    s.append(&blocks[0]).unwrap();
    let mut it = s.iter_from(BlockNumber::new(1));
    assert_eq!(it.try_next().unwrap(), None);
    let reader = std::thread::spawn(move || {
        let a = it.next_blocking().unwrap();
        let b = it.next_blocking().unwrap();
        (a, b)
    });
    s.append(&blocks[1]).unwrap();
    s.append(&blocks[2]).unwrap();
    let (a, b) = reader.join().unwrap();
    assert_eq!(a.as_ref(), Some(&blocks[1]));
    assert_eq!(b.as_ref(), Some(&blocks[2]));

    let mut it = s.iter_from(BlockNumber::new(3));
    let closer = it.closer();
    let reader = std::thread::spawn(move || it.next_blocking());
    closer.close();
    assert_eq!(reader.join().unwrap().unwrap(), None);

    let mut it = s.iter_from(BlockNumber::new(3));
    let reader = std::thread::spawn(move || it.next_blocking());
    s.close();
    assert_eq!(reader.join().unwrap().unwrap(), None);
    assert!(matches!(s.append(&blocks[0]), Err(LedgerError::Closed)));
}

/// The async wait and iterator see appends made from another thread and end on close.
#[test]
fn async_iterator_waits_for_blocks() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let sim = SimStorage::new();
    let blocks = chain(3, 10);
    let s = open_sim(&sim, StoreOptions::default()).unwrap();
    s.append(&blocks[0]).unwrap();
    let writer_store = s.clone();
    let wblocks = blocks.clone();
    let writer = std::thread::spawn(move || {
        writer_store.append(&wblocks[1]).unwrap();
        writer_store.append(&wblocks[2]).unwrap();
    });
    rt.block_on(async {
        assert!(s.wait_for_height(3).await.unwrap() >= 3);
        let mut it = s.iter_from(BlockNumber::new(1));
        assert_eq!(it.next_async().await.unwrap().as_ref(), Some(&blocks[1]));
        assert_eq!(it.next_async().await.unwrap().as_ref(), Some(&blocks[2]));
        let closer = it.closer();
        let waiting = async move { it.next_async().await };
        let (got, ()) = tokio::join!(waiting, async { closer.close() });
        assert_eq!(got.unwrap(), None);
        s.close();
        assert!(matches!(
            s.wait_for_height(10).await,
            Err(LedgerError::Closed)
        ));
    });
    writer.join().unwrap();
}

/// The pipelined writer appends in order, reports durability, and surfaces a failure on later calls.
#[test]
fn pipelined_writer() {
    let sim = SimStorage::new();
    let s = open_sim(&sim, StoreOptions::default()).unwrap();
    let w = PipelinedWriter::new(s.clone()).unwrap();
    let mut builder = BlockBuilder::new();
    let mut built = Vec::new();
    for i in 0..20u8 {
        let b = builder.build(vec![Bytes::from(vec![i; 100])]);
        built.push(b.clone());
        w.submit(b).unwrap();
    }
    w.wait_durable(BlockNumber::new(19)).unwrap();
    assert_eq!(s.height(), 20);
    assert_eq!(s.block(BlockNumber::new(19)).unwrap(), built[19]);
    // A block that does not chain stops the writer.
    w.submit(built[3].clone()).unwrap();
    let e = w.wait_durable(BlockNumber::new(20)).unwrap_err();
    assert!(
        matches!(&e, LedgerError::WriterFailed(inner) if matches!(**inner, LedgerError::WrongNumber { expected, got } if (expected, got) == (BlockNumber::new(20), BlockNumber::new(3)))),
        "{e}"
    );
    let next = builder.build(vec![]);
    assert!(matches!(w.submit(next), Err(LedgerError::WriterFailed(_))));
    assert!(w.close().is_err());
    assert_eq!(s.height(), 20);
}

/// Channels are the sub-directories of chains/; bad channel names are refused.
#[test]
fn channel_list() {
    let sim = SimStorage::new();
    let l = sim_ledgers(&sim, StoreOptions::default()).unwrap();
    assert!(l.channels().unwrap().is_empty());
    l.open("b").unwrap();
    l.open("a").unwrap();
    assert_eq!(l.channels().unwrap(), vec!["a".to_owned(), "b".to_owned()]);
    assert!(matches!(
        l.open("../x"),
        Err(LedgerError::InvalidChannel(_))
    ));
    assert!(matches!(l.open(""), Err(LedgerError::InvalidChannel(_))));
}

/// verify reports a tampered data entry at its block, file and offset, and runs the hook on each block.
#[test]
fn verify_finds_bad_data_and_runs_hook() {
    let blocks = chain(5, 20);
    let sim = SimStorage::new();
    {
        let s = open_sim(&sim, StoreOptions::default()).unwrap();
        for b in &blocks {
            s.append(b).unwrap();
        }
    }
    let l = sim_ledgers(&sim, StoreOptions::default()).unwrap();
    let mut seen = Vec::new();
    let r = verify(&l, CH, &mut |n| seen.push(n), None).unwrap();
    assert!(r.is_ok());
    assert_eq!(seen, (0..5).map(BlockNumber::new).collect::<Vec<_>>());
    let mut hook = |b: &Block| {
        if b.header.as_ref().unwrap().number == 3 {
            Err("signature rejected".to_owned())
        } else {
            Ok(())
        }
    };
    let r = verify(&l, CH, &mut |_| {}, Some(&mut hook)).unwrap();
    let bad = r.first_bad.unwrap();
    assert_eq!(
        (bad.number, bad.reason.as_str()),
        (BlockNumber::new(3), "signature rejected")
    );

    let mut f = sim.file_bytes(&file0()).unwrap();
    let off2: usize = blocks[..2].iter().map(|b| encode_record(b).len()).sum();
    let rec2 = encode_record(&blocks[2]);
    // The last data byte sits before the metadata count and five empty metadata entries.
    let last = off2 + rec2.len() - 1 - 6;
    f[last] ^= 1;
    sim.set_file_bytes(&file0(), f);
    let r = verify(&l, CH, &mut |_| {}, None).unwrap();
    let bad = r.first_bad.unwrap();
    assert_eq!((bad.number, bad.offset), (BlockNumber::new(2), off2 as u64));
    assert!(bad.reason.contains("data_hash"), "{}", bad.reason);
    assert_eq!(r.blocks_ok, 2);
}

/// A real ledger directory: the testdata genesis block goes in, the bytes on disk are the Fabric record, and it reads back.
#[test]
fn real_directory_with_testdata_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fabric-v1.4.12/blocks/common-server-genesis.block");
    let genesis = Block::decode(&std::fs::read(path).unwrap()[..]).unwrap();
    {
        let l = Ledgers::open_dir(dir.path(), StoreOptions::default()).unwrap();
        let s = l.open("testchainid").unwrap();
        s.append(&genesis).unwrap();
    }
    let on_disk = std::fs::read(dir.path().join("chains/testchainid/blockfile_000000")).unwrap();
    assert_eq!(on_disk, encode_record(&genesis));
    assert!(dir.path().join("index/testchainid.redb").is_file());
    let l = Ledgers::open_dir(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(l.channels().unwrap(), vec!["testchainid".to_owned()]);
    let s = l.open("testchainid").unwrap();
    assert_eq!(s.height(), 1);
    assert_eq!(s.block(BlockNumber::GENESIS).unwrap(), genesis);
    assert_eq!(
        s.block(BlockNumber::GENESIS).unwrap().encode_to_vec(),
        genesis.encode_to_vec()
    );
    drop(s);
    let r = verify(&l, "testchainid", &mut |_| {}, None).unwrap();
    assert!(r.is_ok(), "{r:?}");
}

/// A bit flipped anywhere in the block files, the last block included, never loses a
/// block or changes a header or data silently: open refuses with the file and the
/// offset of the damaged record, or (a flip in metadata, which the signatures cover)
/// opens with every block's header and data intact.
#[test]
fn a_flipped_bit_is_refused_or_harmless() {
    let blocks = chain(4, 30);
    let good = {
        let sim = SimStorage::new();
        let s = open_sim(&sim, StoreOptions::default()).unwrap();
        for b in &blocks {
            s.append(b).unwrap();
        }
        sim.file_bytes(&file0()).unwrap()
    };
    let mut starts = vec![0usize];
    for b in &blocks {
        starts.push(starts.last().unwrap() + encode_record(b).len());
    }
    let mut refused = 0;
    for pos in 0..good.len() {
        let sim = SimStorage::new();
        sim_ledgers(&sim, StoreOptions::default()).unwrap();
        let mut bad = good.clone();
        bad[pos] ^= 1 << (pos % 8);
        sim.set_file_bytes(&file0(), bad);
        let record = starts.iter().rposition(|&s| s <= pos).unwrap();
        match open_sim(&sim, StoreOptions::default()) {
            Err(LedgerError::Corrupt {
                file,
                offset,
                block,
                ..
            }) => {
                assert_eq!(file, file0());
                assert_eq!(offset, starts[record] as u64, "flip at {pos}");
                assert_eq!(
                    block,
                    Some(BlockNumber::new(record as u64)),
                    "flip at {pos}"
                );
                refused += 1;
            }
            Err(other) => panic!("flip at {pos}: unexpected {other}"),
            Ok(s) => {
                assert_eq!(s.height(), 4, "flip at {pos}: a block was lost");
                for (i, b) in blocks.iter().enumerate() {
                    let got = s.block(BlockNumber::new(i as u64)).unwrap();
                    assert_eq!(got.header, b.header, "flip at {pos}");
                    assert_eq!(got.data, b.data, "flip at {pos}");
                }
            }
        }
    }
    assert!(refused > good.len() / 2, "{refused} of {}", good.len());
}

/// A removed channel's ledger is gone (files, index, directory) while another
/// channel's stays, and the name can be used again for a new ledger.
#[test]
fn remove_deletes_one_channel() {
    let sim = SimStorage::new();
    let ledgers = sim_ledgers(&sim, StoreOptions::default()).unwrap();
    let blocks = chain(5, 40);
    for name in [CH, "other"] {
        let s = ledgers.open(name).unwrap();
        for b in &blocks {
            s.append(b).unwrap();
        }
        s.close();
    }
    ledgers.remove(CH).unwrap();
    assert_eq!(ledgers.channels().unwrap(), vec!["other".to_string()]);
    assert!(
        sim.file_names().iter().all(|f| !f.contains(CH)),
        "{:?}",
        sim.file_names()
    );
    assert_eq!(ledgers.open("other").unwrap().height(), 5);
    let again = ledgers.open(CH).unwrap();
    assert_eq!(again.height(), 0);
    again.append(&blocks[0]).unwrap();
    assert_eq!(again.height(), 1);
}

/// A join block recorded for a channel is listed with its exact bytes until it is
/// removed, also by ledgers opened again over the same storage; removing one that
/// was never recorded does nothing.
#[test]
fn join_blocks_are_kept_until_removed() {
    let sim = SimStorage::new();
    let ledgers = sim_ledgers(&sim, StoreOptions::default()).unwrap();
    assert!(ledgers.join_blocks().unwrap().is_empty());
    ledgers.save_join_block(CH, b"join block bytes").unwrap();
    ledgers.save_join_block("other", b"another").unwrap();
    let again = sim_ledgers(&sim, StoreOptions::default()).unwrap();
    assert_eq!(
        again.join_blocks().unwrap(),
        vec![
            (CH.to_string(), b"join block bytes".to_vec()),
            ("other".to_string(), b"another".to_vec())
        ]
    );
    again.remove_join_block(CH).unwrap();
    again.remove_join_block("never-joined").unwrap();
    assert_eq!(
        again.join_blocks().unwrap(),
        vec![("other".to_string(), b"another".to_vec())]
    );
    assert!(
        again.channels().unwrap().is_empty(),
        "no channel ledger is made"
    );
}

/// A crash at any point of a removal leaves the channel either whole or gone once
/// the ledgers are opened again; the other channel is never touched.
#[test]
fn remove_survives_a_crash_at_every_step() {
    let blocks = chain(4, 30);
    let mut n = 0;
    loop {
        let sim = SimStorage::new();
        let ledgers = sim_ledgers(&sim, StoreOptions::default()).unwrap();
        for name in [CH, "other"] {
            let s = ledgers.open(name).unwrap();
            for b in &blocks {
                s.append(b).unwrap();
            }
            s.close();
        }
        sim.crash_at(sim.ops() + n);
        let finished = ledgers.remove(CH).is_ok() && !sim.has_crashed();
        let image = sim.crash_image(CrashMode::DurableOnly);
        let reopened = sim_ledgers(&image, StoreOptions::default()).unwrap();
        let names = reopened.channels().unwrap();
        if names.contains(&CH.to_string()) {
            assert_eq!(reopened.open(CH).unwrap().height(), 4, "crash at step {n}");
        }
        assert_eq!(
            reopened.open("other").unwrap().height(),
            4,
            "crash at step {n}"
        );
        if finished {
            assert!(!names.contains(&CH.to_string()));
            break;
        }
        n += 1;
        assert!(n < 1000, "the removal never finishes");
    }
}
