//! Section O of the test scenarios (in-memory variants): several nodes on one log,
//! restarts from block metadata, duplicate TIMETOCUTs and resubmission races.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use korder_consensus::*;
use korder_proto::orderer::kafka_message_regular::Class;

/// Two nodes with resubmission and a block per envelope unless said otherwise.
fn cluster(nodes: usize, max_count: u32, preferred: u32) -> Cluster {
    Cluster::new(nodes, FakeSupport::new(limits(max_count, preferred), true))
}

fn count_in_blocks(node: &Node, env: &bytes::Bytes) -> usize {
    node.blocks
        .iter()
        .flat_map(|b| b.envelopes.iter())
        .filter(|e| *e == env)
        .count()
}

fn time_to_cut_records(log: &[bytes::Bytes]) -> usize {
    log.iter()
        .filter(|r| matches!(decode_record((*r).clone()), Ok(Record::TimeToCut(_))))
        .count()
}

/// Fires every running timer and settles until no timer runs.
fn drain(c: &mut Cluster) {
    c.settle();
    for _ in 0..100 {
        if c.nodes.iter().all(|n| n.timer.is_none()) {
            return;
        }
        for n in 0..c.nodes.len() {
            c.fire(n);
        }
        c.settle();
    }
    panic!("timers kept running after 100 rounds");
}

/// A fixed mixed workload: sizes around PreferredMaxBytes, timeouts, config updates, a
/// channel creation, stale submissions and expiring identities.
fn mixed_workload(c: &mut Cluster) {
    for round in 0..6usize {
        for i in 0..5usize {
            let n = (round + i) % c.nodes.len();
            let env = match i {
                0 => big_tx(&format!("r{round}i{i}"), 20 + round * 25),
                1 => tx(&format!("r{round}i{i}#exp{}", round / 2 + 1)),
                2 => big_tx(&format!("r{round}i{i}"), 150),
                3 => tx(&format!("r{round}i{i}!bad")),
                _ => tx(&format!("r{round}i{i}")),
            };
            c.broadcast(n, env);
            c.step((n + 1) % c.nodes.len());
        }
        if round % 2 == 1 {
            let n = round % c.nodes.len();
            c.configure(n, config(&format!("cfg{round} mmc={}", 2 + round)));
        }
        if round == 2 {
            c.configure(0, orderer_tx("create-channel-b"));
        }
        c.step(round % c.nodes.len());
        c.fire(round % c.nodes.len());
    }
    drain(c);
}

/// Scenario 86 (MEM): three nodes on one shared log with a mixed workload write identical
/// blocks, metadata included.
#[test]
fn o86_three_nodes_write_identical_blocks() {
    let mut c = cluster(3, 3, 200);
    mixed_workload(&mut c);
    let reference = &c.nodes[0];
    assert!(reference.blocks.len() > 5, "the workload cuts blocks");
    assert!(reference.blocks.iter().any(|b| b.config));
    assert!(reference.stopped.is_none());
    for node in &c.nodes[1..] {
        assert_eq!(node.blocks, reference.blocks);
        assert!(node.stopped.is_none());
    }
}

/// Scenarios 89 and 90: a node restarted from any block's metadata (crash before the next
/// block reached disk) replays the log and rebuilds the very same later blocks.
#[test]
fn o89_o90_restart_from_any_block_rebuilds_identical_blocks() {
    let mut c = cluster(3, 3, 200);
    mixed_workload(&mut c);
    for node in &c.nodes {
        assert_restarts_rebuild(node, &c.log);
    }
}

/// Scenario 91: a node that crashed with a batch pending after posting its TIMETOCUT
/// rebuilds the batch on replay and cuts it at the first TIMETOCUT, like the others.
#[test]
fn o91_crash_after_posting_time_to_cut() {
    let mut c = cluster(2, 10, 1000);
    c.broadcast(0, tx("a"));
    drain(&mut c);
    let committed = c.nodes[0].blocks.len();
    c.broadcast(1, tx("b"));
    c.broadcast(1, tx("c"));
    c.settle();
    c.fire(0); // node 0 posts TIMETOCUT, then crashes before consuming it
    let crashed = c.nodes[0].restarted_at(c.nodes[0].blocks[committed - 1].number);
    c.fire(1);
    c.settle();
    let mut restarted = crashed;
    restarted.catch_up(&c.log);
    assert_eq!(restarted.blocks, c.nodes[1].blocks);
    let last = restarted.blocks.last().unwrap();
    assert_eq!(last.envelopes, vec![tx("b"), tx("c")]);
    let first_ttc = (0..c.log.len())
        .find(|&o| {
            decode_record(c.log[o].clone()).unwrap()
                == Record::TimeToCut(BlockNumber::new(last.number))
        })
        .unwrap();
    assert_eq!(
        time_to_cut_records(&c.log[first_ttc..]),
        2,
        "both nodes posted one"
    );
    assert!(last.by_time_to_cut);
    assert_eq!(last.metadata.last_offset_persisted, first_ttc as i64);
}

/// Builds the log of scenario 92: a config block, then a stale config resubmitted by node
/// 0, then a normal block cut while the resubmission is in flight.
fn config_in_flight() -> (Cluster, u64, u64) {
    let mut c = cluster(1, 1, 1000);
    c.configure(0, config("first"));
    c.settle();
    let before_stale = c.nodes[0].blocks.last().unwrap().number;
    // Validated at sequence 0, consumed at sequence 1: stale.
    c.log
        .push(configure_record(config("second"), ConfigSeq::new(0)));
    c.log.push(order_record(tx("t"), ConfigSeq::new(1)));
    // Node consumes the stale config (resubmits, gate closes) and the normal record.
    c.step(0);
    c.step(0);
    (c, before_stale, 0)
}

/// Scenario 92: after a crash with a config resubmission in flight, the chain restarts
/// gated, commits the first copy, discards any second copy and reopens ingress; a restart
/// from before the stale config resubmits it again with the same outcome.
#[test]
fn o92_crash_with_config_resubmission_in_flight() {
    let (mut c, before_stale, _) = config_in_flight();
    let node = &c.nodes[0];
    assert!(!node.ingress_open);
    let in_flight = node.blocks.last().unwrap().clone();
    assert!(
        in_flight.metadata.last_resubmitted_config_offset
            > in_flight.metadata.last_original_offset_processed
    );

    // Restart from the block cut while the resubmission was in flight.
    let mut restarted = node.restarted_at(in_flight.number);
    assert!(!restarted.ingress_open, "gate starts closed");
    let mut resumed_from_before = node.restarted_at(before_stale);

    c.settle();
    let live = c.nodes[0].clone();
    assert!(live.ingress_open);
    restarted.catch_up(&c.log);
    assert_eq!(restarted.blocks, live.blocks);
    assert!(restarted.ingress_open);

    // Restart from before the stale config: it is resubmitted a second time.
    let mut log = c.log.clone();
    while resumed_from_before.stopped.is_none() && (resumed_from_before.cursor as usize) < log.len()
    {
        let before = resumed_from_before.appended.len();
        let offset = resumed_from_before.cursor;
        resumed_from_before.feed(offset, log[offset as usize].clone());
        log.extend(resumed_from_before.appended[before..].iter().cloned());
    }
    let copies = log
        .iter()
        .filter(|r| match decode_record((*r).clone()) {
            Ok(Record::Regular(reg)) => {
                reg.class == Class::Config as i32 && reg.original_offset.is_some()
            }
            _ => false,
        })
        .count();
    assert_eq!(copies, 2, "the stale config was resubmitted again");
    assert_eq!(
        resumed_from_before.blocks, live.blocks,
        "second copy discarded"
    );
    assert!(resumed_from_before.ingress_open);
}

/// Scenario 93: a restart right after a TIMETOCUT block resumes with resubmitted = 0
/// (kept byte-compatible with Fabric): blocks match the other nodes except
/// last_resubmitted_config_offset, until the next config resubmission raises it again.
#[test]
fn o93_restart_after_time_to_cut_block() {
    let mut c = cluster(2, 10, 1000);
    c.configure(0, config("first"));
    c.settle();
    // A stale config resubmitted and committed: resubmitted becomes non-zero.
    c.log
        .push(configure_record(config("second"), ConfigSeq::new(0)));
    c.settle();
    assert!(c.nodes[0].chain.resubmitted().is_some_and(|r| r.get() > 0));
    c.broadcast(0, tx("a"));
    c.settle();
    c.fire(0);
    c.settle();
    let ttc_block = c.nodes[0].blocks.last().unwrap().clone();
    assert!(ttc_block.by_time_to_cut);
    assert_eq!(ttc_block.metadata.last_resubmitted_config_offset, 0);

    let mut restarted = c.nodes[0].restarted_at(ttc_block.number);
    assert_eq!(restarted.chain.resubmitted(), None);
    c.broadcast(1, big_tx("b", 2000)); // isolated: a block not cut by TIMETOCUT
    c.settle();
    restarted.catch_up(&c.log);
    let live = &c.nodes[0];
    assert_eq!(
        without_resubmitted(&restarted.blocks),
        without_resubmitted(&live.blocks)
    );
    let after = live.blocks.last().unwrap();
    assert_ne!(
        restarted.blocks.last().unwrap().metadata,
        after.metadata,
        "only last_resubmitted_config_offset differs"
    );

    // The next config resubmission brings them back in line.
    let seq = c.nodes[1].support.seq;
    c.log.push(configure_record(
        config("third"),
        ConfigSeq::new(seq.get() - 1),
    ));
    c.settle();
    restarted.catch_up(&c.log);
    assert_eq!(
        restarted.blocks.last().unwrap(),
        c.nodes[0].blocks.last().unwrap()
    );
}

/// Scenario 100: five nodes with trickle traffic: each timeout adds up to five TIMETOCUT
/// records but exactly one block.
#[test]
fn o100_five_timeouts_one_block() {
    let mut c = cluster(5, 100, 100_000);
    for round in 0..4 {
        c.broadcast(round % 5, tx(&format!("t{round}")));
        c.settle();
        let before_ttc = time_to_cut_records(&c.log);
        let before_blocks = c.nodes[0].blocks.len();
        for n in 0..5 {
            c.fire(n);
        }
        c.settle();
        assert_eq!(time_to_cut_records(&c.log) - before_ttc, 5);
        assert_eq!(c.nodes[0].blocks.len() - before_blocks, 1);
    }
    for node in &c.nodes {
        assert_eq!(node.blocks, c.nodes[0].blocks);
        assert_eq!(node.blocks.len(), 4);
    }
}

/// Scenario 101: normal transactions validated at sequence s and consumed after config
/// s+1 are resubmitted at most once per node and committed exactly once; ingress is
/// never held for normal resubmissions.
#[test]
fn o101_stale_normals_committed_exactly_once() {
    let mut c = cluster(3, 1, 100_000);
    c.configure(0, config("cfg"));
    let txs: Vec<_> = (0..8).map(|i| tx(&format!("stale{i}"))).collect();
    for (i, env) in txs.iter().enumerate() {
        c.broadcast(i % 3, env.clone()); // stamped with sequence 0
    }
    c.settle();
    for node in &c.nodes {
        assert!(node.ingress_open);
        for env in &txs {
            assert_eq!(count_in_blocks(node, env), 1);
        }
        assert!(
            node.appended.len() <= txs.len(),
            "at most one resubmission each"
        );
        assert_eq!(node.blocks, c.nodes[0].blocks);
    }
}

/// Scenario 110: a resubmitted normal envelope that causes an overflow cut does not advance
/// processed, so another node's copy of it is committed too, identically everywhere.
#[test]
fn o110_overflow_lets_a_second_copy_in() {
    let mut c = cluster(2, 10, 100);
    c.configure(0, config("cfg"));
    let x = big_tx("x", 60);
    c.log.push(order_record(x.clone(), ConfigSeq::new(0))); // stale
    c.log.push(order_record(big_tx("p", 60), ConfigSeq::new(1)));
    c.step(0);
    c.step(0); // node 0 resubmits x
    c.step(1);
    c.step(1); // node 1 resubmits x
    drain(&mut c);
    for node in &c.nodes {
        assert_eq!(count_in_blocks(node, &x), 2);
        assert_eq!(node.blocks, c.nodes[0].blocks);
    }
}

/// Scenario 112: node A resubmits X1 while node B, judging X1 invalid, resubmits only X2;
/// B's copy lands first, so A's copy of X1 is discarded on every node alike.
#[test]
fn o112_resubmission_race_loses_x1_everywhere() {
    let mut c = cluster(2, 1, 100_000);
    let (x1, x2) = (tx("x1"), tx("x2"));
    c.nodes[1].support.reject_normal.insert(x1.clone());
    c.configure(0, config("cfg"));
    c.log.push(order_record(x1.clone(), ConfigSeq::new(0)));
    c.log.push(order_record(x2.clone(), ConfigSeq::new(0)));
    // Offsets: 0 CONNECT, 1 config, 2 X1, 3 X2. Node B consumes them all first.
    for _ in 0..4 {
        c.step(1);
    }
    for _ in 0..4 {
        c.step(0);
    }
    c.settle();
    for node in &c.nodes {
        assert_eq!(count_in_blocks(node, &x1), 0, "X1 is lost");
        assert_eq!(count_in_blocks(node, &x2), 1);
        assert_eq!(node.blocks, c.nodes[0].blocks);
    }
}

/// The overflow quirk (§9.4) across a restart: a node restarted on the overflow block
/// whose pending envelope is a resubmission advances processed where a node that never
/// stopped does not (Fabric behaves the same); the chains then differ only if another
/// copy of that resubmission follows.
#[test]
fn restart_on_overflow_block_advances_processed() {
    let mut c = cluster(1, 10, 100);
    c.configure(0, config("cfg"));
    c.log.push(order_record(big_tx("p", 60), ConfigSeq::new(1)));
    c.log.push(order_record(big_tx("x", 60), ConfigSeq::new(0))); // stale: resubmitted
    c.settle();
    let live = &c.nodes[0];
    let overflow = live.blocks.last().unwrap();
    assert_eq!(overflow.envelopes, vec![big_tx("p", 60)]);
    assert_eq!(
        live.chain.processed(),
        LogOffset::new(0),
        "not advanced on overflow"
    );
    let mut restarted = live.restarted_at(overflow.number);
    restarted.catch_up(&c.log);
    assert_eq!(
        restarted.chain.processed(),
        LogOffset::new(3),
        "advanced after restart"
    );
    assert_eq!(restarted.chain.pending_count(), live.chain.pending_count());
}
