//! Orderer signatures in a real Fabric block verify against the signer's certificate.

mod common;

use korder_msp::{Identity, VerifyError};
use korder_proto::Message;
use korder_proto::common::{Block, Metadata, SignatureHeader};

fn load_block3() -> Block {
    let bytes = std::fs::read(common::testdata().join("blocks/common-cluster-block3.pb"))
        .expect("read block3 from the shared test data");
    Block::decode(bytes.as_slice()).expect("block3 decodes")
}

/// The DER header helper encodes small and high-bit numbers minimally.
#[test]
fn header_der_helper_encodes_minimally() {
    assert_eq!(
        common::block_header_der(0, &[], &[]),
        vec![0x30, 0x07, 0x02, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00]
    );
    assert_eq!(
        &common::block_header_der(128, &[], &[])[2..6],
        &[0x02, 0x02, 0x00, 0x80]
    );
}

/// Every MetadataSignature in the SIGNATURES and LAST_CONFIG slots of block3 verifies.
#[test]
fn block3_metadata_signatures_verify() {
    let block = load_block3();
    let header = block.header.as_ref().unwrap();
    let header_der =
        common::block_header_der(header.number, &header.previous_hash, &header.data_hash);
    let slots = &block.metadata.as_ref().unwrap().metadata;
    let mut verified = 0;
    for slot in [0usize, 1] {
        let md = Metadata::decode(slots[slot].as_ref()).unwrap();
        for ms in &md.signatures {
            let sh = SignatureHeader::decode(ms.signature_header.as_ref()).unwrap();
            let signer = Identity::from_serialized(&sh.creator).unwrap();
            let mut message = md.value.to_vec();
            message.extend_from_slice(&ms.signature_header);
            message.extend_from_slice(&header_der);
            signer.verify(&message, &ms.signature).unwrap();

            // The same signature over a changed message must fail.
            let mut tampered = message.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            assert_eq!(
                signer.verify(&tampered, &ms.signature),
                Err(VerifyError::Mismatch)
            );
            verified += 1;
        }
    }
    assert!(
        verified >= 1,
        "block3 should carry at least one orderer signature"
    );
}

/// The signer of block3 is an orderer identity of a named MSP with a parsed certificate.
#[test]
fn block3_signer_identity_parses() {
    let block = load_block3();
    let md = Metadata::decode(block.metadata.as_ref().unwrap().metadata[0].as_ref()).unwrap();
    let sh = SignatureHeader::decode(md.signatures[0].signature_header.as_ref()).unwrap();
    let signer = Identity::from_serialized(&sh.creator).unwrap();
    assert!(!signer.msp_id().is_empty());
    assert_eq!(signer.serialized().as_ref(), sh.creator.as_ref());
    assert!(!signer.certificate().is_ca());
    assert!(signer.certificate().not_before() < signer.expires_at());
}
