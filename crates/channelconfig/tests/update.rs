//! Config updates computed from two configs (configtxlator's `compute_update`), checked
//! by round trip: the computed update, signed and wrapped, passes the channel's
//! config-update validation and yields exactly the modified config.

#![allow(clippy::unwrap_used)]

mod common;

use common::{CONSORTIUM, DevNetwork, DevOrg, bundle_of_profile, config_update_envelope};
use korder_channelconfig::configtx::propose_config_update;
use korder_channelconfig::genesis::implicit_meta;
use korder_channelconfig::update::{
    ConsensusState, EditError, OrdererChanges, UpdateError, compute_update, creation_update,
    diff_groups, in_maintenance,
};
use korder_channelconfig::{Bundle, new_channel_config};
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Config, ConfigGroup, ConfigValue, Consortium};
use korder_proto::orderer::BatchSize;
use korder_proto::peer::{AnchorPeer, AnchorPeers};

const APP_CHANNEL: &str = "appchannel";

/// An application channel of the dev network with Org1 and Org2.
fn app_channel(net: &DevNetwork) -> Bundle {
    app_channel_with(net, &[&net.org1, &net.org2])
}

fn app_channel_with(net: &DevNetwork, orgs: &[&DevOrg]) -> Bundle {
    let mut p = net.profile.clone();
    p.consortiums.clear();
    p.consortium = Some(CONSORTIUM.into());
    p.application_orgs = Some(orgs.iter().map(|o| o.profile()).collect());
    bundle_of_profile(APP_CHANNEL, &p)
}

/// `group` with every version set to zero: what an operator edits carries the old
/// versions, the committed config the new ones; the content must be the same.
fn without_versions(group: &ConfigGroup) -> ConfigGroup {
    let mut g = group.clone();
    g.version = 0;
    g.values.values_mut().for_each(|v| v.version = 0);
    g.policies.values_mut().for_each(|p| p.version = 0);
    g.groups = g
        .groups
        .iter()
        .map(|(k, sub)| (k.clone(), without_versions(sub)))
        .collect();
    g
}

/// Computes the update from the bundle's config to `modified`, signs it with
/// `signers`, runs it through config-update validation and asserts that the result
/// is the modified config at the next sequence. Returns the committed config.
fn round_trip(bundle: &Bundle, modified: &ConfigGroup, signers: &[&SigningIdentity]) -> Config {
    let modified_config = Config {
        sequence: bundle.config.sequence,
        channel_group: Some(modified.clone()),
    };
    let update = compute_update(APP_CHANNEL, &bundle.config, &modified_config).unwrap();
    let env = config_update_envelope(APP_CHANNEL, &update, signers);
    let ce = propose_config_update(bundle, &env).unwrap();
    let committed = ce.config.unwrap();
    assert_eq!(committed.sequence, bundle.config.sequence + 1);
    let group = committed.channel_group.as_ref().unwrap();
    assert_eq!(without_versions(group), without_versions(modified));
    // The committed config is itself a valid channel config.
    Bundle::new(APP_CHANNEL, committed.clone()).unwrap();
    committed
}

fn batch_size(group: &ConfigGroup) -> BatchSize {
    BatchSize::decode(group.groups["Orderer"].values["BatchSize"].value.as_ref()).unwrap()
}

/// Two equal configs give no update: the diff is empty and compute_update refuses it.
#[test]
fn no_op_diff_is_refused() {
    let net = DevNetwork::new();
    let b = app_channel(&net);
    assert!(diff_groups(b.channel_group(), b.channel_group()).is_none());
    let err = compute_update(APP_CHANNEL, &b.config, &b.config).unwrap_err();
    assert_eq!(
        err,
        UpdateError::NoChange {
            channel: APP_CHANNEL.into()
        }
    );
    let empty = Config::default();
    assert!(matches!(
        compute_update(APP_CHANNEL, &b.config, &empty),
        Err(UpdateError::NoChannelGroup {
            which: "modified",
            ..
        })
    ));
}

/// A BatchSize change has configtxlator's shape (only BatchSize in the write set, at
/// version + 1; Orderer and Channel at their versions in both sets) and round-trips
/// with the orderer admin's signature; without it, validation refuses the update.
#[test]
fn batch_size_change_round_trips() {
    let net = DevNetwork::new();
    let b = app_channel(&net);
    let root = b.channel_group();
    let mut modified = root.clone();
    let mut size = batch_size(root);
    size.max_message_count = 3;
    modified
        .groups
        .get_mut("Orderer")
        .unwrap()
        .values
        .get_mut("BatchSize")
        .unwrap()
        .value = size.encode_to_vec().into();

    let (read, write) = diff_groups(root, &modified).unwrap();
    assert_eq!((read.version, write.version), (root.version, root.version));
    assert!(read.values.is_empty() && write.values.is_empty());
    assert_eq!(read.groups.keys().collect::<Vec<_>>(), ["Orderer"]);
    assert_eq!(write.groups.keys().collect::<Vec<_>>(), ["Orderer"]);
    let current = &root.groups["Orderer"];
    let (ro, wo) = (&read.groups["Orderer"], &write.groups["Orderer"]);
    assert_eq!((ro.version, wo.version), (current.version, current.version));
    assert!(ro.values.is_empty() && ro.groups.is_empty() && ro.policies.is_empty());
    assert_eq!(wo.values.keys().collect::<Vec<_>>(), ["BatchSize"]);
    let v = &wo.values["BatchSize"];
    assert_eq!(v.version, current.values["BatchSize"].version + 1);
    assert_eq!(v.mod_policy, current.values["BatchSize"].mod_policy);

    let committed = round_trip(&b, &modified, &[&net.orderer_org.admin]);
    let group = committed.channel_group.unwrap();
    assert_eq!(batch_size(&group).max_message_count, 3);
    assert_eq!(
        group.groups["Orderer"].values["BatchSize"].version,
        current.values["BatchSize"].version + 1
    );

    let update = compute_update(
        APP_CHANNEL,
        &b.config,
        &Config {
            sequence: 0,
            channel_group: Some(modified),
        },
    )
    .unwrap();
    let env = config_update_envelope(APP_CHANNEL, &update, &[&net.org1.admin]);
    let err = propose_config_update(&b, &env).unwrap_err().to_string();
    assert!(err.contains("not satisfied"), "{err}");
}

/// Adding an org to the application bumps the Application group (its member list
/// changed), carries the new org whole at version 0, and round-trips with the
/// majority of the application's org admins.
#[test]
fn adding_an_org_round_trips() {
    let net = DevNetwork::new();
    let org3 = DevOrg::new("Org3MSP");
    let b = app_channel(&net);
    let with_org3 = app_channel_with(&net, &[&net.org1, &net.org2, &org3]);
    let root = b.channel_group();
    let mut modified = root.clone();
    let org3_group = with_org3.channel_group().groups["Application"].groups["Org3MSP"].clone();
    modified
        .groups
        .get_mut("Application")
        .unwrap()
        .groups
        .insert("Org3MSP".into(), org3_group.clone());

    let (read, write) = diff_groups(root, &modified).unwrap();
    let (ra, wa) = (&read.groups["Application"], &write.groups["Application"]);
    let current = &root.groups["Application"];
    assert_eq!(ra.version, current.version);
    assert_eq!(wa.version, current.version + 1);
    assert_eq!(
        wa.groups.keys().collect::<Vec<_>>(),
        ["Org1MSP", "Org2MSP", "Org3MSP"]
    );
    assert!(!ra.groups.contains_key("Org3MSP"));
    assert_eq!(wa.groups["Org3MSP"], org3_group);

    let committed = round_trip(&b, &modified, &[&net.org1.admin, &net.org2.admin]);
    let bundle = Bundle::new(APP_CHANNEL, committed).unwrap();
    assert_eq!(bundle.application_orgs.len(), 3);

    // One of two org admins is not a majority of the application's admins.
    let update = compute_update(
        APP_CHANNEL,
        &b.config,
        &Config {
            sequence: 0,
            channel_group: Some(modified),
        },
    )
    .unwrap();
    let env = config_update_envelope(APP_CHANNEL, &update, &[&net.org1.admin]);
    assert!(propose_config_update(&b, &env).is_err());
}

/// Setting an org's anchor peers adds one value under the org; its admin alone may do it.
#[test]
fn anchor_peers_round_trip() {
    let net = DevNetwork::new();
    let b = app_channel(&net);
    let mut modified = b.channel_group().clone();
    let anchors = AnchorPeers {
        anchor_peers: vec![AnchorPeer {
            host: "peer0.org1.example.com".into(),
            port: 7051,
        }],
    };
    modified
        .groups
        .get_mut("Application")
        .unwrap()
        .groups
        .get_mut("Org1MSP")
        .unwrap()
        .values
        .insert(
            "AnchorPeers".into(),
            ConfigValue {
                version: 0,
                value: anchors.encode_to_vec().into(),
                mod_policy: "Admins".into(),
            },
        );
    let (_, write) = diff_groups(b.channel_group(), &modified).unwrap();
    let org1 = &write.groups["Application"].groups["Org1MSP"];
    assert_eq!(
        org1.version,
        b.channel_group().groups["Application"].groups["Org1MSP"].version + 1
    );
    assert_eq!(org1.values["AnchorPeers"].version, 0);

    let committed = round_trip(&b, &modified, &[&net.org1.admin]);
    let value = &committed.channel_group.unwrap().groups["Application"].groups["Org1MSP"].values["AnchorPeers"];
    assert_eq!(AnchorPeers::decode(value.value.as_ref()).unwrap(), anchors);

    let update = compute_update(
        APP_CHANNEL,
        &b.config,
        &Config {
            sequence: 0,
            channel_group: Some(modified),
        },
    )
    .unwrap();
    let env = config_update_envelope(APP_CHANNEL, &update, &[&net.org2.admin]);
    assert!(propose_config_update(&b, &env).is_err());
}

/// Changing a policy and a value's mod_policy: each lands in the write set at version + 1
/// and the whole change round-trips with the application admins' signatures.
#[test]
fn policy_changes_round_trip() {
    let net = DevNetwork::new();
    let b = app_channel(&net);
    let root = b.channel_group();
    let mut modified = root.clone();
    let app = modified.groups.get_mut("Application").unwrap();
    let writers = app.policies.get_mut("Writers").unwrap();
    writers.policy = Some(implicit_meta("ALL", "Writers"));
    let (_, write) = diff_groups(root, &modified).unwrap();
    let wa = &write.groups["Application"];
    assert_eq!(wa.version, root.groups["Application"].version);
    assert_eq!(wa.policies.keys().collect::<Vec<_>>(), ["Writers"]);
    assert_eq!(
        wa.policies["Writers"].version,
        root.groups["Application"].policies["Writers"].version + 1
    );

    // And a removed policy: the group's member list changes, so it is bumped.
    let mut removed = modified.clone();
    removed
        .groups
        .get_mut("Application")
        .unwrap()
        .policies
        .remove("Readers");
    let (read, write) = diff_groups(root, &removed).unwrap();
    assert_eq!(
        write.groups["Application"].version,
        root.groups["Application"].version + 1
    );
    assert!(!write.groups["Application"].policies.contains_key("Readers"));
    assert!(read.groups["Application"].policies.contains_key("Admins"));

    let committed = round_trip(&b, &modified, &[&net.org1.admin, &net.org2.admin]);
    let group = committed.channel_group.unwrap();
    assert_eq!(
        group.groups["Application"].policies["Writers"].policy,
        Some(implicit_meta("ALL", "Writers"))
    );
}

/// A creation request has configtxgen's shape (Application v1 with Admins, the orgs at
/// v0 in both sets, Consortium at v0 in both) and the system channel turns it, signed
/// by an org admin, into the new channel's config.
#[test]
fn creation_update_has_configtxgen_shape_and_validates() {
    let u = creation_update("newchan", CONSORTIUM, &["Org1MSP".into()]);
    assert_eq!(u.channel_id, "newchan");
    let read = u.read_set.clone().unwrap();
    let write = u.write_set.clone().unwrap();
    assert_eq!((read.version, write.version), (0, 0));
    assert_eq!(read.values["Consortium"], ConfigValue::default());
    let c = Consortium::decode(write.values["Consortium"].value.as_ref()).unwrap();
    assert_eq!(c.name, CONSORTIUM);
    let (ra, wa) = (&read.groups["Application"], &write.groups["Application"]);
    assert_eq!(ra.version, 0);
    assert!(ra.values.is_empty() && ra.policies.is_empty());
    assert_eq!(ra.groups["Org1MSP"], ConfigGroup::default());
    assert_eq!(wa.version, 1);
    assert_eq!(wa.mod_policy, "Admins");
    assert_eq!(wa.groups["Org1MSP"], ConfigGroup::default());
    assert_eq!(
        wa.policies.keys().collect::<Vec<_>>(),
        ["Admins", "Readers", "Writers"]
    );
    assert!(
        wa.policies
            .values()
            .all(|p| p.version == 0 && p.mod_policy == "Admins")
    );
    assert_eq!(wa.values["Capabilities"].version, 0);

    let net = DevNetwork::new();
    let env = config_update_envelope("newchan", &u, &[&net.org1.admin]);
    let config = new_channel_config(&net.system, &env)
        .unwrap()
        .config
        .unwrap();
    assert_eq!(config.sequence, 1);
    let bundle = Bundle::new("newchan", config).unwrap();
    assert_eq!(bundle.consortium.as_deref(), Some(CONSORTIUM));
    assert_eq!(bundle.application_orgs.len(), 1);
    assert_eq!(bundle.application_orgs[0].name, "Org1MSP");
}

/// Orderer changes edit only the asked fields and round-trip; a batch size that would
/// cut no block, or a preferred size above the absolute maximum, is refused before any
/// update is computed; maintenance mode is seen in the edited group.
#[test]
fn orderer_changes_apply_and_refuse_bad_batch_sizes() {
    let net = DevNetwork::new();
    let b = app_channel(&net);
    let root = b.channel_group();
    let before = batch_size(root);
    let next = OrdererChanges {
        preferred_max_bytes: Some(before.preferred_max_bytes / 2),
        batch_timeout: Some("1m0s".into()),
        ..Default::default()
    }
    .apply(root)
    .unwrap();
    let after = batch_size(&next);
    assert_eq!(after.preferred_max_bytes, before.preferred_max_bytes / 2);
    assert_eq!(after.max_message_count, before.max_message_count);
    assert_eq!(after.absolute_max_bytes, before.absolute_max_bytes);
    let committed = round_trip(&b, &next, &[&net.orderer_org.admin]);
    assert_eq!(
        Bundle::new(APP_CHANNEL, committed)
            .unwrap()
            .orderer
            .batch_timeout,
        std::time::Duration::from_secs(60)
    );

    let zero = OrdererChanges {
        max_message_count: Some(0),
        ..Default::default()
    };
    assert_eq!(zero.apply(root), Err(EditError::ZeroMaxMessageCount));
    let inverted = OrdererChanges {
        preferred_max_bytes: Some(before.absolute_max_bytes + 1),
        ..Default::default()
    };
    assert!(matches!(
        inverted.apply(root),
        Err(EditError::PreferredAboveAbsolute { .. })
    ));
    assert!(OrdererChanges::default().is_empty());

    assert!(!in_maintenance(root));
    let maintenance = OrdererChanges {
        consensus_state: Some(ConsensusState::Maintenance),
        ..Default::default()
    }
    .apply(root)
    .unwrap();
    assert!(in_maintenance(&maintenance));
}
