//! Sections G, H and I of the test scenarios: REGULAR records in compatibility mode
//! (class UNKNOWN, or resubmission disabled) and with resubmission enabled.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use korder_consensus::*;
use korder_proto::orderer::kafka_message_regular::Class;

fn unknown(env: Bytes, seq: u64) -> Bytes {
    regular_record(env, ConfigSeq::new(seq), Class::Unknown, None)
}

/// The original offset a test record names: 0 means an original submission, as in
/// the record's encoding.
fn resubmission_of(original: i64) -> Option<LogOffset> {
    (original != 0).then_some(LogOffset::new(original))
}

fn normal(env: Bytes, seq: u64, original: i64) -> Bytes {
    regular_record(
        env,
        ConfigSeq::new(seq),
        Class::Normal,
        resubmission_of(original),
    )
}

fn cfg(env: Bytes, seq: u64, original: i64) -> Bytes {
    regular_record(
        env,
        ConfigSeq::new(seq),
        Class::Config,
        resubmission_of(original),
    )
}

fn compat_node(max_count: u32, preferred: u32) -> Node {
    Node::new(FakeSupport::new(limits(max_count, preferred), false))
}

// ---------------------------------------------------------------- G: class UNKNOWN

/// Scenario 43: a valid UNKNOWN-class normal envelope that the cutter keeps is pending,
/// counted as a pass, and written nowhere.
#[test]
fn g43_unknown_normal_becomes_pending() {
    let mut node = Node::new(FakeSupport::new(limits(10, 1000), true));
    node.feed(1, unknown(tx("a"), 0));
    assert_eq!(node.chain.pending_count(), 1);
    assert_eq!(node.chain.counters().process_regular_pass, 1);
    assert_eq!(
        node.support.normal_checks.get(),
        1,
        "compatibility re-validates"
    );
    assert!(node.blocks.is_empty());
}

/// Scenario 44: a valid UNKNOWN-class envelope the cutter cuts on gives one block; the
/// gauge is set once, to that record's offset.
#[test]
fn g44_unknown_normal_cut_writes_block() {
    let mut node = Node::new(FakeSupport::new(limits(1, 1000), true));
    node.feed(5, unknown(tx("a"), 0));
    assert_eq!(node.blocks.len(), 1);
    assert_eq!(node.chain.last_cut(), BlockNumber::new(1));
    assert_eq!(node.gauge, vec![5]);
}

/// Scenario 45 (FAB-5709): envelope 1 pending, envelope 2 overflows, envelope 3 completes a
/// batch: block 1 records offset(env 2) − 1 = offset(env 1), block 2 offset(env 3).
#[test]
fn g45_overflow_then_count_records_right_offsets() {
    let mut node = Node::new(FakeSupport::new(limits(2, 100), true));
    let (e1, e2, e3) = (big_tx("1", 60), big_tx("2", 30), big_tx("3", 10));
    node.feed(4, unknown(e1.clone(), 0));
    node.feed(5, unknown(e2.clone(), 0));
    node.feed(6, unknown(e3.clone(), 0));
    assert_eq!(node.blocks.len(), 2);
    assert_eq!(node.blocks[0].envelopes, vec![e1]);
    assert_eq!(node.blocks[0].metadata.last_offset_persisted, 4);
    assert_eq!(node.blocks[1].envelopes, vec![e2, e3]);
    assert_eq!(node.blocks[1].metadata.last_offset_persisted, 6);
    assert_eq!(node.chain.last_cut(), BlockNumber::new(2));
}

/// Scenarios 46, 47, 48: CONFIG, ORDERER_TRANSACTION and normal envelopes that fail
/// re-validation are dropped and counted; L is unchanged.
#[test]
fn g46_47_48_invalid_envelopes_are_dropped() {
    for env in [config("c!bad"), orderer_tx("o!bad"), tx("t!bad")] {
        let mut node = Node::new(FakeSupport::new(limits(1, 1000), true));
        let commands = node.feed(1, unknown(env, 0));
        assert!(commands.is_empty());
        assert_eq!(node.chain.counters().process_regular_error, 1);
        assert_eq!(node.chain.last_cut(), BlockNumber::GENESIS);
        assert!(node.blocks.is_empty());
    }
}

/// Scenario 49: a valid UNKNOWN-class CONFIG envelope is written alone, as consumed (not the
/// rebuilt one), with persisted = its offset; L + 1.
#[test]
fn g49_unknown_config_writes_config_block() {
    let mut node = Node::new(FakeSupport::new(limits(10, 1000), true));
    let env = config("c");
    let commands = node.feed(7, unknown(env.clone(), 0));
    assert_eq!(
        commands,
        vec![Command::WriteConfigBlock {
            number: BlockNumber::new(1),
            envelope: env,
            metadata: meta(7, 0, 0),
        }]
    );
    assert_eq!(node.support.config_checks.get(), 1);
    assert_eq!(
        node.support.seq,
        ConfigSeq::new(1),
        "the config was applied"
    );
}

/// Scenario 50: a CONFIG_UPDATE in the log is rejected.
#[test]
fn g50_config_update_is_rejected() {
    let mut node = Node::new(FakeSupport::new(limits(1, 1000), true));
    node.feed(1, unknown(config_update("u"), 0));
    assert_eq!(node.chain.counters().process_regular_error, 1);
    assert!(matches!(
        node.chain.last_error(),
        Some(RegularError::ConfigUpdateNotExpected { .. })
    ));
    assert!(node.blocks.is_empty());
}

/// Scenario 51: when the batch timer fires with a pending envelope, exactly one
/// TIMETOCUT(L+1) is appended and no block is cut locally.
#[test]
fn g51_timer_posts_one_time_to_cut() {
    let mut node = Node::new(FakeSupport::new(limits(10, 1000), true));
    node.feed(1, unknown(tx("a"), 0));
    node.fire_timer();
    assert_eq!(node.appended, vec![time_to_cut_record(BlockNumber::new(1))]);
    assert_eq!(node.chain.counters().send_time_to_cut_pass, 1);
    assert!(node.blocks.is_empty());
    node.fire_timer();
    assert_eq!(node.appended.len(), 1, "the timer fired once");
}

/// Scenario 52: the same with a failing append: counted as an error, no block, L unchanged.
#[test]
fn g52_failing_time_to_cut_append() {
    let mut node = Node::new(FakeSupport::new(limits(10, 1000), true));
    node.fail_appends = true;
    node.feed(1, unknown(tx("a"), 0));
    node.fire_timer();
    assert!(node.appended.is_empty());
    assert_eq!(node.chain.counters().send_time_to_cut_error, 1);
    assert!(node.blocks.is_empty());
    assert_eq!(node.chain.last_cut(), BlockNumber::GENESIS);
}

// ---------------------------------------------- H: NORMAL/CONFIG, resubmission disabled

/// Scenario 53: envelope 1 pending, envelope 2 isolated: two blocks with persisted
/// offset(env 1) and offset(env 2); L + 2.
#[test]
fn h53_isolated_envelope_behind_pending() {
    let mut node = compat_node(10, 100);
    let (small, huge) = (tx("small"), big_tx("huge", 200));
    node.feed(3, normal(small.clone(), 0, 0));
    let commands = node.feed(4, normal(huge.clone(), 0, 0));
    let timer = TimerId(1);
    assert_eq!(
        commands,
        vec![
            Command::StopTimer { id: timer },
            Command::WriteBlock {
                number: BlockNumber::new(1),
                envelopes: vec![small],
                metadata: meta(3, 0, 0),
                fill: Fill::Accumulated,
            },
            Command::WriteBlock {
                number: BlockNumber::new(2),
                envelopes: vec![huge],
                metadata: meta(4, 0, 0),
                fill: Fill::Isolated,
            },
        ]
    );
    assert_eq!(node.chain.last_cut(), BlockNumber::new(2));
}

/// Scenario 54: a NORMAL record the cutter cuts on gives one block.
#[test]
fn h54_normal_record_cut_writes_block() {
    let mut node = compat_node(1, 1000);
    node.feed(3, normal(tx("a"), 0, 0));
    assert_eq!(node.blocks.len(), 1);
    assert_eq!(node.blocks[0].metadata, meta(3, 0, 0));
}

/// Scenario 55: a CONFIG record behind a pending normal envelope flushes it (persisted =
/// config offset − 1) and is written alone (persisted = config offset); gauge set twice.
#[test]
fn h55_config_flushes_pending_batch() {
    let mut node = compat_node(10, 1000);
    let (t, c) = (tx("t"), config("c"));
    node.feed(8, normal(t.clone(), 0, 0));
    let commands = node.feed(9, cfg(c.clone(), 0, 0));
    assert_eq!(
        commands,
        vec![
            Command::WriteBlock {
                number: BlockNumber::new(1),
                envelopes: vec![t],
                metadata: meta(8, 0, 0),
                fill: Fill::Accumulated,
            },
            Command::StopTimer { id: TimerId(1) },
            Command::WriteConfigBlock {
                number: BlockNumber::new(2),
                envelope: c,
                metadata: meta(9, 0, 0),
            },
        ]
    );
    assert_eq!(node.gauge, vec![8, 9]);
    assert_eq!(node.chain.last_cut(), BlockNumber::new(2));
}

/// Scenario 56: without resubmission, a CONFIG record from an older sequence that fails
/// re-validation is dropped; no block.
#[test]
fn h56_stale_invalid_config_is_dropped() {
    let mut node = compat_node(10, 1000);
    node.support.seq = ConfigSeq::new(1);
    node.feed(2, cfg(config("c!bad"), 0, 0));
    assert!(node.blocks.is_empty());
    assert_eq!(node.chain.counters().process_regular_error, 1);
    assert!(
        node.appended.is_empty(),
        "compatibility mode never resubmits"
    );
}

/// §9.1: without resubmission even a current-sequence record is re-validated, and a
/// stale valid one is committed directly rather than resubmitted.
#[test]
fn compatibility_commits_stale_valid_records() {
    let mut node = compat_node(1, 1000);
    node.support.seq = ConfigSeq::new(2);
    node.feed(2, normal(tx("a"), 0, 0));
    assert_eq!(node.blocks.len(), 1);
    assert!(node.appended.is_empty());
    assert_eq!(node.support.normal_checks.get(), 1);
}

// ---------------------------------------------------------- I: resubmission enabled

fn resub_node(processed: i64, resubmitted: i64, seq: u64, max_count: u32) -> Node {
    let mut support = FakeSupport::new(limits(max_count, 1000), true);
    support.seq = ConfigSeq::new(seq);
    Node::resumed(
        meta(processed.max(resubmitted), processed, resubmitted),
        2,
        support,
    )
}

/// Scenario 57: a NORMAL resubmission whose original offset is already processed is
/// discarded: no block, counted as a pass.
#[test]
fn i57_processed_normal_resubmission_discarded() {
    let mut node = resub_node(3, 0, 0, 1);
    let commands = node.feed(4, normal(tx("a"), 0, 2));
    assert!(commands.is_empty());
    assert!(node.blocks.is_empty());
    assert_eq!(node.chain.counters().process_regular_pass, 1);
}

/// Scenario 58: a NORMAL resubmission with original offset 4 only becomes pending; the next
/// fresh record completes the batch and the block records processed = 4.
#[test]
fn i58_resubmission_advances_processed() {
    let mut node = resub_node(3, 0, 0, 2);
    node.feed(5, normal(tx("r"), 0, 4));
    assert!(node.blocks.is_empty());
    node.feed(6, normal(tx("f"), 0, 0));
    assert_eq!(node.blocks.len(), 1);
    assert_eq!(node.blocks[0].metadata, meta(6, 4, 0));
}

/// Scenario 59: a stale NORMAL record that fails re-validation is dropped: nothing appended,
/// no block.
#[test]
fn i59_stale_invalid_normal_dropped() {
    let mut node = resub_node(0, 0, 1, 1);
    node.feed(1, normal(tx("a!bad"), 0, 0));
    assert!(node.appended.is_empty());
    assert!(node.blocks.is_empty());
    assert_eq!(node.chain.counters().process_regular_error, 1);
}

/// Scenario 60: a stale valid NORMAL record is re-ordered at the new sequence with its own
/// offset as original offset, ingress stays open; its copy is then committed.
#[test]
fn i60_stale_valid_normal_resubmitted_then_committed() {
    let mut node = resub_node(0, 0, 1, 1);
    let env = tx("a");
    let commands = node.feed(1, normal(env.clone(), 0, 0));
    let resubmission = normal(env.clone(), 1, 1);
    assert_eq!(
        commands,
        vec![Command::Append {
            record: resubmission.clone(),
            purpose: AppendPurpose::ResubmitNormal {
                original: LogOffset::new(1)
            },
        }]
    );
    assert!(node.blocks.is_empty());
    assert!(node.ingress_open);
    node.feed(2, resubmission);
    assert_eq!(node.blocks.len(), 1);
    assert_eq!(node.blocks[0].envelopes, vec![env]);
    assert_eq!(node.blocks[0].metadata, meta(2, 1, 0));
    let counters = node.chain.counters();
    assert_eq!(counters.recv_pass, 2);
    assert_eq!(counters.process_regular_pass, 2);
}

/// Scenario 61: a CONFIG resubmission whose original offset is already processed is discarded.
#[test]
fn i61_processed_config_resubmission_discarded() {
    let mut node = resub_node(3, 0, 0, 1);
    let commands = node.feed(4, cfg(config("c"), 0, 2));
    assert!(commands.is_empty());
    assert!(node.blocks.is_empty());
    assert_eq!(node.support.seq, ConfigSeq::new(0));
}

/// Scenario 62: a stale invalid CONFIG is dropped without resubmission (ingress stays open);
/// another node's resubmission (original 5, current sequence) is committed without
/// re-validation, and its block records resubmitted = 5 and processed = 5.
#[test]
fn i62_follow_another_nodes_config_resubmission() {
    let mut node = resub_node(0, 0, 1, 1);
    node.feed(1, cfg(config("c!bad"), 0, 0));
    assert!(node.appended.is_empty());
    assert!(node.ingress_open);
    let checks = node.support.config_checks.get();
    let env = rebuilt(&config("c2"));
    node.feed(6, cfg(env.clone(), 1, 5));
    assert_eq!(node.support.config_checks.get(), checks, "no re-validation");
    assert_eq!(node.blocks.len(), 1);
    assert!(node.blocks[0].config);
    assert_eq!(node.blocks[0].envelopes, vec![env]);
    assert_eq!(node.blocks[0].metadata, meta(6, 5, 5));
}

/// Scenario 63: with ingress blocked at start (resubmitted 4 > processed 3) and sequence 2,
/// a CONFIG resubmission at sequence 1 is re-validated and re-produced; no block; ingress
/// stays blocked.
#[test]
fn i63_stale_resubmission_resubmitted_again() {
    let mut node = resub_node(3, 4, 2, 1);
    assert!(!node.ingress_open);
    let env = config("c");
    let commands = node.feed(7, cfg(env.clone(), 1, 4));
    assert_eq!(
        commands,
        vec![Command::Append {
            record: cfg(rebuilt(&env), 2, 7),
            purpose: AppendPurpose::ResubmitConfig {
                original: LogOffset::new(7)
            },
        }]
    );
    assert!(node.blocks.is_empty());
    assert!(!node.ingress_open);
    assert_eq!(node.chain.resubmitted(), Some(LogOffset::new(7)));
}

/// Scenario 64: a stale CONFIG that fails re-validation is dropped; no block.
#[test]
fn i64_stale_invalid_config_dropped() {
    let mut node = resub_node(0, 0, 1, 1);
    node.feed(1, cfg(config("c!bad"), 0, 0));
    assert!(node.blocks.is_empty());
    assert_eq!(node.chain.counters().process_regular_error, 1);
    assert!(matches!(
        node.chain.last_error(),
        Some(RegularError::ConfigRejected { .. })
    ));
}

/// Scenario 65: a stale valid CONFIG is re-produced at the new sequence and ingress closes;
/// when the copy is consumed the config block is written and ingress reopens after it.
#[test]
fn i65_config_resubmission_gates_ingress() {
    let mut node = resub_node(0, 0, 1, 1);
    let env = config("c");
    let commands = node.feed(1, cfg(env.clone(), 0, 0));
    let copy = cfg(rebuilt(&env), 1, 1);
    assert_eq!(
        commands,
        vec![
            Command::SetIngress { open: false },
            Command::Append {
                record: copy.clone(),
                purpose: AppendPurpose::ResubmitConfig {
                    original: LogOffset::new(1)
                },
            },
        ]
    );
    assert!(!node.ingress_open);
    let commands = node.feed(2, copy);
    assert_eq!(
        commands,
        vec![
            Command::WriteConfigBlock {
                number: BlockNumber::new(2),
                envelope: rebuilt(&env),
                metadata: meta(2, 1, 1),
            },
            Command::SetIngress { open: true },
        ]
    );
    assert!(node.ingress_open);
    assert_eq!(node.support.seq, ConfigSeq::new(2));
}

/// §6.2: a config resubmission whose append fails is undone: ingress reopens and the
/// resubmitted offset goes back, so the chain is not left gated forever.
#[test]
fn failed_config_resubmission_append_is_undone() {
    let mut node = resub_node(0, 0, 1, 1);
    node.fail_appends = true;
    node.feed(1, cfg(config("c"), 0, 0));
    assert!(node.ingress_open);
    assert_eq!(node.chain.resubmitted(), None);
    assert_eq!(node.chain.counters().process_regular_error, 1);
    assert!(matches!(
        node.chain.last_error(),
        Some(RegularError::ResubmissionNotAppended { .. })
    ));
}

/// §9.5: the flush block before a config block carries the old processed, the config
/// block the new one.
#[test]
fn config_flush_carries_old_processed() {
    let mut node = resub_node(0, 0, 0, 10);
    node.feed(3, normal(tx("a"), 0, 0));
    node.feed(4, cfg(config("c"), 0, 2));
    assert_eq!(node.blocks.len(), 2);
    assert_eq!(node.blocks[0].metadata, meta(3, 0, 2));
    assert_eq!(node.blocks[1].metadata, meta(4, 2, 2));
}

/// §9.4 quirk: on an overflow cut, processed is not advanced to the resubmission's
/// original offset; a later block still shows the old value.
#[test]
fn overflow_does_not_advance_processed() {
    let mut support = FakeSupport::new(limits(10, 100), true);
    support.seq = ConfigSeq::new(0);
    let mut node = Node::new(support);
    node.feed(1, normal(big_tx("a", 60), 0, 0));
    node.feed(3, normal(big_tx("b", 60), 0, 2));
    assert_eq!(node.blocks.len(), 1);
    assert_eq!(node.blocks[0].metadata, meta(2, 0, 0));
    assert_eq!(
        node.chain.processed(),
        LogOffset::new(0),
        "not advanced to 2"
    );
}

/// A REGULAR record with a class outside UNKNOWN/NORMAL/CONFIG is dropped.
#[test]
fn unsupported_class_is_dropped() {
    let mut node = resub_node(0, 0, 0, 1);
    let record = korder_proto::orderer::KafkaMessage {
        r#type: Some(korder_proto::orderer::kafka_message::Type::Regular(
            korder_proto::orderer::KafkaMessageRegular {
                payload: tx("a"),
                config_seq: 0,
                class: 7,
                original_offset: 0,
            },
        )),
    };
    node.feed(
        1,
        Bytes::from(korder_proto::Message::encode_to_vec(&record)),
    );
    assert!(node.blocks.is_empty());
    assert!(matches!(
        node.chain.last_error(),
        Some(RegularError::UnsupportedClass { class: 7, .. })
    ));
}
