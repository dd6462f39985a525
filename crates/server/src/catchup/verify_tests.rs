//! The verifier on crafted chains: a good chain passes, and each check fails on its
//! own mutation without moving the verifier.

#![allow(clippy::unwrap_used)] // tests: a failure should panic

use std::sync::Arc;

use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_channelconfig::genesis::{ChannelProfile, EnvelopeStamp, OrgProfile, genesis_envelope};
use korder_ledger::BlockNumber;
use korder_ledger::block::{
    header_hash, next_block, set_last_config, set_signatures, signature_input, signatures_value,
};
use korder_msp::devpki::{DevPki, NodeRole};
use korder_msp::mspdir::MspDir;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Block, ConfigEnvelope, Envelope, MetadataSignature, Payload};
use korder_types::ids::ConfigSeq;

use super::{BlockVerifier, VerifyError};

const CHANNEL: &str = "catchup";

/// An orderer org with one orderer, a stranger of another CA, and the genesis block.
struct Fixture {
    orderer: SigningIdentity,
    stranger: SigningIdentity,
    profile: ChannelProfile,
    genesis: Block,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::generate("OrdererMSP", "orderer.example.com").unwrap();
    let node = pki.issue("orderer0", NodeRole::Orderer).unwrap();
    let admin = pki.issue("Admin", NodeRole::Admin).unwrap();
    pki.write_msp_dir(dir.path(), &node, &admin).unwrap();
    let msp = MspDir::load(dir.path())
        .unwrap()
        .to_fabric_msp_config("OrdererMSP");
    let orderer = SigningIdentity::from_pem(
        "OrdererMSP",
        node.cert_pem.as_bytes(),
        node.key_pem.as_bytes(),
    )
    .unwrap();
    let other = DevPki::generate("OrdererMSP", "forged.example.com").unwrap();
    let forged = other.issue("orderer0", NodeRole::Orderer).unwrap();
    let stranger = SigningIdentity::from_pem(
        "OrdererMSP",
        forged.cert_pem.as_bytes(),
        forged.key_pem.as_bytes(),
    )
    .unwrap();
    let mut profile = ChannelProfile::sample("solo");
    profile.orderer_orgs = vec![OrgProfile {
        name: "OrdererMSP".into(),
        msp,
        endpoints: vec!["127.0.0.1:7050".into()],
    }];
    profile.application_orgs = Some(Vec::new());
    let genesis = next_block(None, vec![config_at(&profile, CHANNEL, 0)]);
    Fixture {
        orderer,
        stranger,
        profile,
        genesis,
    }
}

/// A CONFIG envelope of `channel` carrying `profile`'s config at `sequence`.
fn config_at(profile: &ChannelProfile, channel: &str, sequence: u64) -> Bytes {
    let raw = genesis_envelope(channel, profile.channel_group(), &EnvelopeStamp::now());
    let mut env = Envelope::decode(raw.as_ref()).unwrap();
    let mut payload = Payload::decode(env.payload.as_ref()).unwrap();
    let mut config = ConfigEnvelope::decode(payload.data.as_ref()).unwrap();
    config.config.as_mut().unwrap().sequence = sequence;
    payload.data = config.encode_to_vec().into();
    env.payload = payload.encode_to_vec().into();
    env.encode_to_vec().into()
}

/// `block` with LAST_CONFIG = `last_config`, signed by `signer` as korder signs.
fn signed(mut block: Block, signer: &SigningIdentity, last_config: u64) -> Block {
    let last_config = BlockNumber::new(last_config);
    set_last_config(&mut block, last_config);
    let value = signatures_value(last_config, None);
    let header = block.header.clone().unwrap();
    let signature_header = signer.new_signature_header().unwrap();
    let signature = signer
        .sign(&signature_input(&value, &signature_header, &header))
        .unwrap();
    set_signatures(
        &mut block,
        value,
        vec![MetadataSignature {
            signature_header,
            signature,
        }],
    );
    block
}

/// The next block after `prev` over `entries`, signed by the orderer.
fn after(f: &Fixture, prev: &Block, entries: Vec<Bytes>, last_config: u64) -> Block {
    signed(
        next_block(prev.header.as_ref(), entries),
        &f.orderer,
        last_config,
    )
}

/// One transaction: an envelope with a payload and a signature.
fn tx(n: u8) -> Vec<Bytes> {
    let envelope = Envelope {
        payload: Bytes::from(vec![n; 8]),
        signature: Bytes::from(vec![n; 4]),
    };
    vec![envelope.encode_to_vec().into()]
}

/// Blocks 0 (genesis), 1 (a transaction), 2 (config at sequence 1), 3 (a transaction).
fn chain(f: &Fixture) -> Vec<Block> {
    let b1 = after(f, &f.genesis, tx(1), 0);
    let b2 = after(f, &b1, vec![config_at(&f.profile, CHANNEL, 1)], 2);
    let b3 = after(f, &b2, tx(3), 2);
    vec![f.genesis.clone(), b1, b2, b3]
}

fn genesis_bundle(f: &Fixture) -> Arc<Bundle> {
    Arc::new(crate::registrar::bundle_of_config_block(&f.genesis).unwrap())
}

/// A verifier that trusts `chain[..=n]`.
fn trusting(f: &Fixture, chain: &[Block], n: usize) -> BlockVerifier {
    let mut v = BlockVerifier::after(&chain[0], genesis_bundle(f)).unwrap();
    for b in &chain[1..=n] {
        v.verify(b).unwrap();
    }
    v
}

/// Asserts that `block` is refused with `check`, that the verifier did not move,
/// and that the good block is still accepted after.
fn refused(
    v: &mut BlockVerifier,
    block: &Block,
    good: &Block,
    check: impl Fn(&VerifyError) -> bool,
) {
    let next = v.next_number();
    let err = v.verify(block).unwrap_err();
    assert!(check(&err), "unexpected refusal: {err}");
    assert_eq!(v.next_number(), next, "a refused block moved the verifier");
    v.verify(good).unwrap();
}

/// A good chain with a config block verifies, and the config block's bundle is in
/// force after it.
#[test]
fn a_good_chain_verifies_and_its_config_takes_over() {
    let f = fixture();
    let blocks = chain(&f);
    let mut v = BlockVerifier::after(&blocks[0], genesis_bundle(&f)).unwrap();
    assert_eq!(v.next_number(), BlockNumber::new(1));
    assert!(v.verify(&blocks[1]).unwrap().config.is_none());
    let config = v.verify(&blocks[2]).unwrap().config.unwrap();
    assert_eq!(config.sequence, ConfigSeq::new(1));
    assert_eq!(v.bundle().unwrap().sequence, ConfigSeq::new(1));
    v.verify(&blocks[3]).unwrap();
    assert_eq!(v.next_number(), BlockNumber::new(4));
}

/// A block that is not the next one (a gap or a repeat) is refused.
#[test]
fn a_block_out_of_order_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let mut v = trusting(&f, &blocks, 1);
    refused(&mut v, &blocks[3], &blocks[2], |e| {
        matches!(e, VerifyError::WrongNumber { expected, got }
            if expected.get() == 2 && got.get() == 3)
    });
    let mut v = trusting(&f, &blocks, 1);
    refused(&mut v, &blocks[1], &blocks[2], |e| {
        matches!(e, VerifyError::WrongNumber { .. })
    });
}

/// A block whose previous_hash is not the header hash of the block before is refused.
#[test]
fn a_wrong_previous_hash_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let mut forged = next_block(blocks[1].header.as_ref(), tx(9));
    forged.header.as_mut().unwrap().previous_hash = Bytes::from_static(&[7; 32]);
    let forged = signed(forged, &f.orderer, 0);
    let mut v = trusting(&f, &blocks, 1);
    refused(
        &mut v,
        &forged,
        &blocks[2],
        |e| matches!(e, VerifyError::PreviousHash { number, .. } if number.get() == 2),
    );
}

/// Block 0 of a join that names a block before it is refused: its header would
/// differ from the real block 0's while every other check passes.
#[test]
fn a_genesis_block_with_a_previous_hash_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let mut forged = blocks[0].clone();
    forged.header.as_mut().unwrap().previous_hash = Bytes::from_static(&[1]);
    let mut v = BlockVerifier::join(&blocks[2]).unwrap();
    refused(&mut v, &forged, &blocks[0], |e| {
        matches!(e, VerifyError::GenesisPreviousHash { .. })
    });
}

/// A block whose data was changed under its header is refused.
#[test]
fn tampered_data_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let mut forged = blocks[3].clone();
    forged.data.as_mut().unwrap().data[0] = Bytes::from_static(b"tampered");
    let mut v = trusting(&f, &blocks, 2);
    refused(
        &mut v,
        &forged,
        &blocks[3],
        |e| matches!(e, VerifyError::DataHash { number, .. } if number.get() == 3),
    );
}

/// A block whose signature does not verify is refused.
#[test]
fn a_bad_signature_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let mut forged = next_block(blocks[1].header.as_ref(), tx(9));
    set_last_config(&mut forged, BlockNumber::GENESIS);
    let value = signatures_value(BlockNumber::GENESIS, None);
    let signature_header = f.orderer.new_signature_header().unwrap();
    let signature = f.orderer.sign(b"something else").unwrap();
    set_signatures(
        &mut forged,
        value,
        vec![MetadataSignature {
            signature_header,
            signature,
        }],
    );
    let mut v = trusting(&f, &blocks, 1);
    refused(
        &mut v,
        &forged,
        &blocks[2],
        |e| matches!(e, VerifyError::Signatures { number, .. } if number.get() == 2),
    );
}

/// A block signed by an identity the orderer org's CA did not issue is refused.
#[test]
fn a_signature_of_a_stranger_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let forged = signed(next_block(blocks[1].header.as_ref(), tx(9)), &f.stranger, 0);
    let mut v = trusting(&f, &blocks, 1);
    refused(&mut v, &forged, &blocks[2], |e| {
        matches!(e, VerifyError::Signatures { .. })
    });
}

/// A block past block 0 without any signature is refused.
#[test]
fn an_unsigned_block_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let mut unsigned = next_block(blocks[1].header.as_ref(), tx(9));
    set_last_config(&mut unsigned, BlockNumber::GENESIS);
    let mut v = trusting(&f, &blocks, 1);
    refused(&mut v, &unsigned, &blocks[2], |e| {
        matches!(e, VerifyError::Signatures { .. })
    });
}

/// A block without transactions, or with one that is not a signed envelope, is
/// refused even when hashed and signed properly.
#[test]
fn malformed_transactions_are_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let mut v = trusting(&f, &blocks, 1);
    let empty = after(&f, &blocks[1], Vec::new(), 0);
    refused(
        &mut v,
        &empty,
        &blocks[2],
        |e| matches!(e, VerifyError::Empty { number } if number.get() == 2),
    );
    let unsigned = Envelope {
        payload: Bytes::from_static(b"payload"),
        signature: Bytes::new(),
    };
    for entry in [
        Bytes::from_static(&[0xff, 0xff, 0xff]),
        unsigned.encode_to_vec().into(),
    ] {
        let mut v = trusting(&f, &blocks, 1);
        let mut entries = tx(2);
        entries.push(entry);
        let bad = after(&f, &blocks[1], entries, 0);
        refused(&mut v, &bad, &blocks[2], |e| {
            matches!(e, VerifyError::MalformedTransaction { number, index: 1, .. }
                if number.get() == 2)
        });
    }
}

/// A config block whose sequence is not the next one is refused.
#[test]
fn a_config_block_skipping_a_sequence_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let forged = after(&f, &blocks[1], vec![config_at(&f.profile, CHANNEL, 2)], 2);
    let mut v = trusting(&f, &blocks, 1);
    refused(&mut v, &forged, &blocks[2], |e| {
        matches!(e, VerifyError::ConfigSequence { expected, got, .. }
            if expected.get() == 1 && got.get() == 2)
    });
}

/// A config block of another channel is refused.
#[test]
fn a_config_block_of_another_channel_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let forged = after(&f, &blocks[1], vec![config_at(&f.profile, "other", 1)], 2);
    let mut v = trusting(&f, &blocks, 1);
    refused(
        &mut v,
        &forged,
        &blocks[2],
        |e| matches!(e, VerifyError::ConfigChannel { got, .. } if got == "other"),
    );
}

/// A block whose LAST_CONFIG index does not name the newest config block is refused.
#[test]
fn a_wrong_last_config_index_is_refused() {
    let f = fixture();
    let blocks = chain(&f);
    let forged = after(&f, &blocks[2], tx(3), 0);
    let mut v = trusting(&f, &blocks, 2);
    refused(&mut v, &forged, &blocks[3], |e| {
        matches!(e, VerifyError::LastConfig { expected, got, .. }
            if expected.get() == 2 && got.get() == 0)
    });
}

/// Joining by a later config block: the chain from block 0 verifies when it ends at
/// that very block, and is refused at that height when it ends elsewhere.
#[test]
fn a_join_must_end_at_the_trusted_block() {
    let f = fixture();
    let blocks = chain(&f);
    let mut v = BlockVerifier::join(&blocks[2]).unwrap();
    assert_eq!(v.next_number(), BlockNumber::GENESIS);
    for b in &blocks {
        v.verify(b).unwrap();
    }
    assert!(v.pending_end().is_none());

    // Another block 2, as well signed and with its own config at sequence 1.
    let other = after(&f, &blocks[1], vec![config_at(&f.profile, CHANNEL, 1)], 2);
    assert_ne!(
        header_hash(other.header.as_ref().unwrap()),
        header_hash(blocks[2].header.as_ref().unwrap())
    );
    let mut v = BlockVerifier::join(&blocks[2]).unwrap();
    v.verify(&blocks[0]).unwrap();
    v.verify(&blocks[1]).unwrap();
    refused(
        &mut v,
        &other,
        &blocks[2],
        |e| matches!(e, VerifyError::NotTrustedBlock { number, .. } if number.get() == 2),
    );
    assert!(v.pending_end().is_none());
}

/// Joining requires a config block as the trusted block, and a chain whose block 0
/// is a config block.
#[test]
fn a_join_starts_from_config_blocks_only() {
    let f = fixture();
    let blocks = chain(&f);
    assert!(matches!(
        BlockVerifier::join(&blocks[1]),
        Err(VerifyError::BadTrustedBlock(_))
    ));
    let mut v = BlockVerifier::join(&blocks[0]).unwrap();
    let not_config = next_block(None, tx(0));
    assert!(matches!(
        v.verify(&not_config),
        Err(VerifyError::GenesisNotConfig)
    ));
    v.verify(&blocks[0]).unwrap();
}
