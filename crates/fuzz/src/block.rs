//! Block decoding, as `korder block inspect` and `korder ledger verify` read a block.

use bytes::Bytes;
use korder_ledger::block::{
    consenter_metadata, data_hash, header_der, header_hash, last_config_index, signed_entries,
};
use korder_msp::Identity;
use korder_proto::Message;
use korder_proto::common::{Block, ChannelHeader, ConfigEnvelope, Envelope, HeaderType, Payload};

/// Arbitrary bytes as a `common.Block`: the header's DER and hash, the data hash,
/// the LAST_CONFIG and consenter metadata, every metadata signature checked against
/// its creator, and every envelope's headers (and the config of a config block).
///
/// Invariants: nothing panics; the header DER is deterministic; a block that decodes
/// re-encodes to bytes that decode to the same block.
pub fn block_decode(data: &[u8]) {
    let Ok(block) = Block::decode(data) else {
        return;
    };
    let again = Block::decode(block.encode_to_vec().as_slice())
        .unwrap_or_else(|e| panic!("a decoded block does not re-decode: {e}"));
    assert_eq!(again, block, "decode ∘ encode changed the block");
    if let Some(header) = &block.header {
        assert_eq!(header_der(header), header_der(header));
        let _ = header_hash(header);
    }
    if let Some(data) = &block.data {
        let _ = data_hash(data);
        for entry in &data.data {
            envelope_view(entry);
        }
    }
    let _ = last_config_index(&block);
    let _ = consenter_metadata(&block);
    if let Ok(entries) = signed_entries(&block) {
        for e in entries {
            if let Ok(id) = Identity::from_serialized(&e.creator) {
                let _ = id.verify(&e.signed_data, &e.signature);
            }
        }
    }
}

/// Decodes an envelope down to its channel header, and a config envelope's config.
fn envelope_view(bytes: &Bytes) {
    let Ok(env) = Envelope::decode(bytes.clone()) else {
        return;
    };
    let Ok(payload) = Payload::decode(env.payload) else {
        return;
    };
    let Some(header) = payload.header else {
        return;
    };
    let Ok(ch) = ChannelHeader::decode(header.channel_header) else {
        return;
    };
    if ch.r#type == HeaderType::Config as i32
        && let Ok(ConfigEnvelope {
            config: Some(config),
            ..
        }) = ConfigEnvelope::decode(payload.data)
    {
        let _ = korder_channelconfig::Bundle::new(&ch.channel_id, config);
    }
}
