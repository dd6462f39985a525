//! Taking over a Fabric v2.5.16 orderer's ledger (Kafka consenter): korder, started
//! with Fabric's sample orderer.yaml on a copy of
//! `tests/fixtures/fabric-v2.5.16/orderer-ledger` and without a genesis block file,
//! resumes both channels on their Kafka topics after the offsets their last blocks
//! record, cuts new blocks that continue Fabric's hash chain, restarts without cutting
//! them again, and leaves Fabric's blocks and LevelDB index byte for byte as they were.
//!
//! Needs a running broker: `scripts/kafka start`, then
//! `KORDER_KAFKA_BOOTSTRAP=… cargo test -p korder --test e2e_fabric_ledger`. Without
//! it the test fails, on purpose. The test deletes and recreates the topics
//! `system-channel` and `mychannel` on that broker (topics are named after the
//! channels, which the ledger fixes).
//!
//! Brokers: korder, like Fabric, takes them from the channel config in the ledger
//! (`Orderer/KafkaBrokers`), never from orderer.yaml or the genesis file. The fixture's
//! channels name 127.0.0.1:16772, so the test listens there and forwards to the test
//! broker: the address is only the client's bootstrap, after which it talks to the
//! listener the broker advertises, as a migrated node talks to the network's brokers.
//!
//! Identities: the fixture network used cryptogen-style MSPs with NodeOUs —
//! `OrdererMSP` (CA `ca.example.com`; every block is signed by `orderer.example.com`,
//! OU `orderer`) and `Org1MSP` (CA `ca.org1.example.com`; mychannel's transactions are
//! signed by `Admin@org1.example.com`, OU `admin`). Their private keys are not in the
//! fixture. Fabric's sample MSP (`SampleOrg`) has a CA of the same name,
//! `ca.org1.example.com`, but another key and OU `COP` in its subject: it is a member
//! of neither org, so the channels' Readers and Writers policies refuse it and korder
//! answers its Deliver and Broadcast with FORBIDDEN, as Fabric would. The node signs
//! with it (the only key at hand); new transactions therefore reach the chain the way
//! records of the network's other orderer nodes do — REGULAR records on the channel's
//! topic at the channel's current config sequence, which an orderer does not validate
//! again — and korder's blocks are read from the ledger files. A real takeover runs
//! korder with the Fabric orderer's own local MSP: blocks signed by `SampleOrg`, as
//! here, verify against their certificate (`korder ledger verify`) but do not meet the
//! channel's BlockValidation policy on a peer, which korder warns about at start.

#![allow(clippy::unwrap_used)] // test helpers; failures should panic

mod support;

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_consensus::{BlockNumber, order_record, time_to_cut_record};
use korder_consensus::{ConfigSeq, Record, configure_record, connect_record, decode_record};
use korder_kafka::{KafkaConfig, KafkaLog};
use korder_ledger::block::signed_entries;
use korder_ledger::block::{consenter_metadata, data_hash_of, header_hash, last_config_index};
use korder_log::{Log, LogOffset, LogReader, ReadFrom};
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{
    Block, BlockData, BlockHeader, BlockMetadata, ChannelHeader, ConfigEnvelope, Envelope,
    HeaderType, Payload, Status,
};
use korder_proto::orderer::{SeekSpecified, seek_position};
use support::{KORDER, broadcast_all, deliver, envelope, free_port, seek};

const SYSTEM: &str = "system-channel";
const CHANNEL: &str = "mychannel";
/// The broker address in the fixture's channel configs.
const FABRIC_BROKER: &str = "127.0.0.1:16772";
/// How long a node may take to start, or to cut the records given to it.
const LIMIT: Duration = Duration::from_secs(120);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .canonicalize()
        .unwrap()
}

fn fabric_ledger() -> PathBuf {
    fixtures().join("fabric-v2.5.16/orderer-ledger")
}

fn block_file(ledger: &Path, channel: &str) -> PathBuf {
    ledger.join("chains").join(channel).join("blockfile_000000")
}

/// The one-broker cluster's bootstrap servers.
fn kafka1() -> String {
    std::env::var("KORDER_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA_BOOTSTRAP is not set: this test needs a real Kafka broker; run \
             scripts/test, or start one with scripts/kafka start and export its bootstrap"
        )
    })
}

/// The identity of Fabric's sample MSP: the node's, and the test's client.
fn sample_signer() -> SigningIdentity {
    SigningIdentity::load_msp_dir(
        fixtures().join("fabric-v1.4.12/sampleconfig/msp"),
        "SampleOrg",
    )
    .unwrap()
}

// --- Fabric's block files, read independently of korder's ledger code -----------

fn varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = buf[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
    }
    panic!("varint too long at {at}");
}

fn raw(buf: &[u8], at: &mut usize) -> Bytes {
    let len = varint(buf, at) as usize;
    let out = Bytes::copy_from_slice(&buf[*at..*at + len]);
    *at += len;
    out
}

/// Every block of a block file: `varint(len) ‖ body` records, the body being the
/// number, data hash, previous hash, then the data entries and metadata slots, each
/// length-prefixed. Every byte of the file must belong to a block.
fn read_block_file(path: &Path) -> Vec<Block> {
    let file = std::fs::read(path).unwrap();
    let mut at = 0;
    let mut blocks = Vec::new();
    while at < file.len() {
        let len = varint(&file, &mut at) as usize;
        let body = &file[at..at + len];
        at += len;
        let mut b = 0;
        let number = varint(body, &mut b);
        let data_hash = raw(body, &mut b);
        let previous_hash = raw(body, &mut b);
        let entries = (0..varint(body, &mut b))
            .map(|_| raw(body, &mut b))
            .collect();
        let slots = (0..varint(body, &mut b))
            .map(|_| raw(body, &mut b))
            .collect();
        assert_eq!(
            b,
            body.len(),
            "{}: block {number} has trailing bytes",
            path.display()
        );
        blocks.push(Block {
            header: Some(BlockHeader {
                number,
                previous_hash,
                data_hash,
            }),
            data: Some(BlockData { data: entries }),
            metadata: Some(BlockMetadata { metadata: slots }),
        });
    }
    blocks
}

fn number(block: &Block) -> u64 {
    block.header.as_ref().unwrap().number
}

fn entries(block: &Block) -> &[Bytes] {
    &block.data.as_ref().unwrap().data
}

/// `last_offset_persisted` of a block's consenter metadata.
fn persisted(block: &Block) -> i64 {
    consenter_metadata(block)
        .unwrap()
        .expect("Kafka metadata")
        .last_offset_persisted
}

fn header_type(envelope: &[u8]) -> i32 {
    let env = Envelope::decode(envelope).unwrap();
    let payload = Payload::decode(env.payload.as_ref()).unwrap();
    ChannelHeader::decode(payload.header.unwrap().channel_header.as_ref())
        .unwrap()
        .r#type
}

/// The sequence of the channel's current config: that of its last config block.
fn config_sequence(blocks: &[Block]) -> u64 {
    let last = blocks.last().unwrap();
    let config_block = &blocks[last_config_index(last).unwrap().get() as usize];
    let env = Envelope::decode(entries(config_block)[0].as_ref()).unwrap();
    let payload = Payload::decode(env.payload.as_ref()).unwrap();
    ConfigEnvelope::decode(payload.data.as_ref())
        .unwrap()
        .config
        .unwrap()
        .sequence
}

// --- The topic as Fabric's orderer left it --------------------------------------

/// The records a Fabric orderer wrote to a channel's topic, as far as its ledger
/// tells. Block k ≥ 1 was cut at offset p_k (its `last_offset_persisted`): when its
/// envelopes fill the offsets after p_(k-1) exactly, they end at p_k (a block cut by
/// size, or a config block); otherwise the block was cut by its TIMETOCUT at p_k, its
/// envelopes just before it. CONNECT records fill the rest (offset 0 is the CONNECT of
/// the chain's first start). Config envelopes are class CONFIG. The ledger does not
/// say at which config sequence each record was written: 0 here, which no reader
/// sees — a resuming chain reads from p_last + 1, and its start-up check compares
/// envelopes only.
fn fabric_topic(blocks: &[Block]) -> Vec<Bytes> {
    let last = persisted(blocks.last().unwrap());
    let mut records = vec![connect_record(); usize::try_from(last + 1).unwrap()];
    let mut previous = -1i64;
    for block in &blocks[1..] {
        let p = persisted(block);
        let n = entries(block).len() as i64;
        assert!(
            p - previous >= n,
            "block {} holds more envelopes than offsets",
            number(block)
        );
        let first = if p - previous == n {
            p - n + 1
        } else {
            records[p as usize] = time_to_cut_record(BlockNumber::new(number(block)));
            p - n
        };
        for (i, env) in entries(block).iter().enumerate() {
            let is_config = [
                HeaderType::Config as i32,
                HeaderType::OrdererTransaction as i32,
            ]
            .contains(&header_type(env));
            records[(first + i as i64) as usize] = if is_config {
                configure_record(env.clone(), ConfigSeq::new(0))
            } else {
                order_record(env.clone(), ConfigSeq::new(0))
            };
        }
        previous = p;
    }
    records
}

fn kafka_config(brokers: &str) -> KafkaConfig {
    let mut config = KafkaConfig::new(brokers.split(','));
    config.topic_replication_factor = 1;
    config
}

/// Deletes the topics of both channels if they exist (from an earlier run).
fn delete_topics(brokers: &str) {
    let script = std::env::var_os("KORDER_KAFKA_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka"));
    let out = Command::new(script)
        .args(["tool", "org.apache.kafka.tools.TopicCommand"])
        .args(["--bootstrap-server", brokers, "--delete", "--if-exists"])
        .args(["--topic", &format!("{SYSTEM}|{CHANNEL}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deleting the topics failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens `topic` once an earlier deletion has completed: a new, empty topic.
async fn fresh_topic(brokers: &str, topic: &str) -> KafkaLog {
    let deadline = Instant::now() + LIMIT;
    loop {
        let state = match KafkaLog::open(kafka_config(brokers), topic).await {
            Ok(log) => match log.watermarks().await {
                Ok((0, 0)) => return log,
                other => format!("watermarks {other:?}"),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{topic} is not new and empty: {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Appends `records` in order; returns their offsets.
async fn append_all(log: &KafkaLog, records: Vec<Bytes>) -> Vec<i64> {
    let pending: Vec<_> = records.into_iter().map(|r| log.append(r)).collect();
    let mut offsets = Vec::new();
    for p in pending {
        offsets.push(p.await.unwrap().get());
    }
    offsets
}

/// The records of `log` from `from` to `to`, inclusive.
async fn records(log: &KafkaLog, from: i64, to: i64) -> Vec<Record> {
    let mut reader = log
        .reader(ReadFrom::Offset(LogOffset::new(from)))
        .await
        .unwrap();
    let mut out = Vec::new();
    for offset in from..=to {
        let r = tokio::time::timeout(LIMIT, reader.next())
            .await
            .unwrap_or_else(|_| panic!("no record at offset {offset}"))
            .unwrap();
        assert_eq!(r.offset.get(), offset);
        out.push(decode_record(r.value).unwrap());
    }
    out
}

/// Forwards connections to the fixture's broker address to the test broker.
fn serve_fabric_broker_address(broker: &str) {
    let listener = TcpListener::bind(FABRIC_BROKER).unwrap_or_else(|e| {
        panic!("cannot listen on {FABRIC_BROKER}, the broker the fixture's channels name: {e}")
    });
    let broker = broker.split(',').next().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(upstream) = TcpStream::connect(&broker) else {
                continue;
            };
            pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
            pipe(upstream, client);
        }
    });
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

// --- The node -------------------------------------------------------------------

/// `korder start` with Fabric v2.5.16's sample orderer.yaml; killed on drop.
struct Node {
    child: Option<Child>,
    log: PathBuf,
    address: String,
    operations: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Node {
    /// Starts the node on `ledger` with the sample MSP as its identity and nothing
    /// else but ports and Prometheus metrics set; no genesis block (the sample file
    /// leaves `General.BootstrapFile` empty). Returns once it listens and both chains
    /// have started on Kafka.
    async fn start(ledger: &Path, log: &Path) -> Node {
        let port = free_port();
        let ops = format!("127.0.0.1:{}", free_port());
        let f = fixtures();
        let child = Command::new(KORDER)
            .args(["start", "--config"])
            .arg(f.join("fabric-v2.5.16/sampleconfig/orderer.yaml"))
            .env_remove("KORDER_LOG")
            .env_remove("ORDERER_GENERAL_BOOTSTRAPFILE")
            .env_remove("ORDERER_GENERAL_GENESISFILE")
            .env("FABRIC_LOGGING_SPEC", "info")
            .env(
                "ORDERER_GENERAL_LOCALMSPDIR",
                f.join("fabric-v1.4.12/sampleconfig/msp"),
            )
            .env("ORDERER_GENERAL_LOCALMSPID", "SampleOrg")
            .env("ORDERER_FILELEDGER_LOCATION", ledger)
            .env("ORDERER_GENERAL_LISTENPORT", port.to_string())
            .env("ORDERER_OPERATIONS_LISTENADDRESS", &ops)
            .env("ORDERER_ADMIN_LISTENADDRESS", "127.0.0.1:0")
            .env("ORDERER_METRICS_PROVIDER", "prometheus")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut node = Node {
            child: Some(child),
            log: log.to_path_buf(),
            address: format!("127.0.0.1:{port}"),
            operations: ops,
        };
        node.wait_for("listening and both chains started", |text| {
            text.contains("korder is listening")
                && [SYSTEM, CHANNEL].iter().all(|ch| {
                    text.lines().any(|l| {
                        l.contains("chain started") && l.contains(&format!("channel={ch} "))
                    })
                })
        })
        .await;
        node
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Polls the node's log until `done` holds; panics with the log when the node
    /// exits or a chain stops first, or nothing comes within [`LIMIT`].
    async fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = self.log_text();
            if done(&text) {
                return;
            }
            assert!(
                !text.contains("chain stopped"),
                "a chain stopped before {what}; log:\n{text}"
            );
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("korder exited with {status} before {what}; log:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "not {what} in time; log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A gauge of `channel` from `/metrics`.
    fn gauge(&self, name: &str, channel: &str) -> Option<i64> {
        let (_, body) = support::http_get(&self.operations, "/metrics")?;
        let prefix = format!("{name}{{channel=\"{channel}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as i64)
    }

    /// Waits until `channel`'s blocks hold every record up to `offset`.
    async fn wait_persisted(&mut self, channel: &str, offset: i64) {
        let deadline = Instant::now() + LIMIT;
        while self
            .gauge("consensus_kafka_last_offset_persisted", channel)
            .is_none_or(|p| p < offset)
        {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("korder exited with {status}; log:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "records up to {offset} not in blocks in time; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(&mut self) {
        let mut c = self.child.take().unwrap();
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let status = c.wait().unwrap();
        assert!(
            status.success(),
            "korder exited with {status}; log:\n{}",
            self.log_text()
        );
    }
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `n` endorser transactions signed by `signer`, tagged `tag`.
fn transactions(signer: &SigningIdentity, tag: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let tx = envelope(
                signer,
                CHANNEL,
                HeaderType::EndorserTransaction,
                &format!("{tag}-{i}"),
                Bytes::from(format!("{tag} transaction {i}")),
            );
            Bytes::from(tx.encode_to_vec())
        })
        .collect()
}

/// Checks the blocks from `from` on: numbered in order, each hash-chained to the one
/// before (block `from - 1` being Fabric's), holding exactly `txs` in order, last
/// config still Fabric's, signed by the node, and with consenter metadata naming the
/// offset each was cut at: the topic holds the block's envelopes, in order, between
/// the previous block's offset and its own, which is the block's last envelope or its
/// TIMETOCUT; no resubmission.
async fn check_new_blocks(
    blocks: &[Block],
    from: usize,
    txs: &[Bytes],
    topic: &KafkaLog,
    node: &SigningIdentity,
) {
    assert!(blocks.len() > from, "no block after {}", from - 1);
    let cut: Vec<Bytes> = blocks[from..]
        .iter()
        .flat_map(|b| entries(b).to_vec())
        .collect();
    assert_eq!(
        cut, txs,
        "the new blocks hold the new transactions, each once, in order"
    );
    let last_config = last_config_index(&blocks[from - 1]).unwrap();
    for k in from..blocks.len() {
        let (block, previous) = (&blocks[k], &blocks[k - 1]);
        let header = block.header.as_ref().unwrap();
        assert_eq!(header.number, k as u64);
        assert_eq!(
            header.previous_hash.as_ref(),
            header_hash(previous.header.as_ref().unwrap()).as_slice(),
            "block {k} chains to block {}",
            k - 1
        );
        assert_eq!(
            header.data_hash.as_ref(),
            data_hash_of(entries(block)).as_slice()
        );
        assert_eq!(last_config_index(block).unwrap(), last_config);
        let signers: Vec<Bytes> = signed_entries(block)
            .unwrap()
            .into_iter()
            .map(|s| s.creator)
            .collect();
        assert_eq!(
            signers,
            vec![node.serialized()],
            "block {k} is signed by the node"
        );
        let m = consenter_metadata(block).unwrap().expect("Kafka metadata");
        assert_eq!(
            (
                m.last_original_offset_processed,
                m.last_resubmitted_config_offset
            ),
            (0, 0)
        );
        let (p0, p) = (persisted(previous), m.last_offset_persisted);
        let between = records(topic, p0 + 1, p).await;
        let envelopes: Vec<Bytes> = between
            .iter()
            .filter_map(|r| match r {
                Record::Regular(reg) => Some(reg.envelope.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            envelopes,
            entries(block),
            "block {k}: the records in ({p0}, {p}]"
        );
        match between.last().unwrap() {
            Record::Regular(reg) => assert_eq!(Some(&reg.envelope), entries(block).last()),
            Record::TimeToCut(n) => assert_eq!(n.get(), k as u64),
            other => panic!("block {k} was cut at {p}, which holds {other:?}"),
        }
    }
}

/// Every file of Fabric's ledger is unchanged in `ledger`, block files as a prefix
/// when `grown` names them (korder appended to them).
fn assert_fabric_files_kept(ledger: &Path, grown: &[&str]) {
    let fabric = fabric_ledger();
    for dir in ["index", "chains/system-channel", "chains/mychannel"] {
        for entry in std::fs::read_dir(fabric.join(dir)).unwrap() {
            let name = entry.unwrap().file_name();
            let rel = Path::new(dir).join(&name);
            let original = std::fs::read(fabric.join(&rel)).unwrap();
            let now = std::fs::read(ledger.join(&rel)).unwrap();
            if grown.iter().any(|g| Path::new(g) == rel) {
                assert!(
                    now.starts_with(&original),
                    "{} no longer starts with Fabric's blocks",
                    rel.display()
                );
            } else {
                assert!(now == original, "{} changed", rel.display());
            }
        }
    }
}

/// A korder node takes over a Fabric v2.5.16 Kafka orderer's ledger (copied as it is,
/// Fabric's LevelDB index included; no genesis file) on topics holding what Fabric
/// wrote up to the last blocks' offsets: it warns that its own (sample) identity does
/// not meet the channels' BlockValidation policy, refuses that identity Deliver and
/// Broadcast (not a member of the network's orgs), writes its CONNECT right after the
/// offsets of both channels' last blocks, cuts new records into blocks 20, 21, …
/// chained to Fabric's block 19 with the right offsets, restarts without cutting
/// anything again, keeps Fabric's files byte for byte, and `korder ledger verify`
/// accepts the whole ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_over_a_fabric_2_5_kafka_orderer_ledger() {
    let brokers = kafka1();
    serve_fabric_broker_address(&brokers);
    let fabric = fabric_ledger();
    let system_blocks = read_block_file(&block_file(&fabric, SYSTEM));
    let fabric_blocks = read_block_file(&block_file(&fabric, CHANNEL));
    assert_eq!((system_blocks.len(), fabric_blocks.len()), (2, 20));
    let (system_end, fabric_end) = (persisted(&system_blocks[1]), persisted(&fabric_blocks[19]));

    // The topics as the Fabric orderer left them.
    delete_topics(&brokers);
    let system_topic = fresh_topic(&brokers, SYSTEM).await;
    let topic = fresh_topic(&brokers, CHANNEL).await;
    for (log, blocks, end) in [
        (&system_topic, &system_blocks, system_end),
        (&topic, &fabric_blocks, fabric_end),
    ] {
        let offsets = append_all(log, fabric_topic(blocks)).await;
        assert_eq!(offsets, (0..=end).collect::<Vec<_>>());
    }

    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("orderer-ledger");
    copy_tree(&fabric, &ledger);
    let mut node = Node::start(&ledger, &tmp.path().join("node-1.log")).await;

    // The node warns that peers would refuse the blocks its identity signs.
    let log = node.log_text();
    for channel in [SYSTEM, CHANNEL] {
        assert!(
            log.lines().any(
                |l| l.contains("does not satisfy /Channel/Orderer/BlockValidation")
                    && l.contains(&format!("channel={channel} "))
            ),
            "no block signer warning for {channel}; log:\n{log}"
        );
    }

    // Each chain's start-up CONNECT lands right after its last block's offset.
    for (log, end) in [(&system_topic, system_end), (&topic, fabric_end)] {
        assert_eq!(records(log, end + 1, end + 1).await, vec![Record::Connect]);
    }

    // The sample identity is no reader or writer of the network's channels.
    let sample = sample_signer();
    for channel in [SYSTEM, CHANNEL] {
        let first = seek_position::Type::Specified(SeekSpecified { number: 0 });
        let (blocks, status) =
            deliver(&node.address, seek(&sample, channel, first, first, 0)).await;
        assert!(blocks.is_empty(), "{channel}: a block was delivered");
        assert_eq!(status, Some(Status::Forbidden as i32), "{channel}");
    }
    let refused = transactions(&sample, "broadcast", 1);
    let statuses = broadcast_all(
        &node.address,
        vec![Envelope::decode(refused[0].as_ref()).unwrap()],
    )
    .await;
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].0, Status::Forbidden as i32, "{statuses:?}");

    // New records, as the network's other orderer nodes write them.
    let seq = ConfigSeq::new(config_sequence(&fabric_blocks));
    let first_txs = transactions(&sample, "takeover-1", 3);
    let offsets = append_all(
        &topic,
        first_txs
            .iter()
            .map(|e| order_record(e.clone(), seq))
            .collect(),
    )
    .await;
    node.wait_persisted(CHANNEL, *offsets.last().unwrap()).await;
    node.stop();
    let after_first = read_block_file(&block_file(&ledger, CHANNEL));
    assert_eq!(
        after_first[..20],
        fabric_blocks[..],
        "Fabric's blocks are kept"
    );
    check_new_blocks(&after_first, 20, &first_txs, &topic, &sample).await;
    let height = after_first.len();

    // Restarted: it resumes after its own last block and cuts nothing again.
    let mut node = Node::start(&ledger, &tmp.path().join("node-2.log")).await;
    let resumed_at = persisted(after_first.last().unwrap());
    let next = topic.watermarks().await.unwrap().1;
    assert!(next > resumed_at + 1, "no CONNECT after the restart");
    assert_eq!(
        records(&topic, next - 1, next - 1).await,
        vec![Record::Connect]
    );
    let second_txs = transactions(&sample, "takeover-2", 2);
    let offsets = append_all(
        &topic,
        second_txs
            .iter()
            .map(|e| order_record(e.clone(), seq))
            .collect(),
    )
    .await;
    node.wait_persisted(CHANNEL, *offsets.last().unwrap()).await;
    node.stop();
    let after_second = read_block_file(&block_file(&ledger, CHANNEL));
    assert_eq!(
        after_second[..height],
        after_first[..],
        "the blocks before the restart are kept"
    );
    check_new_blocks(&after_second, height, &second_txs, &topic, &sample).await;
    assert_eq!(read_block_file(&block_file(&ledger, SYSTEM)), system_blocks);
    assert_fabric_files_kept(&ledger, &["chains/mychannel/blockfile_000000"]);

    let out = Command::new(KORDER)
        .args(["ledger", "verify"])
        .arg(&ledger)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = after_second.len();
    assert!(
        text.contains(&format!("channel {CHANNEL}: {n} blocks"))
            && text.contains(&format!("{} signatures verified", n - 1)),
        "{text}"
    );
    assert!(
        text.contains(&format!("channel {SYSTEM}: 2 blocks")),
        "{text}"
    );
}
