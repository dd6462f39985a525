//! Policies of a channel: who may write, read and change what.
//!
//! ```text
//! Envelope / ConfigUpdateEnvelope ──▶ [SignedData] ──▶ PolicyManager::evaluate("/Channel/Writers")
//!                                                           │
//!                      ImplicitMeta (ANY/ALL/MAJORITY over child groups' sub-policies)
//!                                                           │
//!                      Signature policy (greedy N-out-of over MSP principals)
//!                                                           │
//!                      MspManager: identity → MSP → principal check → ECDSA verify
//! ```
//!
//! The evaluation order and its greediness are Fabric v1.4's, on purpose: a smarter
//! matcher would accept signature sets that other orderers of the same network
//! refuse. In short, for a signature policy:
//!
//! 1. The signed data is deduplicated *before* any signature is checked: identities
//!    that do not deserialize (unknown MSP, bad certificate, certificate that does
//!    not chain to its MSP's roots) are dropped, and only the first entry per
//!    identity (MSP id, SHA-256 of the sanitised certificate) is kept.
//! 2. `SignedBy(i)` takes the first unused signature whose identity satisfies
//!    principal `i` and whose signature verifies, and marks it used.
//! 3. `NOutOf(n, rules)` runs every sub-rule in turn on a scratch copy of the
//!    used flags and keeps the copy whenever the sub-rule succeeds, even after `n`
//!    successes.
//!
//! Nothing here is cached across config bundles: a manager is built from one config
//! and dropped with it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use korder_msp::{Identity, Msp, MspError, MspVersion};
use korder_proto::Message;
use korder_proto::common::{
    ConfigGroup, ConfigUpdateEnvelope, Envelope, ImplicitMetaPolicy, MspPrincipal, Payload,
    SignatureHeader, SignaturePolicy, SignaturePolicyEnvelope, implicit_meta_policy, policy,
    signature_policy,
};
use korder_proto::msp::{MspConfig, SerializedIdentity};

/// Separator of policy paths.
pub const PATH_SEPARATOR: char = '/';
/// `/Channel/Readers`.
pub const CHANNEL_READERS: &str = "/Channel/Readers";
/// `/Channel/Writers`.
pub const CHANNEL_WRITERS: &str = "/Channel/Writers";
/// `/Channel/Admins`.
pub const CHANNEL_ADMINS: &str = "/Channel/Admins";
/// `/Channel/Orderer/Readers`, checked instead of `/Channel/Readers` in maintenance mode.
pub const ORDERER_READERS: &str = "/Channel/Orderer/Readers";
/// `/Channel/Orderer/Writers`, checked instead of `/Channel/Writers` in maintenance mode.
pub const ORDERER_WRITERS: &str = "/Channel/Orderer/Writers";
/// `/Channel/Orderer/BlockValidation`: who may sign blocks.
pub const BLOCK_VALIDATION: &str = "/Channel/Orderer/BlockValidation";

/// Deepest nesting of `NOutOf` rules accepted in a signature policy.
pub const SIGNATURE_RULE_DEPTH_MAX: usize = 32;

/// One signature to evaluate: the signed bytes, the signer's serialized identity
/// and the DER ECDSA signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedData {
    pub data: Bytes,
    pub identity: Bytes,
    pub signature: Bytes,
}

impl fmt::Debug for SignedData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedData")
            .field("data_len", &self.data.len())
            .field("identity_len", &self.identity.len())
            .field("signature_len", &self.signature.len())
            .finish()
    }
}

/// Why signed data could not be extracted from a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignedDataError {
    #[error("could not unmarshal payload: {0}")]
    Payload(String),
    #[error("missing header")]
    MissingHeader,
    #[error("could not unmarshal signature header: {0}")]
    SignatureHeader(String),
    #[error("could not unmarshal signature header of config signature {index}: {reason}")]
    ConfigSignatureHeader { index: usize, reason: String },
}

impl SignedData {
    /// The single item an envelope carries: data = payload bytes as received,
    /// identity = the signature header's creator, signature = the envelope signature.
    pub fn from_envelope(envelope: &Envelope) -> Result<Vec<SignedData>, SignedDataError> {
        let payload = Payload::decode(envelope.payload.as_ref())
            .map_err(|e| SignedDataError::Payload(e.to_string()))?;
        let header = payload.header.ok_or(SignedDataError::MissingHeader)?;
        let sh = SignatureHeader::decode(header.signature_header.as_ref())
            .map_err(|e| SignedDataError::SignatureHeader(e.to_string()))?;
        Ok(vec![SignedData {
            data: envelope.payload.clone(),
            identity: sh.creator,
            signature: envelope.signature.clone(),
        }])
    }

    /// One item per config signature: data = `signature_header || config_update`,
    /// identity = the signature header's creator.
    pub fn from_config_update_envelope(
        update: &ConfigUpdateEnvelope,
    ) -> Result<Vec<SignedData>, SignedDataError> {
        update
            .signatures
            .iter()
            .enumerate()
            .map(|(index, sig)| {
                let sh = SignatureHeader::decode(sig.signature_header.as_ref()).map_err(|e| {
                    SignedDataError::ConfigSignatureHeader {
                        index,
                        reason: e.to_string(),
                    }
                })?;
                let mut data = BytesMut::with_capacity(
                    sig.signature_header.len() + update.config_update.len(),
                );
                data.extend_from_slice(&sig.signature_header);
                data.extend_from_slice(&update.config_update);
                Ok(SignedData {
                    data: data.freeze(),
                    identity: sh.creator,
                    signature: sig.signature.clone(),
                })
            })
            .collect()
    }
}

/// Why a policy refused a signature set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A signature policy was not satisfied.
    #[error("signature set did not satisfy policy")]
    SignatureSetNotSatisfied,
    /// Too few child groups satisfied their sub-policy.
    #[error(
        "implicit policy evaluation failed - {satisfied} sub-policies were satisfied, but this policy requires {required} of the '{sub_policy}' sub-policies to be satisfied"
    )]
    ImplicitMeta {
        satisfied: usize,
        required: usize,
        sub_policy: String,
    },
    /// The named policy does not exist (a reject-all stand-in was evaluated).
    #[error("No such policy: '{0}'")]
    NoSuchPolicy(String),
}

/// Why a policy in a config tree cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error creating policy {path}: {reason}")]
pub struct PolicyParseError {
    /// `/Channel/.../<name>`.
    pub path: String,
    pub reason: String,
}

/// Why a channel's MSPs cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MspManagerError {
    #[error("Attempted to define two different versions of MSP: {0}")]
    Conflict(String),
    #[error("MSP config at {path}: {source}")]
    Setup { path: String, source: MspError },
    #[error("MSP config at {path} cannot be decoded: {reason}")]
    Decode { path: String, reason: String },
}

/// MSP config type of an identity-mixer MSP: korder does not deserialize its identities.
pub const IDEMIX_MSP_TYPE: i32 = 1;

/// The MSPs of one channel, keyed by MSP id.
///
/// Identities of an MSP not in the channel are unknown: policies drop them.
#[derive(Debug, Default)]
pub struct MspManager {
    msps: BTreeMap<String, Msp>,
    /// Each MSP's config, to refuse two different definitions of one MSP id.
    configs: BTreeMap<String, MspConfig>,
    /// Ids of identity-mixer MSPs, which are accepted in configs but match nobody.
    idemix: Vec<String>,
}

/// Why an identity was not accepted by the channel's MSP manager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityLookupError {
    #[error("could not deserialize identity: {0}")]
    Decode(String),
    #[error("MSP {0} is unknown")]
    UnknownMsp(String),
    /// The MSP refused the identity (for example its certificate does not chain to
    /// the MSP's roots, so it cannot be sanitised).
    #[error("{0}")]
    Refused(MspError),
}

impl MspManager {
    /// Sets up every `(path, MSPConfig)` with `version`; the same MSP id may appear
    /// several times (orderer org and consortium member, say) only with equal configs.
    pub fn new<'a>(
        configs: impl IntoIterator<Item = (String, &'a MspConfig)>,
        version: MspVersion,
    ) -> Result<Self, MspManagerError> {
        let mut manager = MspManager::default();
        for (path, config) in configs {
            if config.r#type == IDEMIX_MSP_TYPE {
                // Identity-mixer MSPs carry their id inside an idemix config we do
                // not decode; they can never satisfy a principal here.
                manager.idemix.push(path);
                continue;
            }
            let msp =
                Msp::from_msp_config(config, version).map_err(|source| MspManagerError::Setup {
                    path: path.clone(),
                    source,
                })?;
            let id = msp.name().to_owned();
            match manager.configs.get(&id) {
                Some(existing) if existing != config => {
                    return Err(MspManagerError::Conflict(id));
                }
                Some(_) => {}
                None => {
                    manager.configs.insert(id.clone(), config.clone());
                    manager.msps.insert(id, msp);
                }
            }
        }
        Ok(manager)
    }

    /// The MSP with this id.
    pub fn msp(&self, msp_id: &str) -> Option<&Msp> {
        self.msps.get(msp_id)
    }

    /// The ids of the channel's X.509 MSPs.
    pub fn msp_ids(&self) -> impl Iterator<Item = &str> {
        self.msps.keys().map(String::as_str)
    }

    /// Decodes a serialized identity, finds its MSP and lets the MSP deserialize it
    /// (which sanitises the certificate and so requires its chain to build).
    pub fn deserialize_identity(
        &self,
        serialized: &[u8],
    ) -> Result<(&Msp, Identity), IdentityLookupError> {
        let sid = SerializedIdentity::decode(serialized).map_err(|e| {
            IdentityLookupError::Decode(format!(
                "cannot decode SerializedIdentity ({} bytes): {e}",
                serialized.len()
            ))
        })?;
        let msp = self
            .msps
            .get(&sid.mspid)
            .ok_or_else(|| IdentityLookupError::UnknownMsp(sid.mspid.clone()))?;
        let identity = msp
            .deserialize_identity(serialized)
            .map_err(IdentityLookupError::Refused)?;
        Ok((msp, identity))
    }
}

/// A compiled signature rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    SignedBy(usize),
    NOutOf(i32, Vec<Rule>),
}

/// A policy ready to evaluate.
pub struct Policy {
    kind: PolicyKind,
}

enum PolicyKind {
    Signature {
        rule: Rule,
        principals: Vec<MspPrincipal>,
        msps: Arc<MspManager>,
    },
    ImplicitMeta {
        sub_policy: String,
        threshold: usize,
        subs: Vec<Arc<Policy>>,
    },
    Reject(String),
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PolicyKind::Signature {
                rule, principals, ..
            } => f
                .debug_struct("SignaturePolicy")
                .field("rule", rule)
                .field("principals", &principals.len())
                .finish(),
            PolicyKind::ImplicitMeta {
                sub_policy,
                threshold,
                subs,
            } => f
                .debug_struct("ImplicitMetaPolicy")
                .field("sub_policy", sub_policy)
                .field("threshold", threshold)
                .field("sub_policies", &subs.len())
                .finish(),
            PolicyKind::Reject(name) => write!(f, "RejectPolicy({name:?})"),
        }
    }
}

/// A signature that survived deduplication, with its identity and MSP.
struct Candidate<'a> {
    signed: &'a SignedData,
    identity: Identity,
    msp: &'a Msp,
}

impl Policy {
    /// A policy that refuses everything with `No such policy: '<name>'`.
    pub fn reject(name: &str) -> Self {
        Policy {
            kind: PolicyKind::Reject(name.to_owned()),
        }
    }

    /// Compiles a `SignaturePolicyEnvelope`.
    pub fn signature(
        envelope: &SignaturePolicyEnvelope,
        msps: Arc<MspManager>,
    ) -> Result<Self, String> {
        if envelope.version != 0 {
            return Err(format!(
                "This evaluator only understands messages of version 0, but version was {}",
                envelope.version
            ));
        }
        let rule = envelope
            .rule
            .as_ref()
            .ok_or_else(|| "signature policy has no rule".to_owned())?;
        let rule = compile(rule, envelope.identities.len(), 0)?;
        Ok(Policy {
            kind: PolicyKind::Signature {
                rule,
                principals: envelope.identities.clone(),
                msps,
            },
        })
    }

    /// An implicit-meta policy over the given sub-policies (one per direct child group).
    pub fn implicit_meta(
        meta: &ImplicitMetaPolicy,
        subs: Vec<Arc<Policy>>,
    ) -> Result<Self, String> {
        let n = subs.len();
        let threshold = match implicit_meta_policy::Rule::try_from(meta.rule) {
            Ok(implicit_meta_policy::Rule::Any) => 1,
            Ok(implicit_meta_policy::Rule::All) => n,
            Ok(implicit_meta_policy::Rule::Majority) => n / 2 + 1,
            Err(_) => return Err(format!("unknown rule type '{}'", meta.rule)),
        };
        let threshold = if n == 0 { 0 } else { threshold };
        Ok(Policy {
            kind: PolicyKind::ImplicitMeta {
                sub_policy: meta.sub_policy.clone(),
                threshold,
                subs,
            },
        })
    }

    /// Evaluates the policy against a signature set; verifies ECDSA signatures as needed.
    pub fn evaluate(&self, signed: &[SignedData]) -> Result<(), PolicyError> {
        match &self.kind {
            PolicyKind::Reject(name) => Err(PolicyError::NoSuchPolicy(name.clone())),
            PolicyKind::ImplicitMeta {
                sub_policy,
                threshold,
                subs,
            } => {
                let mut remaining = *threshold;
                if remaining == 0 {
                    return Ok(());
                }
                for sub in subs {
                    if sub.evaluate(signed).is_ok() {
                        remaining -= 1;
                        if remaining == 0 {
                            return Ok(());
                        }
                    }
                }
                Err(PolicyError::ImplicitMeta {
                    satisfied: threshold - remaining,
                    required: *threshold,
                    sub_policy: sub_policy.clone(),
                })
            }
            PolicyKind::Signature {
                rule,
                principals,
                msps,
            } => {
                let candidates = deduplicate(signed, msps);
                let mut used = vec![false; candidates.len()];
                if eval_rule(rule, principals, &candidates, &mut used) {
                    Ok(())
                } else {
                    Err(PolicyError::SignatureSetNotSatisfied)
                }
            }
        }
    }
}

fn compile(rule: &SignaturePolicy, identities: usize, depth: usize) -> Result<Rule, String> {
    if depth > SIGNATURE_RULE_DEPTH_MAX {
        return Err(format!(
            "signature policy nested deeper than {SIGNATURE_RULE_DEPTH_MAX}"
        ));
    }
    match &rule.r#type {
        Some(signature_policy::Type::SignedBy(i)) => {
            let index = usize::try_from(*i).ok().filter(|i| *i < identities);
            index.map(Rule::SignedBy).ok_or_else(|| {
                format!(
                    "identity index out of range, requested {i}, but identities length is {identities}"
                )
            })
        }
        Some(signature_policy::Type::NOutOf(n_out_of)) => {
            let rules = n_out_of
                .rules
                .iter()
                .map(|r| compile(r, identities, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Rule::NOutOf(n_out_of.n, rules))
        }
        None => Err("signature policy rule has no type".to_owned()),
    }
}

/// The identity key used for deduplication: MSP id and the identity id (SHA-256 of
/// the sanitised certificate), so a certificate presented with its signature in
/// high-S and in low-S form counts once, while two certificates that differ in their
/// signature otherwise count twice.
fn identity_key(identity: &Identity) -> (String, [u8; 32]) {
    (identity.msp_id().to_owned(), identity.id_hash())
}

fn deduplicate<'a>(signed: &'a [SignedData], msps: &'a MspManager) -> Vec<Candidate<'a>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for item in signed {
        let Ok((msp, identity)) = msps.deserialize_identity(&item.identity) else {
            continue;
        };
        if seen.insert(identity_key(&identity)) {
            out.push(Candidate {
                signed: item,
                identity,
                msp,
            });
        }
    }
    out
}

fn eval_rule(
    rule: &Rule,
    principals: &[MspPrincipal],
    candidates: &[Candidate<'_>],
    used: &mut [bool],
) -> bool {
    match rule {
        Rule::SignedBy(i) => {
            let principal = &principals[*i];
            for (j, c) in candidates.iter().enumerate() {
                if used[j] {
                    continue;
                }
                if c.msp.satisfies_principal(&c.identity, principal).is_err() {
                    continue;
                }
                if c.identity
                    .verify(&c.signed.data, &c.signed.signature)
                    .is_err()
                {
                    continue;
                }
                used[j] = true;
                return true;
            }
            false
        }
        Rule::NOutOf(n, rules) => {
            let mut count: i64 = 0;
            for sub in rules {
                let mut scratch = used.to_vec();
                if eval_rule(sub, principals, candidates, &mut scratch) {
                    count += 1;
                    used.copy_from_slice(&scratch);
                }
            }
            count >= i64::from(*n)
        }
    }
}

/// The policies of one group and, under relative names `<child>/<policy>`, of all
/// its descendants.
pub struct PolicyManager {
    /// `Channel`, `Channel/Application`, ...
    path: String,
    policies: BTreeMap<String, Arc<Policy>>,
    children: BTreeMap<String, PolicyManager>,
}

impl fmt::Debug for PolicyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyManager")
            .field("path", &self.path)
            .field("policies", &self.policies.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PolicyManager {
    /// Builds the manager tree of a config tree whose root group is named `name`
    /// (`Channel` for a channel config).
    pub fn new(
        name: &str,
        group: &ConfigGroup,
        msps: &Arc<MspManager>,
    ) -> Result<Self, PolicyParseError> {
        let mut children = BTreeMap::new();
        for (child_name, child) in &group.groups {
            let child_path = format!("{name}/{child_name}");
            children.insert(
                child_name.clone(),
                PolicyManager::new(&child_path, child, msps)?,
            );
        }
        let mut policies = BTreeMap::new();
        for (key, config_policy) in &group.policies {
            let err = |reason: String| PolicyParseError {
                path: format!("/{name}/{key}"),
                reason,
            };
            let p = config_policy
                .policy
                .as_ref()
                .ok_or_else(|| err("policy is not set".to_owned()))?;
            let compiled = match policy::PolicyType::try_from(p.r#type) {
                Ok(policy::PolicyType::Signature) => {
                    let env = SignaturePolicyEnvelope::decode(p.value.as_ref())
                        .map_err(|e| err(format!("cannot decode SignaturePolicyEnvelope: {e}")))?;
                    Policy::signature(&env, msps.clone()).map_err(err)?
                }
                Ok(policy::PolicyType::ImplicitMeta) => {
                    let meta = ImplicitMetaPolicy::decode(p.value.as_ref())
                        .map_err(|e| err(format!("cannot decode ImplicitMetaPolicy: {e}")))?;
                    let subs = children
                        .values()
                        .map(|c: &PolicyManager| {
                            c.get_policy(&meta.sub_policy)
                                .cloned()
                                .unwrap_or_else(|| Arc::new(Policy::reject(&meta.sub_policy)))
                        })
                        .collect();
                    Policy::implicit_meta(&meta, subs).map_err(err)?
                }
                _ => return Err(err(format!("unknown policy type: {}", p.r#type))),
            };
            policies.insert(key.clone(), Arc::new(compiled));
        }
        for (child_name, child) in &children {
            for (key, p) in &child.policies {
                policies.insert(format!("{child_name}/{key}"), p.clone());
            }
        }
        Ok(PolicyManager {
            path: name.to_owned(),
            policies,
            children,
        })
    }

    /// This manager's path without a leading separator (`Channel/Orderer`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Finds a policy: an absolute name must start with `/<path>/`; a relative name
    /// is looked up among this group's and its descendants' policies.
    pub fn get_policy(&self, name: &str) -> Option<&Arc<Policy>> {
        if name.is_empty() {
            return None;
        }
        let relative = match name.strip_prefix(PATH_SEPARATOR) {
            Some(abs) => abs
                .strip_prefix(self.path.as_str())?
                .strip_prefix(PATH_SEPARATOR)?,
            None => name,
        };
        self.policies.get(relative)
    }

    /// Evaluates the named policy; an unknown name is refused with `No such policy`.
    pub fn evaluate(&self, name: &str, signed: &[SignedData]) -> Result<(), PolicyError> {
        match self.get_policy(name) {
            Some(p) => p.evaluate(signed),
            None => Err(PolicyError::NoSuchPolicy(name.to_owned())),
        }
    }

    /// The manager of a descendant group, by group names relative to this one.
    pub fn manager(&self, path: &[&str]) -> Option<&PolicyManager> {
        let mut m = self;
        for name in path {
            m = m.children.get(*name)?;
        }
        Some(m)
    }

    /// Names of all policies reachable from this manager (own and descendants').
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }
}
