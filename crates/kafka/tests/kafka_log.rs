//! KafkaLog against a real Apache Kafka cluster.
//!
//! Start one with `scripts/kafka start` (or `--brokers 3`) and run
//! `KORDER_KAFKA_BOOTSTRAP=$(scripts/kafka bootstrap) cargo test -p korder-kafka`.
//! Without KORDER_KAFKA_BOOTSTRAP every test here fails, on purpose: a Kafka test
//! that silently skips proves nothing.

#![allow(clippy::unwrap_used)] // test helpers; failures should panic

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_kafka::{KafkaConfig, KafkaLog, KafkaLogError, KafkaReader};
use korder_log::{Log, LogError, LogOffset, LogReader, LogRecord, ReadFrom};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// Upper bound on any single wait in these tests (not a timing assertion: a test
/// that hits it has hung).
const WAIT: Duration = Duration::from_secs(30);

fn bootstrap() -> Vec<String> {
    let Ok(list) = std::env::var("KORDER_KAFKA_BOOTSTRAP") else {
        panic!(
            "KORDER_KAFKA_BOOTSTRAP is not set: these tests need a real Kafka broker. \
             Run `scripts/kafka start` (from the repository root) and then \
             `KORDER_KAFKA_BOOTSTRAP=$(scripts/kafka bootstrap) cargo test -p korder-kafka`"
        )
    };
    let brokers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(!brokers.is_empty(), "KORDER_KAFKA_BOOTSTRAP is empty");
    brokers
}

fn init_tracing() {
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
}

/// A configuration for the test cluster: the replication factor is the cluster
/// size (the script starts 1 or 3 brokers), timeouts are short.
fn config() -> KafkaConfig {
    init_tracing();
    let brokers = bootstrap();
    let mut c = KafkaConfig::new(brokers.clone());
    c.topic_replication_factor = i16::try_from(brokers.len()).unwrap();
    c.retry.dial_timeout = Duration::from_secs(5);
    c.retry.read_timeout = Duration::from_secs(10);
    c.retry.write_timeout = Duration::from_secs(10);
    c
}

/// A topic name no other test (or earlier run) uses.
fn fresh_topic(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("korder-test-{name}-{}-{nanos}", std::process::id())
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap().join(","))
        .create()
        .unwrap()
}

async fn next(reader: &mut KafkaReader) -> LogRecord {
    tokio::time::timeout(WAIT, reader.next())
        .await
        .expect("no record within the wait bound")
        .unwrap()
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("record-{i}"))
}

/// Sequential appends to a new topic get offsets 0, 1, 2, … with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_returns_contiguous_offsets() {
    let log = KafkaLog::open(config(), &fresh_topic("contiguous"))
        .await
        .unwrap();
    for i in 0..5 {
        let offset = log.append(value(i)).await.unwrap();
        assert_eq!(offset, LogOffset::new(i64::try_from(i).unwrap()));
    }
    assert_eq!(log.watermarks().await.unwrap(), (0, 5));
}

/// Concurrent appends are all acknowledged with distinct offsets covering 0..n, and
/// a reader returns every record once, in offset order, with the value whose
/// append reported that offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_all_acknowledged_and_read_in_order() {
    const N: usize = 200;
    let log = KafkaLog::open(config(), &fresh_topic("concurrent"))
        .await
        .unwrap();
    let acks = futures::future::join_all((0..N).map(|i| {
        let log = &log;
        async move { (log.append(value(i)).await.unwrap(), value(i)) }
    }))
    .await;
    let mut by_offset = acks.clone();
    by_offset.sort_by_key(|(o, _)| *o);
    let offsets: Vec<i64> = by_offset.iter().map(|(o, _)| o.get()).collect();
    assert_eq!(offsets, (0..i64::try_from(N).unwrap()).collect::<Vec<_>>());

    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    for (offset, v) in &by_offset {
        let r = next(&mut reader).await;
        assert_eq!(r.offset, *offset);
        assert_eq!(&r.value, v);
    }
}

/// A reader opened at an explicit offset starts exactly there, and then waits for
/// and returns records appended after it was opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_from_explicit_offset_then_follows_new_records() {
    let log = KafkaLog::open(config(), &fresh_topic("explicit"))
        .await
        .unwrap();
    for i in 0..10 {
        log.append(value(i)).await.unwrap();
    }
    let mut reader = log
        .reader(ReadFrom::Offset(LogOffset::new(4)))
        .await
        .unwrap();
    for i in 4..10 {
        let r = next(&mut reader).await;
        assert_eq!(r.offset, LogOffset::new(i));
        assert_eq!(r.value, value(usize::try_from(i).unwrap()));
    }
    // The high watermark itself is a valid start: the reader waits there.
    let mut at_end = log
        .reader(ReadFrom::Offset(LogOffset::new(10)))
        .await
        .unwrap();
    assert_eq!(log.append(value(10)).await.unwrap(), LogOffset::new(10));
    for reader in [&mut reader, &mut at_end] {
        let r = next(reader).await;
        assert_eq!((r.offset, r.value), (LogOffset::new(10), value(10)));
    }
}

/// A reader from the oldest record returns the whole partition from offset 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_from_oldest_reads_everything() {
    let log = KafkaLog::open(config(), &fresh_topic("oldest"))
        .await
        .unwrap();
    // Opened on the empty partition: it must wait for the first record.
    let mut early = log.reader(ReadFrom::Oldest).await.unwrap();
    for i in 0..3 {
        log.append(value(i)).await.unwrap();
    }
    let mut late = log.reader(ReadFrom::Oldest).await.unwrap();
    for reader in [&mut early, &mut late] {
        for i in 0..3 {
            let r = next(reader).await;
            assert_eq!(r.offset, LogOffset::new(i64::try_from(i).unwrap()));
            assert_eq!(r.value, value(i));
        }
    }
}

/// A start offset beyond the high watermark or below the oldest record is refused
/// with OffsetOutOfRange naming the requested offset and the range the log holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_start_is_refused() {
    let log = KafkaLog::open(config(), &fresh_topic("range"))
        .await
        .unwrap();
    for i in 0..3 {
        log.append(value(i)).await.unwrap();
    }
    for requested in [4, 100, -1] {
        match log
            .reader(ReadFrom::Offset(LogOffset::new(requested)))
            .await
        {
            Err(LogError::OffsetOutOfRange {
                requested: r,
                oldest,
                next,
            }) => assert_eq!((r, oldest, next), (requested, 0, 3)),
            Err(e) => panic!("start {requested}: unexpected error {e}"),
            Ok(_) => panic!("start {requested}: reader opened beyond the log"),
        }
    }
    let e = log
        .reader(ReadFrom::Offset(LogOffset::new(4)))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("offset 4") && e.contains("0..3"), "{e}");
}

/// After records are deleted (as retention would), a start below the new oldest
/// offset is OffsetOutOfRange and Oldest starts at the first remaining record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_records_move_the_oldest_offset() {
    let topic = fresh_topic("deleted");
    let log = KafkaLog::open(config(), &topic).await.unwrap();
    for i in 0..6 {
        log.append(value(i)).await.unwrap();
    }
    // Delete offsets 0..4, as retention would.
    let mut deletion = rdkafka::TopicPartitionList::new();
    deletion
        .add_partition_offset(&topic, 0, rdkafka::Offset::Offset(4))
        .unwrap();
    admin()
        .delete_records(&deletion, &AdminOptions::new())
        .await
        .unwrap();
    assert_eq!(log.watermarks().await.unwrap(), (4, 6));
    match log.reader(ReadFrom::Offset(LogOffset::new(2))).await {
        Err(LogError::OffsetOutOfRange {
            requested,
            oldest,
            next,
        }) => assert_eq!((requested, oldest, next), (2, 4, 6)),
        other => panic!("expected OffsetOutOfRange, got {:?}", other.map(|_| ())),
    }
    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    let r = next(&mut reader).await;
    assert_eq!((r.offset, r.value), (LogOffset::new(4), value(4)));
}

/// A topic deleted and re-created under a waiting reader makes `next` fail with
/// OffsetOutOfRange; no record of the new topic is returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_topic_gives_out_of_range_to_a_waiting_reader() {
    let topic = fresh_topic("recreated");
    let log = KafkaLog::open(config(), &topic).await.unwrap();
    for i in 0..3 {
        log.append(value(i)).await.unwrap();
    }
    let mut reader = log
        .reader(ReadFrom::Offset(LogOffset::new(3)))
        .await
        .unwrap();
    let admin = admin();
    admin
        .delete_topics(&[topic.as_str()], &AdminOptions::new())
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| assert!(r.is_ok(), "{r:?}"));
    // Re-create it (open retries until the deletion has completed).
    let deadline = tokio::time::Instant::now() + WAIT;
    let second = loop {
        match KafkaLog::open(config(), &topic).await {
            Ok(l) => break l,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!("re-creating {topic}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("could not re-create {topic}: {e}"),
        }
    };
    assert_eq!(second.append(value(100)).await.unwrap(), LogOffset::new(0));
    loop {
        match tokio::time::timeout(WAIT, reader.next())
            .await
            .expect("reader neither failed nor returned within the wait bound")
        {
            Err(LogError::OffsetOutOfRange { requested, .. }) => {
                assert_eq!(requested, 3);
                break;
            }
            // The topic is briefly unknown while it is deleted and re-created.
            Err(LogError::Unavailable(msg)) => tracing::info!("transient: {msg}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(r) => panic!("reader returned {r:?} from the re-created topic"),
        }
    }
}

/// A reader never polled, with more records waiting than the consumer prefetches for
/// a partition (64 MiB), does not hold up another topic's reader on the shared
/// consumer: that one gets every record; the idle one then reads all of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_reader_does_not_stall_another_topics_reader() {
    const BIG: usize = 80;
    const RECORD_BYTES: usize = 1_000_000;
    let idle_log = KafkaLog::open(config(), &fresh_topic("idle"))
        .await
        .unwrap();
    let busy_log = KafkaLog::open(config(), &fresh_topic("busy"))
        .await
        .unwrap();
    let big = |i: usize| Bytes::from(vec![u8::try_from(i).unwrap(); RECORD_BYTES]);
    let acks = futures::future::join_all((0..BIG).map(|i| idle_log.append(big(i)))).await;
    for ack in acks {
        ack.unwrap();
    }
    let mut idle = idle_log.reader(ReadFrom::Oldest).await.unwrap();
    let mut busy = busy_log.reader(ReadFrom::Oldest).await.unwrap();
    for i in 0..200 {
        let offset = busy_log.append(value(i)).await.unwrap();
        let r = next(&mut busy).await;
        assert_eq!((r.offset, r.value), (offset, value(i)));
    }
    for i in 0..BIG {
        let r = next(&mut idle).await;
        assert_eq!(r.offset, LogOffset::new(i64::try_from(i).unwrap()));
        assert!(r.value == big(i), "record {i} of the idle reader differs");
    }
}

/// Deleting one channel's topic under its reader affects only that reader: the
/// reader of another topic on the shared consumer keeps receiving records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_leaves_other_topics_readers_reading() {
    let gone_topic = fresh_topic("gone");
    let gone = KafkaLog::open(config(), &gone_topic).await.unwrap();
    let kept = KafkaLog::open(config(), &fresh_topic("kept"))
        .await
        .unwrap();
    for i in 0..3 {
        gone.append(value(i)).await.unwrap();
        kept.append(value(i)).await.unwrap();
    }
    let mut gone_reader = gone
        .reader(ReadFrom::Offset(LogOffset::new(3)))
        .await
        .unwrap();
    let mut kept_reader = kept.reader(ReadFrom::Oldest).await.unwrap();
    for i in 0..3 {
        assert_eq!(next(&mut kept_reader).await.value, value(i));
    }
    admin()
        .delete_topics(&[gone_topic.as_str()], &AdminOptions::new())
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| assert!(r.is_ok(), "{r:?}"));
    // The consumer has noticed once the deleted topic's reader reports it.
    match tokio::time::timeout(WAIT, gone_reader.next())
        .await
        .expect("the deleted topic's reader reported nothing within the wait bound")
    {
        Err(LogError::Unavailable(_) | LogError::OffsetOutOfRange { .. }) => {}
        other => panic!("deleted topic's reader: unexpected {other:?}"),
    }
    for i in 3..10 {
        let offset = kept.append(value(i)).await.unwrap();
        let r = next(&mut kept_reader).await;
        assert_eq!((r.offset, r.value), (offset, value(i)));
    }
}

/// Opening a log creates its topic with one partition and the configured
/// replication factor; asking for more replicas than brokers fails clearly and is
/// not transient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_created_with_replication_factor() {
    let cfg = config();
    let rf = usize::try_from(cfg.topic_replication_factor).unwrap();
    let log = KafkaLog::open(cfg.clone(), &fresh_topic("rf"))
        .await
        .unwrap();
    let replicas = log.replica_ids().await.unwrap();
    assert_eq!(replicas.len(), rf, "replicas {replicas:?}");

    let mut too_many = cfg;
    too_many.topic_replication_factor = i16::try_from(rf + 1).unwrap();
    let topic = fresh_topic("rf-too-many");
    match KafkaLog::open(too_many, &topic).await {
        Err(e @ KafkaLogError::CreateTopic { .. }) => {
            assert!(!e.is_transient(), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&topic) && msg.contains("replication factor"),
                "{msg}"
            );
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("topic created with more replicas than brokers"),
    }
}

/// A second node opening the same topic (existing: not re-created) sees every
/// record of both nodes at the same offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_read_the_same_records() {
    let topic = fresh_topic("two-nodes");
    let a = KafkaLog::open(config(), &topic).await.unwrap();
    let b = KafkaLog::open(config(), &topic).await.unwrap();
    let mut written = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        written.push((node.append(value(i)).await.unwrap(), value(i)));
    }
    let mut ra = a.reader(ReadFrom::Oldest).await.unwrap();
    let mut rb = b.reader(ReadFrom::Offset(LogOffset::new(0))).await.unwrap();
    for (offset, v) in &written {
        let x = next(&mut ra).await;
        let y = next(&mut rb).await;
        assert_eq!(x, y);
        assert_eq!((&x.offset, &x.value), (offset, v));
    }
}

/// A record above the configured maximum is refused before sending with
/// RecordTooLarge; one at the maximum is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_record_is_refused() {
    let mut cfg = config();
    cfg.max_record_bytes = 1000;
    let log = KafkaLog::open(cfg, &fresh_topic("oversize")).await.unwrap();
    match log.append(Bytes::from(vec![7u8; 1001])).await {
        Err(LogError::RecordTooLarge { size, max }) => assert_eq!((size, max), (1001, 1000)),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(
        log.append(Bytes::from(vec![7u8; 1000])).await.unwrap(),
        LogOffset::new(0)
    );
}

/// A record the brokers refuse as too large (topic limit below the record) gives an
/// error that says so, and the partition stays unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_size_limit_gives_a_clear_error() {
    let cfg = config();
    let topic = fresh_topic("broker-limit");
    let mut new_topic = NewTopic::new(
        &topic,
        1,
        TopicReplication::Fixed(i32::from(cfg.topic_replication_factor)),
    );
    new_topic = new_topic.set("max.message.bytes", "2048");
    for r in admin()
        .create_topics(&[new_topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let log = KafkaLog::open(cfg, &topic).await.unwrap();
    match log.append(Bytes::from(vec![1u8; 8192])).await {
        Err(LogError::Unavailable(msg)) => {
            assert!(msg.contains("too large") && msg.contains("8192"), "{msg}")
        }
        other => panic!("expected a size refusal, got {other:?}"),
    }
    assert_eq!(log.watermarks().await.unwrap(), (0, 0));
    assert_eq!(log.append(value(0)).await.unwrap(), LogOffset::new(0));
}

/// An existing topic with several partitions is used as it is, and only partition
/// 0 is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_partition_zero_of_a_multi_partition_topic_is_used() {
    let cfg = config();
    let topic = fresh_topic("partitions");
    let new_topic = NewTopic::new(
        &topic,
        3,
        TopicReplication::Fixed(i32::from(cfg.topic_replication_factor)),
    );
    for r in admin()
        .create_topics(&[new_topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let log = KafkaLog::open(cfg, &topic).await.unwrap();
    for i in 0..4 {
        assert_eq!(
            log.append(value(i)).await.unwrap(),
            LogOffset::new(i64::try_from(i).unwrap())
        );
    }
    let probe: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap().join(","))
        .create()
        .unwrap();
    let topic2 = topic.clone();
    let (p1, p2) = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer;
        (
            probe.fetch_watermarks(&topic2, 1, WAIT).unwrap(),
            probe.fetch_watermarks(&topic2, 2, WAIT).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!((p1, p2), ((0, 0), (0, 0)));
    assert_eq!(log.watermarks().await.unwrap(), (0, 4));
}

/// With no reachable broker, open fails within its timeouts with a transient error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_fail_open_with_transient_error() {
    init_tracing();
    let mut cfg = KafkaConfig::new(["127.0.0.1:1"]);
    cfg.retry.dial_timeout = Duration::from_secs(1);
    cfg.retry.read_timeout = Duration::from_secs(2);
    let e = KafkaLog::open(cfg, "unreachable").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("unreachable"), "{e}");
}

/// The CreateTopics race between two nodes ends with one topic and both logs
/// usable: TOPIC_ALREADY_EXISTS counts as success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_open_creates_the_topic_once() {
    let topic = fresh_topic("race");
    let (a, b) = tokio::join!(
        KafkaLog::open(config(), &topic),
        KafkaLog::open(config(), &topic)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.append(value(0)).await.unwrap(), LogOffset::new(0));
    assert_eq!(b.append(value(1)).await.unwrap(), LogOffset::new(1));
}

/// Errors from a log that cannot open convert into the Log trait's error with the
/// topic named.
#[test]
fn open_errors_convert_to_log_errors() {
    let e = KafkaLogError::InvalidTopic {
        topic: "bad topic".into(),
        reason: "spaces",
    };
    let LogError::Unavailable(msg) = LogError::from(e) else {
        panic!("wrong variant")
    };
    assert!(msg.contains("bad topic"), "{msg}");
}
