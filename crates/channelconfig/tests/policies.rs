//! Policy evaluation: Fabric v1.4's greedy signature policies, implicit-meta
//! thresholds, the policy manager's path rules, and real channel configs.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{DevOrg, signed_by};
use korder_channelconfig::Bundle;
use korder_channelconfig::policies::{MspManager, Policy, PolicyError, PolicyManager, SignedData};
use korder_msp::MspVersion;
use korder_proto::Message;
use korder_proto::common::msp_role::MspRoleType;
use korder_proto::common::{
    Block, ConfigGroup, ConfigPolicy, ImplicitMetaPolicy, MspPrincipal, MspRole, SignaturePolicy,
    SignaturePolicyEnvelope, implicit_meta_policy, msp_principal, policy, signature_policy,
};
use korder_proto::msp::MspConfig;

fn role(msp_id: &str, role: MspRoleType) -> MspPrincipal {
    MspPrincipal {
        principal_classification: msp_principal::Classification::Role as i32,
        principal: MspRole {
            msp_identifier: msp_id.into(),
            role: role as i32,
        }
        .encode_to_vec()
        .into(),
    }
}

fn by(i: i32) -> SignaturePolicy {
    SignaturePolicy {
        r#type: Some(signature_policy::Type::SignedBy(i)),
    }
}

fn out_of(n: i32, rules: Vec<SignaturePolicy>) -> SignaturePolicy {
    SignaturePolicy {
        r#type: Some(signature_policy::Type::NOutOf(signature_policy::NOutOf {
            n,
            rules,
        })),
    }
}

fn envelope(rule: SignaturePolicy, identities: Vec<MspPrincipal>) -> SignaturePolicyEnvelope {
    SignaturePolicyEnvelope {
        version: 0,
        rule: Some(rule),
        identities,
    }
}

fn msp_config(org: &DevOrg) -> MspConfig {
    MspConfig {
        r#type: 0,
        config: org.msp.encode_to_vec().into(),
    }
}

fn manager(orgs: &[&DevOrg]) -> Arc<MspManager> {
    let configs: Vec<_> = orgs
        .iter()
        .map(|o| (o.msp_id.clone(), msp_config(o)))
        .collect();
    Arc::new(
        MspManager::new(
            configs.iter().map(|(p, c)| (p.clone(), c)),
            MspVersion::V1_4_3,
        )
        .unwrap(),
    )
}

const DATA: &[u8] = b"the bytes that were signed";

/// `AND(OR(A.member, B.member), A.member)` fails with A1+B1 (the OR consumes both) and passes with A1+A2+B1.
#[test]
fn n_out_of_is_greedy_with_overlapping_principals() {
    let a = DevOrg::new("AMSP");
    let b = DevOrg::new("BMSP");
    let msps = manager(&[&a, &b]);
    let p = Policy::signature(
        &envelope(
            out_of(2, vec![out_of(1, vec![by(0), by(1)]), by(0)]),
            vec![
                role("AMSP", MspRoleType::Member),
                role("BMSP", MspRoleType::Member),
            ],
        ),
        msps,
    )
    .unwrap();
    let a1 = signed_by(&a.client, DATA);
    let a2 = signed_by(&a.peer, DATA);
    let b1 = signed_by(&b.client, DATA);
    assert_eq!(
        p.evaluate(&[a1.clone(), b1.clone()]),
        Err(PolicyError::SignatureSetNotSatisfied)
    );
    assert_eq!(
        p.evaluate(&[a1.clone(), b1.clone()])
            .unwrap_err()
            .to_string(),
        "signature set did not satisfy policy"
    );
    p.evaluate(&[a1, a2, b1]).unwrap();
}

/// The same identity counted twice satisfies only one leaf; a bad first copy shadows a good later one.
#[test]
fn duplicate_signers_count_once_and_bad_first_copy_shadows() {
    let a = DevOrg::new("AMSP");
    let msps = manager(&[&a]);
    let two_members = Policy::signature(
        &envelope(
            out_of(2, vec![by(0), by(0)]),
            vec![role("AMSP", MspRoleType::Member)],
        ),
        msps.clone(),
    )
    .unwrap();
    let c = signed_by(&a.client, DATA);
    assert!(two_members.evaluate(&[c.clone(), c.clone()]).is_err());
    two_members
        .evaluate(&[c.clone(), signed_by(&a.peer, DATA)])
        .unwrap();

    let one_member = Policy::signature(
        &envelope(
            out_of(1, vec![by(0)]),
            vec![role("AMSP", MspRoleType::Member)],
        ),
        msps,
    )
    .unwrap();
    let mut bad = c.clone();
    bad.data = Bytes::from_static(b"other bytes");
    assert!(one_member.evaluate(&[bad.clone(), c.clone()]).is_err());
    one_member.evaluate(&[c, bad]).unwrap();
}

/// A member signature does not satisfy ADMIN; an admin certificate does, also when known only by its OU.
#[test]
fn admin_versus_member() {
    let a = DevOrg::new("AMSP");
    let admin_policy = |msps| {
        Policy::signature(
            &envelope(
                out_of(1, vec![by(0)]),
                vec![role("AMSP", MspRoleType::Admin)],
            ),
            msps,
        )
        .unwrap()
    };
    let p = admin_policy(manager(&[&a]));
    assert!(p.evaluate(&[signed_by(&a.client, DATA)]).is_err());
    assert!(p.evaluate(&[signed_by(&a.peer, DATA)]).is_err());
    p.evaluate(&[signed_by(&a.admin, DATA)]).unwrap();

    let mut ou_only = a.msp.clone();
    ou_only.admins.clear();
    let config = MspConfig {
        r#type: 0,
        config: ou_only.encode_to_vec().into(),
    };
    let msps =
        Arc::new(MspManager::new([("AMSP".to_string(), &config)], MspVersion::V1_4_3).unwrap());
    let p = admin_policy(msps);
    p.evaluate(&[signed_by(&a.admin, DATA)]).unwrap();
    assert!(p.evaluate(&[signed_by(&a.client, DATA)]).is_err());
}

/// Each NodeOU role principal is satisfied exactly by the signer of that role (admins are not clients).
#[test]
fn node_ou_roles() {
    let a = DevOrg::new("AMSP");
    let msps = manager(&[&a]);
    let roles = [
        MspRoleType::Client,
        MspRoleType::Peer,
        MspRoleType::Orderer,
        MspRoleType::Admin,
    ];
    let signers = [&a.client, &a.peer, &a.orderer, &a.admin];
    for (i, r) in roles.iter().enumerate() {
        let p = Policy::signature(
            &envelope(out_of(1, vec![by(0)]), vec![role("AMSP", *r)]),
            msps.clone(),
        )
        .unwrap();
        for (j, s) in signers.iter().enumerate() {
            assert_eq!(
                p.evaluate(&[signed_by(s, DATA)]).is_ok(),
                i == j,
                "role {r:?}, signer {j}"
            );
        }
    }
}

/// Identities of an MSP the channel does not know are dropped; a bad signature never counts.
#[test]
fn unknown_msp_ignored_and_bad_signature_fails() {
    let a = DevOrg::new("AMSP");
    let stranger = DevOrg::new("ZMSP");
    let p = Policy::signature(
        &envelope(
            out_of(1, vec![by(0)]),
            vec![role("AMSP", MspRoleType::Member)],
        ),
        manager(&[&a]),
    )
    .unwrap();
    let foreign = signed_by(&stranger.client, DATA);
    assert!(p.evaluate(std::slice::from_ref(&foreign)).is_err());
    p.evaluate(&[foreign, signed_by(&a.client, DATA)]).unwrap();

    let mut bad = signed_by(&a.client, DATA);
    let mut sig = bad.signature.to_vec();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    bad.signature = sig.into();
    assert!(p.evaluate(&[bad]).is_err());
    let garbage = SignedData {
        data: Bytes::from_static(DATA),
        identity: Bytes::from_static(b"\x0a\x04AMSP\x12\x03xyz"),
        signature: Bytes::new(),
    };
    assert!(p.evaluate(&[garbage]).is_err());
}

/// Signature policy envelopes with a bad version or an out-of-range index do not compile.
#[test]
fn malformed_signature_policies_are_refused() {
    let msps = manager(&[]);
    let mut env = envelope(out_of(1, vec![by(0)]), vec![]);
    let err = Policy::signature(&env, msps.clone()).unwrap_err();
    assert!(err.contains("identity index out of range"), "{err}");
    env.version = 1;
    let err = Policy::signature(&env, msps).unwrap_err();
    assert!(err.contains("version 0"), "{err}");
}

fn implicit(rule: implicit_meta_policy::Rule) -> ConfigPolicy {
    ConfigPolicy {
        version: 0,
        policy: Some(korder_proto::common::Policy {
            r#type: policy::PolicyType::ImplicitMeta as i32,
            value: ImplicitMetaPolicy {
                sub_policy: "Writers".into(),
                rule: rule as i32,
            }
            .encode_to_vec()
            .into(),
        }),
        mod_policy: "Admins".into(),
    }
}

fn member_policy(msp_id: &str) -> ConfigPolicy {
    ConfigPolicy {
        version: 0,
        policy: Some(korder_proto::common::Policy {
            r#type: policy::PolicyType::Signature as i32,
            value: envelope(
                out_of(1, vec![by(0)]),
                vec![role(msp_id, MspRoleType::Member)],
            )
            .encode_to_vec()
            .into(),
        }),
        mod_policy: "Admins".into(),
    }
}

/// ANY/ALL/MAJORITY over 0–3 child groups: thresholds 1/n/⌊n/2⌋+1, zero children always pass.
#[test]
fn implicit_meta_thresholds() {
    let orgs: Vec<DevOrg> = ["O1MSP", "O2MSP", "O3MSP"]
        .iter()
        .map(|id| DevOrg::new(id))
        .collect();
    let msps = manager(&orgs.iter().collect::<Vec<_>>());
    use implicit_meta_policy::Rule::{All, Any, Majority};
    for n in 0..=3usize {
        let mut root = ConfigGroup::default();
        for org in &orgs[..n] {
            let mut g = ConfigGroup::default();
            g.policies
                .insert("Writers".into(), member_policy(&org.msp_id));
            root.groups.insert(org.msp_id.clone(), g);
        }
        root.policies.insert("Any".into(), implicit(Any));
        root.policies.insert("All".into(), implicit(All));
        root.policies.insert("Majority".into(), implicit(Majority));
        let pm = PolicyManager::new("Channel", &root, &msps).unwrap();
        for k in 0..=n {
            let signed: Vec<_> = orgs[..k]
                .iter()
                .map(|o| signed_by(&o.client, DATA))
                .collect();
            let expect = |threshold: usize| k >= threshold || n == 0;
            assert_eq!(
                pm.evaluate("Any", &signed).is_ok(),
                expect(1),
                "ANY n={n} k={k}"
            );
            assert_eq!(
                pm.evaluate("All", &signed).is_ok(),
                expect(n),
                "ALL n={n} k={k}"
            );
            assert_eq!(
                pm.evaluate("Majority", &signed).is_ok(),
                expect(n / 2 + 1),
                "MAJORITY n={n} k={k}"
            );
        }
    }
}

/// The implicit-meta failure text is Fabric's, and a child lacking the sub-policy counts as refusing.
#[test]
fn implicit_meta_failure_text_and_missing_sub_policy() {
    let o1 = DevOrg::new("O1MSP");
    let msps = manager(&[&o1]);
    let mut root = ConfigGroup::default();
    let mut g = ConfigGroup::default();
    g.policies.insert("Writers".into(), member_policy("O1MSP"));
    root.groups.insert("O1MSP".into(), g);
    root.groups.insert("Empty".into(), ConfigGroup::default());
    root.policies
        .insert("Writers".into(), implicit(implicit_meta_policy::Rule::All));
    let pm = PolicyManager::new("Channel", &root, &msps).unwrap();
    let err = pm
        .evaluate("Writers", &[signed_by(&o1.client, DATA)])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "implicit policy evaluation failed - 1 sub-policies were satisfied, but this policy requires 2 of the 'Writers' sub-policies to be satisfied"
    );
    let err = pm.evaluate("Writers", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "implicit policy evaluation failed - 0 sub-policies were satisfied, but this policy requires 2 of the 'Writers' sub-policies to be satisfied"
    );
}

fn block_bundle(name: &str) -> (Bundle, Block) {
    let block = Block::decode(common::testdata_block(name).as_slice()).unwrap();
    let env = block.data.as_ref().unwrap().data[0].clone();
    (Bundle::from_config_envelope(&env).unwrap(), block)
}

/// Every real genesis config builds a policy tree with Fabric's well-known paths, found absolutely and relatively.
#[test]
fn testdata_configs_build_policy_managers() {
    for name in [
        "common-server-genesis.block",
        "common-server-system.block",
        "common-cluster-mychannel.block",
        "consensus-etcdraft-etcdraftgenesis.block",
    ] {
        let (b, _) = block_bundle(name);
        let pm = b.policies();
        assert_eq!(pm.path(), "Channel");
        for path in [
            "/Channel/Readers",
            "/Channel/Writers",
            "/Channel/Admins",
            "/Channel/Orderer/BlockValidation",
            "Orderer/BlockValidation",
            "Writers",
        ] {
            assert!(pm.get_policy(path).is_some(), "{name}: {path}");
        }
        let orderer = pm.manager(&["Orderer"]).unwrap();
        assert!(orderer.get_policy("BlockValidation").is_some(), "{name}");
        assert!(orderer.get_policy("/Channel/Orderer/Writers").is_some());
        assert!(orderer.get_policy("/Channel/Writers").is_none());
        assert!(b.msp_manager().msp_ids().count() > 0, "{name}");
    }
    let (app, _) = block_bundle("common-cluster-mychannel.block");
    assert!(
        app.policies()
            .get_policy("/Channel/Application/Readers")
            .is_some()
    );
}

/// Unknown or foreign-rooted names are refused with `No such policy`, carrying the name asked for.
#[test]
fn unknown_policies_are_refused() {
    let (b, _) = block_bundle("common-server-genesis.block");
    for name in [
        "/Channel/Nope",
        "/Foo/Writers",
        "Nope",
        "",
        "/Channel",
        "/ChannelX/Writers",
    ] {
        assert!(b.policies().get_policy(name).is_none(), "{name}");
        assert_eq!(
            b.evaluate(name, &[]),
            Err(PolicyError::NoSuchPolicy(name.into()))
        );
    }
    assert_eq!(
        b.evaluate("/Channel/Nope", &[]).unwrap_err().to_string(),
        "No such policy: '/Channel/Nope'"
    );
}

/// The orderer that signed mychannel's genesis envelope satisfies that channel's /Channel/Writers and BlockValidation.
#[test]
fn mychannel_orderer_signature_satisfies_writers() {
    let (b, block) = block_bundle("common-cluster-mychannel.block");
    let env = korder_proto::common::Envelope::decode(block.data.as_ref().unwrap().data[0].as_ref())
        .unwrap();
    let signed = SignedData::from_envelope(&env).unwrap();
    assert_eq!(signed.len(), 1);
    b.evaluate("/Channel/Writers", &signed).unwrap();
    b.evaluate("/Channel/Orderer/BlockValidation", &signed)
        .unwrap();
    let mut tampered = signed.clone();
    tampered[0].data = Bytes::from_static(b"tampered");
    let err = b.evaluate("/Channel/Writers", &tampered).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("implicit policy evaluation failed - 0 sub-policies"),
        "{err}"
    );
    assert!(b.evaluate("/Channel/Application/Admins", &signed).is_err());
}

/// Config-update signed data is `signature_header || config_update` per signature, with the header's creator.
#[test]
fn config_update_signed_data_concatenates_header_and_update() {
    let a = DevOrg::new("AMSP");
    let update = korder_proto::common::ConfigUpdate {
        channel_id: "ch".into(),
        ..Default::default()
    };
    let env = common::config_update_envelope("ch", &update, &[&a.admin, &a.client]);
    let payload = korder_proto::common::Payload::decode(env.payload.as_ref()).unwrap();
    let cue = korder_proto::common::ConfigUpdateEnvelope::decode(payload.data.as_ref()).unwrap();
    let signed = SignedData::from_config_update_envelope(&cue).unwrap();
    assert_eq!(signed.len(), 2);
    for (s, sig) in signed.iter().zip(&cue.signatures) {
        let mut expect = sig.signature_header.to_vec();
        expect.extend_from_slice(&cue.config_update);
        assert_eq!(s.data.as_ref(), expect.as_slice());
    }
    assert_eq!(signed[0].identity, a.admin.serialized());
    let p = Policy::signature(
        &envelope(
            out_of(1, vec![by(0)]),
            vec![role("AMSP", MspRoleType::Admin)],
        ),
        manager(&[&a]),
    )
    .unwrap();
    p.evaluate(&signed).unwrap();
}
