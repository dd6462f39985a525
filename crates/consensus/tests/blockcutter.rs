//! Section A of the test scenarios: the block cutter.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use korder_consensus::{BlockCutter, Fill, SizedEnvelope};
use korder_proto::Message;
use korder_proto::common::Envelope;
use korder_proto::orderer::BatchSize;

/// Scenario envelope E: 20-byte payload and 20-byte signature (size 40).
fn e() -> SizedEnvelope {
    sized(20, 20)
}

fn sized(payload: usize, signature: usize) -> SizedEnvelope {
    let bytes = Envelope {
        payload: Bytes::from(vec![7u8; payload]),
        signature: Bytes::from(vec![9u8; signature]),
    }
    .encode_to_vec();
    SizedEnvelope::decode(Bytes::from(bytes)).unwrap()
}

fn limits(max_message_count: u32, preferred_max_bytes: u32) -> BatchSize {
    BatchSize {
        max_message_count,
        absolute_max_bytes: 1000,
        preferred_max_bytes,
    }
}

/// The size the cutter counts is len(payload) + len(signature), not the encoded size.
#[test]
fn size_is_payload_plus_signature() {
    let env = e();
    assert_eq!(env.size(), 40);
    assert!(env.bytes().len() > 40);
}

/// Scenario 1: one E under MaxMessageCount 2 stays pending, nothing cut, no fill observed.
#[test]
fn a1_single_envelope_stays_pending() {
    let mut cutter = BlockCutter::new();
    let ordered = cutter.ordered(e(), &limits(2, 100));
    assert!(ordered.batches.is_empty());
    assert!(ordered.pending);
    assert!(ordered.started_pending, "a new pending batch begins here");
    assert_eq!(cutter.pending_count(), 1);
}

/// Scenario 2: the second E reaches MaxMessageCount 2: one batch of two, nothing pending,
/// exactly one accumulated fill to observe.
#[test]
fn a2_count_reached_cuts_one_batch() {
    let mut cutter = BlockCutter::new();
    let first = e();
    let second = e();
    cutter.ordered(first.clone(), &limits(2, 100));
    let ordered = cutter.ordered(second.clone(), &limits(2, 100));
    assert_eq!(ordered.batches.len(), 1);
    assert_eq!(
        ordered.batches[0].envelopes,
        vec![first.bytes().clone(), second.bytes().clone()]
    );
    assert_eq!(ordered.batches[0].fill, Fill::Accumulated);
    assert!(!ordered.pending);
    assert!(!ordered.started_pending);
    assert_eq!(cutter.pending_count(), 0);
}

/// Scenario 3: with MaxMessageCount 3, two E stay pending and nothing is cut.
#[test]
fn a3_below_count_keeps_pending() {
    let mut cutter = BlockCutter::new();
    let one = cutter.ordered(e(), &limits(3, 100));
    let two = cutter.ordered(e(), &limits(3, 100));
    assert!(one.batches.is_empty() && one.pending);
    assert!(two.batches.is_empty() && two.pending);
    assert!(
        !two.started_pending,
        "the second envelope joins the running batch"
    );
    assert_eq!(cutter.pending_count(), 2);
    assert_eq!(cutter.pending_bytes(), 80);
}

/// Scenario 4: E above PreferredMaxBytes 30 with nothing pending comes back alone, isolated
/// (fill duration 0), nothing pending.
#[test]
fn a4_oversized_envelope_is_isolated() {
    let mut cutter = BlockCutter::new();
    let env = e();
    let ordered = cutter.ordered(env.clone(), &limits(2, 30));
    assert_eq!(ordered.batches.len(), 1);
    assert_eq!(ordered.batches[0].envelopes, vec![env.bytes().clone()]);
    assert_eq!(ordered.batches[0].fill, Fill::Isolated);
    assert!(!ordered.pending);
}

/// Scenario 5: overflow with PreferredMaxBytes 50: the pending E is cut alone, the new E
/// starts a new pending batch; one accumulated fill.
#[test]
fn a5_overflow_cuts_pending_and_restarts() {
    let mut cutter = BlockCutter::new();
    let first = e();
    let second = e();
    cutter.ordered(first.clone(), &limits(3, 50));
    let ordered = cutter.ordered(second.clone(), &limits(3, 50));
    assert_eq!(ordered.batches.len(), 1);
    assert_eq!(ordered.batches[0].envelopes, vec![first.bytes().clone()]);
    assert_eq!(ordered.batches[0].fill, Fill::Accumulated);
    assert!(ordered.pending);
    assert!(
        ordered.started_pending,
        "the overflow starts a new pending batch"
    );
    assert_eq!(cutter.cut(), vec![second.bytes().clone()]);
}

/// Scenario 6: a 1000-byte envelope behind a pending E: two batches (pending E, then the big
/// one alone), nothing pending; the second fill is isolated (0).
#[test]
fn a6_big_envelope_behind_pending_gives_two_batches() {
    let mut cutter = BlockCutter::new();
    let small = e();
    let big = sized(980, 20);
    cutter.ordered(small.clone(), &limits(3, 50));
    let ordered = cutter.ordered(big.clone(), &limits(3, 50));
    assert_eq!(ordered.batches.len(), 2);
    assert_eq!(ordered.batches[0].envelopes, vec![small.bytes().clone()]);
    assert_eq!(ordered.batches[0].fill, Fill::Accumulated);
    assert_eq!(ordered.batches[1].envelopes, vec![big.bytes().clone()]);
    assert_eq!(ordered.batches[1].fill, Fill::Isolated);
    assert!(!ordered.pending);
    assert_eq!(cutter.pending_count(), 0);
}

/// Scenario 8: Cut with nothing pending returns nothing.
#[test]
fn a8_empty_cut_returns_nothing() {
    let mut cutter = BlockCutter::new();
    assert!(cutter.cut().is_empty());
    cutter.ordered(e(), &limits(3, 100));
    assert_eq!(cutter.cut().len(), 1);
    assert!(cutter.cut().is_empty(), "cut resets the pending batch");
}

/// Edges of §10: a size equal to PreferredMaxBytes is batched, and a total equal to it fits.
#[test]
fn exact_preferred_size_is_batched_not_isolated() {
    let mut cutter = BlockCutter::new();
    let ordered = cutter.ordered(e(), &limits(10, 40));
    assert!(ordered.batches.is_empty() && ordered.pending);
    let mut cutter = BlockCutter::new();
    cutter.ordered(e(), &limits(10, 80));
    let ordered = cutter.ordered(e(), &limits(10, 80));
    assert!(ordered.batches.is_empty(), "40 + 40 = 80 fits exactly");
    let ordered = cutter.ordered(e(), &limits(10, 80));
    assert_eq!(ordered.batches.len(), 1, "120 > 80 overflows");
}

/// MaxMessageCount 1 gives one envelope per batch and never leaves anything pending.
#[test]
fn max_count_one_cuts_every_envelope() {
    let mut cutter = BlockCutter::new();
    for _ in 0..3 {
        let ordered = cutter.ordered(e(), &limits(1, 100));
        assert_eq!(ordered.batches.len(), 1);
        assert_eq!(ordered.batches[0].envelopes.len(), 1);
        assert!(!ordered.pending);
    }
}
