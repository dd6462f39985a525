//! Encoding facts the rest of korder relies on: prost must produce the bytes Go's
//! protobuf produces for the messages an orderer writes, and decoding must accept
//! every message Fabric's nodes send.

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::{
    Block, BlockData, BlockHeader, BlockMetadata, LastConfig, Metadata, OrdererBlockMetadata,
    SignaturePolicy, signature_policy,
};
use korder_proto::orderer::{
    KafkaMessage, KafkaMessageConnect, KafkaMetadata, SeekInfo, SeekNewest, SeekPosition,
    kafka_message, seek_position,
};

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

/// A CONNECT record is the two bytes `1a 00`: a set oneof member is written even when empty.
#[test]
fn connect_record_is_two_bytes() {
    let m = KafkaMessage {
        r#type: Some(kafka_message::Type::Connect(KafkaMessageConnect::default())),
    };
    assert_eq!(hex(&m.encode_to_vec()), "1a00");
}

/// A negative int64 is a ten-byte varint, as Go writes it.
#[test]
fn negative_offset_is_ten_byte_varint() {
    let m = KafkaMetadata {
        last_offset_persisted: -3,
        ..Default::default()
    };
    assert_eq!(hex(&m.encode_to_vec()), "08fdffffffffffffffff01");
}

/// Empty metadata slots are each written as `0a 00`, and block 0 of the spec's worked
/// example encodes to exactly the bytes Fabric produces.
#[test]
fn worked_example_block_zero_bytes() {
    let data_hash =
        hex::decode("f78da82b0552bcbc20c372c90e77e21e2c534eb167484a56df96b53be71b59aa").unwrap();
    let block = Block {
        header: Some(BlockHeader {
            number: 0,
            previous_hash: Bytes::new(),
            data_hash: Bytes::from(data_hash.clone()),
        }),
        data: Some(BlockData {
            data: vec![Bytes::from(
                hex::decode("0a0f67656e657369732d7061796c6f6164").unwrap(),
            )],
        }),
        metadata: Some(BlockMetadata {
            metadata: vec![Bytes::new(); 5],
        }),
    };
    let expected = format!(
        "0a221a20{}12130a110a0f67656e657369732d7061796c6f61641a0a0a000a000a000a000a00",
        hex(&data_hash)
    );
    assert_eq!(hex(&block.encode_to_vec()), expected);
}

/// An empty but present sub-message is written as `tag 00`, and the SIGNATURES value
/// of the spec's example (last config 0, Kafka offset 41) matches byte for byte.
#[test]
fn orderer_block_metadata_example() {
    let kafka = KafkaMetadata {
        last_offset_persisted: 41,
        ..Default::default()
    };
    assert_eq!(hex(&kafka.encode_to_vec()), "0829");
    let slot = Metadata {
        value: kafka.encode_to_vec().into(),
        signatures: vec![],
    };
    assert_eq!(hex(&slot.encode_to_vec()), "0a020829");
    let value = OrdererBlockMetadata {
        last_config: Some(LastConfig { index: 0 }),
        consenter_metadata: slot.encode_to_vec().into(),
    };
    assert_eq!(hex(&value.encode_to_vec()), "0a0012040a020829");
    let last_config_5 = Metadata {
        value: LastConfig { index: 5 }.encode_to_vec().into(),
        signatures: vec![],
    };
    assert_eq!(hex(&last_config_5.encode_to_vec()), "0a020805");
    // LastConfig{0} wrapped in a Metadata is an empty slot.
    let last_config_0 = Metadata {
        value: LastConfig { index: 0 }.encode_to_vec().into(),
        signatures: vec![],
    };
    assert!(last_config_0.encode_to_vec().is_empty());
}

/// `signed_by = 0` is still written (`08 00`), and `SeekNewest{}` inside a position too.
#[test]
fn zero_oneof_members_are_written() {
    let p = SignaturePolicy {
        r#type: Some(signature_policy::Type::SignedBy(0)),
    };
    assert_eq!(hex(&p.encode_to_vec()), "0800");
    let newest = SeekPosition {
        r#type: Some(seek_position::Type::Newest(SeekNewest {})),
    };
    assert_eq!(hex(&newest.encode_to_vec()), "0a00");
    let info = SeekInfo {
        start: Some(newest),
        stop: Some(newest),
        ..Default::default()
    };
    assert_eq!(hex(&info.encode_to_vec()), "0a020a0012020a00");
}

/// Fields unknown to korder (e.g. a newer SeekInfo field) are skipped, not rejected.
#[test]
fn unknown_fields_are_ignored_on_decode() {
    // SeekInfo with behavior = 1 and an unknown varint field 5 = 7.
    let bytes = hex::decode("18012807").unwrap();
    let info = SeekInfo::decode(bytes.as_slice()).unwrap();
    assert_eq!(info.behavior, 1);
}

/// Truncated input is an error, never a panic.
#[test]
fn truncated_input_is_an_error() {
    let block = Block {
        header: Some(BlockHeader {
            number: 7,
            previous_hash: Bytes::from_static(&[1; 32]),
            data_hash: Bytes::from_static(&[2; 32]),
        }),
        ..Default::default()
    };
    let bytes = block.encode_to_vec();
    for cut in 1..bytes.len() {
        assert!(Block::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}
