//! The decode that routes a message: envelope → payload → channel header, once per
//! envelope, and the message's class.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgprocessor::testing::envelope;
    use bytes::Bytes;
    use korder_proto::common::Status;

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

    /// The routing parse yields the header type's class.
    #[test]
    fn classification() {
        let parsed = parse(envelope("ch", 1)).unwrap();
        assert_eq!(parsed.class(), MsgClass::Normal);
        assert_eq!(parsed.channel_header.channel_id, "ch");
    }
}
