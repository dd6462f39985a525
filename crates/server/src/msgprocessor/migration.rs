//! Maintenance mode and consensus-type migration: the transitions a config update
//! may make to `/Channel/Orderer/ConsensusType`.

use korder_channelconfig::Bundle;
use korder_channelconfig::bundle::{CHANNEL_GROUP, ORDERER_GROUP};
use korder_proto::Message;
use korder_proto::common::{
    ChannelHeader, ConfigEnvelope, ConfigGroup, ConfigUpdate, ConfigUpdateEnvelope, Envelope,
    HeaderType, Payload,
};
use korder_proto::etcdraft::ConfigMetadata as EtcdraftConfigMetadata;
use korder_proto::orderer::{ConsensusType, consensus_type};

use crate::status::ProcessError;

/// Consensus types a channel may switch to while in maintenance mode.
pub const MIGRATION_TARGETS: &[&str] = &["etcdraft", "solo", "kafka"];

/// Key of the consensus type value in `/Channel/Orderer`.
const CONSENSUS_TYPE_KEY: &str = "ConsensusType";

/// The maintenance-mode transition rules, applied to the config an orderer-built
/// CONFIG envelope carries (`config`, already parsed into `next`) against the
/// channel's `current` config.
///
/// Without the orderer capability for consensus-type migration the state must stay
/// NORMAL and the type cannot change. With it, a state change must be the only change
/// of the update (the `ConsensusType` value, with type and metadata unchanged), and
/// the type may change only while the current and the next state are both
/// MAINTENANCE, to one of [`MIGRATION_TARGETS`]; an `etcdraft` target must carry
/// metadata that decodes as etcdraft `ConfigMetadata`.
pub fn maintenance_filter(
    current: &Bundle,
    config: &ConfigEnvelope,
    next: &Bundle,
) -> Result<(), ProcessError> {
    inspect_transition(current, config, next)
        .map_err(|e| ProcessError::bad(format!("config transaction inspection failed: {e}")))
}

fn inspect_transition(
    current: &Bundle,
    config: &ConfigEnvelope,
    next: &Bundle,
) -> Result<(), String> {
    let last_update = config
        .last_update
        .as_ref()
        .ok_or("updated config does not include a config update")?;
    let (cur_type, next_type) = (
        &current.orderer.consensus_type,
        &next.orderer.consensus_type,
    );
    let (cur_state, next_state) = (consensus_state(current), consensus_state(next));
    if !current.orderer.consensus_type_migration() {
        if next_state != consensus_type::State::Normal as i32 {
            return Err(format!(
                "next config attempted to change ConsensusType.State to {}, but capability is disabled",
                state_name(next_state)
            ));
        }
        if cur_type != next_type {
            return Err(format!(
                "next config attempted to change ConsensusType.Type from {cur_type} to {next_type}, but capability is disabled"
            ));
        }
        return Ok(());
    }
    // Entering or leaving maintenance mode must be the update's only change.
    if cur_state != next_state {
        consensus_type_change_only(last_update)?;
        if cur_type != next_type {
            return Err(format!(
                "attempted to change ConsensusType.Type from {cur_type} to {next_type}, but ConsensusType.State is changing from {} to {}",
                state_name(cur_state),
                state_name(next_state)
            ));
        }
        if current.orderer.consensus_metadata != next.orderer.consensus_metadata {
            return Err(format!(
                "attempted to change ConsensusType.Metadata, but ConsensusType.State is changing from {} to {}",
                state_name(cur_state),
                state_name(next_state)
            ));
        }
    }
    if cur_type != next_type {
        let normal = consensus_type::State::Normal as i32;
        if cur_state == normal {
            return Err(format!(
                "attempted to change consensus type from {cur_type} to {next_type}, but current config ConsensusType.State is not in maintenance mode"
            ));
        }
        if next_state == normal {
            return Err(format!(
                "attempted to change consensus type from {cur_type} to {next_type}, but next config ConsensusType.State is not in maintenance mode"
            ));
        }
        if !MIGRATION_TARGETS.contains(&next_type.as_str()) {
            return Err(format!(
                "attempted to change consensus type from {cur_type} to {next_type}, transition not supported"
            ));
        }
        if next_type == "etcdraft" {
            EtcdraftConfigMetadata::decode(next.orderer.consensus_metadata.as_ref())
                .map_err(|e| format!("failed to unmarshal etcdraft metadata configuration: {e}"))?;
        }
        tracing::info!(
            channel = %current.channel_id,
            from = %cur_type,
            to = %next_type,
            "consensus-type migration: the consensus type is about to change"
        );
    }
    if cur_state != next_state {
        tracing::info!(
            channel = %current.channel_id,
            from = state_name(cur_state),
            to = state_name(next_state),
            "maintenance mode: the consensus state is about to change"
        );
    }
    Ok(())
}

/// Checks that a config update writes only `/Channel/Orderer/ConsensusType`.
fn consensus_type_change_only(last_update: &Envelope) -> Result<(), String> {
    let update = config_update_of(last_update)?;
    let empty = ConfigGroup::default();
    let write_set = update.write_set.as_ref().unwrap_or(&empty);
    if write_set.groups.is_empty() {
        return Err("config update contains no changes".into());
    }
    if !write_set.values.is_empty() {
        return Err(format!(
            "config update contains changes to values in group {CHANNEL_GROUP}"
        ));
    }
    if write_set.groups.len() > 1 {
        return Err("config update contains changes to more than one group".into());
    }
    let Some(orderer) = write_set.groups.get(ORDERER_GROUP) else {
        return Err(format!("update does not contain the {ORDERER_GROUP} group"));
    };
    if !orderer.groups.is_empty() {
        return Err(format!(
            "config update contains changes to groups within the {ORDERER_GROUP} group"
        ));
    }
    if !orderer.values.contains_key(CONSENSUS_TYPE_KEY) {
        return Err(format!(
            "config update does not contain the {CONSENSUS_TYPE_KEY} value"
        ));
    }
    if orderer.values.len() > 1 {
        return Err(format!(
            "config update contain more then just the {CONSENSUS_TYPE_KEY} value in the {ORDERER_GROUP} group"
        ));
    }
    Ok(())
}

/// The `ConfigUpdate` a client's CONFIG_UPDATE envelope carries.
fn config_update_of(envelope: &Envelope) -> Result<ConfigUpdate, String> {
    let ctx = "envelope to config update unmarshaling error";
    let payload = Payload::decode(envelope.payload.as_ref())
        .map_err(|e| format!("{ctx}: error unmarshaling payload: {e}"))?;
    let header = payload
        .header
        .as_ref()
        .ok_or_else(|| format!("{ctx}: envelope must have a Header"))?;
    let channel_header = ChannelHeader::decode(header.channel_header.as_ref())
        .map_err(|e| format!("{ctx}: invalid ChannelHeader: {e}"))?;
    if channel_header.r#type != HeaderType::ConfigUpdate as i32 {
        return Err(format!(
            "{ctx}: invalid type, expected {}, got {}",
            HeaderType::ConfigUpdate as i32,
            channel_header.r#type
        ));
    }
    let envelope = ConfigUpdateEnvelope::decode(payload.data.as_ref())
        .map_err(|e| format!("{ctx}: error unmarshaling ConfigUpdateEnvelope: {e}"))?;
    ConfigUpdate::decode(envelope.config_update.as_ref())
        .map_err(|e| format!("config update unmarshaling error: {e}"))
}

/// The raw `ConsensusType.state` of a config (0 = NORMAL); the bundle has checked
/// that the value decodes.
fn consensus_state(bundle: &Bundle) -> i32 {
    bundle
        .channel_group()
        .groups
        .get(ORDERER_GROUP)
        .and_then(|g| g.values.get(CONSENSUS_TYPE_KEY))
        .and_then(|v| ConsensusType::decode(v.value.as_ref()).ok())
        .map_or(consensus_type::State::Normal as i32, |c| c.state)
}

/// A consensus state as Fabric prints it: the enum name, or the number if unknown.
fn state_name(state: i32) -> String {
    consensus_type::State::try_from(state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| state.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use korder_channelconfig::genesis::ChannelProfile;
    use korder_proto::common::{Header, Status};

    // -- maintenance mode ---------------------------------------------------

    const NORMAL: consensus_type::State = consensus_type::State::Normal;
    const MAINTENANCE: consensus_type::State = consensus_type::State::Maintenance;

    /// A channel group on consensus `ty` in `state`, with orderer capability `cap`.
    fn tree(cap: &str, ty: &str, state: consensus_type::State, metadata: &[u8]) -> ConfigGroup {
        let mut p = ChannelProfile::sample(ty);
        p.orderer_capabilities = [cap.to_string()].into();
        let mut root = p.channel_group();
        let orderer = root.groups.get_mut(ORDERER_GROUP).unwrap();
        let value = orderer.values.get_mut(CONSENSUS_TYPE_KEY).unwrap();
        value.value = ConsensusType {
            r#type: ty.into(),
            metadata: Bytes::copy_from_slice(metadata),
            state: state as i32,
        }
        .encode_to_vec()
        .into();
        root
    }

    fn with_batch_count(mut root: ConfigGroup, n: u32) -> ConfigGroup {
        let orderer = root.groups.get_mut(ORDERER_GROUP).unwrap();
        let value = orderer.values.get_mut("BatchSize").unwrap();
        let mut size = korder_proto::orderer::BatchSize::decode(value.value.as_ref()).unwrap();
        size.max_message_count = n;
        value.value = size.encode_to_vec().into();
        root
    }

    fn bundle_of(root: ConfigGroup, sequence: u64) -> Bundle {
        let config = korder_proto::common::Config {
            sequence,
            channel_group: Some(root),
        };
        Bundle::new("ch", config).unwrap()
    }

    /// A write set naming `orderer_values` in the Orderer group (the filter
    /// inspects only which elements an update writes).
    fn write_set(orderer_values: &[&str]) -> ConfigGroup {
        let mut orderer = ConfigGroup::default();
        for key in orderer_values {
            orderer.values.insert((*key).into(), Default::default());
        }
        let mut root = ConfigGroup::default();
        root.groups.insert(ORDERER_GROUP.into(), orderer);
        root
    }

    fn last_update(write_set: ConfigGroup) -> Envelope {
        let update = ConfigUpdate {
            channel_id: "ch".into(),
            read_set: Some(ConfigGroup::default()),
            write_set: Some(write_set),
            isolated_data: Default::default(),
        };
        let cue = ConfigUpdateEnvelope {
            config_update: update.encode_to_vec().into(),
            signatures: Vec::new(),
        };
        let ch = ChannelHeader {
            r#type: HeaderType::ConfigUpdate as i32,
            channel_id: "ch".into(),
            ..Default::default()
        };
        let payload = Payload {
            header: Some(Header {
                channel_header: ch.encode_to_vec().into(),
                signature_header: Bytes::new(),
            }),
            data: cue.encode_to_vec().into(),
        };
        Envelope {
            payload: payload.encode_to_vec().into(),
            signature: Bytes::new(),
        }
    }

    /// Runs the maintenance filter for `current` → `next` with an update writing `ws`.
    fn transition(current: ConfigGroup, next: ConfigGroup, ws: ConfigGroup) -> Result<(), String> {
        let current = bundle_of(current, 1);
        let next_config = korder_proto::common::Config {
            sequence: 2,
            channel_group: Some(next.clone()),
        };
        let next = bundle_of(next, 2);
        let envelope = ConfigEnvelope {
            config: Some(next_config),
            last_update: Some(last_update(ws)),
        };
        maintenance_filter(&current, &envelope, &next).map_err(|e| {
            assert_eq!(e.status(), Status::BadRequest, "{e}");
            e.to_string()
        })
    }

    fn raft_metadata() -> Vec<u8> {
        EtcdraftConfigMetadata {
            consenters: vec![korder_proto::etcdraft::Consenter {
                host: "orderer0".into(),
                port: 7050,
                ..Default::default()
            }],
            options: None,
        }
        .encode_to_vec()
    }

    const PREFIX: &str = "config transaction inspection failed: ";

    /// One transition: name, current tree, next tree, update write set, expected outcome.
    type Case = (
        &'static str,
        ConfigGroup,
        ConfigGroup,
        ConfigGroup,
        Result<(), String>,
    );

    /// Scenario 84 with the capability: every allowed and forbidden transition, with
    /// Fabric's error texts.
    #[test]
    fn maintenance_transitions_with_capability() {
        let cap = "V1_4_2";
        let raft = raft_metadata();
        let kafka_normal = || tree(cap, "kafka", NORMAL, b"");
        let kafka_maint = || tree(cap, "kafka", MAINTENANCE, b"");
        let ct = || write_set(&[CONSENSUS_TYPE_KEY]);
        let cases: Vec<Case> = vec![
            ("enter maintenance alone", kafka_normal(), kafka_maint(), ct(), Ok(())),
            ("leave maintenance alone", kafka_maint(), kafka_normal(), ct(), Ok(())),
            (
                "state and type together",
                kafka_normal(),
                tree(cap, "etcdraft", MAINTENANCE, &raft),
                ct(),
                Err("attempted to change ConsensusType.Type from kafka to etcdraft, but ConsensusType.State is changing from STATE_NORMAL to STATE_MAINTENANCE".into()),
            ),
            (
                "state and metadata together",
                kafka_normal(),
                tree(cap, "kafka", MAINTENANCE, b"x"),
                ct(),
                Err("attempted to change ConsensusType.Metadata, but ConsensusType.State is changing from STATE_NORMAL to STATE_MAINTENANCE".into()),
            ),
            (
                "state and BatchSize together",
                kafka_normal(),
                with_batch_count(kafka_maint(), 7),
                write_set(&[CONSENSUS_TYPE_KEY, "BatchSize"]),
                Err("config update contain more then just the ConsensusType value in the Orderer group".into()),
            ),
            (
                "state and another Orderer value",
                kafka_normal(),
                kafka_maint(),
                write_set(&[CONSENSUS_TYPE_KEY, "BatchTimeout"]),
                Err("config update contain more then just the ConsensusType value in the Orderer group".into()),
            ),
            (
                "state change without the ConsensusType value",
                kafka_normal(),
                kafka_maint(),
                write_set(&["BatchTimeout"]),
                Err("config update does not contain the ConsensusType value".into()),
            ),
            (
                "state and a Channel value",
                kafka_normal(),
                kafka_maint(),
                {
                    let mut ws = ct();
                    ws.values.insert("OrdererAddresses".into(), Default::default());
                    ws
                },
                Err("config update contains changes to values in group Channel".into()),
            ),
            (
                "state and a sub-group of Orderer",
                kafka_normal(),
                kafka_maint(),
                {
                    let mut ws = ct();
                    let orderer = ws.groups.get_mut(ORDERER_GROUP).unwrap();
                    orderer.groups.insert("OrdererOrg".into(), Default::default());
                    ws
                },
                Err("config update contains changes to groups within the Orderer group".into()),
            ),
            (
                "state and another group",
                kafka_normal(),
                kafka_maint(),
                {
                    let mut ws = ct();
                    ws.groups.insert("Application".into(), Default::default());
                    ws
                },
                Err("config update contains changes to more than one group".into()),
            ),
            (
                "state change with an empty write set",
                kafka_normal(),
                kafka_maint(),
                ConfigGroup::default(),
                Err("config update contains no changes".into()),
            ),
            (
                "type change outside maintenance",
                kafka_normal(),
                tree(cap, "etcdraft", NORMAL, &raft),
                ct(),
                Err("attempted to change consensus type from kafka to etcdraft, but current config ConsensusType.State is not in maintenance mode".into()),
            ),
            (
                "type change to an unsupported type",
                kafka_maint(),
                tree(cap, "bft", MAINTENANCE, b""),
                ct(),
                Err("attempted to change consensus type from kafka to bft, transition not supported".into()),
            ),
            (
                "type change to etcdraft in maintenance",
                kafka_maint(),
                tree(cap, "etcdraft", MAINTENANCE, &raft),
                ct(),
                Ok(()),
            ),
            (
                "type change to solo in maintenance",
                kafka_maint(),
                tree(cap, "solo", MAINTENANCE, b""),
                ct(),
                Ok(()),
            ),
            (
                "type change and other values in maintenance",
                kafka_maint(),
                with_batch_count(tree(cap, "etcdraft", MAINTENANCE, &raft), 7),
                write_set(&[CONSENSUS_TYPE_KEY, "BatchSize"]),
                Ok(()),
            ),
            (
                "other values alone in maintenance",
                kafka_maint(),
                with_batch_count(kafka_maint(), 7),
                write_set(&["BatchSize"]),
                Ok(()),
            ),
            (
                "other values alone outside maintenance",
                kafka_normal(),
                with_batch_count(kafka_normal(), 7),
                write_set(&["BatchSize"]),
                Ok(()),
            ),
        ];
        for (name, current, next, ws, expected) in cases {
            let expected = expected.map_err(|e| format!("{PREFIX}{e}"));
            assert_eq!(transition(current, next, ws), expected, "{name}");
        }
    }

    /// A switch to etcdraft whose metadata does not decode as etcdraft ConfigMetadata is refused.
    #[test]
    fn etcdraft_target_needs_decodable_metadata() {
        let cap = "V1_4_2";
        let err = transition(
            tree(cap, "kafka", MAINTENANCE, b""),
            tree(cap, "etcdraft", MAINTENANCE, b"\xff\xff\xff"),
            write_set(&[CONSENSUS_TYPE_KEY]),
        )
        .unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{PREFIX}failed to unmarshal etcdraft metadata configuration: "
            )),
            "{err}"
        );
    }

    /// Without the orderer capability neither maintenance mode nor a type change is allowed.
    #[test]
    fn maintenance_transitions_without_capability() {
        let cap = "V1_1";
        let ct = || write_set(&[CONSENSUS_TYPE_KEY]);
        assert_eq!(
            transition(
                tree(cap, "kafka", NORMAL, b""),
                tree(cap, "kafka", MAINTENANCE, b""),
                ct()
            ),
            Err(format!(
                "{PREFIX}next config attempted to change ConsensusType.State to STATE_MAINTENANCE, but capability is disabled"
            ))
        );
        assert_eq!(
            transition(
                tree(cap, "kafka", NORMAL, b""),
                tree(cap, "solo", NORMAL, b""),
                ct()
            ),
            Err(format!(
                "{PREFIX}next config attempted to change ConsensusType.Type from kafka to solo, but capability is disabled"
            ))
        );
        let same = transition(
            tree(cap, "kafka", NORMAL, b""),
            with_batch_count(tree(cap, "kafka", NORMAL, b""), 3),
            write_set(&["BatchSize"]),
        );
        assert_eq!(same, Ok(()));
    }

    /// A config envelope without its client update is refused.
    #[test]
    fn maintenance_filter_needs_last_update() {
        let cap = "V1_4_2";
        let current = bundle_of(tree(cap, "kafka", NORMAL, b""), 1);
        let next = bundle_of(tree(cap, "kafka", MAINTENANCE, b""), 2);
        let envelope = ConfigEnvelope {
            config: Some(next.config.clone()),
            last_update: None,
        };
        let err = maintenance_filter(&current, &envelope, &next).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{PREFIX}updated config does not include a config update")
        );
    }
}
