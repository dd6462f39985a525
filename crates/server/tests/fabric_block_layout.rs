//! The block writer against blocks Fabric wrote: fed the same envelopes, Kafka
//! offsets and config sequence as a Fabric v2.5.16 orderer (Kafka consenter), korder
//! writes the same blocks, metadata included. The signer replays the Fabric node's
//! signature headers and signatures (its key is not in the fixtures) and records
//! what it is asked to sign, which must be exactly what the Fabric node signed.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use korder_ledger::block::{
    consenter_metadata, last_config_index, set_signatures, signed_entries, slot,
};
use korder_ledger::{BlockNumber, BlockStore, Ledgers, StoreOptions};
use korder_proto::Message;
use korder_proto::common::{Block, BlockMetadataIndex, LastConfig, Metadata, OrdererBlockMetadata};
use korder_server::blockwriter::{BlockWriter, MetadataLayout, write_metadata};
use korder_server::registrar::bundle_of_config_block;
use korder_server::{SignError, Signer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every block of `channel` in the Fabric 2.5 orderer ledger of the fixtures.
fn fabric_blocks(channel: &str) -> Vec<Block> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ledger");
    copy_tree(&fixtures().join("fabric-v2.5.16/orderer-ledger"), &root);
    let ledgers = Ledgers::open_dir(&root, StoreOptions::default()).unwrap();
    let store = ledgers.open(channel).unwrap();
    (0..store.height())
        .map(|n| store.block(BlockNumber::new(n)).unwrap())
        .collect()
}

/// Hands out the signature headers and signatures of `blocks`, in order, and keeps
/// the messages it was asked to sign.
struct ReplaySigner {
    headers: Mutex<VecDeque<Bytes>>,
    signatures: Mutex<VecDeque<Bytes>>,
    signed: Mutex<Vec<Vec<u8>>>,
}

impl ReplaySigner {
    fn of(blocks: &[Block]) -> Arc<ReplaySigner> {
        let mut headers = VecDeque::new();
        let mut signatures = VecDeque::new();
        for b in blocks {
            let md = Metadata::decode(slot(b, BlockMetadataIndex::Signatures)).unwrap();
            assert_eq!(md.signatures.len(), 1, "one signature per Fabric block");
            headers.push_back(md.signatures[0].signature_header.clone());
            signatures.push_back(md.signatures[0].signature.clone());
        }
        Arc::new(ReplaySigner {
            headers: Mutex::new(headers),
            signatures: Mutex::new(signatures),
            signed: Mutex::new(Vec::new()),
        })
    }
}

impl Signer for ReplaySigner {
    fn serialized_identity(&self) -> Bytes {
        unreachable!("the signature headers are replayed")
    }

    fn sign(&self, message: &[u8]) -> Result<Bytes, SignError> {
        self.signed.lock().unwrap().push(message.to_vec());
        Ok(self.signatures.lock().unwrap().pop_front().unwrap())
    }

    fn new_signature_header(&self) -> Result<Bytes, SignError> {
        Ok(self.headers.lock().unwrap().pop_front().unwrap())
    }
}

/// Writes `fabric`'s blocks after its genesis block with korder's block writer in
/// `layout`; the blocks korder wrote and the messages it signed.
fn rewrite(fabric: &[Block], layout: MetadataLayout) -> (Vec<Block>, Vec<Vec<u8>>) {
    let tmp = tempfile::tempdir().unwrap();
    let ledgers = Ledgers::open_dir(tmp.path(), StoreOptions::default()).unwrap();
    let channel = bundle_of_config_block(&fabric[0]).unwrap();
    let store: BlockStore = ledgers.open(&channel.channel_id).unwrap();
    store.append(&fabric[0]).unwrap();
    let signer = ReplaySigner::of(&fabric[1..]);
    let mut sequence = channel.sequence;
    let mut writer = BlockWriter::new(store.clone(), signer.clone(), sequence).unwrap();
    for (n, original) in fabric.iter().enumerate().skip(1) {
        let number = n as u64;
        if last_config_index(original).unwrap() == number {
            sequence = bundle_of_config_block(original).unwrap().sequence;
        }
        let envelopes = original.data.as_ref().unwrap().data.clone();
        let block = writer.create_next_block(envelopes);
        let offsets = consenter_metadata(original).unwrap();
        writer
            .write_block(block, offsets.as_ref(), sequence, layout)
            .unwrap();
        writer.wait_durable(BlockNumber::new(number)).unwrap();
    }
    writer.close().unwrap();
    let written = (0..store.height())
        .map(|n| store.block(BlockNumber::new(n)).unwrap())
        .collect();
    let signed = signer.signed.lock().unwrap().clone();
    (written, signed)
}

/// Asserts that korder's rewrite of `channel` in the 2.x layout equals Fabric 2.5's
/// blocks byte for byte and signs what the Fabric node signed.
fn same_as_fabric_2_5(channel: &str, expected_blocks: usize) {
    let fabric = fabric_blocks(channel);
    assert_eq!(fabric.len(), expected_blocks);
    let (korder, signed) = rewrite(&fabric, MetadataLayout::Fabric2);
    assert_eq!(korder.len(), fabric.len());
    for (n, (k, f)) in korder.iter().zip(&fabric).enumerate().skip(1) {
        assert!(
            slot(f, BlockMetadataIndex::Orderer).is_empty(),
            "Fabric 2.5 leaves block {n}'s ORDERER slot empty"
        );
        assert!(
            consenter_metadata(f).unwrap().is_some(),
            "block {n} carries Kafka offsets"
        );
        assert_eq!(k.header, f.header, "block {n}: header");
        assert_eq!(k.data, f.data, "block {n}: data");
        let slots = &k.metadata.as_ref().unwrap().metadata;
        let fabric_slots = &f.metadata.as_ref().unwrap().metadata;
        assert_eq!(slots.len(), fabric_slots.len(), "block {n}: slot count");
        for (i, (a, b)) in slots.iter().zip(fabric_slots).enumerate() {
            assert_eq!(a, b, "block {n}: metadata slot {i}");
        }
        assert_eq!(k.encode_to_vec(), f.encode_to_vec(), "block {n}: bytes");
        let fabric_signed = signed_entries(f).unwrap();
        assert_eq!(fabric_signed.len(), 1);
        assert_eq!(
            signed[n - 1],
            fabric_signed[0].signed_data,
            "block {n}: the signed bytes"
        );
    }
}

/// Application channel blocks (1,593 transactions over 19 blocks) equal Fabric 2.5's, metadata included.
#[test]
fn application_channel_blocks_match_fabric_2_5() {
    same_as_fabric_2_5("mychannel", 20);
}

/// The system channel's channel-creation block equals Fabric 2.5's, metadata included.
#[test]
fn system_channel_blocks_match_fabric_2_5() {
    same_as_fabric_2_5("system-channel", 2);
}

/// The 1.4 layout differs from Fabric 2.5's blocks only in the ORDERER slot, which
/// holds exactly the consenter metadata that SIGNATURES carries.
#[test]
fn fabric_1_4_layout_adds_the_orderer_slot() {
    let fabric = fabric_blocks("mychannel");
    let (korder, signed) = rewrite(&fabric, MetadataLayout::Fabric14);
    for (n, (k, f)) in korder.iter().zip(&fabric).enumerate().skip(1) {
        let orderer = slot(k, BlockMetadataIndex::Orderer);
        let sigs = Metadata::decode(slot(k, BlockMetadataIndex::Signatures)).unwrap();
        let obm = OrdererBlockMetadata::decode(sigs.value.clone()).unwrap();
        assert!(!orderer.is_empty(), "block {n}: ORDERER slot");
        assert_eq!(obm.consenter_metadata, orderer, "block {n}");
        assert_eq!(
            consenter_metadata(k).unwrap(),
            consenter_metadata(f).unwrap()
        );
        for index in [
            BlockMetadataIndex::Signatures,
            BlockMetadataIndex::LastConfig,
            BlockMetadataIndex::TransactionsFilter,
        ] {
            assert_eq!(slot(k, index), slot(f, index), "block {n}: {index:?}");
        }
        assert_eq!(signed[n - 1], signed_entries(f).unwrap()[0].signed_data);
    }
}

/// A channel with the V2_0 orderer capability gets the 2.x layout whatever the node is configured for; others get the configured one.
#[test]
fn v2_0_capability_forces_the_2_x_layout() {
    let v2 = ["V2_0".to_string()];
    let v14 = ["V1_4_2".to_string()];
    for configured in [MetadataLayout::Fabric2, MetadataLayout::Fabric14] {
        assert_eq!(
            MetadataLayout::for_channel(configured, v2.iter()),
            MetadataLayout::Fabric2
        );
        assert_eq!(
            MetadataLayout::for_channel(configured, v14.iter()),
            configured
        );
        assert_eq!(
            MetadataLayout::for_channel(configured, [].iter()),
            configured
        );
    }
}

/// On a Kafka block written by an older Fabric orderer (block3.pb, 1.x), the 1.4
/// layout's ORDERER slot is byte for byte the one Fabric wrote for the same offsets,
/// and SIGNATURES signs those same bytes as consenter metadata; the 2.x layout
/// leaves ORDERER empty and signs the same value.
#[test]
fn fabric_1_x_kafka_block_orderer_slot() {
    let raw =
        std::fs::read(fixtures().join("fabric-v1.4.12/blocks/common-cluster-block3.pb")).unwrap();
    let fabric = Block::decode(raw.as_slice()).unwrap();
    let kafka = consenter_metadata(&fabric).unwrap().expect("Kafka offsets");
    assert_eq!(kafka.last_offset_persisted, 3);
    let fabric_orderer = slot(&fabric, BlockMetadataIndex::Orderer);
    let fabric_lc = Metadata::decode(slot(&fabric, BlockMetadataIndex::LastConfig)).unwrap();
    let last_config = LastConfig::decode(fabric_lc.value.clone()).unwrap().index;
    let bare = || Block {
        header: fabric.header.clone(),
        data: fabric.data.clone(),
        metadata: None,
    };

    let mut v14 = bare();
    let value14 = write_metadata(
        &mut v14,
        last_config,
        Some(&kafka),
        MetadataLayout::Fabric14,
    );
    assert_eq!(slot(&v14, BlockMetadataIndex::Orderer), fabric_orderer);
    let obm = OrdererBlockMetadata::decode(value14.clone()).unwrap();
    assert_eq!(obm.consenter_metadata, fabric_orderer);
    assert_eq!(obm.last_config.unwrap().index, last_config);
    let lc = Metadata::decode(slot(&v14, BlockMetadataIndex::LastConfig)).unwrap();
    assert_eq!(lc.value, fabric_lc.value, "LAST_CONFIG value");
    assert!(lc.signatures.is_empty(), "1.4.1+ signs in SIGNATURES only");

    let mut v2 = bare();
    let value2 = write_metadata(&mut v2, last_config, Some(&kafka), MetadataLayout::Fabric2);
    assert!(slot(&v2, BlockMetadataIndex::Orderer).is_empty());
    assert_eq!(value2, value14);
    set_signatures(&mut v2, value2, Vec::new());
    assert_eq!(consenter_metadata(&v2).unwrap(), Some(kafka));
}
