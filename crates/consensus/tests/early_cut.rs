//! The early-cut policy: a node that posts the TIMETOCUT of a batch filling too
//! slowly to be full within the horizon, checked every horizon / 20.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use korder_consensus::*;

const HORIZON: Duration = Duration::from_millis(100);
const CHECK: Duration = Duration::from_millis(5);

fn normal(env: Bytes) -> Bytes {
    order_record(env, ConfigSeq::new(0))
}

/// A node for a new channel with the early-cut policy and these batch limits.
fn early_node(max_count: u32, preferred_bytes: u32, batch_timeout: Duration) -> Node {
    let mut support = FakeSupport::new(limits(max_count, preferred_bytes), true);
    support.timeout = batch_timeout;
    let chain = Chain::new(None, 1).unwrap().with_early_cut(Some(HORIZON));
    Node::with_chain(chain, support)
}

fn started_timer(commands: &[Command]) -> Option<Duration> {
    commands.iter().find_map(|c| match c {
        Command::StartTimer { timeout, .. } => Some(*timeout),
        _ => None,
    })
}

fn time_to_cut_of(commands: &[Command]) -> Option<BlockNumber> {
    commands.iter().find_map(|c| match c {
        Command::Append {
            purpose: AppendPurpose::TimeToCut { block },
            ..
        } => Some(*block),
        _ => None,
    })
}

/// One envelope in a batch of 500: the first check, 5 ms after it, finds the batch
/// far too slow and posts TIMETOCUT(1); the block is cut when the record returns.
#[test]
fn a_slow_batch_is_cut_at_the_first_check() {
    let mut node = early_node(500, 1 << 20, Duration::from_secs(2));
    let commands = node.feed(0, normal(tx("a")));
    assert_eq!(
        started_timer(&commands),
        Some(CHECK),
        "the first check, not the 2 s timeout"
    );
    let fired = node.fire_timer();
    assert_eq!(time_to_cut_of(&fired), Some(BlockNumber::new(1)));
    assert_eq!(node.chain.timer(), None);
    node.feed(1, time_to_cut_record(BlockNumber::new(1)));
    assert_eq!(node.blocks.len(), 1);
    assert_eq!(node.blocks[0].envelopes, vec![tx("a")]);
}

/// A batch filling fast enough to be full within the horizon is checked again, not
/// cut; once its rate falls below that, it is cut.
#[test]
fn a_batch_on_course_to_fill_waits_for_the_next_check() {
    let mut node = early_node(500, 1 << 20, Duration::from_secs(2));
    // 25 of 500 after one check of 20: exactly on course.
    for i in 0..25 {
        node.feed(i, normal(tx(&format!("a{i}"))));
    }
    let fired = node.fire_timer();
    assert_eq!(time_to_cut_of(&fired), None, "on course: no cut");
    assert_eq!(started_timer(&fired), Some(CHECK), "checked again");
    // Still 25 after two checks: behind.
    let fired = node.fire_timer();
    assert_eq!(time_to_cut_of(&fired), Some(BlockNumber::new(1)));
}

/// A batch filling by bytes rather than by count is on course as well.
#[test]
fn bytes_count_toward_the_fill() {
    let mut node = early_node(500, 20_000, Duration::from_secs(2));
    // One envelope of more than 1,000 bytes: over 1/20 of PreferredMaxBytes.
    node.feed(0, normal(big_tx("a", 1_100)));
    let fired = node.fire_timer();
    assert_eq!(time_to_cut_of(&fired), None);
}

/// A batch on course at every check is cut when the BatchTimeout comes first: here
/// 12 ms, the third check.
#[test]
fn the_batch_timeout_still_bounds_the_wait() {
    let mut node = early_node(500, 1 << 20, Duration::from_millis(12));
    let mut offset = 0;
    for check in 1..=3 {
        for _ in 0..25 {
            node.feed(offset, normal(tx(&format!("a{offset}"))));
            offset += 1;
        }
        let fired = node.fire_timer();
        let cut = time_to_cut_of(&fired);
        assert_eq!(cut.is_some(), check == 3, "check {check}: {fired:?}");
    }
}

/// A batch on course for nineteen checks, and one envelope short of full at the
/// horizon, is cut at the horizon (the twentieth check).
#[test]
fn the_horizon_bounds_the_wait() {
    let mut node = early_node(1_000, 1 << 20, Duration::from_secs(2));
    let mut offset = 0;
    let mut cut_at = None;
    for check in 1..=20 {
        for _ in 0..(if check == 20 { 49 } else { 50 }) {
            node.feed(offset, normal(tx(&format!("a{offset}"))));
            offset += 1;
        }
        if time_to_cut_of(&node.fire_timer()).is_some() {
            cut_at = Some(check);
            break;
        }
    }
    assert_eq!(cut_at, Some(20));
}

/// A BatchTimeout no longer than one check leaves the timeout alone in charge.
#[test]
fn a_short_batch_timeout_is_used_as_is() {
    let mut node = early_node(500, 1 << 20, Duration::from_millis(4));
    let commands = node.feed(0, normal(tx("a")));
    assert_eq!(started_timer(&commands), Some(Duration::from_millis(4)));
}

/// Without the policy the batch timer is the BatchTimeout and its firing always
/// posts the TIMETOCUT.
#[test]
fn without_the_policy_the_batch_timeout_cuts() {
    let support = FakeSupport::new(limits(500, 1 << 20), true);
    let mut node = Node::with_chain(Chain::new(None, 1).unwrap().with_early_cut(None), support);
    let commands = node.feed(0, normal(tx("a")));
    assert_eq!(started_timer(&commands), Some(TIMEOUT));
    assert_eq!(
        time_to_cut_of(&node.fire_timer()),
        Some(BlockNumber::new(1))
    );
}

/// A batch cut by size stops the checks; the next batch starts its own.
#[test]
fn a_block_cut_by_size_stops_the_checks() {
    let mut node = early_node(2, 1 << 20, Duration::from_secs(2));
    node.feed(0, normal(tx("a")));
    let commands = node.feed(1, normal(tx("b")));
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::StopTimer { .. })),
        "{commands:?}"
    );
    assert_eq!(node.chain.timer(), None);
    assert_eq!(node.blocks.len(), 1);
    let commands = node.feed(2, normal(tx("c")));
    assert_eq!(started_timer(&commands), Some(CHECK));
}
