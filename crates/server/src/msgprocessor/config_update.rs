//! The config-update paths: a client's CONFIG_UPDATE becomes an orderer-signed
//! CONFIG for its channel, or an ORDERER_TRANSACTION creating a channel on the
//! system channel; and the way back from an ordered config envelope to the client
//! update behind it (re-validation after a config change).

use std::time::SystemTime;

use bytes::Bytes;
use korder_channelconfig::configtx::{
    check_channel_creation, check_channel_limit, new_channel_config, propose_config_update,
};
use korder_channelconfig::envelope::{config_tx, orderer_tx, unwrap_orderer_tx};
use korder_channelconfig::{Bundle, config_from_envelope};
use korder_msp::signer::{SignError, SigningIdentity};
use korder_proto::Message;
use korder_proto::common::{Envelope, HeaderType};
use korder_types::ids::ConfigSeq;

use super::filters::{FilterOptions, standard_filters};
use super::migration::maintenance_filter;
use super::parse::parse;
use crate::status::ProcessError;

fn sign_failed(e: SignError) -> ProcessError {
    ProcessError::bad(format!("the orderer could not sign: {e}"))
}

/// A CONFIG_UPDATE for an existing channel: checks the client envelope, proposes
/// the update against `bundle`, and returns the orderer-signed CONFIG envelope with
/// the sequence it was built at.
pub fn process_config_update(
    envelope: &Envelope,
    bundle: &Bundle,
    signer: &SigningIdentity,
    opts: &FilterOptions,
) -> Result<(Envelope, ConfigSeq), ProcessError> {
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
    maintenance_filter(bundle, &config, &next).map_err(|e| {
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
    signer: &SigningIdentity,
    opts: &FilterOptions,
) -> Result<(Envelope, ConfigSeq), ProcessError> {
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
