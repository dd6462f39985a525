//! Config updates and channel creation: Fabric's read-set/delta/mod_policy rules,
//! error texts, commit re-validation and the system channel's creation template.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::SystemTime;

use bytes::Bytes;
use common::{
    CONSORTIUM, DevNetwork, SYSTEM_CHANNEL, bare_group, bundle_of_profile, config_update_envelope,
};
use korder_channelconfig::Bundle;
use korder_channelconfig::configtx::{
    ConfigTxError, check_channel_creation, check_channel_limit, new_channel_config,
    propose_config_update, validate_config_envelope,
};
use korder_channelconfig::envelope::{config_tx, orderer_tx, unwrap_orderer_tx};
use korder_channelconfig::genesis::implicit_meta;
use korder_channelconfig::policies::SignedData;
use korder_msp::devpki::NodeRole;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{
    Block, ConfigEnvelope, ConfigGroup, ConfigPolicy, ConfigUpdate, ConfigValue, Consortium,
    Envelope, HeaderType,
};
use korder_proto::msp::MspConfig;
use korder_proto::orderer::BatchSize;

const APP_CHANNEL: &str = "appchannel";

/// An application channel of the dev network, as if created with Org1 and Org2.
fn app_channel(net: &DevNetwork) -> Bundle {
    let mut p = net.profile.clone();
    p.consortiums.clear();
    p.consortium = Some(CONSORTIUM.into());
    p.application_orgs = Some(vec![net.org1.profile(), net.org2.profile()]);
    bundle_of_profile(APP_CHANNEL, &p)
}

fn with_orderer(read: ConfigGroup) -> ConfigGroup {
    let mut root = bare_group(0);
    root.groups.insert("Orderer".into(), read);
    root
}

/// A BatchSize update as configtxlator computes it: Orderer in both sets at v0, BatchSize at `version`.
fn batch_size_update(channel: &str, orderer_read_version: u64, version: u64) -> ConfigUpdate {
    let mut write_orderer = bare_group(0);
    write_orderer.values.insert(
        "BatchSize".into(),
        ConfigValue {
            version,
            value: BatchSize {
                max_message_count: 42,
                absolute_max_bytes: 1024 * 1024,
                preferred_max_bytes: 512 * 1024,
            }
            .encode_to_vec()
            .into(),
            mod_policy: "Admins".into(),
        },
    );
    ConfigUpdate {
        channel_id: channel.into(),
        read_set: Some(with_orderer(bare_group(orderer_read_version))),
        write_set: Some(with_orderer(write_orderer)),
        ..Default::default()
    }
}

fn propose(
    bundle: &Bundle,
    update: &ConfigUpdate,
    signers: &[&SigningIdentity],
) -> Result<ConfigEnvelope, ConfigTxError> {
    let env = config_update_envelope(&bundle.channel_id, update, signers);
    propose_config_update(bundle, &env)
}

/// A BatchSize update signed by the orderer org's admin is accepted; committing it yields the new BatchSize at sequence 1.
#[test]
fn batch_size_update_by_orderer_admin_is_accepted() {
    let net = DevNetwork::new();
    for bundle in [net.system.clone(), app_channel(&net)] {
        let update = batch_size_update(&bundle.channel_id, 0, 1);
        let ce = propose(&bundle, &update, &[&net.orderer_org.admin]).unwrap();
        assert_eq!(ce.config.as_ref().unwrap().sequence, 1);
        let next = validate_config_envelope(&bundle, &ce).unwrap();
        assert_eq!(next.sequence.get(), 1);
        assert_eq!(next.orderer.batch_size.max_message_count, 42);
        assert_eq!(
            bundle.orderer.batch_size.max_message_count, 500,
            "current unchanged"
        );
        let group = next.channel_group();
        assert_eq!(group.groups["Orderer"].values["BatchSize"].version, 1);
        assert_eq!(group.groups["Orderer"].version, 0);
        // Nothing else moved.
        let mut expected = bundle.channel_group().clone();
        expected.groups.get_mut("Orderer").unwrap().values.insert(
            "BatchSize".into(),
            update.write_set.as_ref().unwrap().groups["Orderer"].values["BatchSize"].clone(),
        );
        assert_eq!(group, &expected);
    }
}

/// Without signatures, or signed by the wrong org or a non-admin, the update fails with Fabric's policy text.
#[test]
fn batch_size_update_needs_orderer_admin() {
    let net = DevNetwork::new();
    let app = app_channel(&net);
    let update = batch_size_update(APP_CHANNEL, 0, 1);
    let expected = "error authorizing update: error validating DeltaSet: policy for [Value]  /Channel/Orderer/BatchSize not satisfied: implicit policy evaluation failed - 0 sub-policies were satisfied, but this policy requires 1 of the 'Admins' sub-policies to be satisfied";
    for signers in [
        vec![],
        vec![&net.org1.admin],
        vec![&net.orderer_org.client, &net.orderer_org.orderer],
    ] {
        let err = propose(&app, &update, &signers).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
}

/// A stale read set and a version jump are refused with Fabric's texts.
#[test]
fn stale_read_set_and_version_jump_are_refused() {
    let net = DevNetwork::new();
    let b = &net.system;
    let admin = [&net.orderer_org.admin];
    let err = propose(b, &batch_size_update(SYSTEM_CHANNEL, 1, 1), &admin).unwrap_err();
    assert_eq!(
        err.to_string(),
        "error authorizing update: error validating ReadSet: proposed update requires that key [Group]  /Channel/Orderer be at version 1, but it is currently at version 0"
    );
    let err = propose(b, &batch_size_update(SYSTEM_CHANNEL, 0, 2), &admin).unwrap_err();
    assert_eq!(
        err.to_string(),
        "error authorizing update: error validating DeltaSet: attempt to set key [Value]  /Channel/Orderer/BatchSize to version 2, but key is at version 0"
    );
    // Applying an update moves the config on: the same update is then stale.
    let ce = propose(b, &batch_size_update(SYSTEM_CHANNEL, 0, 1), &admin).unwrap();
    let next = validate_config_envelope(b, &ce).unwrap();
    let err = propose(&next, &batch_size_update(SYSTEM_CHANNEL, 0, 1), &admin).unwrap_err();
    assert!(
        err.to_string().contains("attempt to set key [Value]  /Channel/Orderer/BatchSize to version 1, but key is at version 1"),
        "{err}"
    );
}

/// Malformed envelopes, a wrong header type, a channel mismatch and an empty delta are refused clearly.
#[test]
fn malformed_updates_are_refused() {
    let net = DevNetwork::new();
    let b = &net.system;
    let garbage = Envelope {
        payload: Bytes::from_static(b"\xff\xff\xff"),
        signature: Bytes::new(),
    };
    let err = propose_config_update(b, &garbage).unwrap_err();
    assert!(matches!(err, ConfigTxError::Unwrap(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("error converting envelope to config update: ")
    );

    let mut update = batch_size_update(SYSTEM_CHANNEL, 0, 1);
    update.channel_id = String::new();
    let err = propose(b, &update, &[&net.orderer_org.admin]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "error authorizing update: ConfigUpdate for channel '' but envelope for channel '{SYSTEM_CHANNEL}'"
        )
    );

    let same = ConfigUpdate {
        channel_id: SYSTEM_CHANNEL.into(),
        read_set: Some(with_orderer(bare_group(0))),
        write_set: Some(with_orderer(bare_group(0))),
        ..Default::default()
    };
    let err = propose(b, &same, &[&net.orderer_org.admin]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "error authorizing update: error validating DeltaSet: delta set was empty -- update would have no effect"
    );

    let mut bad_key = batch_size_update(SYSTEM_CHANNEL, 0, 1);
    let w = bad_key
        .write_set
        .as_mut()
        .unwrap()
        .groups
        .get_mut("Orderer")
        .unwrap();
    let v = w.values.remove("BatchSize").unwrap();
    w.values.insert("Batch_Size".into(), v);
    let err = propose(b, &bad_key, &[&net.orderer_org.admin]).unwrap_err();
    assert!(
        err.to_string()
            .contains("illegal characters in key: [Value]  /Channel/Orderer/Batch_Size"),
        "{err}"
    );

    let mut new_at_1 = batch_size_update(SYSTEM_CHANNEL, 0, 1);
    let w = new_at_1
        .write_set
        .as_mut()
        .unwrap()
        .groups
        .get_mut("Orderer")
        .unwrap();
    let mut v = w.values.remove("BatchSize").unwrap();
    v.version = 1;
    w.values.insert("Fresh".into(), v);
    let err = propose(b, &new_at_1, &[&net.orderer_org.admin]).unwrap_err();
    assert!(
        err.to_string().ends_with("attempted to set key [Value]  /Channel/Orderer/Fresh to version 1, but key does not exist"),
        "{err}"
    );

    let mut wrong_type = config_update_envelope(SYSTEM_CHANNEL, &same, &[]);
    let mut payload = korder_proto::common::Payload::decode(wrong_type.payload.as_ref()).unwrap();
    let mut header = payload.header.clone().unwrap();
    let mut ch =
        korder_proto::common::ChannelHeader::decode(header.channel_header.as_ref()).unwrap();
    ch.r#type = HeaderType::EndorserTransaction as i32;
    header.channel_header = ch.encode_to_vec().into();
    payload.header = Some(header);
    wrong_type.payload = payload.encode_to_vec().into();
    let err = propose_config_update(b, &wrong_type).unwrap_err();
    assert!(matches!(err, ConfigTxError::Unwrap(_)), "{err}");
}

/// Elements added under a group whose version is not bumped are silently dropped; the sequence still moves.
#[test]
fn additions_under_an_unbumped_group_are_dropped() {
    let net = DevNetwork::new();
    let b = &net.system;
    let mut update = batch_size_update(SYSTEM_CHANNEL, 0, 1);
    update
        .write_set
        .as_mut()
        .unwrap()
        .groups
        .get_mut("Orderer")
        .unwrap()
        .policies
        .insert(
            "Extra".into(),
            ConfigPolicy {
                version: 0,
                policy: Some(implicit_meta("ANY", "Writers")),
                mod_policy: "Admins".into(),
            },
        );
    let ce = propose(b, &update, &[&net.orderer_org.admin]).unwrap();
    let next = validate_config_envelope(b, &ce).unwrap();
    assert!(
        !next.channel_group().groups["Orderer"]
            .policies
            .contains_key("Extra")
    );
    assert_eq!(next.orderer.batch_size.max_message_count, 42);
}

/// Removing an org needs the group bumped and its MAJORITY Admins: one of two org admins is not enough.
#[test]
fn removing_an_org_needs_the_group_mod_policy() {
    let net = DevNetwork::new();
    let app = app_channel(&net);
    let mut read_app = bare_group(0);
    read_app.groups.insert("Org1MSP".into(), bare_group(0));
    read_app.groups.insert("Org2MSP".into(), bare_group(0));
    let mut write_app = bare_group(1);
    write_app.mod_policy = "Admins".into();
    write_app.groups.insert("Org1MSP".into(), bare_group(0));
    let mut read = bare_group(0);
    read.groups.insert("Application".into(), read_app);
    let mut write = bare_group(0);
    write.groups.insert("Application".into(), write_app);
    let update = ConfigUpdate {
        channel_id: APP_CHANNEL.into(),
        read_set: Some(read),
        write_set: Some(write),
        ..Default::default()
    };
    let err = propose(&app, &update, &[&net.org1.admin]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "error authorizing update: error validating DeltaSet: policy for [Group]  /Channel/Application not satisfied: implicit policy evaluation failed - 1 sub-policies were satisfied, but this policy requires 2 of the 'Admins' sub-policies to be satisfied"
    );
    let ce = propose(&app, &update, &[&net.org1.admin, &net.org2.admin]).unwrap();
    let next = validate_config_envelope(&app, &ce).unwrap();
    let names: Vec<_> = next
        .application_orgs
        .iter()
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(names, vec!["Org1MSP".to_string()]);
    // The application group kept its policies: they were listed nowhere, but
    // a bumped group takes its members from the write set, so they are gone.
    assert!(
        next.channel_group().groups["Application"]
            .policies
            .is_empty()
    );
}

/// An org's MSP value is guarded by that org's Admins; changing its MSP id is refused by ValidateNew.
#[test]
fn org_msp_id_change_is_refused() {
    let net = DevNetwork::new();
    let app = app_channel(&net);
    let mut read_org = bare_group(0);
    read_org.mod_policy = String::new();
    let mut read_app = bare_group(0);
    read_app.groups.insert("Org1MSP".into(), read_org.clone());
    let mut write_org = read_org;
    write_org.values.insert(
        "MSP".into(),
        ConfigValue {
            version: 1,
            value: MspConfig {
                r#type: 0,
                config: net.org2.msp.encode_to_vec().into(),
            }
            .encode_to_vec()
            .into(),
            mod_policy: "Admins".into(),
        },
    );
    let mut write_app = bare_group(0);
    write_app.groups.insert("Org1MSP".into(), write_org);
    let mut read = bare_group(0);
    read.groups.insert("Application".into(), read_app);
    let mut write = bare_group(0);
    write.groups.insert("Application".into(), write_app);
    let update = ConfigUpdate {
        channel_id: APP_CHANNEL.into(),
        read_set: Some(read),
        write_set: Some(write),
        ..Default::default()
    };
    let err = propose(&app, &update, &[&net.org2.admin]).unwrap_err();
    assert!(
        err.to_string().contains("policy for [Value]  /Channel/Application/Org1MSP/MSP not satisfied: signature set did not satisfy policy"),
        "{err}"
    );
    let err = propose(&app, &update, &[&net.org1.admin]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "application org Org1MSP attempted to change MSP ID from Org1MSP to Org2MSP"
    );
}

/// The consensus type cannot change without the migration capability (channel V1_4_2+).
#[test]
fn consensus_type_change_needs_migration_capability() {
    let net = DevNetwork::new();
    // Before MSP v1.4.3 an admin certificate must be a client: use a client-role admin.
    let mut orderer_org = common::DevOrg::new("OrdererMSP");
    let admin = orderer_org.pki.issue("Admin2", NodeRole::Client).unwrap();
    orderer_org.msp.admins = vec![admin.cert_pem.clone().into()];
    orderer_org.admin = SigningIdentity::from_pem(
        "OrdererMSP",
        admin.cert_pem.as_bytes(),
        admin.key_pem.as_bytes(),
    )
    .unwrap();
    let mut p = net.profile.clone();
    p.orderer_orgs = vec![orderer_org.profile()];
    p.consortiums.clear();
    p.channel_capabilities = ["V1_3".to_string()].into();
    let b = bundle_of_profile(SYSTEM_CHANNEL, &p);
    let mut w = bare_group(0);
    w.values.insert(
        "ConsensusType".into(),
        ConfigValue {
            version: 1,
            value: korder_proto::orderer::ConsensusType {
                r#type: "kafka".into(),
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
            mod_policy: "Admins".into(),
        },
    );
    let update = ConfigUpdate {
        channel_id: SYSTEM_CHANNEL.into(),
        read_set: Some(with_orderer(bare_group(0))),
        write_set: Some(with_orderer(w)),
        ..Default::default()
    };
    let err = propose(&b, &update, &[&orderer_org.admin]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attempted to change consensus type from solo to kafka"
    );
    // With V1_4_3 (the sample's level) the same change is allowed.
    propose(&net.system, &update, &[&net.orderer_org.admin]).unwrap();
}

/// An update introducing an unknown orderer capability is refused as incompatible.
#[test]
fn unknown_capability_update_is_incompatible() {
    let net = DevNetwork::new();
    let mut w = bare_group(0);
    let caps = korder_proto::common::Capabilities {
        capabilities: [("V9_9".to_string(), Default::default())].into(),
    };
    w.values.insert(
        "Capabilities".into(),
        ConfigValue {
            version: 1,
            value: caps.encode_to_vec().into(),
            mod_policy: "Admins".into(),
        },
    );
    let update = ConfigUpdate {
        channel_id: SYSTEM_CHANNEL.into(),
        read_set: Some(with_orderer(bare_group(0))),
        write_set: Some(with_orderer(w)),
        ..Default::default()
    };
    let err = propose(&net.system, &update, &[&net.orderer_org.admin]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config update is not compatible: capability V9_9 is required but not supported"
    );
}

/// At commit, a config that its last update does not produce, or a wrong sequence, is refused.
#[test]
fn commit_revalidation_detects_tampering() {
    let net = DevNetwork::new();
    let b = &net.system;
    let ce = propose(
        b,
        &batch_size_update(SYSTEM_CHANNEL, 0, 1),
        &[&net.orderer_org.admin],
    )
    .unwrap();
    let mut tampered = ce.clone();
    tampered
        .config
        .as_mut()
        .unwrap()
        .channel_group
        .as_mut()
        .unwrap()
        .mod_policy = "Writers".into();
    let err = validate_config_envelope(b, &tampered).unwrap_err();
    assert_eq!(
        err.to_string(),
        "ConfigEnvelope LastUpdate did not produce the supplied config result"
    );
    let mut wrong_seq = ce.clone();
    wrong_seq.config.as_mut().unwrap().sequence = 5;
    let err = validate_config_envelope(b, &wrong_seq).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config currently at sequence 0, cannot validate config at sequence 5"
    );
    let mut no_update = ce;
    no_update.last_update = None;
    assert!(validate_config_envelope(b, &no_update).is_err());
}

/// A creation request shaped like configtxgen's: orgs in the read set at v0, Application bumped to 1.
fn creation_request(
    channel: &str,
    consortium: &str,
    orgs: &[&str],
    app_version: u64,
) -> ConfigUpdate {
    let mut read_app = bare_group(0);
    let mut write_app = bare_group(app_version);
    write_app.mod_policy = "Admins".into();
    for org in orgs {
        read_app.groups.insert((*org).into(), bare_group(0));
        write_app.groups.insert((*org).into(), bare_group(0));
    }
    for (name, rule, sub) in [
        ("Readers", "ANY", "Readers"),
        ("Writers", "ANY", "Writers"),
        ("Admins", "MAJORITY", "Admins"),
    ] {
        write_app.policies.insert(
            name.into(),
            ConfigPolicy {
                version: 0,
                policy: Some(implicit_meta(rule, sub)),
                mod_policy: "Admins".into(),
            },
        );
    }
    let mut read = bare_group(0);
    read.values.insert(
        "Consortium".into(),
        ConfigValue {
            version: 0,
            ..Default::default()
        },
    );
    read.groups.insert("Application".into(), read_app);
    let mut write = bare_group(0);
    write.values.insert(
        "Consortium".into(),
        ConfigValue {
            version: 0,
            value: Consortium {
                name: consortium.into(),
            }
            .encode_to_vec()
            .into(),
            mod_policy: String::new(),
        },
    );
    write.groups.insert("Application".into(), write_app);
    ConfigUpdate {
        channel_id: channel.into(),
        read_set: Some(read),
        write_set: Some(write),
        ..Default::default()
    }
}

/// Channel creation with an Org1 admin signature gives a sequence-1 config that the system channel filter accepts.
#[test]
fn channel_creation_with_member_admin_is_accepted() {
    let net = DevNetwork::new();
    let req = creation_request("newchannel", CONSORTIUM, &["Org1MSP", "Org2MSP"], 1);
    let env = config_update_envelope("newchannel", &req, &[&net.org1.admin]);
    let ce = new_channel_config(&net.system, &env).unwrap();
    let config = ce.config.as_ref().unwrap();
    assert_eq!(config.sequence, 1);
    assert_eq!(ce.last_update.as_ref(), Some(&env));
    let app = &config.channel_group.as_ref().unwrap().groups["Application"];
    assert_eq!(app.version, 1);
    assert_eq!(app.mod_policy, "Admins");
    assert!(!app.policies.contains_key("ChannelCreationPolicy"));
    assert_eq!(app.groups.len(), 2);
    let created = check_channel_creation(&net.system, &ce).unwrap();
    assert_eq!(created.channel_id, "newchannel");
    assert_eq!(created.sequence.get(), 1);
    assert_eq!(created.consortium.as_deref(), Some(CONSORTIUM));
    assert_eq!(created.application_orgs.len(), 2);
    assert!(!created.is_system_channel());
    // The Orderer section is the system channel's, with versions zeroed.
    assert_eq!(created.orderer.batch_size, net.system.orderer.batch_size);
    // Org1's client can now write to the new channel; a stranger cannot.
    let data = b"tx";
    created
        .evaluate(
            "/Channel/Writers",
            &[common::signed_by(&net.org1.client, data)],
        )
        .unwrap();
    let stranger = common::DevOrg::new("Org3MSP");
    assert!(
        created
            .evaluate(
                "/Channel/Writers",
                &[common::signed_by(&stranger.client, data)]
            )
            .is_err()
    );

    // The orderer wraps it; its own signature passes the system channel's Writers.
    let inner = config_tx(
        "newchannel",
        &ce,
        SystemTime::now(),
        &net.orderer_org.orderer,
    )
    .unwrap();
    let outer = orderer_tx(
        SYSTEM_CHANNEL,
        &inner,
        SystemTime::now(),
        &net.orderer_org.orderer,
    )
    .unwrap();
    net.system
        .evaluate(
            "/Channel/Writers",
            &SignedData::from_envelope(&outer).unwrap(),
        )
        .unwrap();
    let (inner2, channel, ce2) = unwrap_orderer_tx(&outer).unwrap();
    assert_eq!(inner2, inner);
    assert_eq!(channel, "newchannel");
    assert_eq!(ce2, ce);
    // The inner CONFIG envelope decodes as the new channel's genesis config.
    let b = Bundle::from_config_envelope(&inner.encode_to_vec()).unwrap();
    assert_eq!(b, created);
}

/// Without an admin signature of a member org, channel creation is refused with the creation prefix.
#[test]
fn channel_creation_without_admin_signature_is_refused() {
    let net = DevNetwork::new();
    let req = creation_request("newchannel", CONSORTIUM, &["Org1MSP"], 1);
    let expected = "error validating channel creation transaction for new channel 'newchannel', could not succesfully apply update to template configuration: error authorizing update: error validating DeltaSet: policy for [Group]  /Channel/Application not satisfied: implicit policy evaluation failed - 0 sub-policies were satisfied, but this policy requires 1 of the 'Admins' sub-policies to be satisfied";
    for signers in [
        vec![],
        vec![&net.org1.client],
        vec![&net.org2.admin],
        vec![&net.orderer_org.admin],
    ] {
        let env = config_update_envelope("newchannel", &req, &signers);
        let err = new_channel_config(&net.system, &env).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
}

/// Template rules: unknown consortium, non-member org, wrong Application version, bad name, missing consortium value.
#[test]
fn channel_creation_template_errors() {
    let net = DevNetwork::new();
    let admin = [&net.org1.admin];
    let case = |channel: &str, req: ConfigUpdate| {
        let env = config_update_envelope(channel, &req, &admin);
        new_channel_config(&net.system, &env)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        case("c1", creation_request("c1", "Nope", &["Org1MSP"], 1)),
        "Unknown consortium name: Nope"
    );
    assert_eq!(
        case(
            "c1",
            creation_request("c1", CONSORTIUM, &["Org1MSP", "Org9MSP"], 1)
        ),
        "Attempted to include a member which is not in the consortium"
    );
    assert_eq!(
        case("c1", creation_request("c1", CONSORTIUM, &[], 1)),
        "Proposed configuration has no application group members, but consortium contains members"
    );
    assert_eq!(
        case("c1", creation_request("c1", CONSORTIUM, &["Org1MSP"], 2)),
        "Config update for channel creation does not set application group version to 1, was 2"
    );
    assert_eq!(
        case(
            "BadName",
            creation_request("BadName", CONSORTIUM, &["Org1MSP"], 1)
        ),
        "initializing configtx manager failed: bad channel ID: channel ID 'BadName' contains illegal characters"
    );
    assert!(
        case("c1", creation_request("c2", CONSORTIUM, &["Org1MSP"], 1))
            .starts_with("mismatched channel IDs")
    );
    let mut no_consortium = creation_request("c1", CONSORTIUM, &["Org1MSP"], 1);
    no_consortium.write_set.as_mut().unwrap().values.clear();
    assert_eq!(case("c1", no_consortium), "Consortium config value missing");
    let mut no_write = creation_request("c1", CONSORTIUM, &["Org1MSP"], 1);
    no_write.write_set = None;
    assert_eq!(case("c1", no_write), "Config update has an empty writeset");
    let app = app_channel(&net);
    let env = config_update_envelope(
        "c1",
        &creation_request("c1", CONSORTIUM, &["Org1MSP"], 1),
        &admin,
    );
    assert_eq!(
        new_channel_config(&app, &env).unwrap_err().to_string(),
        "The ordering system channel does not appear to support creating channels"
    );
}

/// An empty consortium lets anyone create a channel listing no orgs, but orgs in the read set fail the read-set check.
#[test]
fn empty_consortium_creation() {
    let net = DevNetwork::new();
    let mut p = net.profile.clone();
    p.consortiums.insert("Empty".into(), vec![]);
    let system = bundle_of_profile(SYSTEM_CHANNEL, &p);
    let env = config_update_envelope("open", &creation_request("open", "Empty", &[], 1), &[]);
    let ce = new_channel_config(&system, &env).unwrap();
    check_channel_creation(&system, &ce).unwrap();
    let env = config_update_envelope(
        "open",
        &creation_request("open", "Empty", &["Org1MSP"], 1),
        &[],
    );
    let err = new_channel_config(&system, &env).unwrap_err();
    assert!(
        err.to_string().ends_with("error validating ReadSet: existing config does not contain element for [Group]  /Channel/Application/Org1MSP but was in the read set"),
        "{err}"
    );
}

/// The system channel filter refuses a creation config that differs from what its request produces.
#[test]
fn channel_creation_mismatch_is_refused() {
    let net = DevNetwork::new();
    let req = creation_request("newchannel", CONSORTIUM, &["Org1MSP"], 1);
    let env = config_update_envelope("newchannel", &req, &[&net.org1.admin]);
    let mut ce = new_channel_config(&net.system, &env).unwrap();
    ce.config
        .as_mut()
        .unwrap()
        .channel_group
        .as_mut()
        .unwrap()
        .groups
        .remove("Application");
    assert_eq!(
        check_channel_creation(&net.system, &ce).unwrap_err(),
        ConfigTxError::CreationMismatch
    );
}

/// The channel limit counts existing channels, the system channel included; 0 means unlimited.
#[test]
fn channel_limit() {
    let net = DevNetwork::new();
    check_channel_limit(&net.system, 1000).unwrap();
    let mut p = net.profile.clone();
    p.max_channels = 2;
    let limited = bundle_of_profile(SYSTEM_CHANNEL, &p);
    check_channel_limit(&limited, 2).unwrap();
    assert_eq!(
        check_channel_limit(&limited, 3).unwrap_err().to_string(),
        "channel creation would exceed maximimum number of channels: 2"
    );
}

/// mychannel's genesis config (a created channel) carries its creation request; the system
/// configs in testdata belong to other networks, so the request is checked for shape only.
#[test]
fn testdata_created_channel_carries_its_request() {
    let block =
        Block::decode(common::testdata_block("common-cluster-mychannel.block").as_slice()).unwrap();
    let env = Envelope::decode(block.data.as_ref().unwrap().data[0].as_ref()).unwrap();
    let (channel, ce) = korder_channelconfig::config_from_envelope(&env.encode_to_vec()).unwrap();
    assert_eq!(ce.config.as_ref().unwrap().sequence, 1);
    let last_update = ce.last_update.as_ref().unwrap();
    let payload = korder_proto::common::Payload::decode(last_update.payload.as_ref()).unwrap();
    let cue = korder_proto::common::ConfigUpdateEnvelope::decode(payload.data.as_ref()).unwrap();
    let update = ConfigUpdate::decode(cue.config_update.as_ref()).unwrap();
    assert_eq!(update.channel_id, channel);
    assert_eq!(
        update.write_set.as_ref().unwrap().groups["Application"].version,
        1
    );
    SignedData::from_config_update_envelope(&cue).unwrap();
    // The system configs we have belong to other networks: the request is refused
    // cleanly by the template rules, never accepted and never a panic.
    for name in [
        "common-server-genesis.block",
        "common-server-system.block",
        "consensus-etcdraft-etcdraftgenesis.block",
    ] {
        let sys_block = Block::decode(common::testdata_block(name).as_slice()).unwrap();
        let system =
            Bundle::from_config_envelope(&sys_block.data.as_ref().unwrap().data[0]).unwrap();
        let err = check_channel_creation(&system, &ce).unwrap_err();
        assert!(matches!(err, ConfigTxError::Template(_)), "{name}: {err}");
    }
}
