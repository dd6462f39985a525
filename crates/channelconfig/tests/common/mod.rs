//! Helpers shared by the integration tests: development organisations with real
//! certificates, signers, and envelopes signed by them.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_channelconfig::genesis::{ChannelProfile, EnvelopeStamp, OrgProfile, genesis_envelope};
use korder_channelconfig::policies::SignedData;
use korder_msp::devpki::{DevPki, NodeRole};
use korder_msp::mspdir::MspDir;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{
    ChannelHeader, ConfigGroup, ConfigSignature, ConfigUpdate, ConfigUpdateEnvelope, Envelope,
    Header, HeaderType, Payload, SignatureHeader,
};
use korder_proto::msp::FabricMspConfig;

/// The shared Fabric block directory.
pub fn testdata_block(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fabric-v1.4.12/blocks")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// An organisation with a development CA (NodeOUs on) and one signer per role.
pub struct DevOrg {
    pub msp_id: String,
    pub pki: DevPki,
    pub msp: FabricMspConfig,
    pub admin: SigningIdentity,
    pub client: SigningIdentity,
    pub peer: SigningIdentity,
    pub orderer: SigningIdentity,
}

impl DevOrg {
    /// Generates the CA, the MSP config and the signers of `msp_id`.
    pub fn new(msp_id: &str) -> DevOrg {
        let domain = format!("{}.example.com", msp_id.to_lowercase());
        let pki = DevPki::generate(msp_id, &domain).unwrap();
        let signer = |cn: &str, role| {
            let c = pki.issue(cn, role).unwrap();
            SigningIdentity::from_pem(msp_id, c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let admin_cert = pki
            .issue(&format!("Admin@{domain}"), NodeRole::Admin)
            .unwrap();
        let node = pki
            .issue(&format!("node.{domain}"), NodeRole::Orderer)
            .unwrap();
        pki.write_msp_dir(dir.path(), &node, &admin_cert).unwrap();
        let msp = MspDir::load(dir.path())
            .unwrap()
            .to_fabric_msp_config(msp_id);
        let admin = SigningIdentity::from_pem(
            msp_id,
            admin_cert.cert_pem.as_bytes(),
            admin_cert.key_pem.as_bytes(),
        )
        .unwrap();
        DevOrg {
            msp_id: msp_id.into(),
            client: signer(&format!("User1@{domain}"), NodeRole::Client),
            peer: signer(&format!("peer0.{domain}"), NodeRole::Peer),
            orderer: signer(&format!("orderer0.{domain}"), NodeRole::Orderer),
            admin,
            pki,
            msp,
        }
    }

    /// The org as a profile names it (group name = MSP id).
    pub fn profile(&self) -> OrgProfile {
        OrgProfile {
            name: self.msp_id.clone(),
            msp: self.msp.clone(),
            endpoints: vec!["127.0.0.1:7050".into()],
        }
    }

    /// The MSP config without admin certificates: admins are known by their OU only.
    pub fn profile_without_admin_certs(&self) -> OrgProfile {
        let mut p = self.profile();
        p.msp.admins.clear();
        p
    }
}

/// Fixed inputs for genesis envelopes.
pub fn stamp() -> EnvelopeStamp {
    EnvelopeStamp {
        timestamp_secs: 1_700_000_000,
        nonce: [9; 24],
    }
}

/// The bundle of a profile's genesis config for `channel_id`.
pub fn bundle_of_profile(channel_id: &str, profile: &ChannelProfile) -> Bundle {
    let env = genesis_envelope(channel_id, profile.channel_group(), &stamp());
    Bundle::from_config_envelope(&env).unwrap()
}

/// A signature over `data` by `signer`, as signed data.
pub fn signed_by(signer: &SigningIdentity, data: &[u8]) -> SignedData {
    SignedData {
        data: Bytes::copy_from_slice(data),
        identity: signer.serialized(),
        signature: signer.sign(data).unwrap(),
    }
}

/// A dev network like `korder init` makes: an orderer org and a consortium with Org1 and Org2.
pub struct DevNetwork {
    pub orderer_org: DevOrg,
    pub org1: DevOrg,
    pub org2: DevOrg,
    pub profile: ChannelProfile,
    pub system: Bundle,
}

pub const SYSTEM_CHANNEL: &str = "system-channel";
pub const CONSORTIUM: &str = "SampleConsortium";

impl DevNetwork {
    pub fn new() -> DevNetwork {
        let orderer_org = DevOrg::new("OrdererMSP");
        let org1 = DevOrg::new("Org1MSP");
        let org2 = DevOrg::new("Org2MSP");
        let mut profile = ChannelProfile::sample("solo");
        profile.orderer_addresses = vec!["127.0.0.1:7050".into()];
        profile.orderer_orgs = vec![orderer_org.profile()];
        profile
            .consortiums
            .insert(CONSORTIUM.into(), vec![org1.profile(), org2.profile()]);
        let system = bundle_of_profile(SYSTEM_CHANNEL, &profile);
        DevNetwork {
            orderer_org,
            org1,
            org2,
            profile,
            system,
        }
    }
}

/// A CONFIG_UPDATE envelope for `channel_id` carrying `update`, with one config
/// signature per signer; the outer envelope is signed by the first signer (if any).
pub fn config_update_envelope(
    channel_id: &str,
    update: &ConfigUpdate,
    signers: &[&SigningIdentity],
) -> Envelope {
    let config_update = Bytes::from(update.encode_to_vec());
    let signatures = signers
        .iter()
        .map(|s| {
            let signature_header = s.new_signature_header().unwrap();
            let mut data = signature_header.to_vec();
            data.extend_from_slice(&config_update);
            ConfigSignature {
                signature_header,
                signature: s.sign(&data).unwrap(),
            }
        })
        .collect();
    let cue = ConfigUpdateEnvelope {
        config_update,
        signatures,
    };
    let ch = ChannelHeader {
        r#type: HeaderType::ConfigUpdate as i32,
        channel_id: channel_id.into(),
        ..Default::default()
    };
    let sh = match signers.first() {
        Some(s) => s.new_signature_header().unwrap(),
        None => Bytes::from(SignatureHeader::default().encode_to_vec()),
    };
    let payload = Bytes::from(
        Payload {
            header: Some(Header {
                channel_header: ch.encode_to_vec().into(),
                signature_header: sh,
            }),
            data: cue.encode_to_vec().into(),
        }
        .encode_to_vec(),
    );
    let signature = match signers.first() {
        Some(s) => s.sign(&payload).unwrap(),
        None => Bytes::new(),
    };
    Envelope { payload, signature }
}

/// A group with only a version (what clients put in read sets).
pub fn bare_group(version: u64) -> ConfigGroup {
    ConfigGroup {
        version,
        ..Default::default()
    }
}
