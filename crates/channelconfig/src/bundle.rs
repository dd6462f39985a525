//! The config tree of a channel decoded into the values the orderer acts on.
//!
//! Values are decoded by key name into fixed message types, as Fabric does: an
//! unknown key inside a known group is an error, and a missing key decodes as an
//! empty message which then fails validation (a zero `BatchSize`, say).

use std::collections::BTreeSet;
use std::sync::Arc;
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

use crate::policies::{MspManager, PolicyError, PolicyManager, SignedData};
use korder_msp::MspVersion;
use korder_types::ids::ConfigSeq;

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
    /// The channel id breaks the naming rule (`[a-z][a-z0-9.-]{0,248}`).
    #[error("initializing configtx manager failed: bad channel ID: {0}")]
    BadChannelId(String),
    /// An organisation's MSP cannot be set up.
    #[error("{0}")]
    Msp(String),
    /// A policy cannot be compiled.
    #[error("{0}")]
    Policy(String),
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
    /// The organisation's `Endpoints` value (orderer organisations, channel
    /// capability V1_4_2 and later); empty when it has none.
    pub endpoints: Vec<String>,
}

/// A channel's configuration, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub channel_id: String,
    pub sequence: ConfigSeq,
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
    /// MSPs and policies, built from `config` once per bundle.
    derived: Derived,
}

/// What a bundle builds from its config: the channel's MSPs and policy tree.
#[derive(Debug, Clone)]
struct Derived {
    msps: Arc<MspManager>,
    policies: Arc<PolicyManager>,
}

impl PartialEq for Derived {
    /// Always equal: both parts are a pure function of the config tree and the
    /// channel capabilities, which [`Bundle`]'s equality already compares.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Bundle {
    /// Decodes and validates a config tree.
    ///
    /// Besides the values, this sets up every organisation's MSP (orderer,
    /// application and consortium members) at the MSP version the channel
    /// capabilities select, and compiles every policy of the tree.
    pub fn new(channel_id: &str, config: Config) -> Result<Self, ConfigError> {
        validate_channel_id(channel_id).map_err(ConfigError::BadChannelId)?;
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
        let derived = derive(root, &channel_capabilities)?;
        Ok(Bundle {
            channel_id: channel_id.to_string(),
            sequence: ConfigSeq::new(config.sequence),
            config,
            orderer,
            channel_capabilities,
            application_capabilities,
            orderer_addresses,
            orderer_orgs,
            application_orgs,
            consortiums,
            consortium,
            derived,
        })
    }

    /// The root policy manager (`Channel`) of this config.
    pub fn policies(&self) -> &PolicyManager {
        &self.derived.policies
    }

    /// The channel's MSPs, keyed by MSP id.
    pub fn msp_manager(&self) -> &MspManager {
        &self.derived.msps
    }

    /// Evaluates a policy by name (`/Channel/Writers`, `Orderer/BlockValidation`, ...)
    /// against a signature set; unknown names fail with `No such policy`.
    pub fn evaluate(&self, path: &str, signed: &[SignedData]) -> Result<(), PolicyError> {
        self.derived.policies.evaluate(path, signed)
    }

    /// The MSP version this channel's capabilities select.
    pub fn msp_version(&self) -> MspVersion {
        MspVersion::from_channel_capabilities(self.channel_capabilities.iter().map(String::as_str))
    }

    /// The root group of the config tree.
    pub fn channel_group(&self) -> &ConfigGroup {
        // Bundle::new refuses a config without a channel group.
        self.config
            .channel_group
            .as_ref()
            .unwrap_or_else(|| unreachable!("bundle without a channel group"))
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

    /// The addresses of the channel's ordering service, where another node reads
    /// its blocks: every orderer organisation's `Endpoints` when at least one
    /// organisation has some (the global `OrdererAddresses` are then ignored), else
    /// the global `OrdererAddresses`. In config order, without duplicates.
    pub fn orderer_endpoints(&self) -> Vec<String> {
        let per_org = self.orderer_orgs.iter().flat_map(|o| &o.endpoints);
        let chosen: Vec<&String> = if self.orderer_orgs.iter().any(|o| !o.endpoints.is_empty()) {
            per_org.collect()
        } else {
            self.orderer_addresses.iter().collect()
        };
        let mut out: Vec<String> = Vec::with_capacity(chosen.len());
        for address in chosen {
            if !out.contains(address) {
                out.push(address.clone());
            }
        }
        out
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

/// Longest channel id or config key.
pub const NAME_LEN_MAX: usize = 249;

/// Checks a channel id: 1–249 characters, `[a-z]` first, then `[a-z0-9.-]`.
pub fn validate_channel_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("channel ID illegal, cannot be empty".into());
    }
    if id.len() > NAME_LEN_MAX {
        return Err(format!(
            "channel ID illegal, cannot be longer than {NAME_LEN_MAX}"
        ));
    }
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if !first_ok || !rest_ok {
        return Err(format!("channel ID '{id}' contains illegal characters"));
    }
    Ok(())
}

fn derive(
    root: &ConfigGroup,
    channel_capabilities: &BTreeSet<String>,
) -> Result<Derived, ConfigError> {
    let version =
        MspVersion::from_channel_capabilities(channel_capabilities.iter().map(String::as_str));
    let mut configs = Vec::new();
    let mut collect = |path: String, org: &ConfigGroup| -> Result<(), ConfigError> {
        let raw = org
            .values
            .get("MSP")
            .map(|v| v.value.clone())
            .unwrap_or_default();
        let cfg: MspConfig = decode(&format!("{path}/MSP"), &raw)?;
        configs.push((path, cfg));
        Ok(())
    };
    for section in [ORDERER_GROUP, APPLICATION_GROUP] {
        if let Some(g) = root.groups.get(section) {
            for (name, org) in &g.groups {
                collect(format!("/Channel/{section}/{name}"), org)?;
            }
        }
    }
    if let Some(cs) = root.groups.get(CONSORTIUMS_GROUP) {
        for (cname, c) in &cs.groups {
            for (name, org) in &c.groups {
                collect(format!("/Channel/{CONSORTIUMS_GROUP}/{cname}/{name}"), org)?;
            }
        }
    }
    let msps = MspManager::new(configs.iter().map(|(p, c)| (p.clone(), c)), version)
        .map_err(|e| ConfigError::Msp(e.to_string()))?;
    let msps = Arc::new(msps);
    let policies = PolicyManager::new(CHANNEL_GROUP, root, &msps)
        .map_err(|e| ConfigError::Policy(e.to_string()))?;
    Ok(Derived {
        msps,
        policies: Arc::new(policies),
    })
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
                let d = korder_types::duration::parse(&v.timeout).map_err(|e| {
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
        let mut endpoints = Vec::new();
        for (key, value) in &org.values {
            let vpath = format!("{path}/{name}/{key}");
            match key.as_str() {
                "MSP" => msp = Some(decode::<MspConfig>(&vpath, &value.value)?),
                "Endpoints" if extra_values.contains(&"Endpoints") => {
                    endpoints = decode::<OrdererAddresses>(&vpath, &value.value)?.addresses;
                }
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
            endpoints,
        });
    }
    Ok(out)
}
