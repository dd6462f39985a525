//! Building channel config trees and genesis envelopes, as configtxgen does from a
//! profile: the same groups, values, policies and mod_policies, so the result is a
//! config any Fabric tool understands.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::{
    BlockDataHashingStructure, Capabilities, Capability, ChannelHeader, Config, ConfigEnvelope,
    ConfigGroup, ConfigPolicy, ConfigValue, Consortium, Envelope, HashingAlgorithm, Header,
    HeaderType, ImplicitMetaPolicy, MspPrincipal, MspRole, OrdererAddresses, Payload, Policy,
    SignatureHeader, SignaturePolicy, SignaturePolicyEnvelope, implicit_meta_policy, msp_principal,
    msp_role, policy, signature_policy,
};
use korder_proto::msp::{FabricMspConfig, MspConfig};
use korder_proto::orderer::{
    BatchSize, BatchTimeout, ChannelRestrictions, ConsensusType, KafkaBrokers,
};

use crate::bundle::{APPLICATION_GROUP, CONSORTIUMS_GROUP, ORDERER_GROUP};

const ADMINS: &str = "Admins";
const READERS: &str = "Readers";
const WRITERS: &str = "Writers";

/// An organisation as a profile names it.
#[derive(Debug, Clone)]
pub struct OrgProfile {
    /// Group name; configtxgen uses the org's `Name`, usually equal to the MSP id.
    pub name: String,
    pub msp: FabricMspConfig,
    /// Orderer endpoints of an orderer org (written only with channel capability V1_4_2+).
    pub endpoints: Vec<String>,
}

impl OrgProfile {
    fn msp_id(&self) -> &str {
        &self.msp.name
    }
}

/// What a channel's config is made from: the fields of a configtx.yaml profile.
#[derive(Debug, Clone)]
pub struct ChannelProfile {
    pub consensus_type: String,
    pub batch_timeout: Duration,
    pub batch_size: BatchSize,
    pub kafka_brokers: Vec<String>,
    pub max_channels: u64,
    pub orderer_addresses: Vec<String>,
    pub orderer_orgs: Vec<OrgProfile>,
    /// Consortiums (system channel only): name → member orgs.
    pub consortiums: BTreeMap<String, Vec<OrgProfile>>,
    /// Application section (application channels only).
    pub application_orgs: Option<Vec<OrgProfile>>,
    /// The consortium an application channel belongs to.
    pub consortium: Option<String>,
    pub channel_capabilities: BTreeSet<String>,
    pub orderer_capabilities: BTreeSet<String>,
    pub application_capabilities: BTreeSet<String>,
}

impl ChannelProfile {
    /// Sample values configtxgen ships with (BatchTimeout 2s, 500 messages,
    /// 10 MiB absolute, 2 MiB preferred) and the v1.4 capability levels.
    pub fn sample(consensus_type: &str) -> Self {
        ChannelProfile {
            consensus_type: consensus_type.to_string(),
            batch_timeout: Duration::from_secs(2),
            batch_size: BatchSize {
                max_message_count: 500,
                absolute_max_bytes: 10 * 1024 * 1024,
                preferred_max_bytes: 2 * 1024 * 1024,
            },
            kafka_brokers: Vec::new(),
            max_channels: 0,
            orderer_addresses: Vec::new(),
            orderer_orgs: Vec::new(),
            consortiums: BTreeMap::new(),
            application_orgs: None,
            consortium: None,
            channel_capabilities: ["V1_4_3".to_string()].into(),
            orderer_capabilities: ["V1_4_2".to_string()].into(),
            application_capabilities: ["V1_4_2".to_string()].into(),
        }
    }

    /// The `/Channel` group this profile describes.
    pub fn channel_group(&self) -> ConfigGroup {
        let mut root = group(ADMINS);
        root.values.insert(
            "HashingAlgorithm".into(),
            value(
                &HashingAlgorithm {
                    name: "SHA256".into(),
                },
                ADMINS,
            ),
        );
        root.values.insert(
            "BlockDataHashingStructure".into(),
            value(&BlockDataHashingStructure { width: u32::MAX }, ADMINS),
        );
        if !self.orderer_addresses.is_empty() {
            root.values.insert(
                "OrdererAddresses".into(),
                value(
                    &OrdererAddresses {
                        addresses: self.orderer_addresses.clone(),
                    },
                    "/Channel/Orderer/Admins",
                ),
            );
        }
        if let Some(name) = &self.consortium {
            root.values.insert(
                "Consortium".into(),
                value(&Consortium { name: name.clone() }, ADMINS),
            );
        }
        if !self.channel_capabilities.is_empty() {
            root.values.insert(
                "Capabilities".into(),
                capabilities_value(&self.channel_capabilities),
            );
        }
        add_implicit_meta_policies(&mut root);

        let mut orderer = group(ADMINS);
        orderer.values.insert(
            "ConsensusType".into(),
            value(
                &ConsensusType {
                    r#type: self.consensus_type.clone(),
                    ..Default::default()
                },
                ADMINS,
            ),
        );
        orderer
            .values
            .insert("BatchSize".into(), value(&self.batch_size, ADMINS));
        orderer.values.insert(
            "BatchTimeout".into(),
            value(
                &BatchTimeout {
                    timeout: korder_types::duration::format(self.batch_timeout),
                },
                ADMINS,
            ),
        );
        orderer.values.insert(
            "ChannelRestrictions".into(),
            value(
                &ChannelRestrictions {
                    max_count: self.max_channels,
                },
                ADMINS,
            ),
        );
        if self.consensus_type == "kafka" {
            orderer.values.insert(
                "KafkaBrokers".into(),
                value(
                    &KafkaBrokers {
                        brokers: self.kafka_brokers.clone(),
                    },
                    ADMINS,
                ),
            );
        }
        if !self.orderer_capabilities.is_empty() {
            orderer.values.insert(
                "Capabilities".into(),
                capabilities_value(&self.orderer_capabilities),
            );
        }
        add_implicit_meta_policies(&mut orderer);
        orderer.policies.insert(
            "BlockValidation".into(),
            config_policy(implicit_meta("ANY", WRITERS), ADMINS),
        );
        let endpoints = self
            .channel_capabilities
            .iter()
            .any(|c| ["V1_4_2", "V1_4_3", "V2_0"].contains(&c.as_str()));
        for org in &self.orderer_orgs {
            orderer
                .groups
                .insert(org.name.clone(), org_group(org, endpoints));
        }
        root.groups.insert(ORDERER_GROUP.into(), orderer);

        if let Some(app_orgs) = &self.application_orgs {
            let mut app = group(ADMINS);
            if !self.application_capabilities.is_empty() {
                app.values.insert(
                    "Capabilities".into(),
                    capabilities_value(&self.application_capabilities),
                );
            }
            add_implicit_meta_policies(&mut app);
            for org in app_orgs {
                app.groups.insert(org.name.clone(), org_group(org, false));
            }
            root.groups.insert(APPLICATION_GROUP.into(), app);
        }

        if !self.consortiums.is_empty() {
            let mut consortiums = group("/Channel/Orderer/Admins");
            consortiums.policies.insert(
                ADMINS.into(),
                config_policy(accept_all(), "/Channel/Orderer/Admins"),
            );
            for (name, members) in &self.consortiums {
                let mut c = group("/Channel/Orderer/Admins");
                c.values.insert(
                    "ChannelCreationPolicy".into(),
                    ConfigValue {
                        version: 0,
                        value: implicit_meta("ANY", ADMINS).encode_to_vec().into(),
                        mod_policy: "/Channel/Orderer/Admins".into(),
                    },
                );
                for org in members {
                    c.groups.insert(org.name.clone(), org_group(org, false));
                }
                consortiums.groups.insert(name.clone(), c);
            }
            root.groups.insert(CONSORTIUMS_GROUP.into(), consortiums);
        }
        root
    }
}

/// Inputs that make a genesis envelope unique; tests pass fixed values.
#[derive(Debug, Clone)]
pub struct EnvelopeStamp {
    pub timestamp_secs: i64,
    pub nonce: [u8; 24],
}

impl EnvelopeStamp {
    /// The current time and a fresh random nonce.
    pub fn now() -> Self {
        let timestamp_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut nonce = [0u8; 24];
        // Failure of the system random source leaves a zero nonce; it only feeds the tx id.
        let _ = aws_lc_rs::rand::fill(&mut nonce);
        EnvelopeStamp {
            timestamp_secs,
            nonce,
        }
    }
}

/// The unsigned CONFIG envelope configtxgen puts in a genesis block: channel header
/// version 1, tx id = hex SHA-256 of the nonce (the creator is empty), a sequence-0
/// config and no last update.
pub fn genesis_envelope(
    channel_id: &str,
    channel_group: ConfigGroup,
    stamp: &EnvelopeStamp,
) -> Bytes {
    let tx_id = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &stamp.nonce,
    ));
    let channel_header = ChannelHeader {
        r#type: HeaderType::Config as i32,
        version: 1,
        timestamp: Some(korder_proto::Timestamp {
            seconds: stamp.timestamp_secs,
            nanos: 0,
        }),
        channel_id: channel_id.to_string(),
        tx_id,
        epoch: 0,
        extension: Bytes::new(),
        tls_cert_hash: Bytes::new(),
    };
    let signature_header = SignatureHeader {
        creator: Bytes::new(),
        nonce: Bytes::copy_from_slice(&stamp.nonce),
    };
    let config_envelope = ConfigEnvelope {
        config: Some(Config {
            sequence: 0,
            channel_group: Some(channel_group),
        }),
        last_update: None,
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: channel_header.encode_to_vec().into(),
            signature_header: signature_header.encode_to_vec().into(),
        }),
        data: config_envelope.encode_to_vec().into(),
    };
    Envelope {
        payload: payload.encode_to_vec().into(),
        signature: Bytes::new(),
    }
    .encode_to_vec()
    .into()
}

fn group(mod_policy: &str) -> ConfigGroup {
    ConfigGroup {
        mod_policy: mod_policy.into(),
        ..Default::default()
    }
}

fn value<M: Message>(m: &M, mod_policy: &str) -> ConfigValue {
    ConfigValue {
        version: 0,
        value: m.encode_to_vec().into(),
        mod_policy: mod_policy.into(),
    }
}

fn capabilities_value(names: &BTreeSet<String>) -> ConfigValue {
    let caps = Capabilities {
        capabilities: names.iter().map(|n| (n.clone(), Capability {})).collect(),
    };
    value(&caps, ADMINS)
}

fn config_policy(p: Policy, mod_policy: &str) -> ConfigPolicy {
    ConfigPolicy {
        version: 0,
        policy: Some(p),
        mod_policy: mod_policy.into(),
    }
}

fn add_implicit_meta_policies(g: &mut ConfigGroup) {
    g.policies.insert(
        READERS.into(),
        config_policy(implicit_meta("ANY", READERS), ADMINS),
    );
    g.policies.insert(
        WRITERS.into(),
        config_policy(implicit_meta("ANY", WRITERS), ADMINS),
    );
    g.policies.insert(
        ADMINS.into(),
        config_policy(implicit_meta("MAJORITY", ADMINS), ADMINS),
    );
}

/// An implicit-meta policy: `rule` is `ANY`, `ALL` or `MAJORITY`.
pub fn implicit_meta(rule: &str, sub_policy: &str) -> Policy {
    let rule = match rule {
        "ALL" => implicit_meta_policy::Rule::All,
        "MAJORITY" => implicit_meta_policy::Rule::Majority,
        _ => implicit_meta_policy::Rule::Any,
    };
    Policy {
        r#type: policy::PolicyType::ImplicitMeta as i32,
        value: ImplicitMetaPolicy {
            sub_policy: sub_policy.into(),
            rule: rule as i32,
        }
        .encode_to_vec()
        .into(),
    }
}

/// A signature policy satisfied by any signature set, even an empty one.
pub fn accept_all() -> Policy {
    signature_policy_value(SignaturePolicyEnvelope {
        version: 0,
        rule: Some(SignaturePolicy {
            r#type: Some(signature_policy::Type::NOutOf(signature_policy::NOutOf {
                n: 0,
                rules: vec![],
            })),
        }),
        identities: vec![],
    })
}

/// `OR('<msp_id>.<role>')`: one signature by an identity of that role.
pub fn signed_by_role(msp_id: &str, role: msp_role::MspRoleType) -> Policy {
    signature_policy_value(SignaturePolicyEnvelope {
        version: 0,
        rule: Some(SignaturePolicy {
            r#type: Some(signature_policy::Type::NOutOf(signature_policy::NOutOf {
                n: 1,
                rules: vec![SignaturePolicy {
                    r#type: Some(signature_policy::Type::SignedBy(0)),
                }],
            })),
        }),
        identities: vec![MspPrincipal {
            principal_classification: msp_principal::Classification::Role as i32,
            principal: MspRole {
                msp_identifier: msp_id.into(),
                role: role as i32,
            }
            .encode_to_vec()
            .into(),
        }],
    })
}

fn signature_policy_value(env: SignaturePolicyEnvelope) -> Policy {
    Policy {
        r#type: policy::PolicyType::Signature as i32,
        value: env.encode_to_vec().into(),
    }
}

fn org_group(org: &OrgProfile, with_endpoints: bool) -> ConfigGroup {
    let mut g = group(ADMINS);
    g.values.insert(
        "MSP".into(),
        value(
            &MspConfig {
                r#type: 0,
                config: org.msp.encode_to_vec().into(),
            },
            ADMINS,
        ),
    );
    if with_endpoints && !org.endpoints.is_empty() {
        g.values.insert(
            "Endpoints".into(),
            value(
                &OrdererAddresses {
                    addresses: org.endpoints.clone(),
                },
                ADMINS,
            ),
        );
    }
    let id = org.msp_id();
    g.policies.insert(
        READERS.into(),
        config_policy(signed_by_role(id, msp_role::MspRoleType::Member), ADMINS),
    );
    g.policies.insert(
        WRITERS.into(),
        config_policy(signed_by_role(id, msp_role::MspRoleType::Member), ADMINS),
    );
    g.policies.insert(
        ADMINS.into(),
        config_policy(signed_by_role(id, msp_role::MspRoleType::Admin), ADMINS),
    );
    g
}
