//! The librdkafka clients shared by every KafkaLog of the process, against a real
//! Apache Kafka cluster (see kafka_log.rs for how to start one).
//!
//! These tests count the process's live clients and threads, so they run one at a
//! time, each after the clients of the previous one are closed.

#![allow(clippy::unwrap_used)] // test helpers; failures should panic

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_kafka::{KafkaConfig, KafkaLog, KafkaReader, live_clients, wait_for_clients_closed};
use korder_log::{Log, LogOffset, LogReader, LogRecord, ReadFrom};

/// Upper bound on any single wait in these tests (not a timing assertion: a test
/// that hits it has hung).
const WAIT: Duration = Duration::from_secs(30);

/// One test at a time: they count process-wide clients and threads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config() -> KafkaConfig {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
    let list = std::env::var("KORDER_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA_BOOTSTRAP is not set: these tests need a real Kafka broker. \
             Run `scripts/kafka start` (from the repository root) and then \
             `KORDER_KAFKA_BOOTSTRAP=$(scripts/kafka bootstrap) cargo test -p korder-kafka`"
        )
    });
    let brokers: Vec<String> = list.split(',').map(str::to_owned).collect();
    let mut c = KafkaConfig::new(brokers.clone());
    c.topic_replication_factor = i16::try_from(brokers.len()).unwrap();
    c.retry.dial_timeout = Duration::from_secs(5);
    c.retry.read_timeout = Duration::from_secs(10);
    c.retry.write_timeout = Duration::from_secs(10);
    c
}

fn fresh_topic(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("korder-test-{name}-{}-{nanos}", std::process::id())
}

fn value(log: usize, i: i64) -> Bytes {
    Bytes::from(format!("log-{log}-record-{i}"))
}

async fn next(reader: &mut KafkaReader) -> LogRecord {
    tokio::time::timeout(WAIT, reader.next())
        .await
        .expect("no record within the wait bound")
        .unwrap()
}

/// The threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Waits for the clients of an earlier test to be destroyed.
fn no_clients_left() {
    assert!(
        wait_for_clients_closed(WAIT),
        "{} Kafka clients of an earlier test are still open",
        live_clients()
    );
}

/// Fifty logs on fifty topics, each appended to and read back by a reader of its
/// own that stays open, run on the librdkafka clients and threads of five logs: a
/// producer, a consumer and an admin client for the process; and every reader
/// still follows its own topic.
#[test]
fn fifty_logs_run_on_the_clients_and_threads_of_five() {
    let _serial = SERIAL.blocking_lock();
    // One blocking thread at most, so that the count of threads is the clients'.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async {
        no_clients_left();
        let mut logs = Vec::new();
        let mut at_five = None;
        for n in 0..50 {
            let log = KafkaLog::open(config(), &fresh_topic(&format!("many-{n}")))
                .await
                .unwrap();
            for i in 0..2 {
                assert_eq!(log.append(value(n, i)).await.unwrap(), LogOffset::new(i));
            }
            let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
            for i in 0..2 {
                let r = next(&mut reader).await;
                assert_eq!((r.offset, r.value), (LogOffset::new(i), value(n, i)));
            }
            logs.push((log, reader));
            if logs.len() == 5 {
                at_five = Some((live_clients(), threads()));
            }
        }
        let (clients_at_five, threads_at_five) = at_five.unwrap();
        let (clients_at_fifty, threads_at_fifty) = (live_clients(), threads());
        eprintln!(
            "5 logs: {clients_at_five} clients, {threads_at_five} threads; \
             50 logs: {clients_at_fifty} clients, {threads_at_fifty} threads"
        );
        assert_eq!(
            clients_at_five, 3,
            "a producer, a consumer and an admin client for five logs"
        );
        assert_eq!(clients_at_fifty, clients_at_five);
        assert!(
            threads_at_fifty <= threads_at_five,
            "{threads_at_fifty} threads for 50 logs, {threads_at_five} for 5"
        );
        for (n, (log, _)) in logs.iter().enumerate() {
            assert_eq!(log.append(value(n, 2)).await.unwrap(), LogOffset::new(2));
        }
        for (n, (_, reader)) in logs.iter_mut().enumerate() {
            let r = next(reader).await;
            assert_eq!((r.offset, r.value), (LogOffset::new(2), value(n, 2)));
        }
    });
}

/// A reader re-opened at explicit offsets (ahead, back, at the end) on the shared
/// consumer returns exactly the records from each offset and adds no client; a
/// second reader of the topic open at the same time reads from its own offset
/// through one more consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reopened_at_an_offset_reads_from_there() {
    let _serial = SERIAL.lock().await;
    no_clients_left();
    let log = KafkaLog::open(config(), &fresh_topic("reopen"))
        .await
        .unwrap();
    for i in 0..10 {
        log.append(value(0, i)).await.unwrap();
    }
    let mut reader = log
        .reader(ReadFrom::Offset(LogOffset::new(0)))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(next(&mut reader).await.offset, LogOffset::new(i));
    }
    let clients = live_clients();
    assert_eq!(clients, 3, "a producer, a consumer and an admin client");
    drop(reader);
    for start in [6, 2, 9, 0] {
        let mut reader = log
            .reader(ReadFrom::Offset(LogOffset::new(start)))
            .await
            .unwrap();
        assert_eq!(
            live_clients(),
            clients,
            "reader at {start}: a client was added"
        );
        for i in start..10 {
            let r = next(&mut reader).await;
            assert_eq!((r.offset, r.value), (LogOffset::new(i), value(0, i)));
        }
    }
    let mut at_end = log
        .reader(ReadFrom::Offset(LogOffset::new(10)))
        .await
        .unwrap();
    let mut second = log
        .reader(ReadFrom::Offset(LogOffset::new(4)))
        .await
        .unwrap();
    assert_eq!(
        live_clients(),
        clients + 1,
        "the second reader's own consumer"
    );
    for i in 4..10 {
        let r = next(&mut second).await;
        assert_eq!((r.offset, r.value), (LogOffset::new(i), value(0, i)));
    }
    assert_eq!(log.append(value(0, 10)).await.unwrap(), LogOffset::new(10));
    for reader in [&mut at_end, &mut second] {
        let r = next(reader).await;
        assert_eq!((r.offset, r.value), (LogOffset::new(10), value(0, 10)));
    }
}
