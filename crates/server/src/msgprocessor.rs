//! Message classification and the filters every message passes before it is
//! ordered (and again when the chain re-validates a stale one), and the
//! config-update paths that turn a client's CONFIG_UPDATE into an orderer-signed
//! CONFIG (existing channel) or ORDERER_TRANSACTION (channel creation).
//!
//! The standard rule set, in Fabric's order: empty payload, size
//! (`len(payload) + len(signature)` against `AbsoluteMaxBytes`), expiration of the
//! signer's certificate (with the orderer capability V1_1+), and the signature
//! against `/Channel/Writers` (`/Channel/Orderer/Writers` in maintenance mode).

use std::time::SystemTime;

use bytes::Bytes;
use korder_channelconfig::configtx::{
    check_channel_creation, check_channel_limit, new_channel_config, propose_config_update,
};
use korder_channelconfig::envelope::{EnvelopeSigner, config_tx, orderer_tx, unwrap_orderer_tx};
use korder_channelconfig::policies::{CHANNEL_WRITERS, ORDERER_WRITERS, SignedData};
use korder_channelconfig::{Bundle, config_from_envelope};
use korder_consensus::support::{MsgClass, classify_header_type};
use korder_msp::Identity;
use korder_proto::Message;
use korder_proto::common::{ChannelHeader, Envelope, HeaderType, Payload};

use crate::signer::{SignError, Signer};
use crate::status::ProcessError;

/// Settings of the filters from the node's configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct FilterOptions {
    /// `General.Authentication.NoExpirationChecks`.
    pub no_expiration_checks: bool,
}

impl EnvelopeSigner for dyn Signer {
    type Error = SignError;

    fn new_signature_header(&self) -> Result<Bytes, SignError> {
        Signer::new_signature_header(self)
    }

    fn sign(&self, message: &[u8]) -> Result<Bytes, SignError> {
        Signer::sign(self, message)
    }
}

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

/// The whole standard rule set: empty, size, expiration, signature.
pub fn standard_filters(
    envelope: &Envelope,
    bundle: &Bundle,
    opts: &FilterOptions,
) -> Result<(), ProcessError> {
    basic_filters(envelope, bundle)?;
    let signed = SignedData::from_envelope(envelope)
        .map_err(|e| ProcessError::bad(format!("could not convert message to signedData: {e}")))?;
    if !opts.no_expiration_checks && bundle.orderer.expiration_check() {
        for sd in &signed {
            // An identity that does not parse as an X.509 certificate gives no
            // decision here; the signature filter refuses it.
            if let Ok(id) = Identity::from_serialized(&sd.identity)
                && SystemTime::now() >= id.expires_at()
            {
                return Err(ProcessError::bad("identity expired"));
            }
        }
    }
    let policy = if bundle.orderer.maintenance {
        ORDERER_WRITERS
    } else {
        CHANNEL_WRITERS
    };
    if bundle.policies().get_policy(policy).is_none() {
        return Err(ProcessError::bad(format!("could not find policy {policy}")));
    }
    bundle
        .evaluate(policy, &signed)
        .map_err(|e| ProcessError::PermissionDenied(e.to_string()))
}

/// Validates a normal message for `bundle`'s channel; returns the config sequence it
/// was validated at (read before filtering, as Fabric does).
pub fn process_normal(
    envelope: &Envelope,
    channel_id: &str,
    bundle: &Bundle,
    opts: &FilterOptions,
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
    standard_filters(envelope, bundle, opts)?;
    Ok(seq)
}

/// Re-validates a normal envelope taken from the log (the chain's resubmission path).
pub fn revalidate_normal(
    envelope_bytes: &Bytes,
    bundle: &Bundle,
    opts: &FilterOptions,
) -> Result<u64, ProcessError> {
    let envelope = Envelope::decode(envelope_bytes.as_ref())
        .map_err(|e| ProcessError::bad(format!("envelope does not decode: {e}")))?;
    let parsed = parse(envelope)?;
    process_normal(
        &parsed.envelope,
        &parsed.channel_header.channel_id,
        bundle,
        opts,
    )
}

/// Without the consensus-type migration capability a config may neither enter
/// maintenance mode nor change the consensus type.
fn maintenance_filter(current: &Bundle, next: &Bundle) -> Result<(), ProcessError> {
    if current.orderer.consensus_type_migration() {
        return Ok(());
    }
    if next.orderer.maintenance {
        return Err(ProcessError::bad(
            "config transaction has unknown consensus state: STATE_MAINTENANCE",
        ));
    }
    if next.orderer.consensus_type != current.orderer.consensus_type {
        return Err(ProcessError::bad(format!(
            "attempted to change the consensus type from {} to {} but migration is not supported",
            current.orderer.consensus_type, next.orderer.consensus_type
        )));
    }
    Ok(())
}

fn sign_failed(e: SignError) -> ProcessError {
    ProcessError::bad(format!("the orderer could not sign: {e}"))
}

/// A CONFIG_UPDATE for an existing channel: checks the client envelope, proposes
/// the update against `bundle`, and returns the orderer-signed CONFIG envelope with
/// the sequence it was built at.
pub fn process_config_update(
    envelope: &Envelope,
    bundle: &Bundle,
    signer: &dyn Signer,
    opts: &FilterOptions,
) -> Result<(Envelope, u64), ProcessError> {
    let seq = bundle.sequence;
    let id = &bundle.channel_id;
    standard_filters(envelope, bundle, opts)
        .map_err(|e| e.context("config update for existing channel did not pass initial checks"))?;
    let config = propose_config_update(bundle, envelope).map_err(|e| {
        ProcessError::bad(format!(
            "error applying config update to existing channel '{id}': {e}"
        ))
    })?;
    let next = config
        .config
        .clone()
        .ok_or_else(|| ProcessError::bad("the proposed config is empty"))
        .and_then(|c| {
            Bundle::new(id, c).map_err(|e| {
                ProcessError::bad(format!(
                    "error applying config update to existing channel '{id}': {e}"
                ))
            })
        })?;
    let tx = config_tx(id, &config, SystemTime::now(), signer).map_err(sign_failed)?;
    standard_filters(&tx, bundle, opts)
        .map_err(|e| e.context("config update for existing channel did not pass final checks"))?;
    maintenance_filter(bundle, &next).map_err(|e| {
        e.context("config update for existing channel did not pass maintenance checks")
    })?;
    Ok((tx, seq))
}

/// A CONFIG_UPDATE for a channel that does not exist, on the system channel:
/// builds the new channel's config from the consortium's template, wraps it in an
/// ORDERER_TRANSACTION signed by this node and runs the system channel's filters.
/// `channels` is the number of channels, the system channel included.
pub fn process_channel_creation(
    envelope: &Envelope,
    system: &Bundle,
    channels: u64,
    signer: &dyn Signer,
    opts: &FilterOptions,
) -> Result<(Envelope, u64), ProcessError> {
    let seq = system.sequence;
    let config =
        new_channel_config(system, envelope).map_err(|e| ProcessError::bad(e.to_string()))?;
    let new_id = new_channel_id(&config)?;
    let inner = config_tx(&new_id, &config, SystemTime::now(), signer).map_err(sign_failed)?;
    let tx =
        orderer_tx(&system.channel_id, &inner, SystemTime::now(), signer).map_err(sign_failed)?;
    system_channel_filters(&tx, system, channels, opts)?;
    Ok((tx, seq))
}

/// The channel a creation config is for: the channel id of its last update.
fn new_channel_id(config: &korder_proto::common::ConfigEnvelope) -> Result<String, ProcessError> {
    let last = config
        .last_update
        .as_ref()
        .ok_or_else(|| ProcessError::bad("the new channel config has no last update"))?;
    Ok(parse(last.clone())?.channel_header.channel_id)
}

/// The system channel's rule set for an ORDERER_TRANSACTION: the standard filters,
/// then the channel limit, maintenance mode and the re-derivation of the new
/// channel's config.
pub fn system_channel_filters(
    tx: &Envelope,
    system: &Bundle,
    channels: u64,
    opts: &FilterOptions,
) -> Result<(), ProcessError> {
    standard_filters(tx, system, opts)?;
    check_channel_limit(system, channels).map_err(|e| ProcessError::bad(e.to_string()))?;
    if system.orderer.maintenance {
        return Err(ProcessError::Maintenance(
            "channel creation is not permitted".into(),
        ));
    }
    let (_, _, config) = unwrap_orderer_tx(tx).map_err(|e| ProcessError::bad(e.to_string()))?;
    check_channel_creation(system, &config).map_err(|e| ProcessError::bad(e.to_string()))?;
    Ok(())
}

/// The client CONFIG_UPDATE behind an orderer-built config envelope (CONFIG, or the
/// CONFIG inside an ORDERER_TRANSACTION), for re-validation after a config change.
pub fn last_update_of(envelope_bytes: &Bytes) -> Result<Envelope, ProcessError> {
    let envelope = Envelope::decode(envelope_bytes.as_ref())
        .map_err(|e| ProcessError::bad(format!("config message does not decode: {e}")))?;
    let parsed = parse(envelope)?;
    let config_bytes: Bytes =
        if parsed.channel_header.r#type == HeaderType::OrdererTransaction as i32 {
            let (inner, _, _) = unwrap_orderer_tx(&parsed.envelope)
                .map_err(|e| ProcessError::bad(e.to_string()))?;
            inner.encode_to_vec().into()
        } else {
            envelope_bytes.clone()
        };
    let (_, config) =
        config_from_envelope(&config_bytes).map_err(|e| ProcessError::bad(e.to_string()))?;
    config
        .last_update
        .ok_or_else(|| ProcessError::bad("config message carries no last update"))
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
        assert!(basic_filters(&env, &bundle(size)).map(|_| 0).is_ok());
        let err = basic_filters(&env, &bundle(size - 1)).unwrap_err();
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
