//! Config updates: authorising a client's CONFIG_UPDATE against the current config,
//! computing the next config, re-checking it at commit, and creating channels
//! through the system channel.
//!
//! ```text
//! CONFIG_UPDATE envelope
//!   └─ ConfigUpdateEnvelope { config_update, signatures }
//!        └─ ConfigUpdate { channel_id, read_set, write_set }
//!
//! current config ──flatten──▶ map   read_set ──flatten──▶ map   write_set ──flatten──▶ map
//!   1. every read-set key exists at exactly its version
//!   2. delta = write-set keys not in the read set at the same version
//!   3. each delta key: new ⇒ version 0 (no policy); existing ⇒ version + 1 and the
//!      *current* element's mod_policy satisfied by the config signatures
//!   4. overlay the delta on the current map, rebuild the tree from `/Channel`
//!   5. ConfigEnvelope { Config { sequence + 1, tree }, last_update = the envelope }
//! ```
//!
//! Only the delta is processed, and a group's membership after the update is the
//! key set of its map entry: a group not bumped keeps its members, a bumped group
//! takes exactly the write set's members. Error texts are Fabric's; they reach
//! clients verbatim in Broadcast responses.

use std::collections::BTreeMap;

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::{
    ChannelHeader, Config, ConfigEnvelope, ConfigGroup, ConfigPolicy, ConfigUpdate,
    ConfigUpdateEnvelope, ConfigValue, Consortium, Envelope, HeaderType, Payload, Policy,
};
use korder_proto::msp::{FabricMspConfig, MspConfig};

use crate::bundle::{
    APPLICATION_GROUP, Bundle, CHANNEL_GROUP, CONSORTIUMS_GROUP, ConfigError, NAME_LEN_MAX,
    ORDERER_GROUP,
};
use crate::policies::{PolicyManager, SignedData};

/// Map-key prefix of a group (9 characters).
pub const GROUP_PREFIX: &str = "[Group]  ";
/// Map-key prefix of a value (9 characters).
pub const VALUE_PREFIX: &str = "[Value]  ";
/// Map-key prefix of a policy (9 characters).
pub const POLICY_PREFIX: &str = "[Policy] ";

/// Name of the template policy guarding channel creation.
pub const CHANNEL_CREATION_POLICY: &str = "ChannelCreationPolicy";

/// Why a config update, a proposed config or a channel creation was refused.
///
/// The display text is Fabric's error chain; the Broadcast edge adds its own prefix
/// (`error applying config update to existing channel '<id>': ...`) where Fabric does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigTxError {
    /// The envelope does not carry a decodable CONFIG_UPDATE.
    #[error("error converting envelope to config update: {0}")]
    Unwrap(String),
    /// Read set, write set, versions or signatures are wrong.
    #[error("error authorizing update: {0}")]
    Authorize(String),
    /// The updated tree cannot be rebuilt.
    #[error("could not turn configMap back to channelGroup: {0}")]
    Rebuild(String),
    /// The resulting config does not decode or validate.
    #[error("{0}")]
    Parse(ConfigError),
    /// The resulting config requires a capability korder lacks.
    #[error("config update is not compatible: {0}")]
    Incompatible(String),
    /// The resulting config is not an acceptable successor of the current one.
    #[error("{0}")]
    ValidateNew(String),
    /// A ConfigEnvelope presented for commit is not what its last update produces.
    #[error("{0}")]
    Commit(String),
    /// A channel-creation request cannot be turned into a template.
    #[error("{0}")]
    Template(String),
    /// A channel-creation request does not apply to its template.
    #[error(
        "error validating channel creation transaction for new channel '{channel}', could not succesfully apply update to template configuration: {source}"
    )]
    Creation {
        channel: String,
        source: Box<ConfigTxError>,
    },
    /// The config carried by a channel-creation transaction differs from the one its update produces.
    #[error(
        "config proposed by the channel creation request did not match the config received with the channel creation request"
    )]
    CreationMismatch,
    /// The config carried by a channel-creation transaction does not parse.
    #[error("config does not validly parse: {0}")]
    CreationParse(ConfigError),
    /// The new channel's config is not an acceptable successor of its template.
    #[error("new bundle invalid: {0}")]
    CreationInvalid(String),
    /// The system channel's channel limit is reached.
    #[error("channel creation would exceed maximimum number of channels: {0}")]
    TooManyChannels(u64),
}

/// One element of a flattened config tree.
#[derive(Debug, Clone, PartialEq)]
enum Element {
    /// A group with the key sets of its children.
    Group {
        version: u64,
        mod_policy: String,
        groups: Vec<String>,
        values: Vec<String>,
        policies: Vec<String>,
    },
    Value(ConfigValue),
    Policy(ConfigPolicy),
}

/// An element with its place in the tree.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    /// Group names from `Channel` down to the element's parent (empty for the root).
    parent: Vec<String>,
    key: String,
    element: Element,
}

impl Item {
    fn version(&self) -> u64 {
        match &self.element {
            Element::Group { version, .. } => *version,
            Element::Value(v) => v.version,
            Element::Policy(p) => p.version,
        }
    }

    fn mod_policy(&self) -> &str {
        match &self.element {
            Element::Group { mod_policy, .. } => mod_policy,
            Element::Value(v) => &v.mod_policy,
            Element::Policy(p) => &p.mod_policy,
        }
    }
}

type ConfigMap = BTreeMap<String, Item>;

fn map_key(prefix: &str, parent: &[String], key: &str) -> String {
    let mut s = String::from(prefix);
    for p in parent {
        s.push('/');
        s.push_str(p);
    }
    s.push('/');
    s.push_str(key);
    s
}

/// Checks a config key: 1–249 characters from `[A-Za-z0-9.-]`, not `.` or `..`.
pub fn validate_config_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("config ID illegal, cannot be empty".into());
    }
    if id.len() > NAME_LEN_MAX {
        return Err(format!(
            "config ID illegal, cannot be longer than {NAME_LEN_MAX}"
        ));
    }
    if id == "." || id == ".." {
        return Err(format!("config ID '{id}' is invalid"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(format!("config ID '{id}' contains illegal characters"));
    }
    Ok(())
}

fn validate_mod_policy(mod_policy: &str) -> Result<(), String> {
    if mod_policy.is_empty() {
        return Err("mod_policy not set".into());
    }
    let trimmed = mod_policy.strip_prefix('/').unwrap_or(mod_policy);
    for (i, segment) in trimmed.split('/').enumerate() {
        validate_config_id(segment).map_err(|e| format!("path element at {i} is invalid: {e}"))?;
    }
    Ok(())
}

/// Flattens a tree rooted at `/Channel`; `None` is an empty map.
fn map_config(root: Option<&ConfigGroup>) -> Result<ConfigMap, String> {
    let mut map = ConfigMap::new();
    if let Some(root) = root {
        add_group(&mut map, Vec::new(), CHANNEL_GROUP, root)?;
    }
    Ok(map)
}

fn add_group(
    map: &mut ConfigMap,
    parent: Vec<String>,
    key: &str,
    group: &ConfigGroup,
) -> Result<(), String> {
    let full = map_key(GROUP_PREFIX, &parent, key);
    validate_config_id(key).map_err(|_| format!("illegal characters in key: {full}"))?;
    map.insert(
        full,
        Item {
            parent: parent.clone(),
            key: key.to_owned(),
            element: Element::Group {
                version: group.version,
                mod_policy: group.mod_policy.clone(),
                groups: group.groups.keys().cloned().collect(),
                values: group.values.keys().cloned().collect(),
                policies: group.policies.keys().cloned().collect(),
            },
        },
    );
    let mut path = parent;
    path.push(key.to_owned());
    for (k, v) in &group.values {
        let full = map_key(VALUE_PREFIX, &path, k);
        validate_config_id(k).map_err(|_| format!("illegal characters in key: {full}"))?;
        map.insert(
            full,
            Item {
                parent: path.clone(),
                key: k.clone(),
                element: Element::Value(v.clone()),
            },
        );
    }
    for (k, p) in &group.policies {
        let full = map_key(POLICY_PREFIX, &path, k);
        validate_config_id(k).map_err(|_| format!("illegal characters in key: {full}"))?;
        map.insert(
            full,
            Item {
                parent: path.clone(),
                key: k.clone(),
                element: Element::Policy(p.clone()),
            },
        );
    }
    for (k, g) in &group.groups {
        add_group(map, path.clone(), k, g)?;
    }
    Ok(())
}

/// Rebuilds the tree from `[Group]  /Channel` of an overlaid map.
fn rebuild(map: &ConfigMap) -> Result<ConfigGroup, String> {
    let fix_mod_policies = map.contains_key(&map_key(
        VALUE_PREFIX,
        &[CHANNEL_GROUP.to_owned(), ORDERER_GROUP.to_owned()],
        "Capabilities",
    ));
    rebuild_group(map, &[], CHANNEL_GROUP, fix_mod_policies)
}

fn rebuild_group(
    map: &ConfigMap,
    parent: &[String],
    key: &str,
    fix: bool,
) -> Result<ConfigGroup, String> {
    let full = map_key(GROUP_PREFIX, parent, key);
    let Some(Item {
        element:
            Element::Group {
                version,
                mod_policy,
                groups,
                values,
                policies,
            },
        ..
    }) = map.get(&full)
    else {
        return Err(format!(
            "missing group at path: {}",
            &full[GROUP_PREFIX.len()..]
        ));
    };
    let fixed = |m: &str| {
        if fix && m.is_empty() {
            "Admins".to_owned()
        } else {
            m.to_owned()
        }
    };
    let mut path = parent.to_vec();
    path.push(key.to_owned());
    let mut out = ConfigGroup {
        version: *version,
        mod_policy: fixed(mod_policy),
        ..Default::default()
    };
    for k in values {
        let vk = map_key(VALUE_PREFIX, &path, k);
        let Some(Item {
            element: Element::Value(v),
            ..
        }) = map.get(&vk)
        else {
            return Err(format!(
                "missing value at path: {}",
                &vk[VALUE_PREFIX.len()..]
            ));
        };
        let mut v = v.clone();
        v.mod_policy = fixed(&v.mod_policy);
        out.values.insert(k.clone(), v);
    }
    for k in policies {
        let pk = map_key(POLICY_PREFIX, &path, k);
        let Some(Item {
            element: Element::Policy(p),
            ..
        }) = map.get(&pk)
        else {
            return Err(format!(
                "missing policy at path: {}",
                &pk[POLICY_PREFIX.len()..]
            ));
        };
        let mut p = p.clone();
        p.mod_policy = fixed(&p.mod_policy);
        out.policies.insert(k.clone(), p);
    }
    for k in groups {
        out.groups
            .insert(k.clone(), rebuild_group(map, &path, k, fix)?);
    }
    Ok(out)
}

/// Finds the policy that guards changes to an existing element (its mod_policy,
/// resolved in the current config): relative names are resolved in the parent
/// group for values and policies, in the group itself for groups.
fn policy_for_item<'a>(
    root: &'a PolicyManager,
    item: &Item,
) -> Option<&'a std::sync::Arc<crate::policies::Policy>> {
    let mod_policy = item.mod_policy();
    let relative = !mod_policy.is_empty() && !mod_policy.starts_with('/');
    if relative && !item.parent.is_empty() {
        let mut path: Vec<&str> = item.parent[1..].iter().map(String::as_str).collect();
        if matches!(item.element, Element::Group { .. }) {
            path.push(&item.key);
        }
        root.manager(&path)?.get_policy(mod_policy)
    } else {
        root.get_policy(mod_policy)
    }
}

/// A CONFIG_UPDATE envelope taken apart.
struct Unwrapped {
    envelope: ConfigUpdateEnvelope,
    update: ConfigUpdate,
}

fn unwrap_update(envelope: &Envelope) -> Result<Unwrapped, String> {
    let payload = Payload::decode(envelope.payload.as_ref())
        .map_err(|e| format!("could not unmarshal payload: {e}"))?;
    let header = payload.header.ok_or("bad payload: missing header")?;
    let ch = ChannelHeader::decode(header.channel_header.as_ref())
        .map_err(|e| format!("could not unmarshal channel header: {e}"))?;
    if ch.r#type != HeaderType::ConfigUpdate as i32 {
        return Err(format!(
            "not a tx of type CONFIG_UPDATE (type {})",
            ch.r#type
        ));
    }
    let cue = ConfigUpdateEnvelope::decode(payload.data.as_ref())
        .map_err(|e| format!("error unmarshaling ConfigUpdateEnvelope: {e}"))?;
    let update = ConfigUpdate::decode(cue.config_update.as_ref())
        .map_err(|e| format!("error unmarshaling ConfigUpdate: {e}"))?;
    Ok(Unwrapped {
        envelope: cue,
        update,
    })
}

/// Authorises an update against `current` and returns the overlaid map.
fn authorize(current: &Bundle, un: &Unwrapped) -> Result<ConfigMap, String> {
    if un.update.channel_id != current.channel_id {
        return Err(format!(
            "ConfigUpdate for channel '{}' but envelope for channel '{}'",
            un.update.channel_id, current.channel_id
        ));
    }
    let current_map = map_config(Some(current.channel_group()))
        .map_err(|e| format!("error mapping current config: {e}"))?;
    let read = map_config(un.update.read_set.as_ref())
        .map_err(|e| format!("error mapping ReadSet: {e}"))?;
    for (k, item) in &read {
        match current_map.get(k) {
            Some(cur) if cur.version() != item.version() => {
                return Err(format!(
                    "error validating ReadSet: proposed update requires that key {k} be at version {}, but it is currently at version {}",
                    item.version(),
                    cur.version()
                ));
            }
            Some(_) => {}
            None => {
                return Err(format!(
                    "error validating ReadSet: existing config does not contain element for {k} but was in the read set"
                ));
            }
        }
    }
    let write = map_config(un.update.write_set.as_ref())
        .map_err(|e| format!("error mapping WriteSet: {e}"))?;
    let delta: ConfigMap = write
        .into_iter()
        .filter(|(k, w)| read.get(k).map(Item::version) != Some(w.version()))
        .collect();
    let signed =
        SignedData::from_config_update_envelope(&un.envelope).map_err(|e| e.to_string())?;
    verify_delta(current, &current_map, &delta, &signed)
        .map_err(|e| format!("error validating DeltaSet: {e}"))?;
    let mut overlay = current_map;
    overlay.extend(delta);
    Ok(overlay)
}

fn verify_delta(
    current: &Bundle,
    current_map: &ConfigMap,
    delta: &ConfigMap,
    signed: &[SignedData],
) -> Result<(), String> {
    if delta.is_empty() {
        return Err("delta set was empty -- update would have no effect".into());
    }
    for (k, item) in delta {
        validate_mod_policy(item.mod_policy())
            .map_err(|e| format!("invalid mod_policy for element {k}: {e}"))?;
        let Some(existing) = current_map.get(k) else {
            if item.version() != 0 {
                return Err(format!(
                    "attempted to set key {k} to version {}, but key does not exist",
                    item.version()
                ));
            }
            continue;
        };
        if item.version() != existing.version() + 1 {
            return Err(format!(
                "attempt to set key {k} to version {}, but key is at version {}",
                item.version(),
                existing.version()
            ));
        }
        let policy = policy_for_item(current.policies(), existing).ok_or_else(|| {
            format!(
                "unexpected missing policy {} for item {k}",
                existing.mod_policy()
            )
        })?;
        policy
            .evaluate(signed)
            .map_err(|e| format!("policy for {k} not satisfied: {e}"))?;
    }
    Ok(())
}

/// The configtx validator's part of a proposal: authorise, rebuild, bump the sequence.
fn propose_tree(current: &Bundle, envelope: &Envelope) -> Result<Config, ConfigTxError> {
    let un = unwrap_update(envelope).map_err(ConfigTxError::Unwrap)?;
    let overlay = authorize(current, &un).map_err(ConfigTxError::Authorize)?;
    let group = rebuild(&overlay).map_err(ConfigTxError::Rebuild)?;
    Ok(Config {
        sequence: current.sequence.next().get(),
        channel_group: Some(group),
    })
}

fn config_envelope(config: Config, last_update: &Envelope) -> ConfigEnvelope {
    ConfigEnvelope {
        config: Some(config),
        last_update: Some(last_update.clone()),
    }
}

/// Parses a proposed config and checks its capabilities.
fn parse_next(channel_id: &str, config: Config) -> Result<Bundle, ConfigTxError> {
    Bundle::new(channel_id, config).map_err(|e| match e {
        ConfigError::UnsupportedCapability(_) => ConfigTxError::Incompatible(e.to_string()),
        other => ConfigTxError::Parse(other),
    })
}

/// Processes a client's CONFIG_UPDATE for an existing channel: authorises it
/// against `current` and returns the next `ConfigEnvelope` (sequence + 1,
/// `last_update` = the client envelope unchanged).
///
/// The proposed config must also parse into a bundle, need only supported
/// capabilities, and pass [`validate_new`] against `current`.
pub fn propose_config_update(
    current: &Bundle,
    envelope: &Envelope,
) -> Result<ConfigEnvelope, ConfigTxError> {
    let config = propose_tree(current, envelope)?;
    let next = parse_next(&current.channel_id, config.clone())?;
    validate_new(current, &next)?;
    Ok(config_envelope(config, envelope))
}

/// Re-checks a CONFIG transaction's `ConfigEnvelope` against the current config,
/// as the block writer must before committing it: the sequence is the next one,
/// and the last update, authorised again, reproduces exactly the carried config.
/// Returns the bundle of the new config.
pub fn validate_config_envelope(
    current: &Bundle,
    config_envelope: &ConfigEnvelope,
) -> Result<Bundle, ConfigTxError> {
    let config = config_envelope
        .config
        .as_ref()
        .ok_or_else(|| ConfigTxError::Commit("ConfigEnvelope is missing its config".into()))?;
    if config.sequence != current.sequence.next().get() {
        return Err(ConfigTxError::Commit(format!(
            "config currently at sequence {}, cannot validate config at sequence {}",
            current.sequence, config.sequence
        )));
    }
    let last_update = config_envelope
        .last_update
        .as_ref()
        .ok_or_else(|| ConfigTxError::Commit("ConfigEnvelope is missing its LastUpdate".into()))?;
    let reproduced = propose_tree(current, last_update)?;
    if reproduced.channel_group != config.channel_group {
        return Err(ConfigTxError::Commit(
            "ConfigEnvelope LastUpdate did not produce the supplied config result".into(),
        ));
    }
    let next = parse_next(&current.channel_id, config.clone())?;
    validate_new(current, &next)?;
    Ok(next)
}

/// Whether the channel capabilities allow changing the consensus type.
fn consensus_type_migration(bundle: &Bundle) -> bool {
    ["V1_4_2", "V1_4_3", "V2_0"]
        .iter()
        .any(|c| bundle.channel_capabilities.contains(*c))
}

fn msp_id_of(org: &ConfigGroup) -> Option<String> {
    let value = org.values.get("MSP")?;
    let msp = MspConfig::decode(value.value.as_ref()).ok()?;
    let fabric = FabricMspConfig::decode(msp.config.as_ref()).ok()?;
    Some(fabric.name)
}

fn check_org_msp_ids(
    what: &str,
    current: &ConfigGroup,
    next: &ConfigGroup,
) -> Result<(), ConfigTxError> {
    for (name, org) in &current.groups {
        let Some(next_org) = next.groups.get(name) else {
            continue;
        };
        let (a, b) = (msp_id_of(org), msp_id_of(next_org));
        if a != b {
            return Err(ConfigTxError::ValidateNew(format!(
                "{what} {name} attempted to change MSP ID from {} to {}",
                a.unwrap_or_default(),
                b.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Checks that `next` may follow `current`: sections do not disappear (nor does a
/// Consortiums section appear), the consensus type changes only with the
/// migration capability, and no organisation changes its MSP id.
pub fn validate_new(current: &Bundle, next: &Bundle) -> Result<(), ConfigTxError> {
    let cur = current.channel_group();
    let nxt = next.channel_group();
    match (cur.groups.get(ORDERER_GROUP), nxt.groups.get(ORDERER_GROUP)) {
        (Some(_), None) => {
            return Err(ConfigTxError::ValidateNew(
                "current config has orderer section, but new config does not".into(),
            ));
        }
        (Some(a), Some(b)) => {
            if current.orderer.consensus_type != next.orderer.consensus_type
                && !consensus_type_migration(current)
            {
                return Err(ConfigTxError::ValidateNew(format!(
                    "attempted to change consensus type from {} to {}",
                    current.orderer.consensus_type, next.orderer.consensus_type
                )));
            }
            check_org_msp_ids("orderer org", a, b)?;
        }
        _ => {}
    }
    match (
        cur.groups.get(APPLICATION_GROUP),
        nxt.groups.get(APPLICATION_GROUP),
    ) {
        (Some(_), None) => {
            return Err(ConfigTxError::ValidateNew(
                "current config has application section, but new config does not".into(),
            ));
        }
        (Some(a), Some(b)) => check_org_msp_ids("application org", a, b)?,
        _ => {}
    }
    match (
        cur.groups.get(CONSORTIUMS_GROUP),
        nxt.groups.get(CONSORTIUMS_GROUP),
    ) {
        (Some(_), None) => {
            return Err(ConfigTxError::ValidateNew(
                "current config has consortiums section, but new config does not".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigTxError::ValidateNew(
                "current config has no consortiums section, but new config does".into(),
            ));
        }
        (Some(a), Some(b)) => {
            for (name, consortium) in &a.groups {
                if let Some(next_consortium) = b.groups.get(name) {
                    check_org_msp_ids(
                        &format!("consortium {name} org"),
                        consortium,
                        next_consortium,
                    )?;
                }
            }
        }
        (None, None) => {}
    }
    Ok(())
}

fn zero_versions(group: &mut ConfigGroup) {
    group.version = 0;
    for v in group.values.values_mut() {
        v.version = 0;
    }
    for p in group.policies.values_mut() {
        p.version = 0;
    }
    for g in group.groups.values_mut() {
        zero_versions(g);
    }
}

/// Builds the sequence-0 template a channel-creation request is applied to, from
/// the system channel's config and the consortium the request names. Returns the
/// new channel's id and the template's bundle.
pub fn channel_template(
    system: &Bundle,
    envelope: &Envelope,
) -> Result<(String, Bundle), ConfigTxError> {
    let t = |s: String| ConfigTxError::Template(s);
    let payload = Payload::decode(envelope.payload.as_ref()).map_err(|e| {
        t(format!(
            "Failing initial channel config creation because of payload unmarshaling error: {e}"
        ))
    })?;
    let cue = ConfigUpdateEnvelope::decode(payload.data.as_ref()).map_err(|e| {
        t(format!("Failing initial channel config creation because of config update envelope unmarshaling error: {e}"))
    })?;
    let header = payload.header.ok_or_else(|| {
        t(
            "Failed initial channel config creation because config update header was missing"
                .into(),
        )
    })?;
    let ch = ChannelHeader::decode(header.channel_header.as_ref()).map_err(|e| {
        t(format!(
            "Failed initial channel config creation because channel header was malformed: {e}"
        ))
    })?;
    let update = ConfigUpdate::decode(cue.config_update.as_ref()).map_err(|e| {
        t(format!("Failing initial channel config creation because of config update unmarshaling error: {e}"))
    })?;
    if update.channel_id != ch.channel_id {
        return Err(t(format!(
            "mismatched channel IDs: '{}' != '{}'",
            update.channel_id, ch.channel_id
        )));
    }
    let write_set = update
        .write_set
        .as_ref()
        .ok_or_else(|| t("Config update has an empty writeset".into()))?;
    let app = write_set
        .groups
        .get(APPLICATION_GROUP)
        .ok_or_else(|| t("Config update has missing application group".into()))?;
    if app.version != 1 {
        return Err(t(format!(
            "Config update for channel creation does not set application group version to 1, was {}",
            app.version
        )));
    }
    let consortium_value = write_set
        .values
        .get("Consortium")
        .ok_or_else(|| t("Consortium config value missing".into()))?;
    let consortium = Consortium::decode(consortium_value.value.as_ref())
        .map_err(|e| t(format!("Error reading unmarshaling consortium name: {e}")))?;

    let sys_root = system.channel_group();
    let consortiums = sys_root.groups.get(CONSORTIUMS_GROUP).ok_or_else(|| {
        t("The ordering system channel does not appear to support creating channels".into())
    })?;
    let consortium_group = consortiums
        .groups
        .get(&consortium.name)
        .ok_or_else(|| t(format!("Unknown consortium name: {}", consortium.name)))?;
    let creation_policy_value = consortium_group
        .values
        .get(CHANNEL_CREATION_POLICY)
        .map(|v| v.value.clone())
        .unwrap_or_default();
    let creation_policy = Policy::decode(creation_policy_value.as_ref()).map_err(|e| {
        t(format!(
            "Error reading channel creation policy of consortium {}: {e}",
            consortium.name
        ))
    })?;

    let mut app_template = ConfigGroup {
        mod_policy: CHANNEL_CREATION_POLICY.into(),
        ..Default::default()
    };
    app_template.policies.insert(
        CHANNEL_CREATION_POLICY.into(),
        ConfigPolicy {
            version: 0,
            policy: Some(creation_policy),
            mod_policy: String::new(),
        },
    );
    if !consortium_group.groups.is_empty() {
        if app.groups.is_empty() {
            return Err(t(
                "Proposed configuration has no application group members, but consortium contains members"
                    .into(),
            ));
        }
        for name in app.groups.keys() {
            let member = consortium_group.groups.get(name).ok_or_else(|| {
                t("Attempted to include a member which is not in the consortium".into())
            })?;
            app_template.groups.insert(name.clone(), member.clone());
        }
    }

    let mut root = ConfigGroup {
        values: sys_root.values.clone(),
        policies: sys_root.policies.clone(),
        ..Default::default()
    };
    if let Some(orderer) = sys_root.groups.get(ORDERER_GROUP) {
        root.groups.insert(ORDERER_GROUP.into(), orderer.clone());
    }
    root.groups.insert(APPLICATION_GROUP.into(), app_template);
    root.values.insert(
        "Consortium".into(),
        ConfigValue {
            version: 0,
            value: Bytes::from(
                Consortium {
                    name: consortium.name.clone(),
                }
                .encode_to_vec(),
            ),
            mod_policy: "Admins".into(),
        },
    );
    // Orderer V1_1 and later: a predictable template, every version zero.
    if system.orderer.resubmission() {
        root.mod_policy = sys_root.mod_policy.clone();
        zero_versions(&mut root);
    }
    let bundle = Bundle::new(
        &ch.channel_id,
        Config {
            sequence: 0,
            channel_group: Some(root),
        },
    )
    .map_err(|e| t(e.to_string()))?;
    Ok((ch.channel_id, bundle))
}

/// Processes a channel-creation CONFIG_UPDATE received on the system channel:
/// builds the template ([`channel_template`]) and applies the update to it. The
/// result is the new channel's first config (sequence 1, `last_update` = the
/// request).
///
/// The caller then wraps it (see [`crate::envelope`]) and runs
/// [`check_channel_creation`] on it, as the system channel filter does.
pub fn new_channel_config(
    system: &Bundle,
    envelope: &Envelope,
) -> Result<ConfigEnvelope, ConfigTxError> {
    let (channel, template) = channel_template(system, envelope)?;
    let config = propose_tree(&template, envelope).map_err(|source| ConfigTxError::Creation {
        channel,
        source: Box::new(source),
    })?;
    Ok(config_envelope(config, envelope))
}

/// The system channel filter's checks of a channel-creation config: its last update
/// re-derives exactly this config from a fresh template, the config parses, follows
/// its template ([`validate_new`]) and needs only supported capabilities.
/// Returns the new channel's bundle.
pub fn check_channel_creation(
    system: &Bundle,
    config_envelope: &ConfigEnvelope,
) -> Result<Bundle, ConfigTxError> {
    let last_update = config_envelope.last_update.as_ref().ok_or_else(|| {
        ConfigTxError::Template("updated config does not include a config update".into())
    })?;
    let (channel, template) = channel_template(system, last_update)?;
    let reproduced =
        propose_tree(&template, last_update).map_err(|source| ConfigTxError::Creation {
            channel: channel.clone(),
            source: Box::new(source),
        })?;
    if config_envelope.config.as_ref() != Some(&reproduced) {
        return Err(ConfigTxError::CreationMismatch);
    }
    let next = Bundle::new(&channel, reproduced).map_err(|e| match e {
        ConfigError::UnsupportedCapability(_) => ConfigTxError::Incompatible(e.to_string()),
        other => ConfigTxError::CreationParse(other),
    })?;
    validate_new(&template, &next).map_err(|e| ConfigTxError::CreationInvalid(e.to_string()))?;
    Ok(next)
}

/// The system channel's channel limit: refuses a creation when `max_count > 0` and
/// `channel_count` (existing channels, the system channel included) exceeds it.
pub fn check_channel_limit(system: &Bundle, channel_count: u64) -> Result<(), ConfigTxError> {
    let max = system.orderer.max_channels;
    if max > 0 && channel_count > max {
        return Err(ConfigTxError::TooManyChannels(max));
    }
    Ok(())
}
