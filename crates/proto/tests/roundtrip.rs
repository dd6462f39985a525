//! Property tests: every wire message the orderer handles decodes back to what was
//! encoded, and decoding keeps opaque byte fields exactly as they were carried.

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::{
    Block, BlockData, BlockHeader, BlockMetadata, ChannelHeader, Envelope, Header, Metadata,
    MetadataSignature, Payload, SignatureHeader,
};
use korder_proto::orderer::{
    KafkaMessage, KafkaMessageRegular, KafkaMessageTimeToCut, KafkaMetadata, SeekInfo,
    SeekPosition, SeekSpecified, kafka_message, seek_position,
};
use proptest::prelude::*;

fn bytes_strategy(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let encoded = m.encode_to_vec();
    let decoded = M::decode(encoded.as_slice()).expect("decodes");
    assert_eq!(&decoded, m);
    // Encoding is a function of the value: re-encoding gives the same bytes.
    assert_eq!(decoded.encode_to_vec(), encoded);
}

proptest! {
    /// Envelopes, payloads and headers round-trip with their opaque bytes intact.
    #[test]
    fn envelope_roundtrip(payload in bytes_strategy(256), signature in bytes_strategy(80),
                          ch in bytes_strategy(64), sh in bytes_strategy(64), data in bytes_strategy(128)) {
        roundtrip(&Envelope { payload: payload.clone(), signature });
        roundtrip(&Payload { header: Some(Header { channel_header: ch, signature_header: sh }), data });
        // The payload bytes come back exactly as carried, whatever they contain.
        let env = Envelope { payload: payload.clone(), signature: Bytes::new() };
        let back = Envelope::decode(env.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(back.payload, payload);
    }

    /// Channel and signature headers round-trip.
    #[test]
    fn headers_roundtrip(t in any::<i32>(), v in any::<i32>(), id in "[a-z][a-z0-9.-]{0,20}",
                         tx in "[0-9a-f]{0,64}", epoch in any::<u64>(), creator in bytes_strategy(64), nonce in bytes_strategy(24)) {
        roundtrip(&ChannelHeader { r#type: t, version: v, timestamp: Some(korder_proto::Timestamp { seconds: 1, nanos: 2 }),
            channel_id: id, tx_id: tx, epoch, extension: Bytes::new(), tls_cert_hash: Bytes::new() });
        roundtrip(&SignatureHeader { creator, nonce });
    }

    /// Blocks round-trip, including empty data entries and empty metadata slots.
    #[test]
    fn block_roundtrip(number in any::<u64>(), prev in bytes_strategy(32), dh in bytes_strategy(32),
                       data in proptest::collection::vec(bytes_strategy(64), 0..8),
                       meta in proptest::collection::vec(bytes_strategy(16), 0..6)) {
        roundtrip(&Block {
            header: Some(BlockHeader { number, previous_hash: prev, data_hash: dh }),
            data: Some(BlockData { data }),
            metadata: Some(BlockMetadata { metadata: meta }),
        });
    }

    /// Metadata with signatures round-trips.
    #[test]
    fn metadata_roundtrip(value in bytes_strategy(64), sigs in proptest::collection::vec((bytes_strategy(40), bytes_strategy(72)), 0..4)) {
        roundtrip(&Metadata { value, signatures: sigs.into_iter()
            .map(|(signature_header, signature)| MetadataSignature { signature_header, signature }).collect() });
    }

    /// Every kind of log record round-trips, with signed offsets.
    #[test]
    fn kafka_records_roundtrip(payload in bytes_strategy(128), seq in any::<u64>(), class in 0i32..3,
                               orig in any::<i64>(), n in any::<u64>(), a in any::<i64>(), b in any::<i64>(), c in any::<i64>()) {
        roundtrip(&KafkaMessage { r#type: Some(kafka_message::Type::Regular(KafkaMessageRegular {
            payload, config_seq: seq, class, original_offset: orig })) });
        roundtrip(&KafkaMessage { r#type: Some(kafka_message::Type::TimeToCut(KafkaMessageTimeToCut { block_number: n })) });
        roundtrip(&KafkaMetadata { last_offset_persisted: a, last_original_offset_processed: b, last_resubmitted_config_offset: c });
    }

    /// Seek requests round-trip.
    #[test]
    fn seek_roundtrip(start in any::<u64>(), stop in any::<u64>(), behavior in 0i32..2, err in 0i32..2) {
        roundtrip(&SeekInfo {
            start: Some(SeekPosition { r#type: Some(seek_position::Type::Specified(SeekSpecified { number: start })) }),
            stop: Some(SeekPosition { r#type: Some(seek_position::Type::Specified(SeekSpecified { number: stop })) }),
            behavior, error_response: err });
    }

    /// Arbitrary bytes never make a decoder panic.
    #[test]
    fn garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Block::decode(garbage.as_slice());
        let _ = Envelope::decode(garbage.as_slice());
        let _ = KafkaMessage::decode(garbage.as_slice());
        let _ = SeekInfo::decode(garbage.as_slice());
        let _ = korder_proto::common::ConfigEnvelope::decode(garbage.as_slice());
    }
}
