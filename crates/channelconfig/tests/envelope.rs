//! Orderer-built envelopes: header fields, signatures over the payload, unwrapping.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, UNIX_EPOCH};

use korder_channelconfig::envelope::{config_tx, orderer_tx, unwrap_orderer_tx};
use korder_proto::Message;
use korder_proto::common::{
    ChannelHeader, Config, ConfigEnvelope, Envelope, HeaderType, Payload, SignatureHeader,
};

fn header_of(env: &Envelope) -> (ChannelHeader, SignatureHeader) {
    let payload = Payload::decode(env.payload.as_ref()).unwrap();
    let h = payload.header.unwrap();
    (
        ChannelHeader::decode(h.channel_header.as_ref()).unwrap(),
        SignatureHeader::decode(h.signature_header.as_ref()).unwrap(),
    )
}

/// CONFIG and ORDERER_TRANSACTION envelopes carry version 0, epoch 0, the given time, an empty tx id and a verifying signature.
#[test]
fn orderer_built_envelopes_have_fabric_headers() {
    let org = common::DevOrg::new("OrdererMSP");
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
    let ce = ConfigEnvelope {
        config: Some(Config {
            sequence: 3,
            channel_group: None,
        }),
        last_update: None,
    };
    let inner = config_tx("ch", &ce, at, &org.orderer).unwrap();
    let outer = orderer_tx("sys", &inner, at, &org.orderer).unwrap();
    for (env, kind, channel) in [
        (&inner, HeaderType::Config, "ch"),
        (&outer, HeaderType::OrdererTransaction, "sys"),
    ] {
        let (ch, sh) = header_of(env);
        assert_eq!(ch.r#type, kind as i32);
        assert_eq!(ch.channel_id, channel);
        assert_eq!((ch.version, ch.epoch), (0, 0));
        assert!(ch.tx_id.is_empty());
        let ts = ch.timestamp.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 250_000_000));
        assert_eq!(sh.creator, org.orderer.serialized());
        assert_eq!(sh.nonce.len(), 24);
        org.orderer
            .identity()
            .verify(&env.payload, &env.signature)
            .unwrap();
    }
    let (inner2, channel, ce2) = unwrap_orderer_tx(&outer).unwrap();
    assert_eq!((inner2, channel.as_str(), ce2), (inner.clone(), "ch", ce));
    assert!(
        unwrap_orderer_tx(&inner).is_err(),
        "a CONFIG envelope is not an orderer transaction"
    );
}
