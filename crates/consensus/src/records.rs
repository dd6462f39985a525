//! The records a channel's log carries, as `orderer.KafkaMessage` bytes.
//!
//! Ingress builds REGULAR records with [`order_record`] and [`configure_record`]; the
//! chain builds TIMETOCUT records and resubmissions; a runtime posts [`connect_record`]
//! at start-up and for health probes. Envelope bytes are wrapped exactly as given,
//! never re-encoded.

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::orderer::kafka_message::Type;
use korder_proto::orderer::kafka_message_regular::Class;
use korder_proto::orderer::{
    KafkaMessage, KafkaMessageConnect, KafkaMessageRegular, KafkaMessageTimeToCut,
};

use crate::types::{BlockNumber, ConfigSeq, LogOffset};

/// The `original_offset` a REGULAR record carries when it is not a resubmission.
/// Fabric's records use 0, so a resubmission of the record at offset 0 cannot be told
/// from an original: both decode as `None`.
const NOT_RESUBMITTED: i64 = 0;

/// A client's normal envelope, validated at `config_seq`: REGULAR, class NORMAL,
/// not a resubmission.
pub fn order_record(envelope: Bytes, config_seq: ConfigSeq) -> Bytes {
    regular_record(envelope, config_seq, Class::Normal, None)
}

/// A config envelope built from a CONFIG_UPDATE and validated at `config_seq`:
/// REGULAR, class CONFIG, not a resubmission.
pub fn configure_record(config_envelope: Bytes, config_seq: ConfigSeq) -> Bytes {
    regular_record(config_envelope, config_seq, Class::Config, None)
}

/// Any REGULAR record. `original_offset` is `None` for client submissions (written as
/// 0) and the offset of the stale copy for resubmissions.
pub fn regular_record(
    envelope: Bytes,
    config_seq: ConfigSeq,
    class: Class,
    original_offset: Option<LogOffset>,
) -> Bytes {
    encode(Type::Regular(KafkaMessageRegular {
        payload: envelope,
        config_seq: config_seq.get(),
        class: class as i32,
        original_offset: original_offset.map_or(NOT_RESUBMITTED, LogOffset::get),
    }))
}

/// A CONNECT record: always the two bytes `1a 00`.
pub fn connect_record() -> Bytes {
    encode(Type::Connect(KafkaMessageConnect {
        payload: Bytes::new(),
    }))
}

/// A TIMETOCUT record asking every node to cut `block` now.
pub fn time_to_cut_record(block: BlockNumber) -> Bytes {
    encode(Type::TimeToCut(KafkaMessageTimeToCut {
        block_number: block.get(),
    }))
}

fn encode(kind: Type) -> Bytes {
    Bytes::from(KafkaMessage { r#type: Some(kind) }.encode_to_vec())
}

/// A decoded REGULAR record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegularRecord {
    /// The envelope bytes exactly as carried.
    pub envelope: Bytes,
    pub config_seq: ConfigSeq,
    /// Raw class value: 0 UNKNOWN, 1 NORMAL, 2 CONFIG; anything else is unsupported.
    pub class: i32,
    /// For a resubmission, the offset of the stale copy it replaces; `None` for an
    /// original submission (0 in the record).
    pub original_offset: Option<LogOffset>,
}

/// A decoded log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Connect,
    TimeToCut(BlockNumber),
    Regular(RegularRecord),
    /// A KafkaMessage with no variant set.
    Empty,
}

/// Decodes a record's value.
pub fn decode_record(value: Bytes) -> Result<Record, prost::DecodeError> {
    let message = KafkaMessage::decode(value)?;
    Ok(match message.r#type {
        None => Record::Empty,
        Some(Type::Connect(_)) => Record::Connect,
        Some(Type::TimeToCut(ttc)) => Record::TimeToCut(BlockNumber::new(ttc.block_number)),
        Some(Type::Regular(regular)) => Record::Regular(RegularRecord {
            envelope: regular.payload,
            config_seq: ConfigSeq::new(regular.config_seq),
            class: regular.class,
            original_offset: match regular.original_offset {
                NOT_RESUBMITTED => None,
                o => Some(LogOffset::new(o)),
            },
        }),
    })
}
