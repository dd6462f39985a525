//! Message classification and the filters every message passes before it is
//! ordered (and again when the chain re-validates a stale one).
//!
//! Filters, in Fabric's order: empty payload, size (`len(payload) + len(signature)`
//! against `AbsoluteMaxBytes`), then the identity checks — expiration and the
//! signature against `/Channel/Writers` — which come with policy evaluation.

use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_consensus::support::{MsgClass, classify_header_type};
use korder_proto::Message;
use korder_proto::common::{ChannelHeader, Envelope, Payload};

use crate::status::ProcessError;

/// An envelope decoded far enough to route it: its payload and channel header.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub envelope: Envelope,
    pub payload: Payload,
    pub channel_header: ChannelHeader,
}

impl Parsed {
    /// How the message is handled.
    pub fn class(&self) -> MsgClass {
        classify_header_type(self.channel_header.r#type)
    }
}

/// Decodes the payload and channel header of `envelope`; the errors are the ones
/// Broadcast reports when it cannot tell which channel a message is for.
pub fn parse(envelope: Envelope) -> Result<Parsed, ProcessError> {
    let ctx = "could not determine channel ID";
    let payload = Payload::decode(envelope.payload.as_ref())
        .map_err(|e| ProcessError::bad(format!("{ctx}: error unmarshaling payload: {e}")))?;
    let header = payload
        .header
        .as_ref()
        .ok_or_else(|| ProcessError::bad(format!("{ctx}: header not set")))?;
    if header.channel_header.is_empty() {
        return Err(ProcessError::bad(format!("{ctx}: channel header not set")));
    }
    let channel_header = ChannelHeader::decode(header.channel_header.as_ref())
        .map_err(|e| ProcessError::bad(format!("{ctx}: error unmarshaling channel header: {e}")))?;
    Ok(Parsed {
        envelope,
        payload,
        channel_header,
    })
}

/// Size of a message as the size filter and block cutter count it.
pub fn message_size(envelope: &Envelope) -> u64 {
    (envelope.payload.len() + envelope.signature.len()) as u64
}

/// The standard channel filters that need no identity: empty payload and size.
pub fn basic_filters(envelope: &Envelope, bundle: &Bundle) -> Result<(), ProcessError> {
    if envelope.payload.is_empty() {
        return Err(ProcessError::bad("Message was empty"));
    }
    let size = message_size(envelope);
    let max = u64::from(bundle.orderer.batch_size.absolute_max_bytes);
    if size > max {
        return Err(ProcessError::bad(format!(
            "message payload is {size} bytes and exceeds maximum allowed {max} bytes"
        )));
    }
    Ok(())
}

/// Validates a normal message for `bundle`'s channel; returns the config sequence it
/// was validated at (read before filtering, as Fabric does).
pub fn process_normal(
    envelope: &Envelope,
    channel_id: &str,
    bundle: &Bundle,
) -> Result<u64, ProcessError> {
    let seq = bundle.sequence;
    if bundle.is_system_channel() && channel_id != bundle.channel_id {
        return Err(ProcessError::ChannelNotFound);
    }
    if bundle.orderer.consensus_type_migration() && bundle.orderer.maintenance {
        return Err(ProcessError::Maintenance(
            "normal transactions are rejected".into(),
        ));
    }
    basic_filters(envelope, bundle)?;
    Ok(seq)
}

/// Re-validates a normal envelope taken from the log (the chain's resubmission path).
pub fn revalidate_normal(envelope_bytes: &Bytes, bundle: &Bundle) -> Result<u64, ProcessError> {
    let envelope = Envelope::decode(envelope_bytes.as_ref())
        .map_err(|e| ProcessError::bad(format!("envelope does not decode: {e}")))?;
    let parsed = parse(envelope)?;
    process_normal(&parsed.envelope, &parsed.channel_header.channel_id, bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use korder_channelconfig::genesis::{ChannelProfile, EnvelopeStamp, genesis_envelope};
    use korder_proto::common::{Header, HeaderType, Status};

    fn bundle(max_bytes: u32) -> Bundle {
        let mut p = ChannelProfile::sample("solo");
        p.batch_size.absolute_max_bytes = max_bytes;
        p.batch_size.preferred_max_bytes = max_bytes;
        let env = genesis_envelope(
            "ch",
            p.channel_group(),
            &EnvelopeStamp {
                timestamp_secs: 0,
                nonce: [0; 24],
            },
        );
        Bundle::from_config_envelope(&env).unwrap()
    }

    fn envelope(channel: &str, data_len: usize) -> Envelope {
        let ch = ChannelHeader {
            r#type: HeaderType::EndorserTransaction as i32,
            channel_id: channel.into(),
            ..Default::default()
        };
        let payload = Payload {
            header: Some(Header {
                channel_header: ch.encode_to_vec().into(),
                signature_header: Bytes::new(),
            }),
            data: vec![0u8; data_len].into(),
        };
        Envelope {
            payload: payload.encode_to_vec().into(),
            signature: Bytes::from_static(b"sig"),
        }
    }

    /// An empty payload cannot name a channel: BAD_REQUEST "header not set".
    #[test]
    fn empty_payload_has_no_header() {
        let err = parse(Envelope::default()).unwrap_err();
        assert_eq!(err.status(), Status::BadRequest);
        assert_eq!(
            err.to_string(),
            "could not determine channel ID: header not set"
        );
    }

    /// Garbage payload bytes are a BAD_REQUEST naming the decode failure.
    #[test]
    fn garbage_payload_is_bad_request() {
        let err = parse(Envelope {
            payload: Bytes::from_static(b"\xff\xff"),
            signature: Bytes::new(),
        })
        .unwrap_err();
        assert_eq!(err.status(), Status::BadRequest);
        assert!(
            err.to_string()
                .starts_with("could not determine channel ID")
        );
    }

    /// The size filter counts payload plus signature and refuses one byte over the limit.
    #[test]
    fn size_filter_boundary() {
        let env = envelope("ch", 100);
        let size = message_size(&env) as u32;
        assert!(process_normal(&env, "ch", &bundle(size)).is_ok());
        let err = process_normal(&env, "ch", &bundle(size - 1)).unwrap_err();
        assert_eq!(err.status(), Status::BadRequest);
        assert_eq!(
            err.to_string(),
            format!(
                "message payload is {size} bytes and exceeds maximum allowed {} bytes",
                size - 1
            )
        );
    }

    /// The routing parse yields the header type's class.
    #[test]
    fn classification() {
        let parsed = parse(envelope("ch", 1)).unwrap();
        assert_eq!(parsed.class(), MsgClass::Normal);
        assert_eq!(parsed.channel_header.channel_id, "ch");
    }
}
