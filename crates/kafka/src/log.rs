//! [`KafkaLog`]: a channel's log as partition 0 of the topic named after the channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_log::{Log, LogError, LogOffset, LogReader, LogRecord, ReadFrom};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::{KafkaConfig, is_secret};
use crate::context::{TracingContext, is_out_of_range};
use crate::error::KafkaLogError;

/// The only partition korder uses: the partition is the channel's total order.
pub const PARTITION: i32 = 0;

/// Every record carries the partition number as its key, as Fabric's orderer does.
const RECORD_KEY: &str = "0";

/// Longest topic name Kafka accepts.
const MAX_TOPIC_NAME_LEN: usize = 249;

/// Pause between metadata polls while a new topic's partition gets its leader.
const METADATA_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Distinguishes the consumer groups of readers opened by one process.
static READER_SEQ: AtomicU64 = AtomicU64::new(0);

/// The producer with its context, whose last connection error request failures quote
/// (librdkafka's producer context is not reachable through the producer itself).
#[derive(Clone)]
struct Producer0 {
    client: FutureProducer<TracingContext>,
    context: TracingContext,
}

impl Producer0 {
    fn build(config: &KafkaConfig, topic: &str) -> Result<Self, KafkaLogError> {
        let context = TracingContext::new("producer", topic).with_stats(config);
        let client = build_client(&config.producer_properties(), context.clone(), topic)?;
        Ok(Self { client, context })
    }
}

/// A channel's ordered log on Kafka: topic = channel name, partition 0 only,
/// records acknowledged by all in-sync replicas through an idempotent producer,
/// read by consumers assigned to partition 0 at explicit offsets (no consumer
/// group offsets, nothing committed).
///
/// Several `KafkaLog`s on the same topic — one per orderer node — read the same
/// records at the same offsets.
pub struct KafkaLog {
    config: Arc<KafkaConfig>,
    topic: Arc<str>,
    producer: Producer0,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("topic", &self.topic)
            .field("brokers", &self.config.brokers)
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Opens the log of channel `topic`: creates the topic if it does not exist
    /// (1 partition, `config.topic_replication_factor` replicas; an existing topic
    /// is used as it is) and builds the producer. One attempt of each step; the
    /// caller decides how to retry (see [`KafkaLogError::is_transient`]).
    pub async fn open(config: KafkaConfig, topic: &str) -> Result<Self, KafkaLogError> {
        config.validate()?;
        validate_topic(topic)?;
        let config = Arc::new(config);
        let topic: Arc<str> = Arc::from(topic);
        ensure_topic(&config, &topic).await?;
        let producer = Producer0::build(&config, &topic)?;
        let log = Self {
            config,
            topic,
            producer,
        };
        log.wait_for_leader().await?;
        Ok(log)
    }

    /// The topic (= channel name).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The configuration this log was opened with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// `(oldest, next)`: the oldest offset the partition holds and the offset the
    /// next record will get (the high watermark). Equal when the partition is empty.
    pub async fn watermarks(&self) -> Result<(i64, i64), KafkaLogError> {
        fetch_watermarks(&self.producer, &self.topic, self.config.retry.read_timeout).await
    }

    /// The broker ids of the replicas of partition 0, as the cluster metadata lists
    /// them (for health reports).
    pub async fn replica_ids(&self) -> Result<Vec<i32>, KafkaLogError> {
        let (replicas, _leader) =
            partition_metadata(&self.producer, &self.topic, self.config.retry.read_timeout).await?;
        Ok(replicas)
    }

    /// The broker id of partition 0's current leader, `None` while none is elected.
    pub async fn leader_id(&self) -> Result<Option<i32>, KafkaLogError> {
        let (_replicas, leader) =
            partition_metadata(&self.producer, &self.topic, self.config.retry.read_timeout).await?;
        Ok((leader >= 0).then_some(leader))
    }

    /// Waits, bounded by the read timeout, until partition 0 has a leader, so that
    /// the first append and the first read do not race a new topic's election.
    async fn wait_for_leader(&self) -> Result<(), KafkaLogError> {
        let timeout = self.config.retry.read_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let err = match partition_metadata(&self.producer, &self.topic, timeout).await {
                Ok((_, leader)) if leader >= 0 => return Ok(()),
                Ok((_, _)) => KafkaLogError::MissingPartition {
                    topic: self.topic.to_string(),
                    reason: format!("no leader elected within {timeout:?}"),
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(METADATA_POLL_INTERVAL).await;
        }
    }

    /// Hands the record to the producer at once (librdkafka keeps the order of the
    /// calls); the returned future resolves with the delivery report.
    fn queue(&self, record: Bytes) -> Result<DeliveryFuture, LogError> {
        let size = record.len();
        if size > self.config.max_record_bytes {
            return Err(LogError::RecordTooLarge {
                size,
                max: self.config.max_record_bytes,
            });
        }
        let queued = self.producer.client.send_result(
            FutureRecord::to(&self.topic)
                .partition(PARTITION)
                .key(RECORD_KEY)
                .payload(record.as_ref()),
        );
        match queued {
            Ok(delivery) => Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(LogError::Unavailable(format!(
                    "topic {} partition {PARTITION}: the producer's queue is full",
                    self.topic
                )))
            }
            Err((e, _)) => Err(produce_error(&self.topic, size, e)),
        }
    }

    async fn open_reader(&self, from: ReadFrom) -> Result<KafkaReader, LogError> {
        let (oldest, next) = self.watermarks().await?;
        let (start, expected) = match from {
            ReadFrom::Oldest => (Offset::Beginning, None),
            ReadFrom::Offset(o) if o.get() < oldest || o.get() > next => {
                return Err(LogError::OffsetOutOfRange {
                    requested: o.get(),
                    oldest,
                    next,
                });
            }
            ReadFrom::Offset(o) => (Offset::Offset(o.get()), Some(o.get())),
        };
        let group_id = format!(
            "korder-reader-{}-{}-{}",
            self.topic,
            std::process::id(),
            READER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let (out_of_range_tx, out_of_range) = watch::channel(false);
        let context = TracingContext {
            out_of_range: Some(out_of_range_tx),
            ..TracingContext::new("consumer", &self.topic).with_stats(&self.config)
        };
        let consumer: StreamConsumer<TracingContext> = build_client(
            &self.config.consumer_properties(&group_id),
            context,
            &self.topic,
        )?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.topic, PARTITION, start)
            .map_err(|e| unavailable(&self.topic, "setting the start offset", &e))?;
        consumer
            .assign(&assignment)
            .map_err(|e| unavailable(&self.topic, "assigning partition 0", &e))?;
        tracing::info!(
            topic = %self.topic,
            partition = PARTITION,
            ?from,
            oldest,
            next,
            "reader assigned"
        );
        Ok(KafkaReader {
            topic: self.topic.clone(),
            read_timeout: self.config.retry.read_timeout,
            consumer,
            producer: self.producer.clone(),
            expected,
            oldest_at_open: oldest,
            out_of_range,
            failed: None,
        })
    }
}

impl Log for KafkaLog {
    type Reader = KafkaReader;

    fn append(
        &self,
        record: Bytes,
    ) -> impl Future<Output = Result<LogOffset, LogError>> + Send + 'static {
        let size = record.len();
        let topic = self.topic.clone();
        let queued = self.queue(record);
        async move {
            let report = queued?.await.map_err(|_| {
                LogError::Unavailable(format!(
                    "topic {topic} partition {PARTITION}: the producer closed before delivering the record"
                ))
            })?;
            match report {
                Ok(delivery) => {
                    assert_eq!(
                        delivery.partition, PARTITION,
                        "topic {topic}: record delivered to a partition other than {PARTITION}"
                    );
                    Ok(LogOffset::new(delivery.offset))
                }
                Err((e, _)) => Err(produce_error(&topic, size, e)),
            }
        }
    }

    fn reader(&self, from: ReadFrom) -> impl Future<Output = Result<KafkaReader, LogError>> + Send {
        self.open_reader(from)
    }
}

/// Reads partition 0 in offset order from where it was opened.
///
/// An `Unavailable` error from [`LogReader::next`] is transient (the client keeps
/// reconnecting and the reader may be polled again); `OffsetOutOfRange` means the
/// partition no longer holds the next offset (retention, topic re-created, data
/// lost) and the reader will not recover.
pub struct KafkaReader {
    topic: Arc<str>,
    read_timeout: Duration,
    consumer: StreamConsumer<TracingContext>,
    /// Used for watermark queries when the consumer reports an out-of-range offset.
    producer: Producer0,
    /// The offset the next record must have; `None` until the first record when
    /// reading from the oldest one.
    expected: Option<i64>,
    /// The oldest offset when the reader was opened, reported if the very first
    /// fetch from the oldest record is out of range.
    oldest_at_open: i64,
    /// Raised by the consumer's context when librdkafka reports the position out
    /// of range through its error callback.
    out_of_range: watch::Receiver<bool>,
    /// Set once the position was found out of range: librdkafka stops fetching the
    /// partition for good, so every later call reports the same error.
    failed: Option<(i64, i64, i64)>,
}

impl std::fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReader")
            .field("topic", &self.topic)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl KafkaReader {
    async fn next_record(&mut self) -> Result<LogRecord, LogError> {
        if let Some((requested, oldest, next)) = self.failed {
            return Err(LogError::OffsetOutOfRange {
                requested,
                oldest,
                next,
            });
        }
        loop {
            let topic = &self.topic;
            let received = tokio::select! {
                // Records already fetched come first: they precede the position
                // that fell out of range.
                biased;
                received = self.consumer.recv() => Some(received.map(|m| {
                    assert_eq!(
                        m.partition(),
                        PARTITION,
                        "topic {topic}: consumer assigned to partition {PARTITION} got a \
                         record of partition {}",
                        m.partition()
                    );
                    LogRecord {
                        offset: LogOffset::new(m.offset()),
                        value: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                    }
                })),
                changed = self.out_of_range.wait_for(|raised| *raised) => {
                    // The sender lives in the consumer's context, which outlives
                    // this wait, so `changed` can only be Ok.
                    assert!(changed.is_ok(), "topic {topic}: consumer context dropped");
                    None
                }
            };
            let record = match received {
                None => return Err(self.out_of_range_error(None).await),
                Some(Ok(r)) => r,
                Some(Err(e)) => return Err(self.consumer_error(e).await),
            };
            let offset = record.offset.get();
            match self.expected {
                Some(want) if offset < want => {
                    tracing::warn!(topic = %self.topic, offset, want, "skipping a record already read");
                    continue;
                }
                Some(want) if offset > want => {
                    // Kafka leaves holes only for control records (transactions),
                    // which korder's producers never write.
                    tracing::warn!(topic = %self.topic, offset, want, "offsets skip ahead");
                }
                _ => {}
            }
            self.expected = Some(offset + 1);
            return Ok(record);
        }
    }

    async fn consumer_error(&mut self, e: KafkaError) -> LogError {
        if is_out_of_range(&e) {
            self.out_of_range_error(Some(e)).await
        } else {
            unavailable(&self.topic, "consuming", &e)
        }
    }

    /// Builds the out-of-range error with the partition's current range, and
    /// remembers it for later calls.
    async fn out_of_range_error(&mut self, cause: Option<KafkaError>) -> LogError {
        let requested = self.expected.unwrap_or(self.oldest_at_open);
        match fetch_watermarks(&self.producer, &self.topic, self.read_timeout).await {
            Ok((oldest, next)) => {
                tracing::error!(
                    topic = %self.topic,
                    requested,
                    oldest,
                    next,
                    "reader position is out of range; the reader stops"
                );
                self.failed = Some((requested, oldest, next));
                LogError::OffsetOutOfRange {
                    requested,
                    oldest,
                    next,
                }
            }
            Err(w) => LogError::Unavailable(format!(
                "topic {} partition {PARTITION}: offset {requested} is out of range{} and \
                 the watermarks cannot be read: {w}",
                self.topic,
                cause.map(|c| format!(" ({c})")).unwrap_or_default()
            )),
        }
    }
}

impl LogReader for KafkaReader {
    fn next(&mut self) -> impl Future<Output = Result<LogRecord, LogError>> + Send {
        self.next_record()
    }
}

fn unavailable(topic: &str, what: &str, e: &KafkaError) -> LogError {
    LogError::Unavailable(format!("topic {topic} partition {PARTITION}: {what}: {e}"))
}

/// Kafka's rule for topic names.
fn validate_topic(topic: &str) -> Result<(), KafkaLogError> {
    let reason = if topic.is_empty() {
        Some("empty")
    } else if topic.len() > MAX_TOPIC_NAME_LEN {
        Some("longer than 249 characters")
    } else if topic == "." || topic == ".." {
        Some("'.' and '..' are reserved")
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KafkaLogError::InvalidTopic {
            topic: topic.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Builds a librdkafka client from `props`, logging the effective settings.
fn build_client<T>(
    props: &[(&'static str, String)],
    context: TracingContext,
    topic: &str,
) -> Result<T, KafkaLogError>
where
    T: FromClientConfigAndContext<TracingContext>,
{
    let client = context.client;
    let mut config = ClientConfig::new();
    for (k, v) in props {
        config.set(*k, v);
    }
    config.set_log_level(if props.iter().any(|(k, _)| *k == "debug") {
        rdkafka::config::RDKafkaLogLevel::Debug
    } else {
        rdkafka::config::RDKafkaLogLevel::Info
    });
    let rendered: Vec<String> = props
        .iter()
        .map(|(k, v)| {
            if is_secret(k) {
                format!("{k}=<redacted>")
            } else if k.ends_with(".pem") {
                format!("{k}=<{} bytes of PEM>", v.len())
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    tracing::info!(client, topic, settings = %rendered.join(" "), "Kafka client settings");
    T::from_config_and_context(&config, context).map_err(|source| KafkaLogError::Client {
        client,
        topic: topic.to_owned(),
        source,
    })
}

/// Creates the topic unless the metadata already lists it. TOPIC_ALREADY_EXISTS
/// (another node won the race) is success.
/// What a transport failure without any reported cause usually means.
const UNEXPLAINED_TRANSPORT_FAILURE: &str = "none reported; the brokers closed the \
    connection or could not be reached: check the broker addresses, and that \
    Kafka.TLS.Enabled and Kafka.SASLPlain.Enabled match the listener's security.protocol";

async fn ensure_topic(config: &KafkaConfig, topic: &str) -> Result<(), KafkaLogError> {
    // The metadata probe runs on a consumer handle, not the admin client: polling
    // it brings the client's connection errors (TLS, SASL) to the context, so that a
    // refused connection is reported with its cause.
    let probe: BaseConsumer<TracingContext> = build_client(
        &config.admin_properties(),
        TracingContext::new("admin", topic),
        topic,
    )?;
    let timeout = config.retry.read_timeout;
    let owned_topic = topic.to_owned();
    let exists = tokio::task::spawn_blocking(move || {
        match probe.fetch_metadata(Some(&owned_topic), Timeout::After(timeout)) {
            Ok(md) => Ok(md.topics().iter().any(|t| {
                t.name() == owned_topic
                    && t.error().is_none_or(|e| {
                        RDKafkaErrorCode::from(e) != RDKafkaErrorCode::UnknownTopicOrPartition
                    })
            })),
            Err(e) => {
                // Deliver the queued error events to the context.
                while probe.poll(Duration::ZERO).is_some() {}
                let broker_error = probe.context().last_error().or_else(|| {
                    (e.rdkafka_error_code() == Some(RDKafkaErrorCode::BrokerTransportFailure))
                        .then(|| UNEXPLAINED_TRANSPORT_FAILURE.to_owned())
                });
                Err((e, broker_error))
            }
        }
    })
    .await
    .map_err(|e| KafkaLogError::MissingPartition {
        topic: topic.to_owned(),
        reason: format!("metadata task failed: {e}"),
    })?
    .map_err(|(source, broker_error)| KafkaLogError::Request {
        what: "metadata",
        topic: topic.to_owned(),
        source: Box::new(source),
        broker_error: broker_error.map(Into::into),
    })?;
    if exists {
        tracing::debug!(topic, "topic exists");
        return Ok(());
    }
    if !config.create_missing_topic {
        return Err(KafkaLogError::TopicMissing {
            topic: topic.to_owned(),
        });
    }
    let admin: AdminClient<TracingContext> = build_client(
        &config.admin_properties(),
        TracingContext::new("admin", topic),
        topic,
    )?;
    let rf = config.topic_replication_factor;
    let options = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                1,
                TopicReplication::Fixed(i32::from(rf)),
            )],
            &options,
        )
        .await
        .map_err(|source| KafkaLogError::Request {
            what: "CreateTopics",
            topic: topic.to_owned(),
            source: Box::new(source),
            broker_error: admin.inner().context().last_error().map(Into::into),
        })?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, replication_factor = rf, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(topic, "topic created meanwhile by another node")
            }
            Err((_, code)) => {
                return Err(KafkaLogError::CreateTopic {
                    topic: topic.to_owned(),
                    replication_factor: rf,
                    code,
                });
            }
        }
    }
    Ok(())
}

/// `(replica ids, leader id)` of partition 0; the leader is −1 while none is elected.
async fn partition_metadata(
    producer: &Producer0,
    topic: &str,
    timeout: Duration,
) -> Result<(Vec<i32>, i32), KafkaLogError> {
    let client = producer.client.clone();
    let owned_topic = topic.to_owned();
    let md = tokio::task::spawn_blocking(move || {
        client
            .client()
            .fetch_metadata(Some(&owned_topic), Timeout::After(timeout))
    })
    .await
    .map_err(|e| KafkaLogError::MissingPartition {
        topic: topic.to_owned(),
        reason: format!("metadata task failed: {e}"),
    })?
    .map_err(|source| KafkaLogError::Request {
        what: "metadata",
        topic: topic.to_owned(),
        source: Box::new(source),
        broker_error: producer.context.last_error().map(Into::into),
    })?;
    let missing = |reason: String| KafkaLogError::MissingPartition {
        topic: topic.to_owned(),
        reason,
    };
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| missing("topic not listed".to_owned()))?;
    if let Some(e) = t.error() {
        return Err(missing(format!("{}", RDKafkaErrorCode::from(e))));
    }
    let p = t
        .partitions()
        .iter()
        .find(|p| p.id() == PARTITION)
        .ok_or_else(|| missing(format!("{} partition(s), none is 0", t.partitions().len())))?;
    Ok((p.replicas().to_vec(), p.leader()))
}

async fn fetch_watermarks(
    producer: &Producer0,
    topic: &str,
    timeout: Duration,
) -> Result<(i64, i64), KafkaLogError> {
    let client = producer.client.clone();
    let owned_topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        client
            .client()
            .fetch_watermarks(&owned_topic, PARTITION, Timeout::After(timeout))
    })
    .await
    .map_err(|e| KafkaLogError::MissingPartition {
        topic: topic.to_owned(),
        reason: format!("watermark task failed: {e}"),
    })?
    .map_err(|source| KafkaLogError::Request {
        what: "watermarks (ListOffsets)",
        topic: topic.to_owned(),
        source: Box::new(source),
        broker_error: producer.context.last_error().map(Into::into),
    })
}

/// The error a refused or unacknowledged record is reported with.
fn produce_error(topic: &str, size: usize, e: KafkaError) -> LogError {
    match e {
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge) => {
            LogError::Unavailable(format!(
                "topic {topic} partition {PARTITION}: the brokers refused a record of {size} bytes \
                 as too large (MESSAGE_SIZE_TOO_LARGE); their message.max.bytes (or the \
                 topic's max.message.bytes) must exceed the channel's AbsoluteMaxBytes"
            ))
        }
        e => LogError::Unavailable(format!(
            "topic {topic} partition {PARTITION}: record of {size} bytes not acknowledged by \
             the in-sync replicas: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channel names are valid topics; empty, reserved, overlong or punctuated names
    /// are refused before any broker is contacted.
    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["mychannel", "a.b-c_d", "testchainid", &"x".repeat(249)] {
            validate_topic(ok).unwrap();
        }
        for bad in ["", ".", "..", "has space", "slash/no", &"x".repeat(250)] {
            let e = validate_topic(bad).unwrap_err();
            assert!(
                matches!(e, KafkaLogError::InvalidTopic { .. }),
                "{bad:?}: {e}"
            );
        }
    }
}
