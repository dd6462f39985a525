//! The per-channel chain state machine: log records in, commands out.
//!
//! [`Chain`] holds everything that decides block boundaries and block metadata: the
//! number of the last cut block (`L`), the three offsets written into every block's
//! ORDERER metadata (persisted, processed, resubmitted), the pending batch, whether
//! a batch timer runs and whether ingress is open. It performs no I/O and reads no
//! clock; the caller feeds it records in log order and executes the [`Command`]s it
//! returns. See the crate documentation for the flow.
//!
//! Contract with the caller (the runtime):
//! - feed records with strictly increasing offsets, starting at [`Chain::read_from`];
//! - execute the commands of one call in order, completely, before the next call.
//!   In particular [`Command::WriteConfigBlock`] includes applying the config, so that
//!   [`ConsenterSupport::sequence`] already returns the new sequence when the next
//!   record is processed;
//! - report the outcome of every [`Command::Append`] with
//!   [`Chain::on_append_result`] before feeding the next record;
//! - after [`Command::Stop`], feed nothing more: the chain is finished until restart.
//!
//! Fabric behaviours kept for byte compatibility of the ORDERER metadata:
//! - a block cut by TIMETOCUT records `last_resubmitted_config_offset = 0`;
//! - an overflow cut does not advance `processed` for the envelope left pending;
//! - the flush block before a config block carries the previous `processed`;
//! - compatibility mode commits the config envelope as consumed.
//!
//! Restart rebuilds the same blocks as a node that never stopped, with two known
//! exceptions that Fabric shares: after a restart on a TIMETOCUT block only
//! `last_resubmitted_config_offset` differs (until the next config resubmission);
//! and after a restart on an overflow block whose pending envelope is a resubmission,
//! the restarted node advances `processed` where the other did not, so a later copy
//! of that resubmission is discarded by it but committed by the others.
//! Ingress uses one gate (open/closed), never a stack of gates.

use std::time::Duration;

use bytes::Bytes;
use korder_log::ReadFrom;
use korder_proto::Message;
use korder_proto::common::{ChannelHeader, Payload};
use korder_proto::orderer::kafka_message_regular::Class;
use korder_proto::orderer::{BatchSize, KafkaMetadata};

use crate::blockcutter::{BlockCutter, Fill, SizedEnvelope};
use crate::records::{Record, RegularRecord, decode_record, regular_record, time_to_cut_record};
use crate::support::{ConsenterSupport, MsgClass};
use crate::types::{BlockNumber, ConfigSeq, LogOffset, TimerId};

/// `last_offset_persisted` as Fabric's Kafka metadata writes "nothing persisted yet":
/// one below the client's "oldest offset" sentinel (−2), so that `persisted + 1` means
/// "read from the oldest". Only the metadata carries it; the chain holds `None`.
const KAFKA_PERSISTED_NONE: i64 = -3;

/// `last_resubmitted_config_offset` as Fabric's Kafka metadata writes "no config
/// resubmission": 0, which no resubmission can be at (its original lies before it).
/// Only the metadata carries it; the chain holds `None`.
const KAFKA_NOT_RESUBMITTED: i64 = 0;

/// The ORDERER metadata of a block: the three offsets as Fabric's Kafka metadata
/// encodes them.
fn kafka_metadata(
    persisted: LogOffset,
    processed: LogOffset,
    resubmitted: Option<LogOffset>,
) -> KafkaMetadata {
    KafkaMetadata {
        last_offset_persisted: persisted.get(),
        last_original_offset_processed: processed.get(),
        last_resubmitted_config_offset: resubmitted.map_or(KAFKA_NOT_RESUBMITTED, LogOffset::get),
    }
}

/// Why the chain asks for a record to be appended to its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendPurpose {
    /// The batch timer fired: ask every node to cut `block`.
    TimeToCut { block: BlockNumber },
    /// A normal envelope validated at an older sequence, re-validated and re-ordered.
    ResubmitNormal { original: LogOffset },
    /// A config envelope validated at an older sequence, rebuilt and re-ordered.
    ResubmitConfig { original: LogOffset },
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Append this `KafkaMessage` to the channel's log, then report the outcome with
    /// [`Chain::on_append_result`].
    Append {
        record: Bytes,
        purpose: AppendPurpose,
    },
    /// Build block `number` from these envelope bytes (data entries, as carried in the
    /// records) and write it with this ORDERER metadata.
    WriteBlock {
        number: BlockNumber,
        envelopes: Vec<Bytes>,
        metadata: KafkaMetadata,
        /// For the block fill duration metric.
        fill: Fill,
    },
    /// Build block `number` holding only this config envelope, apply the config to the
    /// channel (synchronously, before the next record), then write the block.
    WriteConfigBlock {
        number: BlockNumber,
        envelope: Bytes,
        metadata: KafkaMetadata,
    },
    /// Start the batch timer; when it fires, call [`Chain::on_timer_fired`] with `id`.
    StartTimer { id: TimerId, timeout: Duration },
    /// Stop the batch timer `id`.
    StopTimer { id: TimerId },
    /// Open or close ingress (Broadcast waits while it is closed).
    SetIngress { open: bool },
    /// The chain cannot continue: stop consuming, mark the chain errored; only a
    /// restart recovers. Always the last command.
    Stop(ChainError),
}

/// Errors that end the chain's processing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error(
        "TIMETOCUT for block {block} at offset {offset} is the right block to cut but nothing is pending"
    )]
    TimeToCutNothingPending {
        block: BlockNumber,
        offset: LogOffset,
    },
    #[error(
        "TIMETOCUT for block {block} at offset {offset} is larger than the next block to cut ({expected})"
    )]
    TimeToCutTooLarge {
        block: BlockNumber,
        expected: BlockNumber,
        offset: LogOffset,
    },
    #[error(
        "the channel's batch size cannot be read from its config while ordering the record at offset {offset}"
    )]
    BatchSizeUnavailable { offset: LogOffset },
}

/// Why one REGULAR record was dropped. The chain continues with the next record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegularError {
    #[error("record at offset {offset}: payload is not an envelope: {reason}")]
    UndecodableEnvelope { offset: LogOffset, reason: String },
    #[error("record at offset {offset}: cannot read the envelope's channel header: {reason}")]
    NoChannelHeader { offset: LogOffset, reason: String },
    #[error("record at offset {offset}: not expecting a CONFIG_UPDATE in the log")]
    ConfigUpdateNotExpected { offset: LogOffset },
    #[error("record at offset {offset}: unsupported REGULAR class {class}")]
    UnsupportedClass { offset: LogOffset, class: i32 },
    #[error("record at offset {offset}: discarding bad normal message: {reason}")]
    NormalRejected { offset: LogOffset, reason: String },
    #[error("record at offset {offset}: rejecting config message: {reason}")]
    ConfigRejected { offset: LogOffset, reason: String },
    #[error("record at offset {original}: appending its resubmission to the log failed")]
    ResubmissionNotAppended { original: LogOffset },
}

/// Errors when rebuilding a chain from its ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error(
        "ORDERER metadata of block {block} is not a KafkaMetadata (ledger may be corrupted): {source}"
    )]
    CorruptMetadata {
        block: BlockNumber,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the ledger is empty: a chain needs at least the genesis block")]
    EmptyLedger,
    #[error(
        "ORDERER metadata of block {block} records last_offset_persisted {persisted}, which no log position can follow"
    )]
    InvalidPersisted { block: BlockNumber, persisted: i64 },
}

/// Loop counters, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub recv_pass: u64,
    pub unmarshal_error: u64,
    pub process_connect_pass: u64,
    pub process_time_to_cut_pass: u64,
    pub process_time_to_cut_error: u64,
    pub process_regular_pass: u64,
    pub process_regular_error: u64,
    pub send_time_to_cut_pass: u64,
    pub send_time_to_cut_error: u64,
}

/// What a config resubmission changed, undone if its append fails.
#[derive(Clone, Copy, Debug)]
struct ResubmitUndo {
    original: LogOffset,
    resubmitted: Option<LogOffset>,
    ingress_open: bool,
}

/// How processing a REGULAR record went wrong.
enum Failure {
    Drop(RegularError),
    Fatal(ChainError),
}

impl From<RegularError> for Failure {
    fn from(error: RegularError) -> Failure {
        Failure::Drop(error)
    }
}

impl From<ChainError> for Failure {
    fn from(error: ChainError) -> Failure {
        Failure::Fatal(error)
    }
}

/// How a REGULAR record that was not dropped ended.
enum Handled {
    /// Counted as a pass now.
    Done,
    /// A resubmission was asked for; counted when its append is reported.
    AwaitingAppend,
}

/// One channel's chain state machine.
#[derive(Clone, Debug)]
pub struct Chain {
    /// `L`: number of the last block cut.
    last_cut: BlockNumber,
    /// Offset of the last record reflected in the blocks cut; `None` before any
    /// (a chain whose last block carries no Kafka metadata).
    persisted: Option<LogOffset>,
    processed: LogOffset,
    /// Offset of the last config resubmission known; `None` before any (and after a
    /// block cut by TIMETOCUT, which records none).
    resubmitted: Option<LogOffset>,
    /// Offset of the last record fed (or `persisted` before any).
    last_seen: Option<LogOffset>,
    ingress_open: bool,
    timer: Option<TimerId>,
    timers_started: u64,
    /// The node's early-cut horizon, if it cuts early (see [`Chain::with_early_cut`]).
    early_cut: Option<Duration>,
    /// The pending batch's early-cut checks, while the running timer is one of them.
    checks: Option<EarlyCutChecks>,
    cutter: BlockCutter,
    counters: Counters,
    stopped: Option<ChainError>,
    undo: Option<ResubmitUndo>,
    started_pending: bool,
    last_error: Option<RegularError>,
}

impl Chain {
    /// Rebuilds a chain from the ORDERER metadata value of the ledger's last block
    /// (`common.Metadata.value`, empty for a new channel) and the ledger height.
    pub fn restore(metadata_value: &[u8], ledger_height: u64) -> Result<Chain, RestoreError> {
        let last_block = BlockNumber::new(ledger_height.saturating_sub(1));
        let metadata = if metadata_value.is_empty() {
            None
        } else {
            Some(KafkaMetadata::decode(metadata_value).map_err(|source| {
                RestoreError::CorruptMetadata {
                    block: last_block,
                    source,
                }
            })?)
        };
        Chain::new(metadata, ledger_height)
    }

    /// Builds a chain from the last block's Kafka metadata (`None` for a new channel
    /// or one whose last block carries none) and the ledger height.
    ///
    /// Without metadata: nothing persisted (Fabric's −3), processed 0, no resubmission
    /// (Fabric's 0). Metadata recording −3 also means nothing persisted, and 0 no
    /// resubmission. Ingress starts open unless a config resubmission was in flight
    /// (resubmitted > processed).
    pub fn new(metadata: Option<KafkaMetadata>, ledger_height: u64) -> Result<Chain, RestoreError> {
        let Some(last_cut) = BlockNumber::last_of(ledger_height) else {
            return Err(RestoreError::EmptyLedger);
        };
        let (persisted, processed, resubmitted) = match metadata {
            None => (None, LogOffset::FIRST, None),
            Some(m) => (
                match m.last_offset_persisted {
                    KAFKA_PERSISTED_NONE => None,
                    p if p < -1 => {
                        return Err(RestoreError::InvalidPersisted {
                            block: last_cut,
                            persisted: p,
                        });
                    }
                    p => Some(LogOffset::new(p)),
                },
                LogOffset::new(m.last_original_offset_processed),
                match m.last_resubmitted_config_offset {
                    KAFKA_NOT_RESUBMITTED => None,
                    r => Some(LogOffset::new(r)),
                },
            ),
        };
        let ingress_open = resubmitted.is_none_or(|r| r <= processed);
        Ok(Chain {
            last_cut,
            persisted,
            processed,
            resubmitted,
            last_seen: persisted,
            ingress_open,
            timer: None,
            timers_started: 0,
            early_cut: None,
            checks: None,
            cutter: BlockCutter::new(),
            counters: Counters::default(),
            stopped: None,
            undo: None,
            started_pending: false,
            last_error: None,
        })
    }

    /// This chain with the early-cut policy: a batch that, at one of the checks made
    /// every `horizon / 20` after its first envelope, is filling too slowly to be full
    /// `horizon` after it began, is cut at once, through a TIMETOCUT like the batch
    /// timer's. A batch still pending at `horizon` is cut then. Without it (`None`,
    /// the default) only the channel's BatchTimeout cuts a batch that does not fill.
    ///
    /// "Full" is MaxMessageCount envelopes or PreferredMaxBytes. The setting is the
    /// node's own: it decides only when this node posts a TIMETOCUT, never how a
    /// record is handled, so nodes with and without it cut the same blocks.
    pub fn with_early_cut(mut self, horizon: Option<Duration>) -> Chain {
        self.early_cut = horizon.filter(|h| !h.is_zero());
        self
    }

    /// Where the runtime starts reading the log: `persisted + 1`, or the oldest
    /// record for a chain without metadata.
    pub fn read_from(&self) -> ReadFrom {
        match self.persisted {
            None => ReadFrom::Oldest,
            Some(p) => ReadFrom::Offset(p.next()),
        }
    }

    /// `L`: the number of the last block cut.
    pub fn last_cut(&self) -> BlockNumber {
        self.last_cut
    }

    /// Offset of the last record fully reflected in the blocks cut so far (the value
    /// of the `last_offset_persisted` gauge); `None` before any record was.
    pub fn persisted(&self) -> Option<LogOffset> {
        self.persisted
    }

    /// Last original offset processed.
    pub fn processed(&self) -> LogOffset {
        self.processed
    }

    /// Offset of the last config resubmission this chain knows about; `None` before
    /// any (Fabric's 0).
    pub fn resubmitted(&self) -> Option<LogOffset> {
        self.resubmitted
    }

    /// Whether ingress is open (initially, and after the commands so far).
    pub fn ingress_open(&self) -> bool {
        self.ingress_open
    }

    /// The batch timer the chain considers running.
    pub fn timer(&self) -> Option<TimerId> {
        self.timer
    }

    /// Number of envelopes in the pending batch.
    pub fn pending_count(&self) -> usize {
        self.cutter.pending_count()
    }

    /// Whether the last record fed started the batch now pending: a runtime that
    /// measures block fill durations notes the time of this record.
    pub fn started_pending_batch(&self) -> bool {
        self.started_pending
    }

    /// Loop counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Why the last REGULAR record (or the last resubmission append) was dropped.
    pub fn last_error(&self) -> Option<&RegularError> {
        self.last_error.as_ref()
    }

    /// The error that stopped the chain, if any.
    pub fn stopped(&self) -> Option<&ChainError> {
        self.stopped.as_ref()
    }

    /// Processes the record at `offset` (the raw `KafkaMessage` bytes).
    ///
    /// An undecodable record is counted (`unmarshal_error`) and skipped.
    pub fn on_record<S: ConsenterSupport + ?Sized>(
        &mut self,
        support: &S,
        offset: LogOffset,
        value: Bytes,
    ) -> Vec<Command> {
        assert!(
            self.stopped.is_none(),
            "record at offset {offset} fed to a stopped chain"
        );
        assert!(
            self.last_seen.is_none_or(|seen| offset > seen),
            "record at offset {offset} fed after offset {:?}",
            self.last_seen
        );
        self.last_seen = Some(offset);
        self.undo = None;
        self.started_pending = false;
        self.last_error = None;

        let mut out = Vec::new();
        let Ok(record) = decode_record(value) else {
            self.counters.unmarshal_error += 1;
            return out;
        };
        self.counters.recv_pass += 1;
        match record {
            Record::Empty => {}
            Record::Connect => self.counters.process_connect_pass += 1,
            Record::TimeToCut(block) => self.time_to_cut(block, offset, &mut out),
            Record::Regular(regular) => match self.regular(support, regular, offset, &mut out) {
                Ok(Handled::Done) => self.counters.process_regular_pass += 1,
                Ok(Handled::AwaitingAppend) => {}
                Err(Failure::Drop(error)) => {
                    self.counters.process_regular_error += 1;
                    self.last_error = Some(error);
                }
                Err(Failure::Fatal(error)) => {
                    self.counters.process_regular_error += 1;
                    self.stop(error, &mut out);
                }
            },
        }
        out
    }

    /// The batch timer `id` fired: ask every node, through the log, to cut block L+1.
    /// Nothing is cut locally. A stale `id` (a timer already stopped) is ignored.
    ///
    /// With the early-cut policy the timer is a check: the batch is cut (TIMETOCUT)
    /// if it fills too slowly, or the timer starts again for the next check.
    pub fn on_timer_fired(&mut self, id: TimerId) -> Vec<Command> {
        if self.stopped.is_some() || self.timer != Some(id) {
            return Vec::new();
        }
        self.timer = None;
        if let Some(checks) = self.checks.take() {
            let done = checks.done + 1;
            let slow = checks.slow(
                done,
                self.cutter.pending_count() as u64,
                self.cutter.pending_bytes(),
            );
            if !slow && done < checks.limit {
                let mut out = Vec::new();
                self.start_timer(checks.period, &mut out);
                self.checks = Some(EarlyCutChecks { done, ..checks });
                return out;
            }
        }
        let block = self.last_cut.next();
        vec![Command::Append {
            record: time_to_cut_record(block),
            purpose: AppendPurpose::TimeToCut { block },
        }]
    }

    /// Reports whether an [`Command::Append`] reached the log. A failed config
    /// resubmission is undone (resubmitted restored, ingress reopened if it was open).
    pub fn on_append_result(&mut self, purpose: AppendPurpose, appended: bool) -> Vec<Command> {
        let mut out = Vec::new();
        match (purpose, appended) {
            (AppendPurpose::TimeToCut { .. }, true) => self.counters.send_time_to_cut_pass += 1,
            (AppendPurpose::TimeToCut { .. }, false) => self.counters.send_time_to_cut_error += 1,
            (AppendPurpose::ResubmitNormal { .. }, true) => {
                self.counters.process_regular_pass += 1;
            }
            (AppendPurpose::ResubmitConfig { original }, true) => {
                self.counters.process_regular_pass += 1;
                if self.undo.is_some_and(|u| u.original == original) {
                    self.undo = None;
                }
            }
            (AppendPurpose::ResubmitNormal { original }, false) => {
                self.counters.process_regular_error += 1;
                self.last_error = Some(RegularError::ResubmissionNotAppended { original });
            }
            (AppendPurpose::ResubmitConfig { original }, false) => {
                self.counters.process_regular_error += 1;
                self.last_error = Some(RegularError::ResubmissionNotAppended { original });
                let undo = self.undo.take();
                assert!(
                    undo.is_some_and(|u| u.original == original),
                    "outcome of the config resubmission of offset {original} reported after the next record"
                );
                if let Some(undo) = undo {
                    self.resubmitted = undo.resubmitted;
                    if undo.ingress_open {
                        self.set_ingress(true, &mut out);
                    }
                }
            }
        }
        out
    }

    fn stop(&mut self, error: ChainError, out: &mut Vec<Command>) {
        self.stopped = Some(error.clone());
        out.push(Command::Stop(error));
    }

    /// §8: only TIMETOCUT(L+1) cuts; older ones are stale; newer ones are impossible.
    fn time_to_cut(&mut self, block: BlockNumber, offset: LogOffset, out: &mut Vec<Command>) {
        let expected = self.last_cut.next();
        if block < expected {
            self.counters.process_time_to_cut_pass += 1;
            return;
        }
        if block > expected {
            self.counters.process_time_to_cut_error += 1;
            let error = ChainError::TimeToCutTooLarge {
                block,
                expected,
                offset,
            };
            self.stop(error, out);
            return;
        }
        self.stop_timer(out);
        let batch = self.cutter.cut();
        if batch.is_empty() {
            self.counters.process_time_to_cut_error += 1;
            self.stop(ChainError::TimeToCutNothingPending { block, offset }, out);
            return;
        }
        // Byte compatibility with Fabric: a block cut by TIMETOCUT records
        // last_resubmitted_config_offset = 0 (none), whatever the chain's value. A node
        // that restarts on such a block resumes with no resubmission; this changes only
        // that metadata field in later blocks (and the initial ingress gate), never
        // block boundaries, data or header hashes.
        self.write_block(batch, Fill::Accumulated, offset, None, out);
        self.counters.process_time_to_cut_pass += 1;
    }

    /// §9: a REGULAR record.
    fn regular<S: ConsenterSupport + ?Sized>(
        &mut self,
        support: &S,
        record: RegularRecord,
        offset: LogOffset,
        out: &mut Vec<Command>,
    ) -> Result<Handled, Failure> {
        let seq = support.sequence();
        let envelope = SizedEnvelope::decode(record.envelope.clone()).map_err(|e| {
            RegularError::UndecodableEnvelope {
                offset,
                reason: e.to_string(),
            }
        })?;
        if record.class == Class::Unknown as i32 || !support.resubmission_enabled() {
            return self.compatible(support, envelope, offset, out);
        }
        if record.class == Class::Normal as i32 {
            self.normal(support, &record, envelope, seq, offset, out)
        } else if record.class == Class::Config as i32 {
            self.config(support, &record, seq, offset, out)
        } else {
            Err(RegularError::UnsupportedClass {
                offset,
                class: record.class,
            }
            .into())
        }
    }

    /// §9.1: compatibility mode re-validates every record, whatever its sequence,
    /// and commits config envelopes as consumed.
    fn compatible<S: ConsenterSupport + ?Sized>(
        &mut self,
        support: &S,
        envelope: SizedEnvelope,
        offset: LogOffset,
        out: &mut Vec<Command>,
    ) -> Result<Handled, Failure> {
        let header_type = channel_header_type(envelope.bytes())
            .map_err(|reason| RegularError::NoChannelHeader { offset, reason })?;
        match support.classify(header_type) {
            MsgClass::ConfigUpdate => Err(RegularError::ConfigUpdateNotExpected { offset }.into()),
            MsgClass::Config => {
                support.process_config(envelope.bytes()).map_err(|e| {
                    RegularError::ConfigRejected {
                        offset,
                        reason: e.reason,
                    }
                })?;
                let processed = self.processed;
                self.commit_config(envelope.bytes().clone(), offset, processed, out);
                Ok(Handled::Done)
            }
            MsgClass::Normal => {
                support.process_normal(envelope.bytes()).map_err(|e| {
                    RegularError::NormalRejected {
                        offset,
                        reason: e.reason,
                    }
                })?;
                let processed = self.processed;
                self.commit_normal(support, envelope, offset, processed, out)?;
                Ok(Handled::Done)
            }
        }
    }

    /// §9.2: class NORMAL with resubmission.
    fn normal<S: ConsenterSupport + ?Sized>(
        &mut self,
        support: &S,
        record: &RegularRecord,
        envelope: SizedEnvelope,
        seq: ConfigSeq,
        offset: LogOffset,
        out: &mut Vec<Command>,
    ) -> Result<Handled, Failure> {
        if record
            .original_offset
            .is_some_and(|original| original <= self.processed)
        {
            return Ok(Handled::Done);
        }
        if record.config_seq < seq {
            let new_seq = support.process_normal(envelope.bytes()).map_err(|e| {
                RegularError::NormalRejected {
                    offset,
                    reason: e.reason,
                }
            })?;
            out.push(Command::Append {
                record: regular_record(
                    envelope.bytes().clone(),
                    new_seq,
                    Class::Normal,
                    Some(offset),
                ),
                purpose: AppendPurpose::ResubmitNormal { original: offset },
            });
            return Ok(Handled::AwaitingAppend);
        }
        let new_offset = record.original_offset.unwrap_or(self.processed);
        self.commit_normal(support, envelope, offset, new_offset, out)?;
        Ok(Handled::Done)
    }

    /// §9.3: class CONFIG with resubmission.
    fn config<S: ConsenterSupport + ?Sized>(
        &mut self,
        support: &S,
        record: &RegularRecord,
        seq: ConfigSeq,
        offset: LogOffset,
        out: &mut Vec<Command>,
    ) -> Result<Handled, Failure> {
        let mut reopen = false;
        if let Some(original) = record.original_offset {
            if original <= self.processed {
                return Ok(Handled::Done);
            }
            reopen = self.resubmitted == Some(original) && record.config_seq == seq;
            // Another node may have resubmitted a config this node found invalid:
            // follow it so that every node records the same value. No resubmission
            // compares as Fabric's 0.
            if self
                .resubmitted
                .map_or(original > LogOffset::FIRST, |r| r < original)
            {
                self.resubmitted = Some(original);
            }
        }
        if record.config_seq < seq {
            let (rebuilt, new_seq) = support.process_config(&record.envelope).map_err(|e| {
                RegularError::ConfigRejected {
                    offset,
                    reason: e.reason,
                }
            })?;
            self.undo = Some(ResubmitUndo {
                original: offset,
                resubmitted: self.resubmitted,
                ingress_open: self.ingress_open,
            });
            // Close the gate before the copy can be appended; a failed append
            // reopens it (see `on_append_result`).
            self.resubmitted = Some(offset);
            self.set_ingress(false, out);
            out.push(Command::Append {
                record: regular_record(rebuilt, new_seq, Class::Config, Some(offset)),
                purpose: AppendPurpose::ResubmitConfig { original: offset },
            });
            return Ok(Handled::AwaitingAppend);
        }
        let new_offset = record.original_offset.unwrap_or(self.processed);
        self.commit_config(record.envelope.clone(), offset, new_offset, out);
        // Opened after the config block so that Broadcast validates new submissions
        // against the new config.
        if reopen {
            self.set_ingress(true, out);
        }
        Ok(Handled::Done)
    }

    /// §9.4: a normal envelope enters the cutter.
    fn commit_normal<S: ConsenterSupport + ?Sized>(
        &mut self,
        support: &S,
        envelope: SizedEnvelope,
        offset: LogOffset,
        new_offset: LogOffset,
        out: &mut Vec<Command>,
    ) -> Result<(), ChainError> {
        let limits = support
            .batch_size()
            .ok_or(ChainError::BatchSizeUnavailable { offset })?;
        let ordered = self.cutter.ordered(envelope, &limits);
        self.started_pending = ordered.started_pending;

        match (self.timer.is_some(), ordered.pending) {
            (true, false) => self.stop_timer(out),
            (false, true) => self.start_batch_timer(support.batch_timeout(), &limits, out),
            // An overflow cut that leaves a new pending batch keeps the running timer.
            _ => {}
        }

        let mut batches = ordered.batches.into_iter();
        let Some(first) = batches.next() else {
            self.processed = new_offset;
            return Ok(());
        };
        let second = batches.next();
        let first_persisted = if ordered.pending || second.is_some() {
            // The current envelope is not in the first batch. Fabric quirk kept for
            // byte compatibility: on overflow (one batch, current envelope pending)
            // processed is not advanced at all.
            offset.prev()
        } else {
            self.processed = new_offset;
            offset
        };
        let resubmitted = self.resubmitted;
        self.write_block(
            first.envelopes,
            first.fill,
            first_persisted,
            resubmitted,
            out,
        );
        if let Some(second) = second {
            self.processed = new_offset;
            self.write_block(second.envelopes, second.fill, offset, resubmitted, out);
        }
        Ok(())
    }

    /// §9.5: a config envelope flushes the pending batch (with the old processed)
    /// and is cut alone.
    fn commit_config(
        &mut self,
        envelope: Bytes,
        offset: LogOffset,
        new_offset: LogOffset,
        out: &mut Vec<Command>,
    ) {
        let resubmitted = self.resubmitted;
        let batch = self.cutter.cut();
        if !batch.is_empty() {
            self.write_block(batch, Fill::Accumulated, offset.prev(), resubmitted, out);
        }
        self.processed = new_offset;
        self.stop_timer(out);
        let number = self.last_cut.next();
        self.last_cut = number;
        self.persisted = Some(offset);
        out.push(Command::WriteConfigBlock {
            number,
            envelope,
            metadata: kafka_metadata(offset, self.processed, resubmitted),
        });
    }

    fn write_block(
        &mut self,
        envelopes: Vec<Bytes>,
        fill: Fill,
        persisted: LogOffset,
        resubmitted: Option<LogOffset>,
        out: &mut Vec<Command>,
    ) {
        assert!(!envelopes.is_empty(), "a block holds at least one envelope");
        let number = self.last_cut.next();
        self.last_cut = number;
        self.persisted = Some(persisted);
        out.push(Command::WriteBlock {
            number,
            envelopes,
            metadata: kafka_metadata(persisted, self.processed, resubmitted),
            fill,
        });
    }

    /// Starts the timer of a new pending batch: the BatchTimeout, or the first
    /// early-cut check.
    fn start_batch_timer(
        &mut self,
        batch_timeout: Duration,
        limits: &BatchSize,
        out: &mut Vec<Command>,
    ) {
        match self
            .early_cut
            .and_then(|h| EarlyCutChecks::new(h, batch_timeout, limits))
        {
            Some(checks) => {
                self.start_timer(checks.period, out);
                self.checks = Some(checks);
            }
            None => self.start_timer(batch_timeout, out),
        }
    }

    fn start_timer(&mut self, timeout: Duration, out: &mut Vec<Command>) {
        self.checks = None;
        self.timers_started += 1;
        let id = TimerId(self.timers_started);
        self.timer = Some(id);
        out.push(Command::StartTimer { id, timeout });
    }

    fn stop_timer(&mut self, out: &mut Vec<Command>) {
        self.checks = None;
        if let Some(id) = self.timer.take() {
            out.push(Command::StopTimer { id });
        }
    }

    fn set_ingress(&mut self, open: bool, out: &mut Vec<Command>) {
        if self.ingress_open != open {
            self.ingress_open = open;
            out.push(Command::SetIngress { open });
        }
    }
}

/// The `type` of an envelope's channel header.
fn channel_header_type(envelope: &Bytes) -> Result<i32, String> {
    let envelope =
        korder_proto::common::Envelope::decode(envelope.clone()).map_err(|e| e.to_string())?;
    let payload = Payload::decode(envelope.payload).map_err(|e| format!("payload: {e}"))?;
    let header = payload
        .header
        .ok_or_else(|| "payload has no header".to_string())?;
    let channel_header =
        ChannelHeader::decode(header.channel_header).map_err(|e| format!("channel header: {e}"))?;
    Ok(channel_header.r#type)
}

/// Early-cut checks per horizon: a check every `horizon / CHECKS_PER_HORIZON`.
const CHECKS_PER_HORIZON: u32 = 20;

/// The shortest time between two early-cut checks.
const MIN_CHECK_PERIOD: Duration = Duration::from_millis(1);

/// The early-cut checks of one pending batch.
#[derive(Clone, Copy, Debug)]
struct EarlyCutChecks {
    /// Time between two checks.
    period: Duration,
    /// Checks made so far.
    done: u32,
    /// The check at which the batch is cut whatever its fill: the horizon, or the
    /// BatchTimeout if that comes first.
    limit: u32,
    /// Checks in one horizon (the projection's scale).
    per_horizon: u64,
    max_count: u64,
    preferred_bytes: u64,
}

impl EarlyCutChecks {
    /// The checks for a batch starting now; `None` when the BatchTimeout comes before
    /// the first check (the timeout alone then cuts).
    fn new(horizon: Duration, batch_timeout: Duration, limits: &BatchSize) -> Option<Self> {
        let period = (horizon / CHECKS_PER_HORIZON).max(MIN_CHECK_PERIOD);
        if batch_timeout <= period {
            return None;
        }
        let per_horizon = (horizon.as_nanos() / period.as_nanos()).max(1);
        let until_timeout = batch_timeout.as_nanos().div_ceil(period.as_nanos());
        let limit = per_horizon.min(until_timeout);
        Some(EarlyCutChecks {
            period,
            done: 0,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            per_horizon: u64::try_from(per_horizon).unwrap_or(u64::MAX),
            max_count: u64::from(limits.max_message_count),
            preferred_bytes: u64::from(limits.preferred_max_bytes),
        })
    }

    /// Whether a batch of `count` envelopes and `bytes` bytes, `done` checks after it
    /// began, fills too slowly to be full at the horizon: at its rate so far, both its
    /// count and its bytes reach less than their limit in one horizon. In integers:
    /// `count / max_count < done / per_horizon`, and the same for bytes.
    fn slow(&self, done: u32, count: u64, bytes: u64) -> bool {
        let done = u128::from(done);
        let scale = u128::from(self.per_horizon);
        u128::from(count) * scale < done * u128::from(self.max_count)
            && u128::from(bytes) * scale < done * u128::from(self.preferred_bytes)
    }
}
