//! Raw produce rate through korder's Kafka client settings (idempotent, acks from
//! all in-sync replicas), without ordering: the ceiling `korder bench` on Kafka is
//! compared with. `KORDER_KAFKA_BOOTSTRAP=host:port[,…] cargo bench -p korder-kafka --bench produce`;
//! `KORDER_BENCH_RECORDS` (default 10000), `KORDER_BENCH_SIZE` (default 3000),
//! `KORDER_BENCH_RF` (replication factor of the topic, default 1).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_kafka::{KafkaConfig, KafkaLog};
use korder_log::Log;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let brokers = std::env::var("KORDER_KAFKA_BOOTSTRAP")
        .expect("KORDER_KAFKA_BOOTSTRAP: the brokers to measure (scripts/kafka start prints them)");
    let records = env_or("KORDER_BENCH_RECORDS", 10_000);
    let size = env_or("KORDER_BENCH_SIZE", 3000);
    let rf = env_or("KORDER_BENCH_RF", 1) as i16;
    let mut config = KafkaConfig::new(brokers.split(','));
    config.topic_replication_factor = rf;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    for window in [1usize, 256] {
        let topic = format!("produce-bench-{nanos}-{window}");
        let log = KafkaLog::open(config.clone(), &topic).await.unwrap();
        let value = Bytes::from(vec![0x5a; size]);
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(records);
        type Acked = tokio::task::JoinHandle<Result<korder_log::LogOffset, korder_log::LogError>>;
        let mut in_flight: std::collections::VecDeque<(Instant, Acked)> =
            std::collections::VecDeque::new();
        for _ in 0..records {
            if in_flight.len() == window {
                let (at, acked) = in_flight.pop_front().unwrap();
                acked.await.unwrap().unwrap();
                latencies.push(at.elapsed());
            }
            // The record is queued by the call; the task only waits for its ack.
            in_flight.push_back((Instant::now(), tokio::spawn(log.append(value.clone()))));
        }
        while let Some((at, acked)) = in_flight.pop_front() {
            acked.await.unwrap().unwrap();
            latencies.push(at.elapsed());
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        println!(
            "produce {records} x {size} B, rf {rf}, {window:>3} in flight: {:>8.0} records/s {:>7.1} MB/s  ack ms p50 {:.1} p99 {:.1} max {:.1}",
            records as f64 / elapsed,
            (records * size) as f64 / elapsed / 1e6,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
    }
}
