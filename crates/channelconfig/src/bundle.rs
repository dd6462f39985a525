//! The config tree of a channel decoded into the values the orderer acts on.
//!
//! Values are decoded by key name into fixed message types, as Fabric does: an
//! unknown key inside a known group is an error, and a missing key decodes as an
//! empty message which then fails validation (a zero `BatchSize`, say).

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::{
    BlockDataHashingStructure, Capabilities, Config, ConfigEnvelope, ConfigGroup, Consortium,
    Envelope, HashingAlgorithm, HeaderType, OrdererAddresses, Payload,
};
use korder_proto::msp::MspConfig;
use korder_proto::orderer::{
    BatchSize, BatchTimeout, ChannelRestrictions, ConsensusType, KafkaBrokers, consensus_type,
};

use crate::duration::parse_go_duration;

/// Name of the root group.
pub const CHANNEL_GROUP: &str = "Channel";
/// `/Channel/Orderer`.
pub const ORDERER_GROUP: &str = "Orderer";
/// `/Channel/Application`.
pub const APPLICATION_GROUP: &str = "Application";
/// `/Channel/Consortiums`: present only in the system channel.
pub const CONSORTIUMS_GROUP: &str = "Consortiums";

/// Orderer capabilities korder supports.
pub const SUPPORTED_ORDERER_CAPABILITIES: &[&str] = &["V1_1", "V1_4_2", "V2_0"];
/// Channel capabilities korder supports.
pub const SUPPORTED_CHANNEL_CAPABILITIES: &[&str] = &["V1_1", "V1_3", "V1_4_2", "V1_4_3", "V2_0"];

/// Why a config tree cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config block is malformed: {0}")]
    Malformed(String),
    #[error("cannot decode value {key}: {reason}")]
    BadValue { key: String, reason: String },
    #[error("Unexpected key {key} in group {group}")]
    UnexpectedKey { group: String, key: String },
    #[error("Disallowed channel group: {0}")]
    DisallowedGroup(String),
    #[error("config is missing the {0} group")]
    MissingGroup(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("capability {0} is required but not supported")]
    UnsupportedCapability(String),
}

/// The ordering values of `/Channel/Orderer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrdererValues {
    pub consensus_type: String,
    pub consensus_metadata: Bytes,
    pub maintenance: bool,
    pub batch_size: BatchSize,
    pub batch_timeout: Duration,
    pub kafka_brokers: Vec<String>,
    /// Maximum number of channels, 0 = unlimited.
    pub max_channels: u64,
    pub capabilities: BTreeSet<String>,
}

impl OrdererValues {
    /// Whether the orderer capabilities turn on Kafka re-validation and resubmission.
    pub fn resubmission(&self) -> bool {
        ["V1_1", "V1_4_2", "V2_0"]
            .iter()
            .any(|c| self.capabilities.contains(*c))
    }

    /// Whether the orderer capabilities turn on the Broadcast expiration check.
    pub fn expiration_check(&self) -> bool {
        self.resubmission()
    }

    /// Whether consensus-type migration (maintenance mode) is available.
    pub fn consensus_type_migration(&self) -> bool {
        ["V1_4_2", "V2_0"]
            .iter()
            .any(|c| self.capabilities.contains(*c))
    }
}

/// One organisation group: its MSP definition.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgValues {
    pub name: String,
    pub msp: Option<MspConfig>,
}

/// A channel's configuration, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub channel_id: String,
    pub sequence: u64,
    /// The config tree itself, kept for policy evaluation and config-update validation.
    pub config: Config,
    pub orderer: OrdererValues,
    pub channel_capabilities: BTreeSet<String>,
    pub application_capabilities: BTreeSet<String>,
    pub orderer_addresses: Vec<String>,
    /// Orderer organisations (`/Channel/Orderer/<Org>`).
    pub orderer_orgs: Vec<OrgValues>,
    /// Application organisations (`/Channel/Application/<Org>`), empty on the system channel.
    pub application_orgs: Vec<OrgValues>,
    /// Consortium names, present only on the system channel.
    pub consortiums: Option<Vec<String>>,
    /// The consortium an application channel was created under.
    pub consortium: Option<String>,
}

impl Bundle {
    /// Decodes and validates a config tree.
    pub fn new(channel_id: &str, config: Config) -> Result<Self, ConfigError> {
        let root = config
            .channel_group
            .as_ref()
            .ok_or(ConfigError::MissingGroup("Channel"))?;
        for name in root.groups.keys() {
            if ![ORDERER_GROUP, APPLICATION_GROUP, CONSORTIUMS_GROUP].contains(&name.as_str()) {
                return Err(ConfigError::DisallowedGroup(name.clone()));
            }
        }
        let mut channel_capabilities = BTreeSet::new();
        let mut orderer_addresses = Vec::new();
        let mut consortium = None;
        for (key, value) in &root.values {
            let path = format!("/Channel/{key}");
            match key.as_str() {
                "HashingAlgorithm" => {
                    let v: HashingAlgorithm = decode(&path, &value.value)?;
                    if v.name != "SHA256" && v.name != "SHA3_256" {
                        return Err(ConfigError::Invalid(format!(
                            "unknown hashing algorithm type: {}",
                            v.name
                        )));
                    }
                }
                "BlockDataHashingStructure" => {
                    let v: BlockDataHashingStructure = decode(&path, &value.value)?;
                    if v.width != u32::MAX {
                        return Err(ConfigError::Invalid(format!(
                            "BlockDataHashStructure width only supported at MaxUint32 in this version, got {}",
                            v.width
                        )));
                    }
                }
                "OrdererAddresses" => {
                    let v: OrdererAddresses = decode(&path, &value.value)?;
                    orderer_addresses = v.addresses;
                }
                "Consortium" => {
                    let v: Consortium = decode(&path, &value.value)?;
                    consortium = Some(v.name);
                }
                "Capabilities" => channel_capabilities = capabilities(&path, &value.value)?,
                _ => {
                    return Err(ConfigError::UnexpectedKey {
                        group: "Channel".into(),
                        key: key.clone(),
                    });
                }
            }
        }
        for cap in &channel_capabilities {
            if !SUPPORTED_CHANNEL_CAPABILITIES.contains(&cap.as_str()) {
                return Err(ConfigError::UnsupportedCapability(cap.clone()));
            }
        }
        if !root.values.contains_key("HashingAlgorithm") {
            return Err(ConfigError::Invalid(
                "unknown hashing algorithm type: ".into(),
            ));
        }
        let orderer_group = root
            .groups
            .get(ORDERER_GROUP)
            .ok_or(ConfigError::MissingGroup("Orderer"))?;
        let orderer = orderer_values(orderer_group)?;
        let orderer_orgs = orgs("/Channel/Orderer", orderer_group, &["Endpoints"])?;
        let (application_orgs, application_capabilities) = match root.groups.get(APPLICATION_GROUP)
        {
            Some(app) => {
                let mut caps = BTreeSet::new();
                for (key, value) in &app.values {
                    match key.as_str() {
                        "Capabilities" => {
                            caps = capabilities("/Channel/Application/Capabilities", &value.value)?
                        }
                        "ACLs" => {}
                        _ => {
                            return Err(ConfigError::UnexpectedKey {
                                group: "Application".into(),
                                key: key.clone(),
                            });
                        }
                    }
                }
                (orgs("/Channel/Application", app, &["AnchorPeers"])?, caps)
            }
            None => (Vec::new(), BTreeSet::new()),
        };
        let consortiums = root
            .groups
            .get(CONSORTIUMS_GROUP)
            .map(|g| g.groups.keys().cloned().collect());
        Ok(Bundle {
            channel_id: channel_id.to_string(),
            sequence: config.sequence,
            config,
            orderer,
            channel_capabilities,
            application_capabilities,
            orderer_addresses,
            orderer_orgs,
            application_orgs,
            consortiums,
            consortium,
        })
    }

    /// Decodes the config carried by a CONFIG envelope (the single envelope of a
    /// config block) and builds its bundle.
    pub fn from_config_envelope(envelope: &[u8]) -> Result<Self, ConfigError> {
        let (channel_id, cfg) = config_from_envelope(envelope)?;
        let config = cfg
            .config
            .ok_or_else(|| ConfigError::Malformed("config envelope has no config".into()))?;
        Bundle::new(&channel_id, config)
    }

    /// Whether this is the system channel (its config has a Consortiums group).
    pub fn is_system_channel(&self) -> bool {
        self.consortiums.is_some()
    }
}

/// Decodes a CONFIG envelope into its channel id and `ConfigEnvelope`.
pub fn config_from_envelope(envelope: &[u8]) -> Result<(String, ConfigEnvelope), ConfigError> {
    let env =
        Envelope::decode(envelope).map_err(|e| ConfigError::Malformed(format!("envelope: {e}")))?;
    let payload = Payload::decode(env.payload.as_ref())
        .map_err(|e| ConfigError::Malformed(format!("payload: {e}")))?;
    let header = payload
        .header
        .ok_or_else(|| ConfigError::Malformed("payload header not set".into()))?;
    let ch = korder_proto::common::ChannelHeader::decode(header.channel_header.as_ref())
        .map_err(|e| ConfigError::Malformed(format!("channel header: {e}")))?;
    if ch.r#type != HeaderType::Config as i32 {
        return Err(ConfigError::Malformed(format!(
            "envelope is of type {}, not CONFIG",
            ch.r#type
        )));
    }
    let cfg = ConfigEnvelope::decode(payload.data.as_ref())
        .map_err(|e| ConfigError::Malformed(format!("config envelope: {e}")))?;
    Ok((ch.channel_id, cfg))
}

fn decode<M: Message + Default>(path: &str, bytes: &[u8]) -> Result<M, ConfigError> {
    M::decode(bytes).map_err(|e| ConfigError::BadValue {
        key: path.to_string(),
        reason: e.to_string(),
    })
}

fn capabilities(path: &str, bytes: &[u8]) -> Result<BTreeSet<String>, ConfigError> {
    let caps: Capabilities = decode(path, bytes)?;
    Ok(caps.capabilities.into_keys().collect())
}

fn orderer_values(group: &ConfigGroup) -> Result<OrdererValues, ConfigError> {
    let mut consensus = ConsensusType::default();
    let mut batch_size = BatchSize::default();
    let mut batch_timeout = None;
    let mut kafka_brokers = Vec::new();
    let mut max_channels = 0;
    let mut caps = BTreeSet::new();
    for (key, value) in &group.values {
        let path = format!("/Channel/Orderer/{key}");
        match key.as_str() {
            "ConsensusType" => consensus = decode(&path, &value.value)?,
            "BatchSize" => batch_size = decode(&path, &value.value)?,
            "BatchTimeout" => {
                let v: BatchTimeout = decode(&path, &value.value)?;
                let d = parse_go_duration(&v.timeout).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "attempted to set the batch timeout to a invalid value: {e}"
                    ))
                })?;
                batch_timeout = Some(d);
            }
            "KafkaBrokers" => {
                let v: KafkaBrokers = decode(&path, &value.value)?;
                kafka_brokers = v.brokers;
            }
            "ChannelRestrictions" => {
                let v: ChannelRestrictions = decode(&path, &value.value)?;
                max_channels = v.max_count;
            }
            "Capabilities" => caps = capabilities(&path, &value.value)?,
            _ => {
                return Err(ConfigError::UnexpectedKey {
                    group: "Orderer".into(),
                    key: key.clone(),
                });
            }
        }
    }
    for cap in &caps {
        if !SUPPORTED_ORDERER_CAPABILITIES.contains(&cap.as_str()) {
            return Err(ConfigError::UnsupportedCapability(cap.clone()));
        }
    }
    if batch_size.max_message_count == 0 {
        return Err(ConfigError::Invalid(
            "Attempted to set the batch size max message count to an invalid value: 0".into(),
        ));
    }
    if batch_size.absolute_max_bytes == 0 {
        return Err(ConfigError::Invalid(
            "Attempted to set the batch size absolute max bytes to an invalid value: 0".into(),
        ));
    }
    if batch_size.preferred_max_bytes == 0 {
        return Err(ConfigError::Invalid(
            "Attempted to set the batch size preferred max bytes to an invalid value: 0".into(),
        ));
    }
    if batch_size.preferred_max_bytes > batch_size.absolute_max_bytes {
        return Err(ConfigError::Invalid(format!(
            "Attempted to set the batch size preferred max bytes ({}) greater than the absolute max bytes ({}).",
            batch_size.preferred_max_bytes, batch_size.absolute_max_bytes
        )));
    }
    let batch_timeout = match batch_timeout {
        Some(d) if !d.is_zero() => d,
        _ => {
            return Err(ConfigError::Invalid(
                "attempted to set the batch timeout to a non-positive value".into(),
            ));
        }
    };
    if consensus.r#type == "kafka" {
        for broker in &kafka_brokers {
            validate_broker(broker)?;
        }
    }
    Ok(OrdererValues {
        consensus_type: consensus.r#type,
        consensus_metadata: consensus.metadata,
        maintenance: consensus.state == consensus_type::State::Maintenance as i32,
        batch_size,
        batch_timeout,
        kafka_brokers,
        max_channels,
        capabilities: caps,
    })
}

fn validate_broker(broker: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::Invalid(format!("broker endpoint {broker:?} is not valid"));
    let (host, port) = broker.split_once(':').ok_or_else(bad)?;
    if port.contains(':') || port.parse::<u16>().is_err() || host.is_empty() {
        return Err(bad());
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
    let first = host
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let last = host
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !host.chars().all(ok_char) || !first || !last {
        return Err(bad());
    }
    Ok(())
}

fn orgs(
    path: &str,
    group: &ConfigGroup,
    extra_values: &[&str],
) -> Result<Vec<OrgValues>, ConfigError> {
    let mut out = Vec::new();
    for (name, org) in &group.groups {
        if !org.groups.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "organization {path}/{name} cannot have sub-groups"
            )));
        }
        let mut msp = None;
        for (key, value) in &org.values {
            let vpath = format!("{path}/{name}/{key}");
            match key.as_str() {
                "MSP" => msp = Some(decode::<MspConfig>(&vpath, &value.value)?),
                k if extra_values.contains(&k) => {}
                _ => {
                    return Err(ConfigError::UnexpectedKey {
                        group: format!("{path}/{name}"),
                        key: key.clone(),
                    });
                }
            }
        }
        out.push(OrgValues {
            name: name.clone(),
            msp,
        });
    }
    Ok(out)
}
