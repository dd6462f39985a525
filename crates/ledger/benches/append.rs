//! Append and read throughput of the file block store on a real directory, with an
//! fsync per block. Run: `cargo bench -p korder-ledger` (set `KORDER_BENCH_BLOCKS`
//! to change the block count, `KORDER_BENCH_DIR` to pick the file system).

use korder_ledger::BlockNumber;
use std::time::Instant;

use bytes::Bytes;
use korder_ledger::{BlockBuilder, Ledgers, PipelinedWriter, StoreOptions};
use korder_proto::common::Block;
use korder_storage::sim::SimRng;

const ENVELOPES_PER_BLOCK: usize = 500;
const ENVELOPE_BYTES: usize = 3 * 1024;

fn envelopes(rng: &mut SimRng) -> Vec<Bytes> {
    (0..ENVELOPES_PER_BLOCK)
        .map(|_| {
            let mut v = Vec::with_capacity(ENVELOPE_BYTES);
            while v.len() < ENVELOPE_BYTES {
                v.extend_from_slice(&rng.next_u64().to_le_bytes());
            }
            v.truncate(ENVELOPE_BYTES);
            Bytes::from(v)
        })
        .collect()
}

fn block_bytes(b: &Block) -> usize {
    b.data
        .as_ref()
        .map_or(0, |d| d.data.iter().map(|e| e.len()).sum())
}

fn report(what: &str, blocks: usize, bytes: usize, secs: f64) {
    println!(
        "{what:<34} {blocks:>5} blocks in {secs:>7.3} s: {:>8.1} blocks/s {:>8.1} MB/s",
        blocks as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::var("KORDER_BENCH_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let base = std::env::var("KORDER_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(base)?;
    println!(
        "ledger bench: {n} blocks of {ENVELOPES_PER_BLOCK} x {ENVELOPE_BYTES} B envelopes, fsync per block, dir {}",
        dir.path().display()
    );

    let mut rng = SimRng::new(42);
    let payloads: Vec<Vec<Bytes>> = (0..n).map(|_| envelopes(&mut rng)).collect();
    let total: usize = payloads.iter().flatten().map(|e| e.len()).sum();

    // Building: data hash and header hash (SHA-256 over 1.5 MB per block).
    let mut builder = BlockBuilder::new();
    let t = Instant::now();
    let blocks: Vec<Block> = payloads.into_iter().map(|p| builder.build(p)).collect();
    report("build (hash) blocks", n, total, t.elapsed().as_secs_f64());

    let ledgers = Ledgers::open_dir(dir.path(), StoreOptions::default())?;
    let store = ledgers.open("bench")?;
    let t = Instant::now();
    for b in &blocks {
        store.append(b)?;
    }
    report(
        "append (write + fsync + index)",
        n,
        total,
        t.elapsed().as_secs_f64(),
    );

    // Pipelined: build block N+1 while block N is written.
    let store2 = ledgers.open("bench-pipelined")?;
    let writer = PipelinedWriter::new(store2.clone())?;
    let mut builder = BlockBuilder::new();
    let t = Instant::now();
    for b in &blocks {
        let data = b.data.as_ref().map(|d| d.data.clone()).unwrap_or_default();
        writer.submit(builder.build(data))?;
    }
    writer.wait_durable(BlockNumber::new(n as u64 - 1))?;
    report(
        "build + pipelined append",
        n,
        total,
        t.elapsed().as_secs_f64(),
    );
    writer.close()?;
    drop(store2);
    drop(store);

    // Reading back after a reopen (page cache warm: measures decoding and copying).
    let store = ledgers.open("bench")?;
    let t = Instant::now();
    let mut it = store.iter_from(BlockNumber::GENESIS);
    let mut read = 0;
    let mut count = 0;
    while let Some(b) = it.try_next()? {
        read += block_bytes(&b);
        count += 1;
    }
    report(
        "sequential read (iterator)",
        count,
        read,
        t.elapsed().as_secs_f64(),
    );
    assert_eq!(count, n, "every block reads back");

    let t = Instant::now();
    let mut read = 0;
    let mut rng = SimRng::new(7);
    for _ in 0..n {
        read += block_bytes(&store.block(BlockNumber::new(rng.below(n as u64)))?);
    }
    report("random read by number", n, read, t.elapsed().as_secs_f64());

    let t = Instant::now();
    drop(store);
    let store = ledgers.open("bench")?;
    println!(
        "reopen (recovery scan of the last file): {:.3} s, height {}",
        t.elapsed().as_secs_f64(),
        store.height()
    );
    Ok(())
}
