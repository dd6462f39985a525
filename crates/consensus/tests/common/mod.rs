//! Test harness: a scripted consenter support, a node that executes the chain's
//! commands against an in-memory ledger, and a cluster of nodes sharing one
//! in-memory log.
#![allow(dead_code, clippy::unwrap_used)]

use std::cell::Cell;
use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use korder_consensus::{
    AppendPurpose, Chain, ChainError, Command, ConfigSeq, ConsenterSupport, LogOffset, Rejected,
    TimerId, order_record,
};
use korder_log::ReadFrom;
use korder_proto::Message;
use korder_proto::common::{ChannelHeader, Envelope, Header, HeaderType, Payload};
use korder_proto::orderer::{BatchSize, KafkaMetadata};

pub const TIMEOUT: Duration = Duration::from_millis(500);

/// Batch limits used unless a test says otherwise.
pub fn limits(max_message_count: u32, preferred_max_bytes: u32) -> BatchSize {
    BatchSize {
        max_message_count,
        absolute_max_bytes: 10 * 1024 * 1024,
        preferred_max_bytes,
    }
}

/// A signed envelope with this channel header type, payload data and signature.
pub fn envelope(header_type: HeaderType, data: &[u8], signature: &[u8]) -> Bytes {
    let channel_header = ChannelHeader {
        r#type: header_type as i32,
        channel_id: "testchannel".to_string(),
        ..Default::default()
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: Bytes::from(channel_header.encode_to_vec()),
            signature_header: Bytes::new(),
        }),
        data: Bytes::copy_from_slice(data),
    };
    Bytes::from(
        Envelope {
            payload: Bytes::from(payload.encode_to_vec()),
            signature: Bytes::copy_from_slice(signature),
        }
        .encode_to_vec(),
    )
}

/// A normal transaction envelope tagged `tag`.
pub fn tx(tag: &str) -> Bytes {
    envelope(HeaderType::EndorserTransaction, tag.as_bytes(), b"sig")
}

/// A normal transaction envelope whose data is `tag` padded to `data_len` bytes.
pub fn big_tx(tag: &str, data_len: usize) -> Bytes {
    let mut data = tag.as_bytes().to_vec();
    data.resize(data_len.max(data.len()), b'.');
    envelope(HeaderType::EndorserTransaction, &data, b"sig")
}

/// A config envelope tagged `tag`. A tag `mmc=<n>` sets MaxMessageCount when applied.
pub fn config(tag: &str) -> Bytes {
    envelope(HeaderType::Config, tag.as_bytes(), b"sig")
}

/// An ORDERER_TRANSACTION envelope tagged `tag`.
pub fn orderer_tx(tag: &str) -> Bytes {
    envelope(HeaderType::OrdererTransaction, tag.as_bytes(), b"sig")
}

/// A CONFIG_UPDATE envelope tagged `tag`.
pub fn config_update(tag: &str) -> Bytes {
    envelope(HeaderType::ConfigUpdate, tag.as_bytes(), b"sig")
}

/// The payload data of an envelope built by this harness.
pub fn data_of(env: &Bytes) -> Vec<u8> {
    try_data_of(env).unwrap_or_default()
}

/// The payload data of an envelope, if it has the shape of one.
pub fn try_data_of(env: &Bytes) -> Option<Vec<u8>> {
    let envelope = Envelope::decode(env.clone()).ok()?;
    Some(Payload::decode(envelope.payload).ok()?.data.to_vec())
}

/// The same envelope re-signed by "this node", as a regenerated config would be.
pub fn rebuilt(env: &Bytes) -> Bytes {
    let mut envelope = Envelope::decode(env.clone()).unwrap();
    envelope.signature = Bytes::from_static(b"rebuilt-by-node");
    Bytes::from(envelope.encode_to_vec())
}

/// A consenter support with scripted validation.
///
/// Rejection rules: envelopes listed in `reject_normal` / `reject_config`; any
/// envelope whose data contains `!bad`; any envelope whose data contains `#exp<k>`
/// once the sequence is ≥ k (an identity that expired under a later config).
#[derive(Clone, Debug)]
pub struct FakeSupport {
    pub seq: ConfigSeq,
    pub batch: Option<BatchSize>,
    pub timeout: Duration,
    pub resubmission: bool,
    pub reject_normal: BTreeSet<Bytes>,
    pub reject_config: BTreeSet<Bytes>,
    pub normal_checks: Cell<u32>,
    pub config_checks: Cell<u32>,
    /// Payload data of the config envelopes applied so far: re-proposing one of them
    /// fails, as a config update's read set no longer matches once it is applied.
    pub applied: BTreeSet<Vec<u8>>,
}

impl FakeSupport {
    pub fn new(batch: BatchSize, resubmission: bool) -> FakeSupport {
        FakeSupport {
            seq: ConfigSeq::new(0),
            batch: Some(batch),
            timeout: TIMEOUT,
            resubmission,
            reject_normal: BTreeSet::new(),
            reject_config: BTreeSet::new(),
            normal_checks: Cell::new(0),
            config_checks: Cell::new(0),
            applied: BTreeSet::new(),
        }
    }

    /// Applies a committed config envelope: the sequence advances, and a `mmc=<n>`
    /// tag changes MaxMessageCount.
    pub fn apply_config(&mut self, env: &Bytes) {
        let Some(payload) = Envelope::decode(env.clone())
            .ok()
            .and_then(|e| Payload::decode(e.payload).ok())
        else {
            // Committed without validation (current sequence) yet malformed.
            self.seq = self.seq.next();
            return;
        };
        let header_type = payload
            .header
            .as_ref()
            .and_then(|h| ChannelHeader::decode(h.channel_header.clone()).ok())
            .map_or(-1, |h| h.r#type);
        if header_type == HeaderType::OrdererTransaction as i32 {
            // Creates another channel; this channel's config is unchanged.
            return;
        }
        self.applied.insert(payload.data.to_vec());
        self.seq = self.seq.next();
        let text = String::from_utf8_lossy(&payload.data).to_string();
        if let Some(rest) = text.split("mmc=").nth(1) {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let (Ok(n), Some(batch)) = (digits.parse::<u32>(), self.batch.as_mut()) {
                batch.max_message_count = n.max(1);
            }
        }
    }

    fn rule_rejects(&self, env: &Bytes) -> bool {
        let Some(data) = try_data_of(env) else {
            return true;
        };
        let data = String::from_utf8_lossy(&data).to_string();
        if data.contains("!bad") {
            return true;
        }
        if let Some(rest) = data.split("#exp").nth(1) {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(k) = digits.parse::<u64>() {
                return self.seq.get() >= k;
            }
        }
        false
    }
}

impl ConsenterSupport for FakeSupport {
    fn sequence(&self) -> ConfigSeq {
        self.seq
    }
    fn batch_size(&self) -> Option<BatchSize> {
        self.batch
    }
    fn batch_timeout(&self) -> Duration {
        self.timeout
    }
    fn resubmission_enabled(&self) -> bool {
        self.resubmission
    }
    fn process_normal(&self, envelope: &Bytes) -> Result<ConfigSeq, Rejected> {
        self.normal_checks.set(self.normal_checks.get() + 1);
        if self.reject_normal.contains(envelope) || self.rule_rejects(envelope) {
            return Err(Rejected::new(
                "signature does not satisfy the Writers policy",
            ));
        }
        Ok(self.seq)
    }
    fn process_config(&self, envelope: &Bytes) -> Result<(Bytes, ConfigSeq), Rejected> {
        self.config_checks.set(self.config_checks.get() + 1);
        if self.reject_config.contains(envelope)
            || self.rule_rejects(envelope)
            || self.applied.contains(&data_of(envelope))
        {
            return Err(Rejected::new("config update is not authorized"));
        }
        Ok((rebuilt(envelope), self.seq))
    }
}

/// A block as the node wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenBlock {
    pub number: u64,
    pub envelopes: Vec<Bytes>,
    pub metadata: KafkaMetadata,
    pub config: bool,
    /// Cut by a TIMETOCUT record.
    pub by_time_to_cut: bool,
}

/// One orderer node: a chain, its support, and what executing its commands did.
#[derive(Clone, Debug)]
pub struct Node {
    pub chain: Chain,
    pub support: FakeSupport,
    /// Support as it was at genesis, to rebuild the config on restart.
    pub genesis_support: FakeSupport,
    pub blocks: Vec<WrittenBlock>,
    /// Records this node appended to the log, in order.
    pub appended: Vec<Bytes>,
    pub fail_appends: bool,
    pub timer: Option<TimerId>,
    pub timer_starts: u32,
    pub ingress_open: bool,
    pub stopped: Option<ChainError>,
    /// Every value the last_offset_persisted gauge was set to after a block write.
    pub gauge: Vec<i64>,
    /// Next offset this node reads.
    pub cursor: i64,
    /// Ledger height: the number of the next block written.
    pub height: u64,
    /// (offset, processed after feeding it), for every record fed.
    pub processed_at: Vec<(i64, i64)>,
}

impl Node {
    /// A node for a new channel (ledger holding only the genesis block).
    pub fn new(support: FakeSupport) -> Node {
        Node::with_chain(Chain::new(None, 1).unwrap(), support)
    }

    /// A node resuming from `metadata` at ledger height `height`.
    pub fn resumed(metadata: KafkaMetadata, height: u64, support: FakeSupport) -> Node {
        Node::with_chain(Chain::new(Some(metadata), height).unwrap(), support)
    }

    pub fn with_chain(chain: Chain, support: FakeSupport) -> Node {
        let cursor = match chain.read_from() {
            ReadFrom::Oldest => 0,
            ReadFrom::Offset(o) => o.get(),
        };
        let ingress_open = chain.ingress_open();
        let height = chain.last_cut().height();
        Node {
            chain,
            genesis_support: support.clone(),
            support,
            blocks: Vec::new(),
            appended: Vec::new(),
            fail_appends: false,
            timer: None,
            timer_starts: 0,
            ingress_open,
            stopped: None,
            gauge: Vec::new(),
            cursor,
            height,
            processed_at: Vec::new(),
        }
    }

    /// Feeds one record and executes the resulting commands; returns them.
    pub fn feed(&mut self, offset: i64, record: Bytes) -> Vec<Command> {
        let is_ttc = matches!(
            korder_consensus::decode_record(record.clone()),
            Ok(korder_consensus::Record::TimeToCut(_))
        );
        let commands = self
            .chain
            .on_record(&self.support, LogOffset::new(offset), record);
        self.cursor = offset + 1;
        self.processed_at
            .push((offset, self.chain.processed().get()));
        let before = self.blocks.len();
        self.execute(&commands);
        for block in &mut self.blocks[before..] {
            block.by_time_to_cut = is_ttc;
        }
        commands
    }

    /// Feeds every record of `log` from this node's cursor on; stops at a Stop.
    pub fn catch_up(&mut self, log: &[Bytes]) {
        while self.stopped.is_none() && (self.cursor as usize) < log.len() {
            let offset = self.cursor;
            self.feed(offset, log[offset as usize].clone());
        }
    }

    /// Fires the running batch timer, if any; returns the commands.
    pub fn fire_timer(&mut self) -> Vec<Command> {
        let Some(id) = self.timer.take() else {
            return Vec::new();
        };
        let commands = self.chain.on_timer_fired(id);
        self.execute(&commands);
        commands
    }

    pub fn execute(&mut self, commands: &[Command]) {
        for command in commands {
            match command {
                Command::Append { record, purpose } => {
                    let ok = !self.fail_appends;
                    if ok {
                        self.appended.push(record.clone());
                    }
                    let more = self.chain.on_append_result(*purpose, ok);
                    self.execute(&more);
                }
                Command::WriteBlock {
                    number,
                    envelopes,
                    metadata,
                    ..
                } => {
                    assert_eq!(*number, self.next_number(), "block numbers are consecutive");
                    self.gauge.push(metadata.last_offset_persisted);
                    self.blocks.push(WrittenBlock {
                        number: number.get(),
                        envelopes: envelopes.clone(),
                        metadata: *metadata,
                        config: false,
                        by_time_to_cut: false,
                    });
                }
                Command::WriteConfigBlock {
                    number,
                    envelope,
                    metadata,
                } => {
                    assert_eq!(*number, self.next_number(), "block numbers are consecutive");
                    self.support.apply_config(envelope);
                    self.gauge.push(metadata.last_offset_persisted);
                    self.blocks.push(WrittenBlock {
                        number: number.get(),
                        envelopes: vec![envelope.clone()],
                        metadata: *metadata,
                        config: true,
                        by_time_to_cut: false,
                    });
                }
                Command::StartTimer { id, .. } => {
                    self.timer = Some(*id);
                    self.timer_starts += 1;
                }
                Command::StopTimer { id } => {
                    assert_eq!(self.timer, Some(*id), "only the running timer is stopped");
                    self.timer = None;
                }
                Command::SetIngress { open } => self.ingress_open = *open,
                Command::Stop(error) => self.stopped = Some(error.clone()),
            }
        }
    }

    fn next_number(&mut self) -> korder_consensus::BlockNumber {
        let number = korder_consensus::BlockNumber::new(self.height);
        self.height += 1;
        number
    }

    /// A node restarted from the metadata of its block `number` (as a crash right after
    /// that block reached disk): config rebuilt from the config blocks up to it.
    pub fn restarted_at(&self, number: u64) -> Node {
        let index = self.blocks.iter().position(|b| b.number == number).unwrap();
        let mut support = self.genesis_support.clone();
        for block in &self.blocks[..=index] {
            if block.config {
                support.apply_config(&block.envelopes[0]);
            }
        }
        let metadata = self.blocks[index].metadata;
        let value = metadata.encode_to_vec();
        let chain = Chain::restore(&value, number + 1).unwrap();
        let mut node = Node::with_chain(chain, support);
        node.genesis_support = self.genesis_support.clone();
        node.blocks = self.blocks[..=index].to_vec();
        node
    }
}

/// Several nodes on one shared in-memory log. Appends land at the end of the log
/// at once, in the order the nodes make them.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub log: Vec<Bytes>,
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn new(count: usize, support: FakeSupport) -> Cluster {
        // Start-up posts a CONNECT, so offset 0 is never a REGULAR record (an all-zero
        // KafkaMetadata would otherwise read back as "no metadata").
        Cluster {
            log: vec![korder_consensus::connect_record()],
            nodes: (0..count).map(|_| Node::new(support.clone())).collect(),
        }
    }

    /// Broadcast through node `n`: refused (false) while its ingress is closed;
    /// otherwise the record is appended, stamped with the node's current sequence.
    pub fn broadcast(&mut self, n: usize, env: Bytes) -> bool {
        if !self.nodes[n].ingress_open {
            return false;
        }
        let seq = self.nodes[n].support.seq;
        self.log.push(order_record(env, seq));
        true
    }

    /// Configure through node `n`.
    pub fn configure(&mut self, n: usize, env: Bytes) -> bool {
        if !self.nodes[n].ingress_open {
            return false;
        }
        let seq = self.nodes[n].support.seq;
        self.log.push(korder_consensus::configure_record(env, seq));
        true
    }

    /// Node `n` consumes one record, if it has one to read.
    pub fn step(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if node.stopped.is_some() || node.cursor as usize >= self.log.len() {
            return;
        }
        let offset = node.cursor;
        let before = node.appended.len();
        node.feed(offset, self.log[offset as usize].clone());
        self.log.extend(node.appended[before..].iter().cloned());
    }

    /// Node `n`'s batch timer fires (if running).
    pub fn fire(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let before = node.appended.len();
        node.fire_timer();
        self.log.extend(node.appended[before..].iter().cloned());
    }

    /// Every node consumes until no node has anything left to read.
    pub fn settle(&mut self) {
        loop {
            let mut progressed = false;
            for n in 0..self.nodes.len() {
                if self.nodes[n].stopped.is_none()
                    && (self.nodes[n].cursor as usize) < self.log.len()
                {
                    self.step(n);
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
            assert!(
                self.log.len() < 100_000,
                "resubmissions keep growing the log"
            );
        }
    }
}

/// Metadata with these three offsets.
pub fn meta(persisted: i64, processed: i64, resubmitted: i64) -> KafkaMetadata {
    KafkaMetadata {
        last_offset_persisted: persisted,
        last_original_offset_processed: processed,
        last_resubmitted_config_offset: resubmitted,
    }
}

/// Whether `purpose` is a resubmission.
pub fn is_resubmission(purpose: &AppendPurpose) -> bool {
    !matches!(purpose, AppendPurpose::TimeToCut { .. })
}

/// Blocks with last_resubmitted_config_offset cleared, for comparisons that scenario 93
/// allows to differ in that field only.
pub fn without_resubmitted(blocks: &[WrittenBlock]) -> Vec<WrittenBlock> {
    blocks
        .iter()
        .map(|b| {
            let mut b = b.clone();
            b.metadata.last_resubmitted_config_offset = 0;
            b
        })
        .collect()
}

/// Checks that a node restarted from each of `node`'s blocks and replaying `log` from
/// that block's persisted + 1 rebuilds exactly the blocks `node` wrote afterwards
/// (only last_resubmitted_config_offset may differ after a restart on a TIMETOCUT
/// block), and stops the same way.
pub fn assert_restarts_rebuild(node: &Node, log: &[Bytes]) {
    for block in &node.blocks {
        let mut restarted = node.restarted_at(block.number);
        let first = restarted.cursor;
        let live_processed: std::collections::BTreeMap<i64, i64> =
            node.processed_at.iter().copied().collect();
        let mut diverged = false;
        while restarted.stopped.is_none() && (restarted.cursor as usize) < log.len() {
            let offset = restarted.cursor;
            restarted.feed(offset, log[offset as usize].clone());
            let live = live_processed[&offset];
            if restarted.chain.processed().get() != live {
                // The one known divergence, shared with Fabric: the block was an
                // overflow cut whose pending envelope is a resubmission. The node that
                // never stopped did not advance processed for it (§9.4 quirk); the
                // restarted node finds nothing pending and does.
                assert_eq!(offset, first, "divergence can only start at persisted + 1");
                assert!(restarted.chain.processed().get() > live);
                assert_eq!(block.metadata.last_offset_persisted, offset - 1);
                diverged = true;
                break;
            }
        }
        if diverged {
            continue;
        }
        if block.by_time_to_cut {
            assert_eq!(
                without_resubmitted(&restarted.blocks),
                without_resubmitted(&node.blocks),
                "restart on TIMETOCUT block {}",
                block.number
            );
        } else if restarted.blocks != node.blocks {
            let first = restarted
                .blocks
                .iter()
                .zip(&node.blocks)
                .position(|(a, b)| a != b)
                .unwrap_or(restarted.blocks.len().min(node.blocks.len()));
            let show = |b: &WrittenBlock| {
                let tags: Vec<String> = b
                    .envelopes
                    .iter()
                    .map(|e| {
                        String::from_utf8_lossy(&data_of(e))
                            .trim_end_matches('.')
                            .to_string()
                    })
                    .collect();
                format!("#{} {:?} {:?}", b.number, tags, b.metadata)
            };
            panic!(
                "restart on block {}: first difference at index {first}:\n restarted {:?}\n live      {:?}",
                block.number,
                restarted.blocks.get(first).map(show),
                node.blocks.get(first).map(show)
            );
        }
        assert_eq!(restarted.stopped, node.stopped);
    }
}
