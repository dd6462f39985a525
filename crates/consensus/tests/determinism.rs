//! Properties: machines fed the same records emit the same commands, and a machine
//! restarted from any block's metadata rebuilds the same later blocks.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use korder_consensus::*;
use korder_proto::orderer::kafka_message_regular::Class;
use proptest::prelude::*;

/// One record to append to the log, resolved against the first machine's state when
/// it is fed (so that TIMETOCUT numbers and sequences are mostly plausible).
#[derive(Clone, Debug)]
enum Spec {
    Connect,
    Garbage,
    /// TIMETOCUT(L + 1 − back).
    TimeToCut {
        back: u64,
    },
    Regular {
        kind: u8,
        data_len: usize,
        bad: bool,
        expires: Option<u64>,
        class: i32,
        stale: bool,
        /// Original offset = this fraction (in 1/8) of the current offset, if set.
        original: Option<u8>,
    },
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        1 => Just(Spec::Connect),
        1 => Just(Spec::Garbage),
        3 => prop_oneof![Just(0u64), Just(0), Just(0), Just(1)]
            .prop_map(|back| Spec::TimeToCut { back }),
        12 => (
            0u8..10,
            0usize..160,
            prop::bool::weighted(0.1),
            prop::option::weighted(0.2, 1u64..4),
            prop_oneof![1 => Just(0i32), 6 => Just(1), 3 => Just(2), 1 => Just(5)],
            prop::bool::weighted(0.3),
            prop::option::weighted(0.2, 0u8..9),
        )
            .prop_map(|(kind, data_len, bad, expires, class, stale, original)| {
                Spec::Regular { kind, data_len, bad, expires, class, stale, original }
            }),
    ]
}

fn resolve(spec: &Spec, offset: i64, node: &Node) -> Bytes {
    match spec {
        Spec::Connect => connect_record(),
        Spec::Garbage => Bytes::from_static(&[0x0a, 0x05, 0x01]),
        Spec::TimeToCut { back } => time_to_cut_record(BlockNumber::new(
            node.chain.last_cut().height().saturating_sub(*back),
        )),
        Spec::Regular {
            kind,
            data_len,
            bad,
            expires,
            class,
            stale,
            original,
        } => {
            let mut tag = format!("o{offset}");
            if *bad {
                tag.push_str("!bad");
            }
            if let Some(k) = expires {
                tag.push_str(&format!("#exp{k}"));
            }
            let env = match kind {
                0 => config(&format!("{tag} mmc={}", 1 + data_len % 4)),
                1 => orderer_tx(&tag),
                2 => config_update(&tag),
                3 => Bytes::from_static(b"\x0a\x09truncated"),
                _ => big_tx(&tag, *data_len),
            };
            let seq = node.support.seq.get();
            let seq = if *stale { seq.saturating_sub(1) } else { seq };
            let original = original.map_or(0, |f| offset * i64::from(f) / 8);
            let class = match class {
                0 => Class::Unknown as i32,
                other => *other,
            };
            let record = korder_proto::orderer::KafkaMessage {
                r#type: Some(korder_proto::orderer::kafka_message::Type::Regular(
                    korder_proto::orderer::KafkaMessageRegular {
                        payload: env,
                        config_seq: seq,
                        class,
                        original_offset: original,
                    },
                )),
            };
            Bytes::from(korder_proto::Message::encode_to_vec(&record))
        }
    }
}

/// An action in a closed-loop cluster run.
#[derive(Clone, Debug)]
enum Action {
    Broadcast {
        node: usize,
        data_len: usize,
        expires: Option<u64>,
        bad: bool,
    },
    Configure {
        node: usize,
        max_count: u32,
    },
    Step {
        node: usize,
    },
    Fire {
        node: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0usize..3, 0usize..120, prop::option::weighted(0.2, 1u64..4), prop::bool::weighted(0.05))
            .prop_map(|(node, data_len, expires, bad)| Action::Broadcast { node, data_len, expires, bad }),
        1 => (0usize..3, 1u32..5).prop_map(|(node, max_count)| Action::Configure { node, max_count }),
        8 => (0usize..3).prop_map(|node| Action::Step { node }),
        2 => (0usize..3).prop_map(|node| Action::Fire { node }),
    ]
}

/// The early-cut horizon of the cluster node that has the policy.
const EARLY_CUT: std::time::Duration = std::time::Duration::from_millis(100);

fn run_cluster(actions: &[Action], resubmission: bool, early_cut_node: Option<usize>) -> Cluster {
    let mut c = Cluster::new(3, FakeSupport::new(limits(3, 150), resubmission));
    if let Some(n) = early_cut_node {
        c.nodes[n].chain = c.nodes[n].chain.clone().with_early_cut(Some(EARLY_CUT));
    }
    for (i, a) in actions.iter().enumerate() {
        match a {
            Action::Broadcast {
                node,
                data_len,
                expires,
                bad,
            } => {
                let mut tag = format!("a{i}");
                if let Some(k) = expires {
                    tag.push_str(&format!("#exp{k}"));
                }
                if *bad {
                    tag.push_str("!bad");
                }
                c.broadcast(*node, big_tx(&tag, *data_len));
            }
            Action::Configure { node, max_count } => {
                c.configure(*node, config(&format!("c{i} mmc={max_count}")));
            }
            Action::Step { node } => c.step(*node),
            Action::Fire { node } => c.fire(*node),
        }
    }
    c.settle();
    for _ in 0..50 {
        if c.nodes.iter().all(|n| n.timer.is_none()) {
            break;
        }
        for n in 0..3 {
            c.fire(n);
        }
        c.settle();
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Two machines fed the same random records emit identical commands, record by
    /// record; a machine restarted from any block it wrote rebuilds the same later blocks.
    #[test]
    fn same_records_same_commands_and_restart_rebuilds(
        specs in prop::collection::vec(spec(), 1..80),
        resubmission in any::<bool>(),
        max_count in 1u32..5,
    ) {
        let support = FakeSupport::new(limits(max_count, 120), resubmission);
        let mut a = Node::new(support.clone());
        let mut b = Node::new(support);
        let mut log = vec![connect_record()];
        a.feed(0, connect_record());
        b.feed(0, connect_record());
        for (index, spec) in specs.iter().enumerate() {
            if a.stopped.is_some() {
                break;
            }
            let offset = index as i64 + 1;
            let record = resolve(spec, offset, &a);
            log.push(record.clone());
            let from_a = a.feed(offset, record.clone());
            let from_b = b.feed(offset, record);
            prop_assert_eq!(from_a, from_b);
            if let Some(id) = a.timer.filter(|_| offset % 5 == 4) {
                let fired_a = a.chain.on_timer_fired(id);
                let fired_b = b.chain.on_timer_fired(id);
                prop_assert_eq!(&fired_a, &fired_b);
                a.timer = None;
                b.timer = None;
            }
        }
        prop_assert_eq!(&a.blocks, &b.blocks);
        prop_assert_eq!(a.chain.counters(), b.chain.counters());
        assert_restarts_rebuild(&a, &log);
    }

    /// Scenario 86 (MEM), randomised: three nodes sharing one log, with random
    /// interleavings, timers and config changes, write identical blocks, also when one
    /// of them cuts early; restarts from any block rebuild them.
    #[test]
    fn cluster_nodes_agree_and_restarts_rebuild(
        actions in prop::collection::vec(action(), 1..60),
        resubmission in any::<bool>(),
        early_cut_node in prop::option::of(0usize..3),
    ) {
        let c = run_cluster(&actions, resubmission, early_cut_node);
        for node in &c.nodes {
            prop_assert!(node.stopped.is_none(), "{:?}", node.stopped);
            prop_assert_eq!(&node.blocks, &c.nodes[0].blocks);
        }
        assert_restarts_rebuild(&c.nodes[0], &c.log);
    }
}
