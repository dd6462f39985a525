//! Config updates through config-update validation, against real channel configs.
//!
//! Random bytes almost never make a config update whose signatures satisfy a
//! channel's policies. This target therefore builds the update from the channel's
//! current config tree and applies a fuzzer-chosen list of edits to it, then signs
//! it with a fuzzer-chosen set of real admins and members of a development network
//! (the same organisations `korder init` writes), so that the fuzzer explores the
//! config tree rules rather than the signature check. A second mode hands the
//! validator an arbitrary envelope.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use korder_channelconfig::configtx::{propose_config_update, validate_config_envelope};
use korder_channelconfig::genesis::{ChannelProfile, EnvelopeStamp, OrgProfile, genesis_envelope};
use korder_channelconfig::{Bundle, config_from_envelope};
use korder_msp::devpki::{DevPki, NodeRole};
use korder_msp::mspdir::MspDir;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{
    ChannelHeader, ConfigGroup, ConfigSignature, ConfigUpdate, ConfigUpdateEnvelope, ConfigValue,
    Envelope, Header, HeaderType, Payload, Policy,
};

const SYSTEM_CHANNEL: &str = "system-channel";
const APP_CHANNEL: &str = "appchannel";
const CONSORTIUM: &str = "SampleConsortium";

/// One organisation of the development network.
struct Org {
    profile: OrgProfile,
    admin: SigningIdentity,
    member: SigningIdentity,
}

/// The development network: its signers and the bundles of its two channels.
struct Network {
    orgs: Vec<Org>,
    system: Bundle,
    app: Bundle,
}

fn org(msp_id: &str) -> Org {
    let domain = format!("{}.example.com", msp_id.to_lowercase());
    let pki = DevPki::generate(msp_id, &domain).expect("dev PKI");
    let signer = |cn: &str, role| {
        let c = pki.issue(cn, role).expect("issue");
        SigningIdentity::from_pem(msp_id, c.cert_pem.as_bytes(), c.key_pem.as_bytes())
            .expect("signer")
    };
    let admin_cert = pki
        .issue(&format!("Admin@{domain}"), NodeRole::Admin)
        .expect("issue admin");
    let node = pki
        .issue(&format!("node.{domain}"), NodeRole::Orderer)
        .expect("issue node");
    let dir = std::env::temp_dir().join(format!("korder-fuzz-msp-{}-{msp_id}", std::process::id()));
    pki.write_msp_dir(&dir, &node, &admin_cert)
        .expect("write MSP dir");
    let msp = MspDir::load(&dir)
        .expect("load MSP dir")
        .to_fabric_msp_config(msp_id);
    let _ = std::fs::remove_dir_all(&dir);
    let admin = SigningIdentity::from_pem(
        msp_id,
        admin_cert.cert_pem.as_bytes(),
        admin_cert.key_pem.as_bytes(),
    )
    .expect("admin signer");
    Org {
        profile: OrgProfile {
            name: msp_id.into(),
            msp,
            endpoints: vec!["127.0.0.1:7050".into()],
        },
        member: signer(&format!("User1@{domain}"), NodeRole::Client),
        admin,
    }
}

fn bundle(channel: &str, profile: &ChannelProfile) -> Bundle {
    let stamp = EnvelopeStamp {
        timestamp_secs: 1_700_000_000,
        nonce: [9; 24],
    };
    let env = genesis_envelope(channel, profile.channel_group(), &stamp);
    Bundle::from_config_envelope(&env).expect("dev genesis bundle")
}

fn network() -> &'static Network {
    static NETWORK: OnceLock<Network> = OnceLock::new();
    NETWORK.get_or_init(|| {
        let orgs = vec![org("OrdererMSP"), org("Org1MSP"), org("Org2MSP")];
        let mut profile = ChannelProfile::sample("kafka");
        profile.kafka_brokers = vec!["127.0.0.1:9092".into()];
        profile.orderer_addresses = vec!["127.0.0.1:7050".into()];
        profile.orderer_orgs = vec![orgs[0].profile.clone()];
        profile.consortiums.insert(
            CONSORTIUM.into(),
            vec![orgs[1].profile.clone(), orgs[2].profile.clone()],
        );
        let system = bundle(SYSTEM_CHANNEL, &profile);
        let mut app = profile.clone();
        app.consortiums.clear();
        app.consortium = Some(CONSORTIUM.into());
        app.application_orgs = Some(vec![orgs[1].profile.clone(), orgs[2].profile.clone()]);
        let app = bundle(APP_CHANNEL, &app);
        Network { orgs, system, app }
    })
}

/// Where an edit applies: a walk down the tree by child index (modulo the number
/// of children), then an element of the group reached.
#[derive(Arbitrary, Debug)]
struct Path {
    walk: Vec<u8>,
    element: u8,
}

#[derive(Arbitrary, Debug)]
enum Edit {
    /// Replace a value's bytes (and bump its version).
    SetValue { at: Path, value: Vec<u8>, bump: u8 },
    /// Add a value under a new or existing name.
    AddValue {
        at: Path,
        name: String,
        value: Vec<u8>,
    },
    /// Remove a value from the write set.
    DeleteValue { at: Path },
    /// Replace a policy (type and bytes) and bump its version.
    SetPolicy {
        at: Path,
        kind: i32,
        value: Vec<u8>,
        bump: u8,
    },
    /// Change the mod_policy of a group, value or policy.
    SetModPolicy {
        at: Path,
        which: u8,
        mod_policy: String,
    },
    /// Change a group's version.
    SetGroupVersion { at: Path, version: u8 },
    /// Remove a subgroup from the write set.
    DeleteGroup { at: Path },
    /// Add an empty subgroup.
    AddGroup { at: Path, name: String },
    /// Change an element's version in the read set only.
    SetReadVersion { at: Path, version: u8 },
}

#[derive(Arbitrary, Debug)]
struct Structured {
    /// Application channel, else the system channel.
    application: bool,
    /// Which of the six signers (admin and member of each org) sign the update.
    signers: u8,
    /// Edits applied to the write set (and read set) copied from the current config.
    edits: Vec<Edit>,
    /// Set a channel id other than the bundle's in the update.
    channel_id: Option<String>,
}

/// Arbitrary input: a structured config update (first byte even) or an envelope.
///
/// Invariants: validation never panics; an update the proposer accepts yields the
/// next sequence, and the block writer's re-check of that config envelope
/// (`validate_config_envelope`) accepts it and rebuilds the same config.
pub fn config_update(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let net = network();
    if mode % 2 == 1 {
        if let Ok(envelope) = Envelope::decode(rest) {
            check(&net.app, &envelope);
            check(&net.system, &envelope);
        }
        return;
    }
    let Ok(input) = Structured::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let current = if input.application {
        &net.app
    } else {
        &net.system
    };
    let channel_id = input
        .channel_id
        .clone()
        .unwrap_or_else(|| current.channel_id.clone());
    let read = current.channel_group().clone();
    let mut update = ConfigUpdate {
        channel_id: channel_id.clone(),
        read_set: Some(read.clone()),
        write_set: Some(read),
        ..Default::default()
    };
    for edit in &input.edits {
        apply(&mut update, edit);
    }
    let signers: Vec<&SigningIdentity> = net
        .orgs
        .iter()
        .flat_map(|o| [&o.admin, &o.member])
        .enumerate()
        .filter(|(i, _)| input.signers & (1 << i) != 0)
        .map(|(_, s)| s)
        .collect();
    let envelope = update_envelope(&channel_id, &update, &signers);
    check(current, &envelope);
}

/// Runs the proposer, and the block writer's re-check on what it accepts.
fn check(current: &Bundle, envelope: &Envelope) {
    let Ok(next) = propose_config_update(current, envelope) else {
        return;
    };
    let config = next
        .config
        .as_ref()
        .expect("an accepted update carries a config");
    assert_eq!(
        config.sequence,
        current.sequence.next().get(),
        "an accepted update must carry the next sequence"
    );
    let bundle = validate_config_envelope(current, &next).unwrap_or_else(|e| {
        panic!("the proposer accepted an update that the block writer refuses: {e}")
    });
    assert_eq!(bundle.sequence.get(), config.sequence);
    assert_eq!(
        &bundle.config, config,
        "the re-check rebuilt another config"
    );
    // The config envelope as it would travel in a block parses back.
    let payload = Payload {
        header: Some(Header {
            channel_header: ChannelHeader {
                r#type: HeaderType::Config as i32,
                channel_id: current.channel_id.clone(),
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
            signature_header: Bytes::new(),
        }),
        data: next.encode_to_vec().into(),
    };
    let env = Envelope {
        payload: payload.encode_to_vec().into(),
        signature: Bytes::new(),
    };
    let (channel, _) = config_from_envelope(&env.encode_to_vec())
        .unwrap_or_else(|e| panic!("the accepted config envelope does not parse: {e}"));
    assert_eq!(channel, current.channel_id);
}

/// The group a path reaches, walking by child index.
fn walk<'a>(group: &'a mut ConfigGroup, walk: &[u8]) -> &'a mut ConfigGroup {
    match walk.split_first() {
        Some((&step, rest)) if !group.groups.is_empty() => {
            let i = usize::from(step) % group.groups.len();
            let next = group
                .groups
                .values_mut()
                .nth(i)
                .expect("i is below the length");
            self::walk(next, rest)
        }
        _ => group,
    }
}

fn nth_key<V>(map: &BTreeMap<String, V>, i: u8) -> Option<String> {
    if map.is_empty() {
        return None;
    }
    map.keys().nth(usize::from(i) % map.len()).cloned()
}

fn nth_mut<V>(map: &mut BTreeMap<String, V>, i: u8) -> Option<&mut V> {
    let n = map.len();
    if n == 0 {
        return None;
    }
    map.values_mut().nth(usize::from(i) % n)
}

fn apply(update: &mut ConfigUpdate, edit: &Edit) {
    let (Some(read), Some(write)) = (update.read_set.as_mut(), update.write_set.as_mut()) else {
        return;
    };
    match edit {
        Edit::SetValue { at, value, bump } => {
            if let Some(v) = nth_mut(&mut walk(write, &at.walk).values, at.element) {
                v.value = Bytes::copy_from_slice(value);
                v.version = v.version.saturating_add(u64::from(*bump % 3));
            }
        }
        Edit::AddValue { at, name, value } => {
            walk(write, &at.walk).values.insert(
                name.clone(),
                ConfigValue {
                    version: 0,
                    value: Bytes::copy_from_slice(value),
                    mod_policy: "Admins".into(),
                },
            );
        }
        Edit::DeleteValue { at } => {
            let g = walk(write, &at.walk);
            if let Some(k) = nth_key(&g.values, at.element) {
                g.values.remove(&k);
            }
        }
        Edit::SetPolicy {
            at,
            kind,
            value,
            bump,
        } => {
            if let Some(entry) = nth_mut(&mut walk(write, &at.walk).policies, at.element) {
                entry.policy = Some(Policy {
                    r#type: *kind,
                    value: Bytes::copy_from_slice(value),
                });
                entry.version = entry.version.saturating_add(u64::from(*bump % 3));
            }
        }
        Edit::SetModPolicy {
            at,
            which,
            mod_policy,
        } => {
            let g = walk(write, &at.walk);
            match which % 3 {
                0 => g.mod_policy = mod_policy.clone(),
                1 => {
                    if let Some(v) = nth_mut(&mut g.values, at.element) {
                        v.mod_policy = mod_policy.clone();
                        v.version += 1;
                    }
                }
                _ => {
                    if let Some(p) = nth_mut(&mut g.policies, at.element) {
                        p.mod_policy = mod_policy.clone();
                        p.version += 1;
                    }
                }
            }
        }
        Edit::SetGroupVersion { at, version } => {
            walk(write, &at.walk).version = u64::from(*version);
        }
        Edit::DeleteGroup { at } => {
            let g = walk(write, &at.walk);
            if let Some(k) = nth_key(&g.groups, at.element) {
                g.groups.remove(&k);
            }
        }
        Edit::AddGroup { at, name } => {
            walk(write, &at.walk).groups.insert(
                name.clone(),
                ConfigGroup {
                    mod_policy: "Admins".into(),
                    ..Default::default()
                },
            );
        }
        Edit::SetReadVersion { at, version } => {
            let g = walk(read, &at.walk);
            match nth_mut(&mut g.values, at.element) {
                Some(v) => v.version = u64::from(*version),
                None => g.version = u64::from(*version),
            }
        }
    }
}

/// A CONFIG_UPDATE envelope carrying `update` with one config signature per
/// signer; the outer envelope is signed by the first signer, if any.
fn update_envelope(
    channel_id: &str,
    update: &ConfigUpdate,
    signers: &[&SigningIdentity],
) -> Envelope {
    let config_update = Bytes::from(update.encode_to_vec());
    let signatures = signers
        .iter()
        .map(|s| {
            let signature_header = s.new_signature_header().expect("signature header");
            let mut data = signature_header.to_vec();
            data.extend_from_slice(&config_update);
            ConfigSignature {
                signature_header,
                signature: s.sign(&data).expect("sign"),
            }
        })
        .collect();
    let envelope = ConfigUpdateEnvelope {
        config_update,
        signatures,
    };
    let channel_header = ChannelHeader {
        r#type: HeaderType::ConfigUpdate as i32,
        channel_id: channel_id.into(),
        ..Default::default()
    };
    let signature_header = signers
        .first()
        .map(|s| s.new_signature_header().expect("signature header"))
        .unwrap_or_default();
    let payload = Bytes::from(
        Payload {
            header: Some(Header {
                channel_header: channel_header.encode_to_vec().into(),
                signature_header,
            }),
            data: envelope.encode_to_vec().into(),
        }
        .encode_to_vec(),
    );
    let signature = signers
        .first()
        .map(|s| s.sign(&payload).expect("sign"))
        .unwrap_or_default();
    Envelope { payload, signature }
}
