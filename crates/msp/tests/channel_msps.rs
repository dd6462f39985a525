//! MSPs taken from real Fabric channel configs set up, and a real orderer identity validates.

mod common;

use korder_msp::{Identity, Msp, MspVersion};
use korder_proto::Message;
use korder_proto::common::{
    Block, ConfigEnvelope, ConfigGroup, Envelope, Metadata, Payload, SignatureHeader,
};
use korder_proto::msp::MspConfig;

fn read_block(name: &str) -> Block {
    let bytes = std::fs::read(common::testdata().join("blocks").join(name)).expect("read block");
    Block::decode(bytes.as_slice()).expect("block decodes")
}

fn channel_group(block: &Block) -> ConfigGroup {
    let env = Envelope::decode(block.data.as_ref().expect("data").data[0].as_ref()).expect("env");
    let payload = Payload::decode(env.payload.as_ref()).expect("payload");
    let config_env = ConfigEnvelope::decode(payload.data.as_ref()).expect("config envelope");
    config_env
        .config
        .expect("config")
        .channel_group
        .expect("channel group")
}

/// Every organisation MSP in the genesis blocks' configs passes MSP setup.
#[test]
fn genesis_block_msps_set_up() {
    let mut count = 0;
    for name in [
        "common-server-genesis.block",
        "common-server-system.block",
        "common-cluster-mychannel.block",
        "consensus-etcdraft-etcdraftgenesis.block",
    ] {
        let root = channel_group(&read_block(name));
        for section in root.groups.values() {
            for (org, group) in &section.groups {
                let Some(value) = group.values.get("MSP") else {
                    continue;
                };
                let config = MspConfig::decode(value.value.as_ref()).unwrap();
                if config.r#type != 0 {
                    // Idemix MSPs are refused cleanly, not set up.
                    assert!(matches!(
                        Msp::from_msp_config(&config, MspVersion::V1_4_3),
                        Err(korder_msp::MspError::UnsupportedType(_))
                    ));
                    continue;
                }
                let msp = Msp::from_msp_config(&config, MspVersion::V1_4_3)
                    .or_else(|_| Msp::from_msp_config(&config, MspVersion::V1_1))
                    .unwrap_or_else(|e| panic!("{name} {org}: {e}"));
                assert!(!msp.name().is_empty());
                count += 1;
            }
        }
    }
    assert!(count >= 4, "only {count} MSPs found");
}

fn channel_msps(root: &ConfigGroup) -> Vec<Msp> {
    let mut msps = Vec::new();
    for section in root.groups.values() {
        for group in section.groups.values() {
            let Some(value) = group.values.get("MSP") else {
                continue;
            };
            let config = MspConfig::decode(value.value.as_ref()).expect("MSPConfig decodes");
            if config.r#type != 0 {
                continue;
            }
            msps.push(
                Msp::from_msp_config(&config, MspVersion::V1_4_3).expect("channel MSP sets up"),
            );
        }
    }
    msps
}

/// The orderer that signed mychannel's genesis envelope is valid in its channel MSP, and its signature verifies.
#[test]
fn mychannel_config_envelope_signer_validates() {
    let block = read_block("common-cluster-mychannel.block");
    let env = Envelope::decode(block.data.as_ref().unwrap().data[0].as_ref()).unwrap();
    let payload = Payload::decode(env.payload.as_ref()).unwrap();
    let sh = SignatureHeader::decode(payload.header.unwrap().signature_header.as_ref()).unwrap();
    let signer = Identity::from_serialized(&sh.creator).unwrap();
    signer.verify(&env.payload, &env.signature).unwrap();
    let msps = channel_msps(&channel_group(&block));
    let msp = msps
        .iter()
        .find(|m| m.name() == signer.msp_id())
        .unwrap_or_else(|| panic!("no MSP {} in the channel config", signer.msp_id()));
    msp.validate(&signer).unwrap();
}

/// block3's signer comes from another network whose CA has the same name: the channel MSP refuses it.
#[test]
fn block3_signer_is_foreign_to_mychannel_msp() {
    let block3 = read_block("common-cluster-block3.pb");
    let md = Metadata::decode(block3.metadata.as_ref().unwrap().metadata[0].as_ref()).unwrap();
    let sh = SignatureHeader::decode(md.signatures[0].signature_header.as_ref()).unwrap();
    let signer = Identity::from_serialized(&sh.creator).unwrap();
    let msps = channel_msps(&channel_group(&read_block(
        "common-cluster-mychannel.block",
    )));
    let msp = msps.iter().find(|m| m.name() == signer.msp_id()).unwrap();
    let err = msp.validate(&signer).unwrap_err();
    assert!(err.to_string().contains("does not chain"), "{err}");
}
