//! The chain state machine fed arbitrary log records: a deterministic simulation.
//!
//! One log, three machines, and a CONNECT record at offset 0 as every node
//! writes one before it reads. The *leader* executes every command: its appends
//! (time-to-cut requests, resubmissions) land at the end of the log, or fail when
//! the input says so. A *replica* reads the same log and has its own appends
//! reported as done but dropped, as a node whose appends are lost. A *restarted*
//! machine is rebuilt, at a point the input chooses, from the metadata of the
//! leader's last block, as a node restarting from its ledger, and reads the log
//! from where that metadata says.
//!
//! Invariants checked after every step:
//! - no machine panics, whatever the records;
//! - block numbers follow each other from the genesis block, a config block holds
//!   exactly one envelope, a normal block at least one;
//! - `last_offset_persisted` never goes down and never passes the record being read;
//! - the replica and the restarted machine cut exactly the leader's blocks, with the
//!   same metadata (same records → same blocks), and stop exactly when it stops.

use std::cell::Cell;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use korder_consensus::{
    Chain, Command, ConfigSeq, ConsenterSupport, LogOffset, Rejected, TimerId, connect_record,
    regular_record, time_to_cut_record,
};
use korder_log::ReadFrom;
use korder_proto::Message;
use korder_proto::orderer::kafka_message_regular::Class;
use korder_proto::orderer::{BatchSize, KafkaMetadata};

/// Last byte of an envelope that the simulated filters refuse.
const REFUSED: u8 = 0xEE;

/// What the fuzzer puts in the log or makes happen next.
#[derive(Arbitrary, Debug)]
enum Op {
    /// A CONNECT record.
    Connect,
    /// A TIMETOCUT for block L + `ahead % 4` (stale, right, or in the future).
    TimeToCut { ahead: u8 },
    /// A client envelope validated `behind` sequences ago (negative: ahead).
    Normal { envelope: Vec<u8>, behind: i8 },
    /// A config envelope validated `behind` sequences ago.
    Config { envelope: Vec<u8>, behind: i8 },
    /// A resubmitted record naming an earlier original offset.
    Resubmitted {
        envelope: Vec<u8>,
        config: bool,
        back: u16,
        behind: i8,
    },
    /// A REGULAR record of an unknown or unsupported class.
    OddClass { envelope: Vec<u8>, class: i32 },
    /// Arbitrary bytes as a record.
    Raw(Vec<u8>),
    /// The leader's batch timer fires.
    Timer,
    /// The leader's next append fails.
    FailNextAppend,
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_message_count: u8,
    absolute_max_bytes: u16,
    preferred_max_bytes: u16,
    resubmission: bool,
    /// Restart a machine from the leader's ledger after this many operations.
    restart_after: u8,
    ops: Vec<Op>,
}

/// The channel as the simulated machines see it: fixed batch limits and a config
/// sequence that moves when a config block is applied.
struct Support {
    sequence: Cell<u64>,
    batch_size: BatchSize,
    resubmission: bool,
}

impl ConsenterSupport for Support {
    fn sequence(&self) -> ConfigSeq {
        ConfigSeq::new(self.sequence.get())
    }
    fn batch_size(&self) -> Option<BatchSize> {
        Some(self.batch_size)
    }
    fn batch_timeout(&self) -> Duration {
        Duration::from_secs(2)
    }
    fn resubmission_enabled(&self) -> bool {
        self.resubmission
    }
    fn process_normal(&self, envelope: &Bytes) -> Result<ConfigSeq, Rejected> {
        if envelope.last() == Some(&REFUSED) {
            return Err(Rejected::new("refused by the simulated filters"));
        }
        Ok(self.sequence())
    }
    fn process_config(&self, envelope: &Bytes) -> Result<(Bytes, ConfigSeq), Rejected> {
        if envelope.last() == Some(&REFUSED) {
            return Err(Rejected::new("refused by the simulated config processor"));
        }
        // Re-proposing makes a new, valid envelope that depends on the current config.
        let mut rebuilt =
            korder_proto::common::Envelope::decode(envelope.as_ref()).unwrap_or_default();
        rebuilt.signature = Bytes::copy_from_slice(&self.sequence.get().to_be_bytes());
        Ok((rebuilt.encode_to_vec().into(), self.sequence()))
    }
}

/// A block as the state machine asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cut {
    number: u64,
    envelopes: Vec<Bytes>,
    metadata: KafkaMetadata,
    config: bool,
    /// The config sequence after the block was applied.
    sequence_after: u64,
}

struct Machine {
    name: &'static str,
    chain: Chain,
    support: Support,
    blocks: Vec<Cut>,
    /// Number of the first block this machine cuts.
    first_block: u64,
    /// Index into the log of the next record to feed.
    cursor: usize,
    timer: Option<TimerId>,
    /// Whether this machine's appends reach the log.
    appends_land: bool,
    /// Whether one of this machine's appends has failed.
    append_failed: bool,
}

impl Machine {
    fn new(name: &'static str, chain: Chain, support: Support, appends_land: bool) -> Machine {
        let first_block = chain.last_cut().height();
        let cursor = match chain.read_from() {
            ReadFrom::Oldest => 0,
            ReadFrom::Offset(o) => usize::try_from(o.get()).expect("read offset is not negative"),
        };
        Machine {
            name,
            chain,
            support,
            blocks: Vec::new(),
            first_block,
            cursor,
            timer: None,
            appends_land,
            append_failed: false,
        }
    }

    fn stopped(&self) -> bool {
        self.chain.stopped().is_some()
    }

    /// Executes commands in order; the leader's appends go to the log.
    fn execute(&mut self, commands: Vec<Command>, log: &mut Vec<Bytes>, fail_next: &mut bool) {
        let mut queue: std::collections::VecDeque<Command> = commands.into();
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Append { record, purpose } => {
                    let landed = if self.appends_land {
                        if std::mem::take(fail_next) {
                            self.append_failed = true;
                            false
                        } else {
                            log.push(record);
                            true
                        }
                    } else {
                        true
                    };
                    queue.extend(self.chain.on_append_result(purpose, landed));
                }
                Command::WriteBlock {
                    number,
                    envelopes,
                    metadata,
                    ..
                } => {
                    assert!(!envelopes.is_empty(), "{}: empty block {number}", self.name);
                    self.record(number.get(), envelopes, metadata, false);
                }
                Command::WriteConfigBlock {
                    number,
                    envelope,
                    metadata,
                } => {
                    self.support.sequence.set(self.support.sequence.get() + 1);
                    self.record(number.get(), vec![envelope], metadata, true);
                }
                Command::StartTimer { id, .. } => self.timer = Some(id),
                Command::StopTimer { id } => {
                    if self.timer == Some(id) {
                        self.timer = None;
                    }
                }
                Command::SetIngress { .. } => {}
                Command::Stop(_) => {
                    assert!(
                        queue.is_empty(),
                        "{}: Stop is not the last command",
                        self.name
                    );
                }
            }
        }
    }

    fn record(
        &mut self,
        number: u64,
        envelopes: Vec<Bytes>,
        metadata: KafkaMetadata,
        config: bool,
    ) {
        let expected = self.first_block + self.blocks.len() as u64;
        assert_eq!(number, expected, "{}: block numbers skip", self.name);
        if let Some(previous) = self.blocks.last() {
            assert!(
                metadata.last_offset_persisted >= previous.metadata.last_offset_persisted,
                "{}: last_offset_persisted went down at block {number}",
                self.name
            );
        }
        assert!(
            metadata.last_offset_persisted < self.cursor as i64,
            "{}: block {number} claims offset {} before reading it",
            self.name,
            metadata.last_offset_persisted
        );
        self.blocks.push(Cut {
            number,
            envelopes,
            metadata,
            config,
            sequence_after: self.support.sequence.get(),
        });
    }

    /// Feeds every record of the log not yet seen (including the ones its own
    /// commands append on the way).
    fn catch_up(&mut self, log: &mut Vec<Bytes>, fail_next: &mut bool) {
        while self.cursor < log.len() && !self.stopped() {
            let offset = LogOffset::new(self.cursor as i64);
            let record = log[self.cursor].clone();
            self.cursor += 1;
            let commands = self.chain.on_record(&self.support, offset, record);
            self.execute(commands, log, fail_next);
        }
    }
}

/// A client envelope carrying `payload`, as the block cutter and the filters read it.
fn envelope_of(payload: &[u8]) -> Bytes {
    korder_proto::common::Envelope {
        payload: Bytes::copy_from_slice(payload),
        signature: Bytes::new(),
    }
    .encode_to_vec()
    .into()
}

fn seq_at(current: u64, behind: i8) -> ConfigSeq {
    ConfigSeq::new(current.saturating_add_signed(-i64::from(behind)))
}

/// The record an operation appends to the log, if any.
fn record_of(op: &Op, leader: &Machine, log_len: usize) -> Option<Bytes> {
    let seq = leader.support.sequence.get();
    Some(match op {
        Op::Connect => connect_record(),
        Op::TimeToCut { ahead } => time_to_cut_record(korder_consensus::BlockNumber::new(
            leader.chain.last_cut().get() + u64::from(ahead % 4),
        )),
        Op::Normal { envelope, behind } => regular_record(
            envelope_of(envelope),
            seq_at(seq, *behind),
            Class::Normal,
            None,
        ),
        Op::Config { envelope, behind } => regular_record(
            envelope_of(envelope),
            seq_at(seq, *behind),
            Class::Config,
            None,
        ),
        Op::Resubmitted {
            envelope,
            config,
            back,
            behind,
        } => regular_record(
            envelope_of(envelope),
            seq_at(seq, *behind),
            if *config {
                Class::Config
            } else {
                Class::Normal
            },
            Some(LogOffset::new(
                log_len.saturating_sub(usize::from(*back)) as i64
            )),
        ),
        Op::OddClass { envelope, class } => korder_proto::orderer::KafkaMessage {
            r#type: Some(korder_proto::orderer::kafka_message::Type::Regular(
                korder_proto::orderer::KafkaMessageRegular {
                    payload: envelope_of(envelope),
                    config_seq: seq,
                    class: *class,
                    original_offset: 0,
                },
            )),
        }
        .encode_to_vec()
        .into(),
        Op::Raw(bytes) => Bytes::copy_from_slice(bytes),
        Op::Timer | Op::FailNextAppend => return None,
    })
}

/// Runs one simulation; see the module docs for what it checks.
pub fn chain_records(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let absolute = u32::from(input.absolute_max_bytes).max(1);
    let batch_size = BatchSize {
        max_message_count: u32::from(input.max_message_count % 16) + 1,
        absolute_max_bytes: absolute,
        preferred_max_bytes: u32::from(input.preferred_max_bytes).clamp(1, absolute),
    };
    let support = |sequence| Support {
        sequence: Cell::new(sequence),
        batch_size,
        resubmission: input.resubmission,
    };
    let genesis = || Chain::new(None, 1).expect("a chain at height 1");
    let mut leader = Machine::new("leader", genesis(), support(0), true);
    let mut replica = Machine::new("replica", genesis(), support(0), false);
    let mut restarted: Option<Machine> = None;
    // Every node posts a CONNECT before it reads, so a log's offset 0 is always one;
    // a chain restored from a block cut at offset 0 would otherwise look new.
    let mut log: Vec<Bytes> = vec![connect_record()];
    let mut fail_next = false;

    for (i, op) in input.ops.iter().enumerate() {
        if leader.stopped() {
            break;
        }
        match op {
            Op::FailNextAppend => fail_next = true,
            Op::Timer => {
                if let Some(id) = leader.timer {
                    let commands = leader.chain.on_timer_fired(id);
                    leader.execute(commands, &mut log, &mut fail_next);
                }
            }
            _ => {
                if let Some(record) = record_of(op, &leader, log.len()) {
                    log.push(record);
                }
            }
        }
        leader.catch_up(&mut log, &mut fail_next);
        replica.catch_up(&mut log, &mut fail_next);
        if i == usize::from(input.restart_after) && restarted.is_none() {
            restarted = Some(restart_from(&leader, &support));
        }
        if let Some(r) = restarted.as_mut() {
            r.catch_up(&mut log, &mut fail_next);
        }
        compare(&leader, &replica);
        if let Some(r) = &restarted {
            compare(&leader, r);
        }
    }
}

/// A machine rebuilt from the leader's last block, as a restarted node.
fn restart_from(leader: &Machine, support: &dyn Fn(u64) -> Support) -> Machine {
    let (metadata, height, sequence) = match leader.blocks.last() {
        Some(b) => (b.metadata.encode_to_vec(), b.number + 1, b.sequence_after),
        None => (Vec::new(), 1, 0),
    };
    let chain = Chain::restore(&metadata, height)
        .unwrap_or_else(|e| panic!("cannot restore from the leader's block {}: {e}", height - 1));
    Machine::new("restarted", chain, support(sequence), false)
}

/// A follower must hold exactly the leader's blocks from its first one on, as far
/// as it has read, and be stopped exactly when the leader is, once it has read all.
///
/// One metadata field is the node's own: `last_resubmitted_config_offset` records a
/// resubmission that node itself posted. When the leader's post failed and a
/// follower's went through, the two legitimately disagree on it (as Fabric's nodes
/// do; block metadata is not covered by the block hash), so it is compared only
/// while every append of the leader has landed. A restarted machine resumes from
/// what the last block records, and two Fabric behaviours kept for byte
/// compatibility (see `korder_consensus::chain`) make that differ from the running
/// machines' state: a block cut by TIMETOCUT records that field as 0, and an
/// overflow block does not record `processed` for the envelope left pending. For a
/// restarted machine only the blocks' contents and `last_offset_persisted` are
/// compared.
fn compare(leader: &Machine, follower: &Machine) {
    let skip = usize::try_from(follower.first_block - leader.first_block).expect("block index");
    let restarted = follower.name == "restarted";
    let own = |cut: &Cut| {
        let mut cut = cut.clone();
        if leader.append_failed || restarted {
            cut.metadata.last_resubmitted_config_offset = 0;
        }
        if restarted {
            cut.metadata.last_original_offset_processed = 0;
        }
        cut
    };
    for (mine, theirs) in follower.blocks.iter().zip(leader.blocks.iter().skip(skip)) {
        assert_eq!(
            own(mine),
            own(theirs),
            "{} cut block {} differently from the leader",
            follower.name,
            mine.number
        );
    }
    if follower.cursor == leader.cursor {
        assert_eq!(
            follower.blocks.len(),
            leader.blocks.len().saturating_sub(skip),
            "{} and the leader read the same records but cut different numbers of blocks",
            follower.name
        );
        assert_eq!(
            follower.chain.stopped(),
            leader.chain.stopped(),
            "{} and the leader disagree on stopping",
            follower.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written run: two envelopes, a time-to-cut, a config envelope; the
    /// simulation accepts it and the leader cuts two blocks.
    #[test]
    fn simple_run_cuts_blocks() {
        let mut leader = Machine::new(
            "leader",
            Chain::new(None, 1).expect("chain"),
            Support {
                sequence: Cell::new(0),
                batch_size: BatchSize {
                    max_message_count: 10,
                    absolute_max_bytes: 1000,
                    preferred_max_bytes: 500,
                },
                resubmission: true,
            },
            true,
        );
        let mut log = vec![
            regular_record(envelope_of(b"a"), ConfigSeq::new(0), Class::Normal, None),
            regular_record(envelope_of(b"b"), ConfigSeq::new(0), Class::Normal, None),
            time_to_cut_record(korder_consensus::BlockNumber::new(1)),
            regular_record(envelope_of(b"c"), ConfigSeq::new(0), Class::Config, None),
        ];
        let mut fail = false;
        leader.catch_up(&mut log, &mut fail);
        assert_eq!(leader.blocks.len(), 2);
        assert_eq!(leader.blocks[0].envelopes.len(), 2);
        assert!(leader.blocks[1].config);
        assert_eq!(leader.support.sequence.get(), 1);
    }
}
