//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared Fabric test data directory.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fabric-v1.4.12")
}

/// The sample local MSP shipped with Fabric.
pub fn sample_msp_dir() -> PathBuf {
    testdata().join("sampleconfig/msp")
}

/// A fixed instant (2024-01-01T00:00:00Z) inside the sample certificates' validity.
pub fn fixed_now() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200)
}

/// DER length octets.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn der_tlv(tag: u8, contents: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    der_len(contents.len(), out);
    out.extend_from_slice(contents);
}

/// DER of a block header: SEQUENCE { INTEGER number, OCTET STRING previous_hash, OCTET STRING data_hash }.
pub fn block_header_der(number: u64, previous_hash: &[u8], data_hash: &[u8]) -> Vec<u8> {
    let be = number.to_be_bytes();
    let skip = be.iter().take_while(|&&b| b == 0).count().min(7);
    let mut int = Vec::new();
    if be[skip] & 0x80 != 0 {
        int.push(0);
    }
    int.extend_from_slice(&be[skip..]);
    let mut body = Vec::new();
    der_tlv(0x02, &int, &mut body);
    der_tlv(0x04, previous_hash, &mut body);
    der_tlv(0x04, data_hash, &mut body);
    let mut out = Vec::new();
    der_tlv(0x30, &body, &mut out);
    out
}
