//! Config updates computed from two configs, the way `configtxlator compute_update`
//! computes them: given a channel's current config and the config an operator wants,
//! the `ConfigUpdate` whose read set and write set take the first to the second.
//!
//! ```text
//! original Config ─┐
//!                  ├─ compute_update ─▶ ConfigUpdate { read_set, write_set }
//! modified Config ─┘        │
//!                           └─ signed by the mod_policies' admins, wrapped in a CONFIG_UPDATE
//!                              ─▶ configtx::propose_config_update ─▶ exactly the modified config
//! ```
//!
//! The shape of an update, group by group:
//!
//! - a group whose members (the names of its groups, values or policies) or whose
//!   mod_policy changed appears in the read set at its current version and in the
//!   write set at version + 1, with its complete member list: unchanged members at
//!   their versions in both sets, changed ones only in the write set;
//! - a changed value or policy appears only in the write set, at version + 1 (0 when
//!   new), so it is authorised against its own mod_policy;
//! - a group with changes below it but the same members appears in both sets at the
//!   same version, holding only the changed paths, so nothing above what changed
//!   needs its mod_policy satisfied.
//!
//! [`OrdererChanges`] edits the orderer values an operator changes most (batch size,
//! batch timeout, consensus state and type) in a copy of a channel group, ready to be
//! diffed. [`creation_update`] builds the update a channel-creation request carries, in the
//! shape configtxgen gives it. Like the rest of the crate, nothing here does I/O or
//! signs: the caller signs the update with whichever identities the policies ask for.

use std::collections::BTreeMap;

use korder_proto::Message;
use korder_proto::common::{
    Config, ConfigGroup, ConfigPolicy, ConfigUpdate, ConfigValue, Consortium,
};
use korder_proto::orderer::{BatchSize, BatchTimeout, ConsensusType, consensus_type};

use crate::bundle::{APPLICATION_GROUP, ORDERER_GROUP};
use crate::genesis::ChannelProfile;

/// Why no update was computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The two configs are the same: there is nothing to update.
    #[error("the update would change nothing in the config of channel {channel}")]
    NoChange {
        /// The channel the update was for.
        channel: String,
    },
    /// One of the configs has no channel group.
    #[error("the {which} config of channel {channel} has no channel group")]
    NoChannelGroup {
        /// The channel the update was for.
        channel: String,
        /// `"original"` or `"modified"`.
        which: &'static str,
    },
}

/// The update of `channel` taking config `original` to config `modified`, as
/// `configtxlator compute_update` computes it; refused when they are the same.
pub fn compute_update(
    channel: &str,
    original: &Config,
    modified: &Config,
) -> Result<ConfigUpdate, UpdateError> {
    let no_group = |which| UpdateError::NoChannelGroup {
        channel: channel.to_owned(),
        which,
    };
    let original = original
        .channel_group
        .as_ref()
        .ok_or_else(|| no_group("original"))?;
    let modified = modified
        .channel_group
        .as_ref()
        .ok_or_else(|| no_group("modified"))?;
    group_update(channel, original, modified)
}

/// The update of `channel` taking the channel group `current` to `next`; refused
/// when they are the same.
pub fn group_update(
    channel: &str,
    current: &ConfigGroup,
    next: &ConfigGroup,
) -> Result<ConfigUpdate, UpdateError> {
    let Some((read, write)) = diff_groups(current, next) else {
        return Err(UpdateError::NoChange {
            channel: channel.to_owned(),
        });
    };
    Ok(ConfigUpdate {
        channel_id: channel.to_owned(),
        read_set: Some(read),
        write_set: Some(write),
        isolated_data: BTreeMap::new(),
    })
}

/// Read set and write set taking `original` to `updated` (both rooted at the same
/// group), or `None` when they are equal. See the module documentation.
#[must_use]
pub fn diff_groups(
    original: &ConfigGroup,
    updated: &ConfigGroup,
) -> Option<(ConfigGroup, ConfigGroup)> {
    let (values_write, values_same, values_members) =
        diff_items(&original.values, &updated.values, value_changed);
    let (policies_write, policies_same, policies_members) =
        diff_items(&original.policies, &updated.policies, policy_changed);
    let mut groups_read = BTreeMap::new();
    let mut groups_write = BTreeMap::new();
    let mut groups_same = BTreeMap::new();
    let mut groups_members = false;
    for (k, o) in &original.groups {
        match updated.groups.get(k) {
            Some(u) => match diff_groups(o, u) {
                Some((r, w)) => {
                    groups_read.insert(k.clone(), r);
                    groups_write.insert(k.clone(), w);
                }
                None => {
                    groups_same.insert(
                        k.clone(),
                        ConfigGroup {
                            version: o.version,
                            ..Default::default()
                        },
                    );
                }
            },
            None => groups_members = true,
        }
    }
    for (k, u) in &updated.groups {
        if !original.groups.contains_key(k) {
            groups_members = true;
            groups_write.insert(k.clone(), u.clone());
        }
    }
    let members_changed = values_members
        || policies_members
        || groups_members
        || original.mod_policy != updated.mod_policy;
    if !members_changed {
        if values_write.is_empty() && policies_write.is_empty() && groups_write.is_empty() {
            return None;
        }
        let read = ConfigGroup {
            version: original.version,
            groups: groups_read,
            ..Default::default()
        };
        let write = ConfigGroup {
            version: original.version,
            groups: groups_write,
            values: values_write,
            policies: policies_write,
            mod_policy: String::new(),
        };
        return Some((read, write));
    }
    let mut read = ConfigGroup {
        version: original.version,
        groups: groups_read,
        ..Default::default()
    };
    let mut write = ConfigGroup {
        version: original.version + 1,
        groups: groups_write,
        values: values_write,
        policies: policies_write,
        mod_policy: updated.mod_policy.clone(),
    };
    for (k, g) in groups_same {
        read.groups.insert(k.clone(), g.clone());
        write.groups.insert(k, g);
    }
    for (k, v) in values_same {
        read.values.insert(k.clone(), v.clone());
        write.values.insert(k, v);
    }
    for (k, p) in policies_same {
        read.policies.insert(k.clone(), p.clone());
        write.policies.insert(k, p);
    }
    Some((read, write))
}

fn value_changed(a: &ConfigValue, b: &ConfigValue) -> bool {
    a.value != b.value || a.mod_policy != b.mod_policy
}

fn policy_changed(a: &ConfigPolicy, b: &ConfigPolicy) -> bool {
    a.policy != b.policy || a.mod_policy != b.mod_policy
}

/// Values or policies of one group: (write set, unchanged ones as version-only
/// entries, whether a member was added or removed). Changed values and policies
/// are not in the read set.
type ItemDiff<T> = (BTreeMap<String, T>, BTreeMap<String, T>, bool);

trait Versioned: Clone + Default {
    fn version(&self) -> u64;
    fn with_version(&self, version: u64) -> Self;
    fn only_version(version: u64) -> Self;
}

impl Versioned for ConfigValue {
    fn version(&self) -> u64 {
        self.version
    }
    fn with_version(&self, version: u64) -> Self {
        ConfigValue {
            version,
            ..self.clone()
        }
    }
    fn only_version(version: u64) -> Self {
        ConfigValue {
            version,
            ..Default::default()
        }
    }
}

impl Versioned for ConfigPolicy {
    fn version(&self) -> u64 {
        self.version
    }
    fn with_version(&self, version: u64) -> Self {
        ConfigPolicy {
            version,
            ..self.clone()
        }
    }
    fn only_version(version: u64) -> Self {
        ConfigPolicy {
            version,
            ..Default::default()
        }
    }
}

fn diff_items<T: Versioned>(
    original: &BTreeMap<String, T>,
    updated: &BTreeMap<String, T>,
    changed: impl Fn(&T, &T) -> bool,
) -> ItemDiff<T> {
    let mut write = BTreeMap::new();
    let mut same = BTreeMap::new();
    let mut members = false;
    for (k, o) in original {
        match updated.get(k) {
            Some(u) if changed(o, u) => {
                write.insert(k.clone(), u.with_version(o.version() + 1));
            }
            Some(_) => {
                same.insert(k.clone(), T::only_version(o.version()));
            }
            None => members = true,
        }
    }
    for (k, u) in updated {
        if !original.contains_key(k) {
            members = true;
            write.insert(k.clone(), u.with_version(0));
        }
    }
    (write, same, members)
}

/// The channel-creation update configtxgen writes for a profile naming
/// `consortium` and the application `orgs`: `Application` goes from the template's
/// version 0 (orgs only) to version 1 with mod_policy `Admins`, the application
/// policies and capabilities at version 0, and the orgs unchanged (version 0 in both
/// sets); `Consortium` is at version 0 in both sets, its name in the write set.
pub fn creation_update(channel: &str, consortium: &str, orgs: &[String]) -> ConfigUpdate {
    let mut profile = ChannelProfile::sample("solo");
    profile.application_orgs = Some(Vec::new());
    let mut full_app = profile
        .channel_group()
        .groups
        .remove(APPLICATION_GROUP)
        .unwrap_or_else(|| unreachable!("a profile with application orgs has an Application"));
    let mut template_app = ConfigGroup::default();
    for org in orgs {
        template_app
            .groups
            .insert(org.clone(), ConfigGroup::default());
        full_app.groups.insert(org.clone(), ConfigGroup::default());
    }
    let mut template = ConfigGroup::default();
    template
        .groups
        .insert(APPLICATION_GROUP.into(), template_app);
    let mut full = ConfigGroup::default();
    full.groups.insert(APPLICATION_GROUP.into(), full_app);
    let (mut read, mut write) = diff_groups(&template, &full)
        .unwrap_or_else(|| unreachable!("the application section always differs"));
    read.values
        .insert("Consortium".into(), ConfigValue::only_version(0));
    write.values.insert(
        "Consortium".into(),
        ConfigValue {
            version: 0,
            value: Consortium {
                name: consortium.to_owned(),
            }
            .encode_to_vec()
            .into(),
            mod_policy: String::new(),
        },
    );
    ConfigUpdate {
        channel_id: channel.to_owned(),
        read_set: Some(read),
        write_set: Some(write),
        isolated_data: BTreeMap::new(),
    }
}

/// Why [`OrdererChanges::apply`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The channel group has no `Orderer` group.
    #[error("the channel config has no Orderer group")]
    NoOrdererGroup,
    /// The value to change is not in `/Channel/Orderer`.
    #[error("the channel config has no /Channel/Orderer/{0} value")]
    MissingValue(&'static str),
    /// The value to change does not decode.
    #[error("/Channel/Orderer/{0} does not decode")]
    Undecodable(&'static str),
    /// The new BatchSize would cut no block.
    #[error("BatchSize.MaxMessageCount must be at least 1")]
    ZeroMaxMessageCount,
    /// The new BatchSize's preferred size is above its absolute maximum.
    #[error(
        "BatchSize.PreferredMaxBytes ({preferred_max_bytes}) would exceed AbsoluteMaxBytes ({absolute_max_bytes})"
    )]
    PreferredAboveAbsolute {
        /// The preferred size asked for.
        preferred_max_bytes: u32,
        /// The absolute maximum it would exceed.
        absolute_max_bytes: u32,
    },
}

/// Changes of `/Channel/Orderer` values, applied to a copy of a channel group (what
/// `korder channel update` asks for on its command line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrdererChanges {
    /// New `BatchSize.max_message_count`.
    pub max_message_count: Option<u32>,
    /// New `BatchSize.absolute_max_bytes`.
    pub absolute_max_bytes: Option<u32>,
    /// New `BatchSize.preferred_max_bytes`.
    pub preferred_max_bytes: Option<u32>,
    /// Go duration text, already checked.
    pub batch_timeout: Option<String>,
    /// New `ConsensusType.state` (maintenance mode on or off).
    pub consensus_state: Option<ConsensusState>,
    /// New `ConsensusType.type` (a migration; allowed only in maintenance mode).
    pub consensus_type: Option<String>,
    /// New `ConsensusType.metadata` (e.g. an etcdraft `ConfigMetadata`).
    pub consensus_metadata: Option<bytes::Bytes>,
}

/// `ConsensusType.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsensusState {
    /// STATE_NORMAL: the channel orders transactions.
    Normal,
    /// STATE_MAINTENANCE: only orderer admins may update the config and read blocks.
    Maintenance,
}

impl ConsensusState {
    fn proto(self) -> consensus_type::State {
        match self {
            ConsensusState::Normal => consensus_type::State::Normal,
            ConsensusState::Maintenance => consensus_type::State::Maintenance,
        }
    }
}

/// Whether a channel group's `ConsensusType` is in maintenance mode.
pub fn in_maintenance(root: &ConfigGroup) -> bool {
    root.groups
        .get(ORDERER_GROUP)
        .and_then(|o| o.values.get("ConsensusType"))
        .and_then(|v| ConsensusType::decode(v.value.as_ref()).ok())
        .is_some_and(|c| c.state == consensus_type::State::Maintenance as i32)
}

impl OrdererChanges {
    /// Whether no change is asked for.
    pub fn is_empty(&self) -> bool {
        *self == OrdererChanges::default()
    }

    /// Whether the changes touch the `ConsensusType` value.
    pub fn touches_consensus(&self) -> bool {
        self.consensus_state.is_some()
            || self.consensus_type.is_some()
            || self.consensus_metadata.is_some()
    }

    /// Applies the changes to a copy of the channel group `root`.
    pub fn apply(&self, root: &ConfigGroup) -> Result<ConfigGroup, EditError> {
        let mut next = root.clone();
        let orderer = next
            .groups
            .get_mut(ORDERER_GROUP)
            .ok_or(EditError::NoOrdererGroup)?;
        if self.max_message_count.is_some()
            || self.absolute_max_bytes.is_some()
            || self.preferred_max_bytes.is_some()
        {
            let value = orderer
                .values
                .get_mut("BatchSize")
                .ok_or(EditError::MissingValue("BatchSize"))?;
            let mut size = BatchSize::decode(value.value.as_ref())
                .map_err(|_| EditError::Undecodable("BatchSize"))?;
            if let Some(n) = self.max_message_count {
                size.max_message_count = n;
            }
            if let Some(n) = self.absolute_max_bytes {
                size.absolute_max_bytes = n;
            }
            if let Some(n) = self.preferred_max_bytes {
                size.preferred_max_bytes = n;
            }
            if size.max_message_count == 0 {
                return Err(EditError::ZeroMaxMessageCount);
            }
            if size.preferred_max_bytes > size.absolute_max_bytes {
                return Err(EditError::PreferredAboveAbsolute {
                    preferred_max_bytes: size.preferred_max_bytes,
                    absolute_max_bytes: size.absolute_max_bytes,
                });
            }
            value.value = size.encode_to_vec().into();
        }
        if let Some(t) = &self.batch_timeout {
            let value = orderer
                .values
                .get_mut("BatchTimeout")
                .ok_or(EditError::MissingValue("BatchTimeout"))?;
            value.value = BatchTimeout { timeout: t.clone() }.encode_to_vec().into();
        }
        if self.touches_consensus() {
            let value = orderer
                .values
                .get_mut("ConsensusType")
                .ok_or(EditError::MissingValue("ConsensusType"))?;
            let mut consensus = ConsensusType::decode(value.value.as_ref())
                .map_err(|_| EditError::Undecodable("ConsensusType"))?;
            if let Some(state) = self.consensus_state {
                consensus.state = state.proto() as i32;
            }
            if let Some(t) = &self.consensus_type {
                consensus.r#type = t.clone();
            }
            if let Some(m) = &self.consensus_metadata {
                consensus.metadata = m.clone();
            }
            value.value = consensus.encode_to_vec().into();
        }
        Ok(next)
    }
}
