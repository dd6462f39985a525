//! Sections A (7), B, D, E and F of the test scenarios: construction, restart
//! offsets, record helpers, TIMETOCUT, CONNECT and undecodable records.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use korder_consensus::*;
use korder_log::ReadFrom;
use korder_proto::Message;
use korder_proto::orderer::kafka_message_regular::Class;

fn normal(env: Bytes, seq: u64) -> Bytes {
    order_record(env, ConfigSeq::new(seq))
}

/// Scenario 9: a chain built from metadata with persisted = P reports P (the initial
/// gauge value), reads from P+1, has no timer and has counted nothing.
#[test]
fn b9_chain_built_from_metadata_reports_persisted() {
    let chain = Chain::new(Some(meta(41, 30, 0)), 7).unwrap();
    assert_eq!(chain.persisted(), Some(LogOffset::new(41)));
    assert_eq!(chain.read_from(), ReadFrom::Offset(LogOffset::new(42)));
    assert_eq!(chain.timer(), None);
    assert_eq!(chain.counters(), Counters::default());
    assert!(chain.ingress_open());
    assert!(chain.stopped().is_none());
}

/// Scenarios 15 and 20 (pure part): ingress helpers wrap any envelope, byte for byte, as
/// REGULAR NORMAL / CONFIG records with original offset 0 and the given sequence.
#[test]
fn b20_order_and_configure_records() {
    for env in [
        tx("a"),
        Bytes::new(),
        Bytes::from_static(b"\x01\x02not-an-envelope"),
    ] {
        let order = decode_record(order_record(env.clone(), ConfigSeq::new(3))).unwrap();
        assert_eq!(
            order,
            Record::Regular(RegularRecord {
                envelope: env.clone(),
                config_seq: ConfigSeq::new(3),
                class: Class::Normal as i32,
                original_offset: None,
            })
        );
        let configure = decode_record(configure_record(env.clone(), ConfigSeq::new(4))).unwrap();
        assert_eq!(
            configure,
            Record::Regular(RegularRecord {
                envelope: env,
                config_seq: ConfigSeq::new(4),
                class: Class::Config as i32,
                original_offset: None,
            })
        );
    }
}

/// §2.1: CONNECT is the two bytes 1a 00, and TIMETOCUT round-trips its block number.
#[test]
fn connect_and_time_to_cut_bytes() {
    assert_eq!(connect_record().as_ref(), &[0x1a, 0x00]);
    assert_eq!(decode_record(connect_record()).unwrap(), Record::Connect);
    assert_eq!(
        decode_record(time_to_cut_record(BlockNumber::new(9))).unwrap(),
        Record::TimeToCut(BlockNumber::new(9))
    );
    assert_eq!(decode_record(Bytes::new()).unwrap(), Record::Empty);
}

/// Scenario 17: a record built by order_record is accepted by a running chain: it
/// becomes pending and starts the batch timer.
#[test]
fn b17_ordered_record_is_accepted() {
    let mut node = Node::new(FakeSupport::new(limits(10, 1000), true));
    let commands = node.feed(0, normal(tx("a"), 0));
    assert_eq!(
        commands,
        vec![Command::StartTimer {
            id: TimerId(1),
            timeout: TIMEOUT
        }]
    );
    assert_eq!(node.chain.pending_count(), 1);
    assert!(node.chain.started_pending_batch());
    assert_eq!(node.chain.counters().process_regular_pass, 1);
}

/// Scenario 7: when the channel's batch size cannot be read, ordering stops the chain
/// with a fatal error instead of skipping the envelope.
#[test]
fn a7_missing_batch_size_is_fatal() {
    let mut support = FakeSupport::new(limits(10, 1000), true);
    support.batch = None;
    let mut node = Node::new(support);
    let commands = node.feed(3, normal(tx("a"), 0));
    assert_eq!(
        commands,
        vec![Command::Stop(ChainError::BatchSizeUnavailable {
            offset: LogOffset::new(3)
        })]
    );
    assert!(node.chain.stopped().is_some());
    assert!(node.blocks.is_empty());
}

/// A stopped chain refuses further records (a runtime bug, so it panics).
#[test]
#[should_panic(expected = "stopped chain")]
fn stopped_chain_refuses_records() {
    let mut node = Node::resumed(meta(0, 0, 0), 4, FakeSupport::new(limits(10, 1000), true));
    node.feed(1, time_to_cut_record(BlockNumber::new(9)));
    node.feed(2, connect_record());
}

/// Scenario 32: L is height − 1.
#[test]
fn d32_last_cut_is_height_minus_one() {
    assert_eq!(Chain::new(None, 2).unwrap().last_cut(), BlockNumber::new(1));
    assert_eq!(
        Chain::new(None, 1).unwrap().last_cut(),
        BlockNumber::GENESIS
    );
    assert!(matches!(
        Chain::new(None, 0),
        Err(RestoreError::EmptyLedger)
    ));
}

/// Scenario 33: offsets come from the last block's metadata; none (or Fabric's −3) gives
/// nothing persisted, processed 0, no resubmission and
/// reading from the oldest record; truncated metadata is refused as corruption.
#[test]
fn d33_offsets_from_metadata() {
    let value = meta(5, 3, 4).encode_to_vec();
    let chain = Chain::restore(&value, 3).unwrap();
    assert_eq!(
        (chain.persisted(), chain.processed(), chain.resubmitted()),
        (
            Some(LogOffset::new(5)),
            LogOffset::new(3),
            Some(LogOffset::new(4))
        )
    );
    assert!(
        !chain.ingress_open(),
        "resubmitted 4 > processed 3: gate starts closed"
    );

    let chain = Chain::restore(&[], 1).unwrap();
    assert_eq!(
        (chain.persisted(), chain.processed(), chain.resubmitted()),
        (None, LogOffset::new(0), None)
    );
    assert_eq!(chain.read_from(), ReadFrom::Oldest);

    // Fabric's "nothing persisted yet" (−3) in a block's metadata means the same.
    let chain = Chain::restore(&meta(-3, 0, 0).encode_to_vec(), 2).unwrap();
    assert_eq!(chain.persisted(), None);
    assert_eq!(chain.read_from(), ReadFrom::Oldest);
    assert!(chain.ingress_open());

    let truncated = &value[..value.len() - 1];
    let error = Chain::restore(truncated, 3).unwrap_err();
    assert!(matches!(error, RestoreError::CorruptMetadata { .. }));
    assert!(error.to_string().contains("ledger may be corrupted"));
    assert!(error.to_string().contains("block 2"));
}

/// Scenario 35: a firing timer asks for TIMETOCUT(L+1) and is cleared; the append outcome
/// is counted as pass or error; the timer stays cleared either way.
#[test]
fn d35_timer_fire_posts_time_to_cut() {
    for ok in [true, false] {
        let mut node = Node::resumed(meta(9, 0, 0), 3, FakeSupport::new(limits(10, 1000), true));
        node.fail_appends = !ok;
        node.feed(10, normal(tx("a"), 0));
        let id = node.chain.timer().unwrap();
        let commands = node.chain.on_timer_fired(id);
        assert_eq!(
            commands,
            vec![Command::Append {
                record: time_to_cut_record(BlockNumber::new(3)),
                purpose: AppendPurpose::TimeToCut {
                    block: BlockNumber::new(3)
                },
            }]
        );
        assert_eq!(node.chain.timer(), None);
        node.chain.on_append_result(
            AppendPurpose::TimeToCut {
                block: BlockNumber::new(3),
            },
            ok,
        );
        let counters = node.chain.counters();
        assert_eq!(counters.send_time_to_cut_pass, u64::from(ok));
        assert_eq!(counters.send_time_to_cut_error, u64::from(!ok));
        assert_eq!(node.chain.timer(), None);
        assert!(node.blocks.is_empty(), "nothing is cut locally");
        assert!(
            node.chain.on_timer_fired(id).is_empty(),
            "a stale timer id is ignored"
        );
    }
}

/// Scenario 36: with L = 3 and one envelope pending, an overflowing REGULAR record writes
/// the old envelope as block 4, keeps the new one pending and keeps the timer running.
#[test]
fn e36_overflow_writes_old_envelope_keeps_timer() {
    let first = big_tx("first", 60);
    let second = big_tx("second", 60);
    let mut node = Node::resumed(meta(9, 0, 0), 4, FakeSupport::new(limits(10, 100), true));
    node.feed(10, normal(first.clone(), 0));
    let timer = node.chain.timer();
    assert!(timer.is_some());
    let commands = node.feed(11, normal(second.clone(), 0));
    assert_eq!(
        commands,
        vec![Command::WriteBlock {
            number: BlockNumber::new(4),
            envelopes: vec![first],
            metadata: meta(10, 0, 0),
            fill: Fill::Accumulated,
        }]
    );
    assert_eq!(node.chain.pending_count(), 1);
    assert_eq!(node.chain.timer(), timer, "the running timer is kept");
    assert_eq!(node.chain.last_cut(), BlockNumber::new(4));
}

/// Scenario 37: with L = 3 and one envelope pending, TIMETOCUT(4) writes one block with
/// persisted = the TIMETOCUT's offset; L = 4; counted as a TIMETOCUT pass.
#[test]
fn e37_matching_time_to_cut_cuts() {
    let mut node = Node::resumed(meta(9, 2, 0), 4, FakeSupport::new(limits(10, 1000), true));
    node.feed(10, normal(tx("a"), 0));
    let before = node.chain.counters();
    let timer = node.chain.timer().unwrap();
    let commands = node.feed(11, time_to_cut_record(BlockNumber::new(4)));
    assert_eq!(
        commands,
        vec![
            Command::StopTimer { id: timer },
            Command::WriteBlock {
                number: BlockNumber::new(4),
                envelopes: vec![tx("a")],
                metadata: meta(11, 2, 0),
                fill: Fill::Accumulated,
            }
        ]
    );
    let after = node.chain.counters();
    assert_eq!(after.recv_pass - before.recv_pass, 1);
    assert_eq!(after.process_time_to_cut_pass, 1);
    assert_eq!(node.chain.last_cut(), BlockNumber::new(4));
}

/// Scenario 38: TIMETOCUT(L+1) with nothing pending stops the chain; nothing written.
#[test]
fn e38_time_to_cut_with_nothing_pending_is_fatal() {
    let mut node = Node::resumed(meta(9, 0, 0), 4, FakeSupport::new(limits(10, 1000), true));
    let commands = node.feed(10, time_to_cut_record(BlockNumber::new(4)));
    assert_eq!(
        commands,
        vec![Command::Stop(ChainError::TimeToCutNothingPending {
            block: BlockNumber::new(4),
            offset: LogOffset::new(10)
        })]
    );
    assert_eq!(node.chain.counters().process_time_to_cut_error, 1);
    assert_eq!(node.chain.last_cut(), BlockNumber::new(3));
    assert!(node.blocks.is_empty());
}

/// Scenario 39: TIMETOCUT(L+2) stops the chain; L unchanged.
#[test]
fn e39_time_to_cut_too_large_is_fatal() {
    let mut node = Node::resumed(meta(9, 0, 0), 4, FakeSupport::new(limits(10, 1000), true));
    node.feed(10, normal(tx("a"), 0));
    let commands = node.feed(11, time_to_cut_record(BlockNumber::new(5)));
    assert_eq!(
        commands,
        vec![Command::Stop(ChainError::TimeToCutTooLarge {
            block: BlockNumber::new(5),
            expected: BlockNumber::new(4),
            offset: LogOffset::new(11)
        })]
    );
    assert_eq!(node.chain.counters().process_time_to_cut_error, 1);
    assert_eq!(node.chain.last_cut(), BlockNumber::new(3));
    assert!(node.blocks.is_empty());
}

/// Scenario 40: a stale TIMETOCUT(L) is ignored, counted as a pass, timer untouched.
#[test]
fn e40_stale_time_to_cut_is_ignored() {
    let mut node = Node::resumed(meta(9, 0, 0), 4, FakeSupport::new(limits(10, 1000), true));
    node.feed(10, normal(tx("a"), 0));
    let timer = node.chain.timer();
    let commands = node.feed(11, time_to_cut_record(BlockNumber::new(3)));
    assert!(commands.is_empty());
    assert_eq!(node.chain.counters().process_time_to_cut_pass, 1);
    assert_eq!(node.chain.last_cut(), BlockNumber::new(3));
    assert_eq!(node.chain.timer(), timer);
    assert_eq!(node.chain.pending_count(), 1);
}

/// Scenario 41: CONNECT changes nothing and is counted.
#[test]
fn f41_connect_is_a_no_op() {
    let mut node = Node::new(FakeSupport::new(limits(10, 1000), true));
    let commands = node.feed(0, connect_record());
    assert!(commands.is_empty());
    let counters = node.chain.counters();
    assert_eq!(counters.process_connect_pass, 1);
    assert_eq!(counters.recv_pass, 1);
    assert_eq!(node.chain.processed(), LogOffset::new(0));
    assert_eq!(node.chain.persisted(), None, "no block, no new persisted");
}

/// Scenario 42: a REGULAR record with a truncated envelope is dropped and counted; the
/// next record is processed normally.
#[test]
fn f42_truncated_envelope_is_dropped() {
    let mut node = Node::new(FakeSupport::new(limits(1, 1000), true));
    let good = tx("good");
    let truncated = good.slice(..good.len() - 3);
    let commands = node.feed(1, normal(truncated, 0));
    assert!(commands.is_empty());
    assert_eq!(node.chain.counters().process_regular_error, 1);
    assert!(matches!(
        node.chain.last_error(),
        Some(RegularError::UndecodableEnvelope { .. })
    ));
    node.feed(2, normal(good.clone(), 0));
    assert_eq!(node.blocks.len(), 1);
    assert_eq!(node.blocks[0].envelopes, vec![good]);
}

/// §7 (e): a record that is not a KafkaMessage is counted as unmarshal error and skipped.
#[test]
fn undecodable_record_is_skipped() {
    let mut node = Node::new(FakeSupport::new(limits(1, 1000), true));
    let commands = node.feed(1, Bytes::from_static(&[0x0a, 0x05, 0x01]));
    assert!(commands.is_empty());
    let counters = node.chain.counters();
    assert_eq!(counters.unmarshal_error, 1);
    assert_eq!(counters.recv_pass, 0);
}
