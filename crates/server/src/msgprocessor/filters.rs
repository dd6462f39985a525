//! The standard filters every message passes, and the normal-message path.

use std::time::SystemTime;

use korder_channelconfig::Bundle;
use korder_channelconfig::policies::{CHANNEL_WRITERS, ORDERER_WRITERS, SignedData};
use korder_msp::Identity;
use korder_proto::common::Envelope;
use korder_types::ids::ConfigSeq;

use crate::status::ProcessError;

/// Settings of the filters from the node's configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct FilterOptions {
    /// `General.Authentication.NoExpirationChecks`.
    pub no_expiration_checks: bool,
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
) -> Result<ConfigSeq, ProcessError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgprocessor::testing::{bundle, envelope};
    use korder_proto::common::Status;

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
}
