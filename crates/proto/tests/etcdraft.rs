//! The etcdraft consensus metadata uses Fabric's field numbers and types.

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::etcdraft::{ConfigMetadata, Consenter, Options};

/// Hand-encoded bytes with Fabric's field numbers decode into the expected values.
#[test]
fn config_metadata_field_numbers() {
    // consenters (1): { host (1) = "o1", port (2) = 7050, client_tls_cert (3) = "c",
    // server_tls_cert (4) = "s" }; options (2): { tick_interval (1) = "5ms",
    // election_tick (2) = 10, heartbeat_tick (3) = 1, max_inflight_blocks (4) = 5,
    // snapshot_interval_size (5) = 300 }.
    let consenter = [
        0x0a, 0x02, b'o', b'1', 0x10, 0x8a, 0x37, 0x1a, 0x01, b'c', 0x22, 0x01, b's',
    ];
    let options = [
        0x0a, 0x03, b'5', b'm', b's', 0x10, 0x0a, 0x18, 0x01, 0x20, 0x05, 0x28, 0xac, 0x02,
    ];
    let mut bytes = vec![0x0a, consenter.len() as u8];
    bytes.extend_from_slice(&consenter);
    bytes.extend_from_slice(&[0x12, options.len() as u8]);
    bytes.extend_from_slice(&options);
    let decoded = ConfigMetadata::decode(bytes.as_slice()).unwrap();
    let expected = ConfigMetadata {
        consenters: vec![Consenter {
            host: "o1".into(),
            port: 7050,
            client_tls_cert: Bytes::from_static(b"c"),
            server_tls_cert: Bytes::from_static(b"s"),
        }],
        options: Some(Options {
            tick_interval: "5ms".into(),
            election_tick: 10,
            heartbeat_tick: 1,
            max_inflight_blocks: 5,
            snapshot_interval_size: 300,
        }),
    };
    assert_eq!(decoded, expected);
    assert_eq!(expected.encode_to_vec(), bytes);
}

/// Bytes that are not a protobuf message do not decode as metadata.
#[test]
fn garbage_is_refused() {
    assert!(ConfigMetadata::decode(&b"\xff\xff\xff"[..]).is_err());
}
