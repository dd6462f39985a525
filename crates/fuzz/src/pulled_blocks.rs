//! Blocks as another orderer serves them, fed to the block puller's verifier
//! (`korder_server::catchup::BlockVerifier`), from a real trusted state: the
//! chains a Fabric v2.5.16 orderer wrote (the fixtures' `system-channel`, 2 blocks,
//! and `mychannel`, 20 blocks with its signatures and config blocks).
//!
//! Two modes:
//! - **structured**: a channel, a starting point (a join by the last config block
//!   or by block 0, or a continuation after any real block under the config in
//!   force at it), then offers: the next real block or one from another position,
//!   unchanged or mutated (a byte of its encoding flipped, the number, previous or
//!   data hash changed, a transaction changed, dropped, duplicated or added, the
//!   metadata or the SIGNATURES slot of another block, signatures dropped, a
//!   metadata slot overwritten, the header dropped) or raw bytes as a block;
//! - **raw**: bytes as a block, offered as the next block after every real block
//!   of both channels and to a join of each.
//!
//! Invariants: nothing panics; a block the verifier accepts is the next real
//! block: its number, header hash and data are the real one's (so no change of
//! hashed or signed content is ever accepted, and nothing past the real chain's
//! end); the next real block, unchanged, is always accepted; a refused block
//! leaves the verifier where it was: same next number, trusted end and config
//! sequence, and the real next block is still accepted after the refusal.

use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use korder_ledger::block::header_hash;
use korder_ledger::record::{Varint, decode_body, get_varint};
use korder_proto::Message;
use korder_proto::common::{Block, BlockMetadataIndex, Metadata};
use korder_server::catchup::{BlockVerifier, TrustedEnd, config_envelope};
use korder_server::registrar::bundle_of_config_block;

const SYSTEM_CHANNEL_FILE: &[u8] = include_bytes!(
    "../../../tests/fixtures/fabric-v2.5.16/orderer-ledger/chains/system-channel/blockfile_000000"
);
const MYCHANNEL_FILE: &[u8] = include_bytes!(
    "../../../tests/fixtures/fabric-v2.5.16/orderer-ledger/chains/mychannel/blockfile_000000"
);
const MAX_STEPS: usize = 12;

/// One channel of the fixture ledger, with every verifier a run may start from.
struct Chain {
    blocks: Vec<Block>,
    /// A join by the channel's last config block.
    join_last_config: BlockVerifier,
    /// A join by block 0.
    join_genesis: BlockVerifier,
    /// After block `k`, under the config in force at it (index `k`).
    after: Vec<BlockVerifier>,
}

/// The blocks of a block file (records of `varint length ‖ block`).
fn blocks_of_file(file: &[u8]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut rest = file;
    while !rest.is_empty() {
        let Varint::Value(len, n) = get_varint(rest) else {
            panic!("the fixture's record prefix does not decode");
        };
        let end = n + usize::try_from(len).expect("record length");
        blocks.push(decode_body(Bytes::copy_from_slice(&rest[n..end])).expect("fixture record"));
        rest = &rest[end..];
    }
    blocks
}

fn chain_of(file: &[u8]) -> Chain {
    let blocks = blocks_of_file(file);
    let last_config = blocks
        .iter()
        .rev()
        .find(|b| config_envelope(b).is_some())
        .expect("the chain has a config block");
    let join_last_config = BlockVerifier::join(last_config).expect("join by the last config");
    let join_genesis = BlockVerifier::join(&blocks[0]).expect("join by block 0");
    let mut bundle = None;
    let mut after = Vec::new();
    for b in &blocks {
        if config_envelope(b).is_some() {
            bundle = Some(Arc::new(
                bundle_of_config_block(b).expect("a fixture config"),
            ));
        }
        let in_force = bundle.clone().expect("block 0 is a config block");
        after.push(BlockVerifier::after(b, in_force).expect("a verifier after a real block"));
    }
    Chain {
        blocks,
        join_last_config,
        join_genesis,
        after,
    }
}

fn chains() -> &'static [Chain; 2] {
    static CHAINS: OnceLock<[Chain; 2]> = OnceLock::new();
    CHAINS.get_or_init(|| [chain_of(SYSTEM_CHANNEL_FILE), chain_of(MYCHANNEL_FILE)])
}

#[derive(Arbitrary, Debug)]
enum Start {
    JoinLastConfig,
    JoinGenesis,
    After(u8),
}

#[derive(Arbitrary, Debug)]
enum Offer {
    Next,
    /// The real block at this index (modulo the chain's length).
    At(u8),
}

#[derive(Arbitrary, Debug)]
enum Mutation {
    None,
    /// XOR `mask` into one byte of the block's encoding, then decode it.
    FlipEncoded {
        at: u32,
        mask: u8,
    },
    Number(u64),
    NumberDelta(i8),
    PreviousHash {
        at: u8,
        mask: u8,
    },
    DataHash {
        at: u8,
        mask: u8,
    },
    DropHeader,
    /// XOR `mask` into one byte of a data entry.
    Entry {
        index: u8,
        at: u32,
        mask: u8,
    },
    DropEntry(u8),
    DuplicateEntry(u8),
    AddEntry(Vec<u8>),
    /// The whole metadata of the real block at this index.
    MetadataFrom(u8),
    /// The SIGNATURES slot of the real block at this index.
    SignaturesFrom(u8),
    DropSignatures,
    /// One signature of the SIGNATURES slot with a byte changed.
    Signature {
        index: u8,
        at: u8,
        mask: u8,
    },
    Slot {
        index: u8,
        bytes: Vec<u8>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Step {
    offer: Offer,
    mutation: Mutation,
}

#[derive(Arbitrary, Debug)]
struct Input {
    mychannel: bool,
    start: Start,
    steps: Vec<Step>,
}

/// What a refusal must leave unchanged.
#[derive(Debug, PartialEq)]
struct Position {
    next: u64,
    end: Option<TrustedEnd>,
    sequence: Option<u64>,
    channel: String,
}

fn position(v: &BlockVerifier) -> Position {
    Position {
        next: v.next_number().get(),
        end: v.pending_end().cloned(),
        sequence: v.bundle().map(|b| b.sequence.get()),
        channel: v.channel().to_string(),
    }
}

/// Arbitrary input: a structured run (first byte even) or bytes as a block (odd).
pub fn pulled_blocks(data: &[u8]) {
    run(data);
}

/// [`pulled_blocks`], returning how many blocks the verifier accepted.
pub fn run(data: &[u8]) -> usize {
    let mut accepted = 0;
    let Some((&mode, rest)) = data.split_first() else {
        return accepted;
    };
    if mode % 2 == 1 {
        let Ok(block) = Block::decode(rest) else {
            return accepted;
        };
        for chain in chains() {
            let starts = [&chain.join_last_config, &chain.join_genesis]
                .into_iter()
                .chain(&chain.after);
            for start in starts {
                accepted += usize::from(offer(chain, &mut start.clone(), &block, false, false));
            }
        }
        return accepted;
    }
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(rest)) else {
        return accepted;
    };
    let chain = &chains()[usize::from(input.mychannel)];
    let mut verifier = match input.start {
        Start::JoinLastConfig => chain.join_last_config.clone(),
        Start::JoinGenesis => chain.join_genesis.clone(),
        Start::After(k) => chain.after[usize::from(k) % chain.after.len()].clone(),
    };
    for step in input.steps.iter().take(MAX_STEPS) {
        let next = usize::try_from(verifier.next_number().get()).expect("a small number");
        let base = match step.offer {
            Offer::Next => next,
            Offer::At(i) => usize::from(i) % chain.blocks.len(),
        };
        let Some(real) = chain.blocks.get(base) else {
            continue;
        };
        let Some(block) = mutate(chain, real, &step.mutation) else {
            continue;
        };
        let genuine = matches!(step.mutation, Mutation::None) && base == next;
        accepted += usize::from(offer(chain, &mut verifier, &block, genuine, true));
    }
    accepted
}

/// Offers `block` to `verifier` and checks the outcome against the real chain;
/// with `probe`, also that the real next block passes after a refusal. Whether the
/// block was accepted.
fn offer(
    chain: &Chain,
    verifier: &mut BlockVerifier,
    block: &Block,
    genuine: bool,
    probe: bool,
) -> bool {
    let before = position(verifier);
    let next = usize::try_from(before.next).expect("a small number");
    let real_next = chain.blocks.get(next);
    match verifier.verify(block) {
        Ok(verified) => {
            let Some(real) = real_next else {
                panic!("a block past the real chain's end was accepted");
            };
            assert_eq!(verified.number.get(), before.next);
            let (Some(got), Some(want)) = (&block.header, &real.header) else {
                panic!("an accepted block without a header");
            };
            assert_eq!(
                header_hash(got),
                header_hash(want),
                "block {next}: an accepted block differs from the real one in its header"
            );
            assert_eq!(
                block.data, real.data,
                "block {next}: an accepted block differs from the real one in its data"
            );
            assert_eq!(
                verified.config.is_some(),
                config_envelope(real).is_some(),
                "block {next}: accepted, but not as the config block it is (or is not)"
            );
            assert_eq!(position(verifier).next, before.next + 1);
            true
        }
        Err(e) => {
            assert!(!genuine, "block {next}: the real block is refused: {e}");
            assert_eq!(
                position(verifier),
                before,
                "a refused block moved the verifier: {e}"
            );
            if let Some(real) = real_next.filter(|_| probe) {
                let mut probe = verifier.clone();
                if let Err(e) = probe.verify(real) {
                    panic!("block {next}: after a refusal, the real block is refused: {e}");
                }
            }
            false
        }
    }
}

fn flip(bytes: &Bytes, at: usize, mask: u8) -> Bytes {
    if bytes.is_empty() {
        return Bytes::from_static(&[1]);
    }
    let mut v = bytes.to_vec();
    let i = at % v.len();
    v[i] ^= mask.max(1);
    v.into()
}

fn real_at(chain: &Chain, i: u8) -> &Block {
    &chain.blocks[usize::from(i) % chain.blocks.len()]
}

/// `real` changed by `mutation`; `None` when the change leaves no block.
fn mutate(chain: &Chain, real: &Block, mutation: &Mutation) -> Option<Block> {
    let mut b = real.clone();
    match mutation {
        Mutation::None => {}
        Mutation::FlipEncoded { at, mask } => {
            let encoded = Bytes::from(real.encode_to_vec());
            let flipped = flip(&encoded, usize::try_from(*at).unwrap_or(0), *mask);
            return Block::decode(flipped).ok();
        }
        Mutation::Number(n) => b.header.as_mut()?.number = *n,
        Mutation::NumberDelta(d) => {
            let h = b.header.as_mut()?;
            h.number = h.number.wrapping_add_signed(i64::from(*d));
        }
        Mutation::PreviousHash { at, mask } => {
            let h = b.header.as_mut()?;
            h.previous_hash = flip(&h.previous_hash, usize::from(*at), *mask);
        }
        Mutation::DataHash { at, mask } => {
            let h = b.header.as_mut()?;
            h.data_hash = flip(&h.data_hash, usize::from(*at), *mask);
        }
        Mutation::DropHeader => b.header = None,
        Mutation::Entry { index, at, mask } => {
            let entries = &mut b.data.as_mut()?.data;
            let n = entries.len();
            let e = entries.get_mut(usize::from(*index) % n.max(1))?;
            *e = flip(e, usize::try_from(*at).unwrap_or(0), *mask);
        }
        Mutation::DropEntry(index) => {
            let entries = &mut b.data.as_mut()?.data;
            if entries.is_empty() {
                return None;
            }
            let n = entries.len();
            entries.remove(usize::from(*index) % n);
        }
        Mutation::DuplicateEntry(index) => {
            let entries = &mut b.data.as_mut()?.data;
            let e = entries
                .get(usize::from(*index) % entries.len().max(1))?
                .clone();
            entries.push(e);
        }
        Mutation::AddEntry(bytes) => b
            .data
            .get_or_insert_default()
            .data
            .push(bytes.clone().into()),
        Mutation::MetadataFrom(i) => b.metadata = real_at(chain, *i).metadata.clone(),
        Mutation::SignaturesFrom(i) => {
            let theirs = slot_bytes(real_at(chain, *i), BlockMetadataIndex::Signatures);
            set_slot(&mut b, BlockMetadataIndex::Signatures as usize, theirs);
        }
        Mutation::DropSignatures => {
            let mut md = signatures_metadata(&b)?;
            md.signatures.clear();
            set_slot(
                &mut b,
                BlockMetadataIndex::Signatures as usize,
                md.encode_to_vec().into(),
            );
        }
        Mutation::Signature { index, at, mask } => {
            let mut md = signatures_metadata(&b)?;
            let n = md.signatures.len();
            let s = md.signatures.get_mut(usize::from(*index) % n.max(1))?;
            if at % 2 == 0 {
                s.signature = flip(&s.signature, usize::from(*at / 2), *mask);
            } else {
                s.signature_header = flip(&s.signature_header, usize::from(*at / 2), *mask);
            }
            set_slot(
                &mut b,
                BlockMetadataIndex::Signatures as usize,
                md.encode_to_vec().into(),
            );
        }
        Mutation::Slot { index, bytes } => {
            set_slot(&mut b, usize::from(*index % 5), bytes.clone().into());
        }
        Mutation::Raw(bytes) => return Block::decode(bytes.as_slice()).ok(),
    }
    Some(b)
}

fn slot_bytes(block: &Block, index: BlockMetadataIndex) -> Bytes {
    block
        .metadata
        .as_ref()
        .and_then(|m| m.metadata.get(index as usize))
        .cloned()
        .unwrap_or_default()
}

fn signatures_metadata(block: &Block) -> Option<Metadata> {
    Metadata::decode(slot_bytes(block, BlockMetadataIndex::Signatures)).ok()
}

fn set_slot(block: &mut Block, index: usize, bytes: Bytes) {
    let slots = &mut block.metadata.get_or_insert_default().metadata;
    if slots.len() <= index {
        slots.resize(index + 1, Bytes::new());
    }
    slots[index] = bytes;
}

/// A structured input joining a channel (0: system-channel, 1: mychannel) by its
/// last config block and offering the next real block, unchanged, `steps` times.
pub fn walk(channel: u8, steps: usize) -> Vec<u8> {
    // Mode, channel flag, Start::JoinLastConfig, then steps as `arbitrary` takes
    // the rest: a continue byte, Offer::Next, Mutation::None.
    let mut input = vec![0u8, channel, 0, 0, 0, 0];
    for _ in 0..steps {
        input.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    input
}

/// The encoding of every real block of both channels (seeds for the raw mode).
pub fn real_block_encodings() -> Vec<(String, Vec<u8>)> {
    let names = ["system-channel", "mychannel"];
    chains()
        .iter()
        .zip(names)
        .flat_map(|(chain, name)| {
            chain
                .blocks
                .iter()
                .enumerate()
                .map(move |(i, b)| (format!("{name}-block{i}"), b.encode_to_vec()))
        })
        .collect()
}
