//! Ordering logic of a channel: the chain state machine and the block cutter.
//!
//! This crate turns a channel's log records (CONNECT, TIMETOCUT, REGULAR, encoded as
//! `orderer.KafkaMessage`) into blocks, exactly as Fabric's Kafka consenter does, so
//! that every node reading the same log cuts the same blocks with the same ORDERER
//! metadata. It is a pure, synchronous, deterministic state machine: it must never
//! do I/O, read a clock, draw random numbers, spawn threads or depend on map
//! iteration order. A runtime feeds it records and executes the commands it returns;
//! time enters only as TIMETOCUT records in the log.
//!
//! ```text
//!  log record (offset o, KafkaMessage bytes)
//!        │ Chain::on_record(support, o, bytes)
//!        ▼
//!   decode ──fails──▶ counted (unmarshal_error), skipped
//!        │
//!        ├─ CONNECT ───────▶ nothing
//!        ├─ TIMETOCUT(N) ──▶ N ≤ L: stale, nothing
//!        │                   N = L+1: StopTimer, WriteBlock(pending)   (nothing pending: Stop)
//!        │                   N > L+1: Stop
//!        └─ REGULAR ─┬─ class UNKNOWN or no resubmission capability (compatibility):
//!                    │      re-validate via support; config → flush + WriteConfigBlock,
//!                    │      normal → cutter
//!                    ├─ resubmission of something already processed ─▶ discarded
//!                    ├─ config_seq < sequence (stale) ─▶ re-validate via support,
//!                    │      [config: SetIngress(false)], Append(resubmission)
//!                    └─ current ─┬─ NORMAL ─▶ block cutter ─▶ 0..2 × WriteBlock,
//!                                │             Start/StopTimer
//!                                └─ CONFIG ─▶ WriteBlock(flush)?, StopTimer?,
//!                                              WriteConfigBlock, SetIngress(true)?
//!
//!  batch timer fired ──▶ Chain::on_timer_fired(id) ──▶ Append(TIMETOCUT(L+1))
//!  Append done/failed ─▶ Chain::on_append_result(purpose, ok)
//! ```
//!
//! The runtime executes the commands of one call in order before feeding the next
//! record; `WriteConfigBlock` includes applying the new config, so the next record
//! sees the new sequence through [`support::ConsenterSupport`].
//!
//! Modules:
//! - [`chain`]: the state machine, its commands and errors;
//! - [`blockcutter`]: batching of normal envelopes;
//! - [`records`]: building and decoding log records (ingress helpers);
//! - [`support`]: what the chain needs from the channel (config values, validation);
//! - [`types`]: `BlockNumber`, `ConfigSeq`, `LogOffset`, `TimerId`.

pub mod blockcutter;
pub mod chain;
pub mod records;
pub mod support;
pub mod types;

pub use blockcutter::{Batch, BlockCutter, Fill, Ordered, SizedEnvelope};
pub use chain::{AppendPurpose, Chain, ChainError, Command, Counters, RegularError, RestoreError};
pub use records::{
    Record, RegularRecord, configure_record, connect_record, decode_record, order_record,
    regular_record, time_to_cut_record,
};
pub use support::{ConsenterSupport, MsgClass, Rejected, classify_header_type};
pub use types::{BlockNumber, ConfigSeq, LogOffset, TimerId};
