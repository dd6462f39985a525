//! Envelopes the orderer builds and signs itself: the CONFIG transaction that
//! carries a new config, and the ORDERER_TRANSACTION that carries a new channel's
//! CONFIG transaction on the system channel.
//!
//! Channel header: version 0, epoch 0, the given timestamp, empty tx id. The
//! signature header (creator + fresh nonce) and the signature come from the node's
//! [`SigningIdentity`], passed in: this crate holds no keys and does no I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_msp::signer::{SignError, SigningIdentity};
use korder_proto::Message;
use korder_proto::common::{ChannelHeader, ConfigEnvelope, Envelope, Header, HeaderType, Payload};

fn timestamp(at: SystemTime) -> korder_proto::Timestamp {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    korder_proto::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A signed envelope of header type `kind` for `channel_id` whose payload data is `data`.
pub fn signed_envelope(
    kind: HeaderType,
    channel_id: &str,
    data: Bytes,
    at: SystemTime,
    signer: &SigningIdentity,
) -> Result<Envelope, SignError> {
    let channel_header = ChannelHeader {
        r#type: kind as i32,
        version: 0,
        timestamp: Some(timestamp(at)),
        channel_id: channel_id.to_owned(),
        tx_id: String::new(),
        epoch: 0,
        extension: Bytes::new(),
        tls_cert_hash: Bytes::new(),
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: Bytes::from(channel_header.encode_to_vec()),
            signature_header: signer.new_signature_header()?,
        }),
        data,
    };
    signer.sign_envelope(Bytes::from(payload.encode_to_vec()))
}

/// The CONFIG transaction for `channel_id` carrying `config`, signed by the orderer.
pub fn config_tx(
    channel_id: &str,
    config: &ConfigEnvelope,
    at: SystemTime,
    signer: &SigningIdentity,
) -> Result<Envelope, SignError> {
    signed_envelope(
        HeaderType::Config,
        channel_id,
        Bytes::from(config.encode_to_vec()),
        at,
        signer,
    )
}

/// The ORDERER_TRANSACTION for the system channel wrapping `inner` (the new
/// channel's CONFIG transaction, serialized as the payload data), signed by the orderer.
pub fn orderer_tx(
    system_channel_id: &str,
    inner: &Envelope,
    at: SystemTime,
    signer: &SigningIdentity,
) -> Result<Envelope, SignError> {
    signed_envelope(
        HeaderType::OrdererTransaction,
        system_channel_id,
        Bytes::from(inner.encode_to_vec()),
        at,
        signer,
    )
}

/// Why an ORDERER_TRANSACTION could not be taken apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnwrapError {
    #[error("{what} is malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} has no header")]
    MissingHeader { what: &'static str },
    #[error("{what} is of type {actual}, expected {expected}")]
    WrongType {
        what: &'static str,
        actual: i32,
        expected: &'static str,
    },
}

/// The channel header of an envelope (decoded), and its payload data.
fn open(envelope: &Envelope, what: &'static str) -> Result<(ChannelHeader, Bytes), UnwrapError> {
    let malformed = |reason: String| UnwrapError::Malformed { what, reason };
    let payload =
        Payload::decode(envelope.payload.as_ref()).map_err(|e| malformed(e.to_string()))?;
    let header = payload.header.ok_or(UnwrapError::MissingHeader { what })?;
    let ch = ChannelHeader::decode(header.channel_header.as_ref())
        .map_err(|e| malformed(format!("channel header: {e}")))?;
    Ok((ch, payload.data))
}

/// Takes apart an ORDERER_TRANSACTION: the inner CONFIG envelope, its channel id
/// (the new channel) and its `ConfigEnvelope`.
pub fn unwrap_orderer_tx(
    envelope: &Envelope,
) -> Result<(Envelope, String, ConfigEnvelope), UnwrapError> {
    let (ch, data) = open(envelope, "orderer transaction")?;
    if ch.r#type != HeaderType::OrdererTransaction as i32 {
        return Err(UnwrapError::WrongType {
            what: "orderer transaction",
            actual: ch.r#type,
            expected: "ORDERER_TRANSACTION",
        });
    }
    let inner = Envelope::decode(data.as_ref()).map_err(|e| UnwrapError::Malformed {
        what: "inner config transaction",
        reason: e.to_string(),
    })?;
    let (inner_ch, inner_data) = open(&inner, "inner config transaction")?;
    if inner_ch.r#type != HeaderType::Config as i32 {
        return Err(UnwrapError::WrongType {
            what: "inner config transaction",
            actual: inner_ch.r#type,
            expected: "CONFIG",
        });
    }
    let config =
        ConfigEnvelope::decode(inner_data.as_ref()).map_err(|e| UnwrapError::Malformed {
            what: "config envelope",
            reason: e.to_string(),
        })?;
    Ok((inner, inner_ch.channel_id, config))
}
