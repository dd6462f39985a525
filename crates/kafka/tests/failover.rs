//! KafkaLog across the loss of the partition leader, on a real 3-broker cluster.
//!
//! Kills and restarts brokers of the three-broker cluster that `scripts/test` starts
//! (`KORDER_KAFKA3_BOOTSTRAP`, with its state directory in `KORDER_KAFKA3_STATE`).
//! By hand: `KORDER_KAFKA_STATE=/tmp/k3 scripts/kafka start --brokers 3`, then
//! `KORDER_KAFKA3_STATE=/tmp/k3 KORDER_KAFKA3_BOOTSTRAP=$(KORDER_KAFKA_STATE=/tmp/k3 scripts/kafka bootstrap) cargo test -p korder-kafka --test failover`.
#![allow(clippy::unwrap_used)] // test helpers; failures should panic

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_kafka::{KafkaConfig, KafkaLog};
use korder_log::{Log, LogError, LogOffset, LogReader, ReadFrom};

const WAIT: Duration = Duration::from_secs(60);

fn bootstrap() -> Vec<String> {
    let list = std::env::var("KORDER_KAFKA3_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA3_BOOTSTRAP is not set: run the suite with scripts/test, which starts \
             a three-broker Kafka (see this file's header to run it by hand)"
        )
    });
    let brokers: Vec<String> = list.split(',').map(str::to_owned).collect();
    assert_eq!(
        brokers.len(),
        3,
        "the failover test needs `scripts/kafka start --brokers 3`, got {list}"
    );
    brokers
}

/// Runs `scripts/kafka ARGS` (blocking) and asserts it succeeded.
async fn script(args: &[&str]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let state = std::env::var("KORDER_KAFKA3_STATE")
        .expect("KORDER_KAFKA3_STATE names the three-broker cluster's state directory");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&path)
            .args(&args)
            .env("KORDER_KAFKA_STATE", state)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "scripts/kafka failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With replication factor 3 and min.insync.replicas 2, killing the partition
/// leader while records are appended loses no acknowledged record: every append
/// either fails or is readable afterwards exactly once at its acknowledged offset,
/// and appends succeed again under the new leader without reopening the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_loss_keeps_every_acknowledged_record() {
    let mut cfg = KafkaConfig::new(bootstrap());
    cfg.topic_replication_factor = 3;
    cfg.retry.read_timeout = Duration::from_secs(10);
    cfg.retry.write_timeout = Duration::from_secs(10);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let log = KafkaLog::open(cfg, &format!("korder-test-failover-{nanos}"))
        .await
        .unwrap();
    let value = |i: usize| Bytes::from(format!("failover-{i}"));

    let mut acked: HashMap<i64, Bytes> = HashMap::new();
    let mut failed = 0usize;
    for i in 0..20 {
        acked.insert(log.append(value(i)).await.unwrap().get(), value(i));
    }
    let leader = log
        .leader_id()
        .await
        .unwrap()
        .expect("partition 0 has a leader");
    script(&["kill-broker", &leader.to_string()]).await;

    // Appends go on until a new leader has acknowledged at least 20 more records.
    let mut after_kill = 0;
    let mut i = 20;
    let deadline = tokio::time::Instant::now() + WAIT;
    while after_kill < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader accepted 20 records within {WAIT:?}"
        );
        match log.append(value(i)).await {
            Ok(o) => {
                let o = o.get();
                assert!(
                    acked.insert(o, value(i)).is_none(),
                    "offset {o} acknowledged twice"
                );
                after_kill += 1;
            }
            Err(LogError::Unavailable(msg)) => {
                tracing::info!("append {i} failed during failover: {msg}");
                failed += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        i += 1;
    }
    let new_leader = log.leader_id().await.unwrap();
    assert!(
        new_leader.is_some() && new_leader != Some(leader),
        "{new_leader:?}"
    );
    script(&["start-broker", &leader.to_string()]).await;

    let (_, end) = log.watermarks().await.unwrap();
    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    let mut seen_values = HashMap::new();
    for expected in 0..end {
        let r = tokio::time::timeout(WAIT, reader.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.offset, LogOffset::new(expected));
        if let Some(v) = acked.get(&expected) {
            assert_eq!(&r.value, v, "offset {expected}");
        }
        assert!(
            seen_values.insert(r.value.clone(), expected).is_none(),
            "value {:?} written twice",
            r.value
        );
    }
    assert!(
        acked.keys().all(|o| *o < end),
        "an acknowledged offset is past the end {end}"
    );
    assert!(
        usize::try_from(end).unwrap() <= acked.len() + failed,
        "log end {end} exceeds {} acknowledged + {failed} failed appends",
        acked.len()
    );
}
