//! Block assembly, hashing and metadata: pure functions, no I/O.
//!
//! * [`header_der`] / [`header_hash`]: the header hash is SHA-256 over an ASN.1 DER
//!   `SEQUENCE { INTEGER number, OCTET STRING previous_hash, OCTET STRING data_hash }`,
//!   never over the protobuf header.
//! * [`data_hash`]: SHA-256 of the data entries concatenated as stored.
//! * [`BlockBuilder`] / [`next_block`]: number, previous hash, data hash and five empty
//!   metadata slots.
//! * Metadata writers for the SIGNATURES, LAST_CONFIG and ORDERER slots, and readers
//!   that accept both the v1.4.1+ layout (signature in SIGNATURES, whose value is an
//!   `OrdererBlockMetadata`) and the older one (signatures in LAST_CONFIG too), with 4
//!   or 5 metadata slots.

use aws_lc_rs::digest;
use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::{
    Block, BlockData, BlockHeader, BlockMetadata, BlockMetadataIndex, LastConfig, Metadata,
    MetadataSignature, OrdererBlockMetadata, SignatureHeader,
};
use korder_proto::orderer::KafkaMetadata;
use korder_types::ids::BlockNumber;

/// Number of metadata slots in blocks korder writes (one per `BlockMetadataIndex`).
pub const METADATA_SLOTS: usize = 5;

/// Errors reading a block's structure or metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The block has no header.
    #[error("block has no header")]
    MissingHeader,
    /// A metadata slot or a message inside it does not decode.
    #[error("block {number}: metadata slot {slot:?}: cannot decode {what}: {source}")]
    Metadata {
        number: BlockNumber,
        slot: BlockMetadataIndex,
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}

// ---------------------------------------------------------------------------
// Header DER and hashes
// ---------------------------------------------------------------------------

/// The ASN.1 DER encoding of a block header that the header hash and the block
/// signatures cover: `SEQUENCE { INTEGER number, OCTET STRING previous_hash, OCTET
/// STRING data_hash }`. The number is a minimal, non-negative INTEGER, so numbers of
/// 2^63 and above take nine bytes, as Fabric v2.5 encodes them.
pub fn header_der(header: &BlockHeader) -> Vec<u8> {
    yasna::construct_der(|writer| {
        writer.write_sequence(|seq| {
            seq.next().write_u64(header.number);
            seq.next().write_bytes(&header.previous_hash);
            seq.next().write_bytes(&header.data_hash);
        });
    })
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of [`header_der`]: the value the next block carries as `previous_hash`.
pub fn header_hash(header: &BlockHeader) -> [u8; 32] {
    sha256(&[&header_der(header)])
}

/// SHA-256 of the data entries concatenated exactly as stored (no length prefixes).
pub fn data_hash(data: &BlockData) -> [u8; 32] {
    data_hash_of(&data.data)
}

/// [`data_hash`] over a slice of entries.
pub fn data_hash_of(entries: &[Bytes]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for e in entries {
        ctx.update(e);
    }
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

// ---------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------

/// Builds consecutive blocks, remembering the last block it built (not the last one
/// committed), so the next block can be assembled while the previous one is still
/// being written.
#[derive(Debug, Clone, Default)]
pub struct BlockBuilder {
    last: Option<BlockHeader>,
}

impl BlockBuilder {
    /// A builder whose next block is block 0.
    pub fn new() -> Self {
        Self { last: None }
    }

    /// A builder that continues after `last` (the ledger's last block header).
    pub fn after(last: BlockHeader) -> Self {
        Self { last: Some(last) }
    }

    /// Number the next block will get.
    pub fn next_number(&self) -> BlockNumber {
        self.last
            .as_ref()
            .map_or(BlockNumber::GENESIS, |h| BlockNumber::new(h.number).next())
    }

    /// Header of the last block built (or given to [`BlockBuilder::after`]).
    pub fn last_header(&self) -> Option<&BlockHeader> {
        self.last.as_ref()
    }

    /// Builds the next block over `envelopes` (marshalled envelopes, kept as given).
    pub fn build(&mut self, envelopes: Vec<Bytes>) -> Block {
        let block = next_block(self.last.as_ref(), envelopes);
        self.last = block.header.clone();
        block
    }
}

/// A block following `previous` (block 0 without one): number, previous hash = header
/// hash of `previous`, data hash over `envelopes`, and five empty metadata slots.
pub fn next_block(previous: Option<&BlockHeader>, envelopes: Vec<Bytes>) -> Block {
    let (number, previous_hash) = match previous {
        Some(p) => (
            p.number
                .checked_add(1)
                .expect("block number space exhausted: previous block is u64::MAX"),
            Bytes::copy_from_slice(&header_hash(p)),
        ),
        None => (0, Bytes::new()),
    };
    let data_hash = Bytes::copy_from_slice(&data_hash_of(&envelopes));
    Block {
        header: Some(BlockHeader {
            number,
            previous_hash,
            data_hash,
        }),
        data: Some(BlockData { data: envelopes }),
        metadata: Some(BlockMetadata {
            metadata: vec![Bytes::new(); METADATA_SLOTS],
        }),
    }
}

// ---------------------------------------------------------------------------
// Metadata writers
// ---------------------------------------------------------------------------

fn slots_mut(block: &mut Block) -> &mut Vec<Bytes> {
    let md = block.metadata.get_or_insert_with(BlockMetadata::default);
    if md.metadata.len() < METADATA_SLOTS {
        md.metadata.resize(METADATA_SLOTS, Bytes::new());
    }
    &mut md.metadata
}

fn encode(msg: &impl Message) -> Bytes {
    Bytes::from(msg.encode_to_vec())
}

/// The ORDERER slot's bytes for Kafka consenter metadata: `Metadata{value: KafkaMetadata}`.
pub fn orderer_slot_bytes(kafka: &KafkaMetadata) -> Bytes {
    encode(&Metadata {
        value: encode(kafka),
        signatures: Vec::new(),
    })
}

/// Writes the ORDERER slot: `Metadata{value: KafkaMetadata}`.
pub fn set_orderer_metadata(block: &mut Block, kafka: &KafkaMetadata) {
    slots_mut(block)[BlockMetadataIndex::Orderer as usize] = orderer_slot_bytes(kafka);
}

/// Writes the LAST_CONFIG slot: `Metadata{value: LastConfig{index}}`, no signatures.
pub fn set_last_config(block: &mut Block, index: BlockNumber) {
    slots_mut(block)[BlockMetadataIndex::LastConfig as usize] = encode(&Metadata {
        value: encode(&LastConfig { index: index.get() }),
        signatures: Vec::new(),
    });
}

/// The SIGNATURES slot's value: `OrdererBlockMetadata{last_config, consenter_metadata}`
/// where `consenter_metadata` is the ORDERER slot's bytes (`Metadata{value: KafkaMetadata}`),
/// or empty when the consenter supplied none.
pub fn signatures_value(last_config: BlockNumber, consenter: Option<&KafkaMetadata>) -> Bytes {
    encode(&OrdererBlockMetadata {
        last_config: Some(LastConfig {
            index: last_config.get(),
        }),
        consenter_metadata: consenter.map(orderer_slot_bytes).unwrap_or_default(),
    })
}

/// Writes the SIGNATURES slot: `Metadata{value, signatures}`.
pub fn set_signatures(block: &mut Block, value: Bytes, signatures: Vec<MetadataSignature>) {
    slots_mut(block)[BlockMetadataIndex::Signatures as usize] =
        encode(&Metadata { value, signatures });
}

/// Writes what a v1.4.12 orderer writes before signing (ORDERER when `consenter` is
/// given, LAST_CONFIG) and returns the SIGNATURES value to sign with
/// [`signature_input`] and store with [`set_signatures`].
pub fn write_orderer_metadata(
    block: &mut Block,
    last_config: BlockNumber,
    consenter: Option<&KafkaMetadata>,
) -> Bytes {
    if let Some(k) = consenter {
        set_orderer_metadata(block, k);
    }
    set_last_config(block, last_config);
    signatures_value(last_config, consenter)
}

/// Bytes a block signature covers: `value ‖ signature_header ‖ header_der(header)`.
pub fn signature_input(value: &[u8], signature_header: &[u8], header: &BlockHeader) -> Vec<u8> {
    let der = header_der(header);
    let mut out = Vec::with_capacity(value.len() + signature_header.len() + der.len());
    out.extend_from_slice(value);
    out.extend_from_slice(signature_header);
    out.extend_from_slice(&der);
    out
}

// ---------------------------------------------------------------------------
// Metadata readers
// ---------------------------------------------------------------------------

fn number_of(block: &Block) -> BlockNumber {
    BlockNumber::new(block.header.as_ref().map_or(0, |h| h.number))
}

/// Raw bytes of a slot; a missing slot (4-slot blocks, short lists) reads as empty.
pub fn slot(block: &Block, index: BlockMetadataIndex) -> Bytes {
    block
        .metadata
        .as_ref()
        .and_then(|m| m.metadata.get(index as usize))
        .cloned()
        .unwrap_or_default()
}

fn decode_in<M: Message + Default>(
    block: &Block,
    slot: BlockMetadataIndex,
    what: &'static str,
    bytes: &[u8],
) -> Result<M, BlockError> {
    M::decode(bytes).map_err(|source| BlockError::Metadata {
        number: number_of(block),
        slot,
        what,
        source,
    })
}

fn slot_metadata(block: &Block, index: BlockMetadataIndex) -> Result<Metadata, BlockError> {
    decode_in(block, index, "Metadata", &slot(block, index))
}

/// The number of the newest config block as recorded in `block`: the SIGNATURES
/// value's `OrdererBlockMetadata.last_config` when that value is non-empty, else the
/// LAST_CONFIG slot. An empty slot means block 0.
pub fn last_config_index(block: &Block) -> Result<BlockNumber, BlockError> {
    let sigs = slot_metadata(block, BlockMetadataIndex::Signatures)?;
    if !sigs.value.is_empty() {
        let obm: OrdererBlockMetadata = decode_in(
            block,
            BlockMetadataIndex::Signatures,
            "OrdererBlockMetadata",
            &sigs.value,
        )?;
        return Ok(BlockNumber::new(obm.last_config.map_or(0, |lc| lc.index)));
    }
    let lc_md = slot_metadata(block, BlockMetadataIndex::LastConfig)?;
    let lc: LastConfig = decode_in(
        block,
        BlockMetadataIndex::LastConfig,
        "LastConfig",
        &lc_md.value,
    )?;
    Ok(BlockNumber::new(lc.index))
}

/// The Kafka consenter metadata recorded in `block`: from the SIGNATURES value's
/// `OrdererBlockMetadata.consenter_metadata` when present, else from the ORDERER slot.
/// `None` when both are empty (a genesis block, a new channel's first block, or
/// all-zero offsets, which encode to nothing).
pub fn consenter_metadata(block: &Block) -> Result<Option<KafkaMetadata>, BlockError> {
    let sigs = slot_metadata(block, BlockMetadataIndex::Signatures)?;
    let mut wrapped = Bytes::new();
    let mut from = BlockMetadataIndex::Signatures;
    if !sigs.value.is_empty() {
        let obm: OrdererBlockMetadata = decode_in(
            block,
            BlockMetadataIndex::Signatures,
            "OrdererBlockMetadata",
            &sigs.value,
        )?;
        wrapped = obm.consenter_metadata;
    }
    if wrapped.is_empty() {
        wrapped = slot(block, BlockMetadataIndex::Orderer);
        from = BlockMetadataIndex::Orderer;
    }
    if wrapped.is_empty() {
        return Ok(None);
    }
    let md: Metadata = decode_in(block, from, "consenter Metadata", &wrapped)?;
    let kafka: KafkaMetadata = decode_in(block, from, "KafkaMetadata", &md.value)?;
    Ok(Some(kafka))
}

/// One signature found in a block's metadata, with everything needed to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEntry {
    /// Slot the signature was found in (SIGNATURES, or LAST_CONFIG for old blocks).
    pub slot: BlockMetadataIndex,
    /// `SignatureHeader.creator`: a marshalled `msp.SerializedIdentity`.
    pub creator: Bytes,
    /// The signed bytes: `Metadata.value ‖ signature_header ‖ header_der`.
    pub signed_data: Vec<u8>,
    /// The signature (DER ECDSA for X.509 identities).
    pub signature: Bytes,
}

/// Every signature carried by the SIGNATURES and LAST_CONFIG slots, in slot order.
/// Blocks written by v1.4.1+ orderers carry one in SIGNATURES; older blocks carry one
/// in each slot; a new channel's first block carries none.
pub fn signed_entries(block: &Block) -> Result<Vec<SignedEntry>, BlockError> {
    let header = block.header.as_ref().ok_or(BlockError::MissingHeader)?;
    let der = header_der(header);
    let mut out = Vec::new();
    for index in [
        BlockMetadataIndex::Signatures,
        BlockMetadataIndex::LastConfig,
    ] {
        let md = slot_metadata(block, index)?;
        for sig in md.signatures {
            let sh: SignatureHeader =
                decode_in(block, index, "SignatureHeader", &sig.signature_header)?;
            let mut signed_data =
                Vec::with_capacity(md.value.len() + sig.signature_header.len() + der.len());
            signed_data.extend_from_slice(&md.value);
            signed_data.extend_from_slice(&sig.signature_header);
            signed_data.extend_from_slice(&der);
            out.push(SignedEntry {
                slot: index,
                creator: sh.creator,
                signed_data,
                signature: sig.signature,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
