//! Threads, sockets and librdkafka clients of a process holding N channel logs,
//! each with an open reader (as a running chain has): shows what a node pays per
//! channel.
//!
//! `KORDER_KAFKA_BOOTSTRAP=$(scripts/kafka bootstrap) cargo run -p korder-kafka --example client_threads -- 1 10 100`
//! opens logs on fresh topics until the process holds 1, then 10, then 100, and
//! prints the counts at each step.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_kafka::{KafkaConfig, KafkaLog, live_clients};
use korder_log::{Log, LogReader, ReadFrom};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Open sockets of this process (broker connections, and the socket pairs
/// librdkafka wakes its threads with).
fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

fn main() {
    let brokers = std::env::var("KORDER_KAFKA_BOOTSTRAP")
        .expect("KORDER_KAFKA_BOOTSTRAP: the brokers (scripts/kafka start prints them)");
    let mut steps: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("log counts"))
        .collect();
    if steps.is_empty() {
        steps = vec![1, 10, 100];
    }
    steps.sort_unstable();
    let brokers: Vec<String> = brokers.split(',').map(str::to_owned).collect();
    let mut config = KafkaConfig::new(brokers.clone());
    config.topic_replication_factor = i16::try_from(brokers.len()).unwrap();
    // One blocking thread at most, so that the count of threads is the clients'.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    runtime.block_on(async {
        println!(
            "before any log: {} threads, {} sockets, {} clients",
            threads(),
            sockets(),
            live_clients()
        );
        let mut held = Vec::new();
        for want in steps {
            while held.len() < want {
                let topic = format!("korder-threads-{run}-{}", held.len());
                let log = KafkaLog::open(config.clone(), &topic).await.unwrap();
                log.append(Bytes::from_static(b"x")).await.unwrap();
                let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
                tokio::time::timeout(Duration::from_secs(30), reader.next())
                    .await
                    .unwrap()
                    .unwrap();
                held.push((log, reader));
            }
            println!(
                "{want} logs with a reader each: {} threads, {} sockets, {} clients",
                threads(),
                sockets(),
                live_clients()
            );
        }
    });
}
