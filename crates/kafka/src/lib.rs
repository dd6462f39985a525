//! korder's ordered log on Apache Kafka.
//!
//! Each channel is one topic, named after the channel, of which only partition 0
//! is used: the partition is the channel's total order and the only state the
//! orderer nodes share. [`KafkaLog`] implements [`korder_log::Log`]:
//!
//! ```text
//!   append(record) ──▶ idempotent producer, acks=all ──▶ topic/0 ──▶ offset from the
//!                      key "0", partition 0                         delivery report
//!
//!   reader(from)   ──▶ watermarks checked ──▶ consumer assigned topic/0 at `from`
//!                      (out of range = error)  no group offsets, nothing committed,
//!                                              auto.offset.reset=error
//! ```
//!
//! The librdkafka clients are shared by every log of the process with the same
//! client settings: one producer for every topic, one consumer whose assignment
//! holds every open reader's partition (each read through its own queue), and an
//! admin client once a topic is created. Threads and broker connections therefore
//! do not grow with the number of channels.
//!
//! This is the only crate of the workspace that links a Kafka client (librdkafka,
//! built statically). It never commits consumer offsets and never lets the client
//! jump to another offset on its own: where to read from is the ledger's business
//! (the offsets recorded in each block's metadata).
//!
//! The client's own log lines go to `tracing` under the target
//! `korder_kafka::client`; every client's effective settings are logged when it is
//! built. With [`KafkaConfig::statistics`] set, producers and consumers report
//! librdkafka's statistics, turned into Fabric's `consensus_kafka_*` figures
//! (see [`KafkaFigures`]).

mod clients;
mod config;
mod consumer;
mod context;
mod error;
mod log;
mod stats;

pub use config::{DEFAULT_MAX_RECORD_BYTES, KafkaConfig, SaslPlainConfig, TlsConfig};
pub use context::{live_clients, wait_for_clients_closed};
pub use error::KafkaLogError;
pub use korder_config::KafkaRetry;
pub use log::{KafkaLog, KafkaReader, PARTITION};
pub use stats::{BrokerFigures, KafkaFigures, StatsConfig, StatsHook, TopicFigures};
