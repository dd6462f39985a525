//! Seed inputs for every target, made from real material: the Fabric blocks,
//! certificates and orderer.yaml files in `tests/fixtures`, the signatures those
//! blocks carry, and records and updates of the shapes korder writes.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use korder_consensus::{ConfigSeq, LogOffset, connect_record, regular_record, time_to_cut_record};
use korder_ledger::block::signed_entries;
use korder_proto::Message;
use korder_proto::common::Block;
use korder_proto::orderer::kafka_message_regular::Class;

use crate::orderer_yaml::ENV_SEPARATOR;

/// One seed: the target it is for, a file name, and its bytes.
#[derive(Debug)]
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            files_under(&p, keep, out);
        } else if keep(&p) {
            out.push(p);
        }
    }
}

fn name_of(fixtures: &Path, path: &Path) -> String {
    path.strip_prefix(fixtures)
        .unwrap_or(path)
        .to_string_lossy()
        .replace(['/', '\\'], "_")
}

/// Every seed made from the fixtures directory (`tests/fixtures` of the repository).
pub fn seeds(fixtures: &Path) -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target, name: String, bytes: Vec<u8>| {
        out.push(Seed {
            target,
            name,
            bytes,
        })
    };

    let mut blocks = Vec::new();
    files_under(
        fixtures,
        &|p| p.parent().is_some_and(|d| d.ends_with("blocks")),
        &mut blocks,
    );
    for path in &blocks {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        if let Ok(block) = Block::decode(bytes.as_slice()) {
            for (i, e) in signed_entries(&block)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                add(
                    "ecdsa_signature",
                    format!("{}-sig{i}", name_of(fixtures, path)),
                    e.signature.to_vec(),
                );
            }
            for (i, entry) in block.data.iter().flat_map(|d| &d.data).enumerate() {
                add(
                    "broadcast_filters",
                    format!("{}-envelope{i}", name_of(fixtures, path)),
                    [&[1u8][..], entry].concat(),
                );
            }
            if let Some(first) = block.data.as_ref().and_then(|d| d.data.first()) {
                let mut update = vec![1u8];
                update.extend_from_slice(first);
                add(
                    "config_update",
                    format!("{}-envelope", name_of(fixtures, path)),
                    update,
                );
            }
        }
        add("block_decode", name_of(fixtures, path), bytes);
    }

    let mut certs = Vec::new();
    files_under(
        fixtures,
        &|p| p.extension().is_some_and(|e| e == "pem"),
        &mut certs,
    );
    for path in &certs {
        if let Ok(bytes) = std::fs::read(path) {
            add("x509_cert", name_of(fixtures, path), bytes);
        }
    }

    let mut yamls = Vec::new();
    files_under(
        fixtures,
        &|p| p.file_name().is_some_and(|n| n == "orderer.yaml"),
        &mut yamls,
    );
    for path in &yamls {
        if let Ok(text) = std::fs::read_to_string(path) {
            let with_env = format!(
                "{text}{ENV_SEPARATOR}ORDERER_GENERAL_LISTENPORT=7051\n\
                 ORDERER_GENERAL_BOOTSTRAPFILE=/tmp/genesis.block\n\
                 ORDERER_KAFKA_RETRY_SHORTINTERVAL=1s\n"
            );
            add("orderer_yaml", name_of(fixtures, path), text.into_bytes());
            add(
                "orderer_yaml",
                format!("{}-env", name_of(fixtures, path)),
                with_env.into_bytes(),
            );
        }
    }

    // Log records of every kind, as the arbitrary-decoded operation stream sees
    // them, plus the records themselves.
    let records = [
        connect_record(),
        time_to_cut_record(korder_consensus::BlockNumber::new(1)),
        regular_record(
            Bytes::from_static(b"tx"),
            ConfigSeq::new(0),
            Class::Normal,
            None,
        ),
        regular_record(
            Bytes::from_static(b"cfg"),
            ConfigSeq::new(0),
            Class::Config,
            Some(LogOffset::new(3)),
        ),
    ];
    for (i, r) in records.iter().enumerate() {
        add("chain_records", format!("record{i}"), r.to_vec());
    }
    add("chain_records", "counting".into(), (0u8..=255).collect());
    add("log_segments", "counting".into(), (0u8..=255).collect());
    add(
        "log_segments",
        "records-no-damage".into(),
        [vec![3u8], vec![40u8; 40], vec![9u8, 1, 0, 0, 0]].concat(),
    );
    // Block files korder and Fabric wrote.
    let mut block_files = Vec::new();
    files_under(
        fixtures,
        &|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("blockfile_"))
        },
        &mut block_files,
    );
    for path in &block_files {
        if let Ok(bytes) = std::fs::read(path)
            && bytes.len() <= 64 * 1024
        {
            add(
                "block_file_scan",
                name_of(fixtures, path),
                [&[1u8][..], &bytes].concat(),
            );
        }
    }
    // Join requests as osnadmin sends them, holding the fixtures' genesis blocks.
    for path in &blocks {
        if let Ok(bytes) = std::fs::read(path) {
            add(
                "participation_join",
                format!("osnadmin-{}", name_of(fixtures, path)),
                [
                    &[1u8][..],
                    &crate::participation_join::osnadmin_request(&bytes),
                ]
                .concat(),
            );
        }
    }
    // Every block of the v2.5.16 orderer ledger, as another orderer serves it.
    for (name, block) in crate::pulled_blocks::real_block_encodings() {
        add("pulled_blocks", name, [&[1u8][..], &block].concat());
    }
    for (name, channel) in [("walk-system-channel", 0u8), ("walk-mychannel", 1)] {
        add(
            "pulled_blocks",
            name.into(),
            crate::pulled_blocks::walk(channel, 20),
        );
    }
    for (name, seek) in deliver_requests() {
        add("deliver_seek", name.into(), [&[1u8][..], &seek].concat());
    }
    for target in [
        "broadcast_filters",
        "deliver_seek",
        "block_file_scan",
        "participation_join",
        "pulled_blocks",
    ] {
        add(target, "structured-zero".into(), vec![0u8; 64]);
        add(
            target,
            "structured-counting".into(),
            (0u8..=255).step_by(2).collect(),
        );
    }
    add("config_update", "structured-zero".into(), vec![0u8; 64]);
    add(
        "config_update",
        "structured-counting".into(),
        (0u8..=255).step_by(2).collect(),
    );
    out
}

/// Deliver requests as clients send them: `peer channel fetch` (oldest, newest,
/// a block number), a peer's deliver client (from a number on, without end) and a
/// wait for the next block.
fn deliver_requests() -> Vec<(&'static str, Vec<u8>)> {
    use korder_proto::common::{ChannelHeader, Envelope, Header, HeaderType, Payload};
    use korder_proto::orderer::{
        SeekInfo, SeekNewest, SeekNextCommit, SeekOldest, SeekPosition, SeekSpecified, seek_info,
        seek_position::Type,
    };
    let pos = |t: Type| SeekPosition { r#type: Some(t) };
    let cases = [
        (
            "fetch-oldest",
            Type::Oldest(SeekOldest {}),
            Type::Oldest(SeekOldest {}),
            0,
        ),
        (
            "fetch-newest",
            Type::Newest(SeekNewest {}),
            Type::Newest(SeekNewest {}),
            0,
        ),
        (
            "fetch-number",
            Type::Specified(SeekSpecified { number: 1 }),
            Type::Specified(SeekSpecified { number: 1 }),
            0,
        ),
        (
            "peer-from-number",
            Type::Specified(SeekSpecified { number: 2 }),
            Type::Specified(SeekSpecified { number: u64::MAX }),
            0,
        ),
        (
            "next-commit-fail-if-not-ready",
            Type::NextCommit(SeekNextCommit {}),
            Type::NextCommit(SeekNextCommit {}),
            seek_info::SeekBehavior::FailIfNotReady as i32,
        ),
    ];
    cases
        .into_iter()
        .map(|(name, start, stop, behavior)| {
            let seek = SeekInfo {
                start: Some(pos(start)),
                stop: Some(pos(stop)),
                behavior,
                error_response: 0,
            };
            let payload = Payload {
                header: Some(Header {
                    channel_header: ChannelHeader {
                        r#type: HeaderType::DeliverSeekInfo as i32,
                        channel_id: "mychannel".into(),
                        timestamp: Some(korder_proto::Timestamp {
                            seconds: 1_700_000_000,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into(),
                    signature_header: Bytes::new(),
                }),
                data: seek.encode_to_vec().into(),
            };
            let envelope = Envelope {
                payload: payload.encode_to_vec().into(),
                signature: Bytes::new(),
            };
            (name, envelope.encode_to_vec())
        })
        .collect()
}
