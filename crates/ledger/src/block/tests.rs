use super::*;
use korder_proto::common::Envelope;
use proptest::prelude::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn env(payload: &str, signature: &str) -> Bytes {
    Bytes::from(
        Envelope {
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            signature: Bytes::copy_from_slice(signature.as_bytes()),
        }
        .encode_to_vec(),
    )
}

fn header(number: u64, prev: &[u8], data: &[u8]) -> BlockHeader {
    BlockHeader {
        number,
        previous_hash: Bytes::copy_from_slice(prev),
        data_hash: Bytes::copy_from_slice(data),
    }
}

const B0_DATA_HASH: &str = "f78da82b0552bcbc20c372c90e77e21e2c534eb167484a56df96b53be71b59aa";
const B0_HASH: &str = "681c800519329c336fb4186e49bf5ada818692fea80c5adf90f47793c420c0eb";
const B1_DATA_HASH: &str = "a28009630344f4ff9ce2a7c5834c56ee3ea8416fd24691d27feda055421c7cf5";
const B1_HASH: &str = "e394287d42d6a0e7181e247fed19efbafa67184e04f249e7a27202fb842f74ec";

/// The worked example of the spec: block 0 and 1 data hashes, DER and header hashes.
#[test]
fn worked_example_hashes() {
    let e0 = env("genesis-payload", "");
    assert_eq!(e0.to_vec(), h("0a0f67656e657369732d7061796c6f6164"));
    let b0 = next_block(None, vec![e0]);
    let h0 = b0.header.clone().unwrap();
    assert_eq!(h0.number, 0);
    assert!(h0.previous_hash.is_empty());
    assert_eq!(h0.data_hash.to_vec(), h(B0_DATA_HASH));
    let der0 = header_der(&h0);
    assert_eq!(der0.len(), 41);
    assert_eq!(der0, h(&format!("3027 020100 0400 0420 {B0_DATA_HASH}")));
    assert_eq!(header_hash(&h0).to_vec(), h(B0_HASH));

    let e1 = env("tx-1", "sig-1");
    let e2 = env("tx-2", "sig-2");
    assert_eq!(e1.to_vec(), h("0a0474782d3112057369672d31"));
    assert_eq!(e2.to_vec(), h("0a0474782d3212057369672d32"));
    let b1 = next_block(Some(&h0), vec![e1, e2]);
    let h1 = b1.header.clone().unwrap();
    assert_eq!(h1.number, 1);
    assert_eq!(h1.previous_hash.to_vec(), h(B0_HASH));
    assert_eq!(h1.data_hash.to_vec(), h(B1_DATA_HASH));
    let der1 = header_der(&h1);
    assert_eq!(der1.len(), 73);
    assert_eq!(
        der1,
        h(&format!("3047 020101 0420 {B0_HASH} 0420 {B1_DATA_HASH}"))
    );
    assert_eq!(header_hash(&h1).to_vec(), h(B1_HASH));
}

/// Block 0 of the worked example encodes to the protobuf bytes given in the spec.
#[test]
fn worked_example_block0_protobuf() {
    let b0 = next_block(None, vec![env("genesis-payload", "")]);
    let want = h(&format!(
        "0a22 1a20 {B0_DATA_HASH} 1213 0a11 0a0f67656e657369732d7061796c6f6164 1a0a 0a00 0a00 0a00 0a00 0a00"
    ));
    assert_eq!(b0.encode_to_vec(), want);
    assert_eq!(Block::decode(&want[..]).unwrap(), b0);
}

/// The builder chains blocks: numbers count up and each previous hash is the header hash before.
#[test]
fn builder_chains_blocks() {
    let mut b = BlockBuilder::new();
    assert_eq!(b.next_number(), BlockNumber::GENESIS);
    let b0 = b.build(vec![env("genesis-payload", "")]);
    let b1 = b.build(vec![env("tx-1", "sig-1"), env("tx-2", "sig-2")]);
    assert_eq!(
        header_hash(b1.header.as_ref().unwrap()).to_vec(),
        h(B1_HASH)
    );
    assert_eq!(
        b1.header.as_ref().unwrap().previous_hash.to_vec(),
        header_hash(b0.header.as_ref().unwrap()).to_vec()
    );
    assert_eq!(b.next_number(), BlockNumber::new(2));
    assert_eq!(b1.metadata.unwrap().metadata.len(), METADATA_SLOTS);
    let again = BlockBuilder::after(b0.header.unwrap());
    assert_eq!(again.next_number(), BlockNumber::new(1));
}

/// An empty batch hashes to SHA-256 of nothing.
#[test]
fn empty_data_hash() {
    assert_eq!(
        data_hash(&BlockData::default()).to_vec(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
}

/// DER INTEGER encodings of the spec's table and of u64::MAX, inside the full header.
#[test]
fn der_integer_vectors() {
    let cases: &[(u64, &str)] = &[
        (0, "020100"),
        (1, "020101"),
        (127, "02017f"),
        (128, "02020080"),
        (255, "020200ff"),
        (256, "02020100"),
        (65535, "020300ffff"),
        ((1 << 63) - 1, "02087fffffffffffffff"),
        (1 << 63, "0209008000000000000000"),
        (u64::MAX, "020900ffffffffffffffff"),
    ];
    for (n, int_tlv) in cases {
        let int = h(int_tlv);
        // empty hashes
        let der = header_der(&header(*n, &[], &[]));
        let mut want = vec![0x30, (int.len() + 4) as u8];
        want.extend_from_slice(&int);
        want.extend_from_slice(&[0x04, 0x00, 0x04, 0x00]);
        assert_eq!(der, want, "number {n}, empty hashes");
        // 32-byte hashes
        let prev = [0xabu8; 32];
        let data = [0x01u8; 32];
        let der = header_der(&header(*n, &prev, &data));
        let mut want = vec![0x30, (int.len() + 68) as u8];
        want.extend_from_slice(&int);
        want.extend_from_slice(&[0x04, 0x20]);
        want.extend_from_slice(&prev);
        want.extend_from_slice(&[0x04, 0x20]);
        want.extend_from_slice(&data);
        assert_eq!(der, want, "number {n}, 32-byte hashes");
    }
}

/// Long-form DER lengths: 128 and 300-byte octet strings, and a sequence over 255 bytes.
#[test]
fn der_long_form_lengths() {
    let der = header_der(&header(0, &[7u8; 128], &[]));
    assert_eq!(&der[..2], &[0x30, 0x81]);
    assert_eq!(der[2] as usize, 3 + 3 + 128 + 2);
    assert_eq!(&der[3..9], &[0x02, 0x01, 0x00, 0x04, 0x81, 0x80]);
    assert_eq!(der.len(), 3 + 3 + 3 + 128 + 2);

    let der = header_der(&header(5, &[], &[9u8; 300]));
    let content = 3 + 2 + 4 + 300;
    assert_eq!(
        &der[..4],
        &[0x30, 0x82, (content >> 8) as u8, (content & 0xff) as u8]
    );
    assert_eq!(
        &der[4..13],
        &[0x02, 0x01, 0x05, 0x04, 0x00, 0x04, 0x82, 0x01, 0x2c]
    );
    assert_eq!(der.len(), 4 + content);
}

/// Metadata writers produce the spec's example bytes and the readers read them back.
#[test]
fn metadata_example_bytes() {
    let kafka = KafkaMetadata {
        last_offset_persisted: 41,
        ..Default::default()
    };
    let mut b = next_block(None, vec![env("x", "")]);
    let value = write_orderer_metadata(&mut b, BlockNumber::GENESIS, Some(&kafka));
    assert_eq!(value.to_vec(), h("0a00 1204 0a02 0829"));
    assert_eq!(
        slot(&b, BlockMetadataIndex::Orderer).to_vec(),
        h("0a02 0829")
    );
    assert!(slot(&b, BlockMetadataIndex::LastConfig).is_empty());
    set_last_config(&mut b, BlockNumber::new(5));
    assert_eq!(
        slot(&b, BlockMetadataIndex::LastConfig).to_vec(),
        h("0a02 0805")
    );
    set_signatures(&mut b, value.clone(), vec![]);
    assert_eq!(
        last_config_index(&b).unwrap(),
        BlockNumber::GENESIS,
        "SIGNATURES value wins over LAST_CONFIG"
    );
    assert_eq!(consenter_metadata(&b).unwrap(), Some(kafka));
    assert_eq!(
        KafkaMetadata {
            last_offset_persisted: -3,
            ..Default::default()
        }
        .encode_to_vec(),
        h("08fdffffffffffffffff01")
    );
}

/// Readers fall back to LAST_CONFIG and ORDERER when SIGNATURES has no value, and read empty slots as 0/None.
#[test]
fn metadata_readers_fall_back() {
    let mut b = next_block(None, vec![env("x", "")]);
    assert_eq!(last_config_index(&b).unwrap(), BlockNumber::GENESIS);
    assert_eq!(consenter_metadata(&b).unwrap(), None);
    set_last_config(&mut b, BlockNumber::new(7));
    let kafka = KafkaMetadata {
        last_offset_persisted: 9,
        last_original_offset_processed: 3,
        last_resubmitted_config_offset: 2,
    };
    set_orderer_metadata(&mut b, &kafka);
    assert_eq!(last_config_index(&b).unwrap(), BlockNumber::new(7));
    assert_eq!(consenter_metadata(&b).unwrap(), Some(kafka));
    // Four slots (older blocks) work too.
    b.metadata.as_mut().unwrap().metadata.truncate(4);
    assert_eq!(consenter_metadata(&b).unwrap(), Some(kafka));
    b.metadata.as_mut().unwrap().metadata.truncate(2);
    assert_eq!(consenter_metadata(&b).unwrap(), None);
    assert_eq!(last_config_index(&b).unwrap(), BlockNumber::new(7));
}

/// Garbage in a metadata slot is a typed error naming the block and slot.
#[test]
fn metadata_garbage_is_an_error() {
    let mut b = next_block(None, vec![env("x", "")]);
    b.metadata.as_mut().unwrap().metadata[1] = Bytes::from_static(&[0x0a, 0x05, 0x01]);
    let e = last_config_index(&b).unwrap_err();
    assert!(
        matches!(
            e,
            BlockError::Metadata {
                number: BlockNumber::GENESIS,
                slot: BlockMetadataIndex::LastConfig,
                ..
            }
        ),
        "{e}"
    );
}

/// signed_entries returns creator, signature and value ‖ signature_header ‖ header DER for a signed block.
#[test]
fn signed_entries_of_a_signed_block() {
    let mut b = next_block(None, vec![env("x", "")]);
    let value = write_orderer_metadata(&mut b, BlockNumber::GENESIS, None);
    let sh = SignatureHeader {
        creator: Bytes::from_static(b"creator-bytes"),
        nonce: Bytes::from_static(&[1; 24]),
    }
    .encode_to_vec();
    let input = signature_input(&value, &sh, b.header.as_ref().unwrap());
    set_signatures(
        &mut b,
        value.clone(),
        vec![MetadataSignature {
            signature_header: Bytes::from(sh.clone()),
            signature: Bytes::from_static(b"sig"),
        }],
    );
    let entries = signed_entries(&b).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].slot, BlockMetadataIndex::Signatures);
    assert_eq!(entries[0].creator, Bytes::from_static(b"creator-bytes"));
    assert_eq!(entries[0].signature, Bytes::from_static(b"sig"));
    assert_eq!(entries[0].signed_data, input);
    let mut want = value.to_vec();
    want.extend_from_slice(&sh);
    want.extend_from_slice(&header_der(b.header.as_ref().unwrap()));
    assert_eq!(entries[0].signed_data, want);
}

fn testdata_blocks() -> Vec<(String, Block)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fabric-v1.4.12/blocks");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let block = Block::decode(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.push((name, block));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every testdata block decodes; data hashes match except in exactly one: the system block, whose data was edited after its header was made.
#[test]
fn testdata_blocks_data_hashes() {
    let blocks = testdata_blocks();
    assert_eq!(blocks.len(), 5);
    let mut mismatched = Vec::new();
    for (name, block) in &blocks {
        let hd = block.header.as_ref().unwrap();
        let computed = data_hash(block.data.as_ref().unwrap());
        assert_eq!(header_hash(hd), sha256(&[&header_der(hd)]));
        assert_eq!(block.metadata.as_ref().unwrap().metadata.len(), 4, "{name}");
        if hd.data_hash[..] != computed[..] {
            mismatched.push(name.clone());
        }
    }
    assert_eq!(mismatched, vec![MISMATCHED_BLOCK.to_owned()]);
    // Its header is the one of common-server-genesis.block (same data hash), while its
    // single envelope (6293 bytes, the genesis one has 6298) hashes to something else.
    let get = |n: &str| &blocks.iter().find(|(name, _)| name == n).unwrap().1;
    let system = get(MISMATCHED_BLOCK);
    let genesis = get("common-server-genesis.block");
    assert_eq!(system.header, genesis.header);
    let data = system.data.as_ref().unwrap();
    assert_eq!(data.data.len(), 1);
    assert_eq!(data.data[0].len(), 6293);
    assert_eq!(
        data_hash(data).to_vec(),
        h("8828c9c300f03d83edc2cbb065b9e99297088ed1b1a604837ed1c8ca8292f87e")
    );
    assert_eq!(
        system.header.as_ref().unwrap().data_hash.to_vec(),
        h("1636150ec50ce8f5d6ae034af9a79f3d9039e2fa1739de4a80e390365d6cd20f")
    );
}

const MISMATCHED_BLOCK: &str = "common-server-system.block";

/// The cluster block 3 has old-layout signatures in SIGNATURES and LAST_CONFIG, over value ‖ header ‖ DER.
#[test]
fn testdata_block3_old_layout_signatures() {
    let blocks = testdata_blocks();
    let (_, b3) = blocks
        .iter()
        .find(|(n, _)| n == "common-cluster-block3.pb")
        .unwrap();
    let hd = b3.header.as_ref().unwrap();
    assert_eq!(hd.number, 3);
    let entries = signed_entries(b3).unwrap();
    let slots: Vec<_> = entries.iter().map(|e| e.slot).collect();
    assert_eq!(
        slots,
        vec![
            BlockMetadataIndex::Signatures,
            BlockMetadataIndex::LastConfig
        ]
    );
    let der = header_der(hd);
    for e in &entries {
        assert!(!e.creator.is_empty());
        assert!(e.signed_data.ends_with(&der));
        assert!(
            e.signature.len() > 60 && e.signature[0] == 0x30,
            "DER ECDSA signature"
        );
        let id = korder_proto::msp::SerializedIdentity::decode(&e.creator[..]).unwrap();
        assert!(!id.mspid.is_empty());
    }
    // The SIGNATURES value is empty in this layout; LAST_CONFIG signs the LastConfig bytes.
    let sigs = Metadata::decode(&slot(b3, BlockMetadataIndex::Signatures)[..]).unwrap();
    assert!(sigs.value.is_empty());
    let lc = Metadata::decode(&slot(b3, BlockMetadataIndex::LastConfig)[..]).unwrap();
    assert!(entries[1].signed_data.starts_with(&lc.value));
    assert_eq!(
        entries[1].signed_data.len(),
        lc.value.len() + lc.signatures[0].signature_header.len() + der.len()
    );
    let _ = last_config_index(b3).unwrap();
}

/// Genesis blocks carry no signatures, last config 0 and no consenter metadata.
#[test]
fn testdata_genesis_blocks_unsigned() {
    for (name, b) in testdata_blocks() {
        if b.header.as_ref().unwrap().number != 0 {
            continue;
        }
        assert_eq!(
            last_config_index(&b).unwrap(),
            BlockNumber::GENESIS,
            "{name}"
        );
        assert_eq!(consenter_metadata(&b).unwrap(), None, "{name}");
    }
}

proptest! {
    /// Header DER has the SEQUENCE length it claims and parses back to its three fields.
    #[test]
    fn der_round_trip(n in any::<u64>(), prev in proptest::collection::vec(any::<u8>(), 0..300), data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let der = header_der(&header(n, &prev, &data));
        let (back_n, back_prev, back_data) = parse_der(&der);
        prop_assert_eq!(back_n, n);
        prop_assert_eq!(back_prev, prev);
        prop_assert_eq!(back_data, data);
    }

    /// A built block survives a protobuf round trip and its data hash matches its data.
    #[test]
    fn block_protobuf_round_trip(entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8), n in 0u64..1_000_000) {
        let prev = header(n, &[1; 32], &[2; 32]);
        let envs: Vec<Bytes> = entries.into_iter().map(Bytes::from).collect();
        let b = next_block(Some(&prev), envs);
        let back = Block::decode(&b.encode_to_vec()[..]).unwrap();
        prop_assert_eq!(&back, &b);
        prop_assert_eq!(back.header.as_ref().unwrap().data_hash.to_vec(), data_hash(back.data.as_ref().unwrap()).to_vec());
        prop_assert_eq!(back.header.as_ref().unwrap().number, n + 1);
    }

    /// Metadata written by the writers reads back the same last-config index and Kafka offsets.
    #[test]
    fn metadata_round_trip(lc in any::<u64>(), a in any::<i64>(), b in any::<i64>(), c in any::<i64>()) {
        let kafka = KafkaMetadata { last_offset_persisted: a, last_original_offset_processed: b, last_resubmitted_config_offset: c };
        let mut blk = next_block(None, vec![]);
        let value = write_orderer_metadata(&mut blk, BlockNumber::new(lc), Some(&kafka));
        set_signatures(&mut blk, value, vec![]);
        prop_assert_eq!(last_config_index(&blk).unwrap(), BlockNumber::new(lc));
        let want = (kafka != KafkaMetadata::default()).then_some(kafka);
        prop_assert_eq!(consenter_metadata(&blk).unwrap(), want);
    }
}

/// Minimal DER reader for the round-trip property (independent of the encoder).
fn parse_der(der: &[u8]) -> (u64, Vec<u8>, Vec<u8>) {
    fn tlv(buf: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = buf[0];
        let (len, hdr) = if buf[1] < 0x80 {
            (buf[1] as usize, 2)
        } else {
            let k = (buf[1] & 0x7f) as usize;
            assert!(buf[2] != 0, "long form must be minimal");
            let mut l = 0usize;
            for b in &buf[2..2 + k] {
                l = (l << 8) | *b as usize;
            }
            assert!(l >= 0x80, "long form only for lengths >= 128");
            (l, 2 + k)
        };
        (tag, &buf[hdr..hdr + len], &buf[hdr + len..])
    }
    let (t, seq, rest) = tlv(der);
    assert_eq!(t, 0x30);
    assert!(rest.is_empty());
    let (t, int, rest) = tlv(seq);
    assert_eq!(t, 0x02);
    assert!(!int.is_empty() && int[0] & 0x80 == 0, "positive");
    assert!(
        int.len() == 1 || !(int[0] == 0 && int[1] & 0x80 == 0),
        "minimal"
    );
    let mut n: u128 = 0;
    for b in int {
        n = (n << 8) | *b as u128;
    }
    let (t, prev, rest) = tlv(rest);
    assert_eq!(t, 0x04);
    let (t, data, rest) = tlv(rest);
    assert_eq!(t, 0x04);
    assert!(rest.is_empty());
    (u64::try_from(n).unwrap(), prev.to_vec(), data.to_vec())
}
