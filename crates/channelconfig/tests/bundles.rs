//! Bundles from real Fabric genesis blocks and from korder-built profiles.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use korder_channelconfig::genesis::{ChannelProfile, EnvelopeStamp, OrgProfile, genesis_envelope};
use korder_channelconfig::{Bundle, ConfigError};
use korder_proto::Message;
use korder_proto::common::Block;
use korder_proto::msp::FabricMspConfig;
use korder_proto::orderer::BatchSize;

fn testdata(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fabric-v1.4.12/blocks")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn bundle_of(name: &str) -> Result<Bundle, ConfigError> {
    let block = Block::decode(testdata(name).as_slice()).unwrap();
    let env = &block.data.unwrap().data[0];
    Bundle::from_config_envelope(env)
}

/// configtxgen's solo system-channel genesis decodes: system channel, solo, sample batch values.
#[test]
fn server_genesis_is_a_solo_system_channel() {
    let b = bundle_of("common-server-genesis.block").unwrap();
    assert!(b.is_system_channel());
    assert_eq!(b.sequence.get(), 0);
    assert_eq!(b.orderer.consensus_type, "solo");
    assert_eq!(b.orderer.batch_timeout, Duration::from_secs(2));
    assert_eq!(b.orderer.batch_size.max_message_count, 10);
    assert!(
        b.consortiums
            .as_ref()
            .unwrap()
            .contains(&"SampleConsortium".to_string())
    );
}

/// Every genesis block in the fixtures decodes into a bundle.
#[test]
fn every_testdata_genesis_loads() {
    for name in [
        "common-server-genesis.block",
        "common-server-system.block",
        "common-cluster-mychannel.block",
        "consensus-etcdraft-etcdraftgenesis.block",
    ] {
        let b = bundle_of(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!b.channel_id.is_empty(), "{name}");
    }
    let app = bundle_of("common-cluster-mychannel.block").unwrap();
    assert!(!app.is_system_channel());
    assert_eq!(
        app.sequence.get(),
        1,
        "a created channel starts at sequence 1"
    );
    assert!(!app.application_orgs.is_empty());
}

fn org(name: &str) -> OrgProfile {
    common::DevOrg::new(name).profile()
}

/// An organisation whose MSP config cannot be set up makes the whole config unusable.
#[test]
fn unusable_org_msp_is_refused() {
    let mut p = ChannelProfile::sample("solo");
    p.orderer_orgs = vec![OrgProfile {
        name: "OrdererMSP".into(),
        msp: FabricMspConfig {
            name: "OrdererMSP".into(),
            ..Default::default()
        },
        endpoints: Vec::new(),
    }];
    let env = genesis_envelope("ch", p.channel_group(), &common::stamp());
    let err = Bundle::from_config_envelope(&env).unwrap_err();
    assert!(matches!(err, ConfigError::Msp(_)), "{err}");
    assert!(
        err.to_string().contains("/Channel/Orderer/OrdererMSP"),
        "{err}"
    );
}

/// Two orgs declaring one MSP id with different MSP configs are refused.
#[test]
fn conflicting_msp_definitions_are_refused() {
    let mut p = ChannelProfile::sample("solo");
    let a = common::DevOrg::new("OrdererMSP");
    let b = common::DevOrg::new("OrdererMSP");
    let mut other = b.profile();
    other.name = "Other".into();
    p.orderer_orgs = vec![a.profile(), other];
    let env = genesis_envelope("ch", p.channel_group(), &common::stamp());
    let err = Bundle::from_config_envelope(&env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Attempted to define two different versions of MSP: OrdererMSP"
    );
}

/// Channel ids follow Fabric's rule: lower case first, then `[a-z0-9.-]`.
#[test]
fn illegal_channel_ids_are_refused() {
    let p = ChannelProfile::sample("solo");
    for bad in ["", "MyChannel", "my_channel", "1ch", &"a".repeat(250)] {
        let env = genesis_envelope(bad, p.channel_group(), &common::stamp());
        let err = Bundle::from_config_envelope(&env).unwrap_err();
        assert!(matches!(err, ConfigError::BadChannelId(_)), "{bad}: {err}");
    }
    let err =
        Bundle::from_config_envelope(&genesis_envelope("My", p.channel_group(), &common::stamp()))
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "initializing configtx manager failed: bad channel ID: channel ID 'My' contains illegal characters"
    );
    for good in ["a", "my-channel.2", &"a".repeat(249)] {
        let env = genesis_envelope(good, p.channel_group(), &common::stamp());
        Bundle::from_config_envelope(&env).unwrap();
    }
}

/// A profile-built system channel decodes back to the values it was built from.
#[test]
fn profile_roundtrip() {
    let mut p = ChannelProfile::sample("kafka");
    p.kafka_brokers = vec!["127.0.0.1:9092".into()];
    p.batch_timeout = Duration::from_millis(250);
    p.orderer_orgs = vec![org("OrdererMSP")];
    p.consortiums
        .insert("SampleConsortium".into(), vec![org("Org1MSP")]);
    let env = genesis_envelope(
        "system",
        p.channel_group(),
        &EnvelopeStamp {
            timestamp_secs: 1,
            nonce: [7; 24],
        },
    );
    let b = Bundle::from_config_envelope(&env).unwrap();
    assert_eq!(b.channel_id, "system");
    assert!(b.is_system_channel());
    assert_eq!(b.orderer.consensus_type, "kafka");
    assert_eq!(b.orderer.kafka_brokers, vec!["127.0.0.1:9092".to_string()]);
    assert_eq!(b.orderer.batch_timeout, Duration::from_millis(250));
    assert_eq!(b.orderer.batch_size, p.batch_size);
    assert!(b.orderer.resubmission());
    assert_eq!(b.orderer_orgs.len(), 1);
}

/// A zero batch size or a preferred size above the absolute one is refused with Fabric's message.
#[test]
fn invalid_batch_size_is_refused() {
    let mut p = ChannelProfile::sample("solo");
    p.batch_size = BatchSize {
        max_message_count: 10,
        absolute_max_bytes: 100,
        preferred_max_bytes: 200,
    };
    let env = genesis_envelope(
        "ch",
        p.channel_group(),
        &EnvelopeStamp {
            timestamp_secs: 0,
            nonce: [0; 24],
        },
    );
    let err = Bundle::from_config_envelope(&env).unwrap_err();
    assert!(
        err.to_string()
            .contains("greater than the absolute max bytes"),
        "{err}"
    );
    p.batch_size.max_message_count = 0;
    let env = genesis_envelope(
        "ch",
        p.channel_group(),
        &EnvelopeStamp {
            timestamp_secs: 0,
            nonce: [0; 24],
        },
    );
    assert!(Bundle::from_config_envelope(&env).is_err());
}

/// An unknown orderer capability makes the config unusable.
#[test]
fn unknown_capability_is_refused() {
    let mut p = ChannelProfile::sample("solo");
    p.orderer_capabilities.insert("V9_9".into());
    let env = genesis_envelope(
        "ch",
        p.channel_group(),
        &EnvelopeStamp {
            timestamp_secs: 0,
            nonce: [0; 24],
        },
    );
    assert_eq!(
        Bundle::from_config_envelope(&env).unwrap_err(),
        ConfigError::UnsupportedCapability("V9_9".into())
    );
}

/// Garbage instead of an envelope is a clear error, not a panic.
#[test]
fn garbage_envelope_is_an_error() {
    assert!(matches!(
        Bundle::from_config_envelope(b"\xff\xff\xff"),
        Err(ConfigError::Malformed(_))
    ));
}

/// The orderer endpoints are the organisations' `Endpoints` when any org has some,
/// else the global `OrdererAddresses`; duplicates are listed once.
#[test]
fn orderer_endpoints_prefer_the_organisations() {
    let mut p = ChannelProfile::sample("solo");
    p.orderer_addresses = vec!["global:7050".into()];
    let mut a = org("OrdererA");
    a.endpoints = vec!["a0:7050".into(), "a1:7050".into()];
    let mut b = org("OrdererB");
    b.endpoints = vec!["a1:7050".into(), "b0:7050".into()];
    let mut c = org("OrdererC");
    c.endpoints.clear();
    p.orderer_orgs = vec![a, b, c];
    let env = genesis_envelope("ch", p.channel_group(), &common::stamp());
    let bundle = Bundle::from_config_envelope(&env).unwrap();
    assert_eq!(
        bundle.orderer_endpoints(),
        ["a0:7050", "a1:7050", "b0:7050"]
    );

    for o in &mut p.orderer_orgs {
        o.endpoints.clear();
    }
    let env = genesis_envelope("ch", p.channel_group(), &common::stamp());
    let bundle = Bundle::from_config_envelope(&env).unwrap();
    assert_eq!(bundle.orderer_endpoints(), ["global:7050"]);
}
