//! [`KafkaLog`]: a channel's log as partition 0 of the topic named after the channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_log::{Log, LogError, LogOffset, LogReader, LogRecord, ReadFrom};
use rdkafka::Offset;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::clients::{Clients, SharedProducer};
use crate::config::KafkaConfig;
use crate::consumer::Assignment;
use crate::context::is_out_of_range;
use crate::error::KafkaLogError;

/// The only partition korder uses: the partition is the channel's total order.
pub const PARTITION: i32 = 0;

/// Every record carries the partition number as its key, as Fabric's orderer does.
const RECORD_KEY: &str = "0";

/// Longest topic name Kafka accepts.
const MAX_TOPIC_NAME_LEN: usize = 249;

/// Pause between metadata polls while a new topic's partition gets its leader.
const METADATA_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A channel's ordered log on Kafka: topic = channel name, partition 0 only,
/// records acknowledged by all in-sync replicas through an idempotent producer,
/// read by consumers assigned to partition 0 at explicit offsets (no consumer
/// group offsets, nothing committed).
///
/// The librdkafka clients are the process's, shared by every log with the same
/// client settings: one producer for all topics, one consumer for all readers (each
/// reading its own partition queue), so that threads and broker connections do not
/// grow with the number of channels.
///
/// Several `KafkaLog`s on the same topic — one per orderer node — read the same
/// records at the same offsets.
pub struct KafkaLog {
    config: Arc<KafkaConfig>,
    topic: Arc<str>,
    clients: Arc<Clients>,
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
    /// Opens the log of channel `topic`: takes the process's clients for this
    /// configuration (building them if no log uses them yet), creates the topic if
    /// it does not exist (1 partition, `config.topic_replication_factor` replicas;
    /// an existing topic is used as it is) and waits for its leader. One attempt of
    /// each step; the caller decides how to retry (see
    /// [`KafkaLogError::is_transient`]).
    pub async fn open(config: KafkaConfig, topic: &str) -> Result<Self, KafkaLogError> {
        config.validate()?;
        validate_topic(topic)?;
        let config = Arc::new(config);
        let topic: Arc<str> = Arc::from(topic);
        let clients = Clients::for_config(&config, &topic)?;
        ensure_topic(&clients, &config, &topic).await?;
        let log = Self {
            config,
            topic,
            clients,
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
        fetch_watermarks(
            &self.clients.producer,
            &self.topic,
            self.config.retry.read_timeout,
        )
        .await
    }

    /// The broker ids of the replicas of partition 0, as the cluster metadata lists
    /// them (for health reports).
    pub async fn replica_ids(&self) -> Result<Vec<i32>, KafkaLogError> {
        let (replicas, _leader) = partition_metadata(
            &self.clients.producer,
            &self.topic,
            self.config.retry.read_timeout,
        )
        .await?;
        Ok(replicas)
    }

    /// The broker id of partition 0's current leader, `None` while none is elected.
    pub async fn leader_id(&self) -> Result<Option<i32>, KafkaLogError> {
        let (_replicas, leader) = partition_metadata(
            &self.clients.producer,
            &self.topic,
            self.config.retry.read_timeout,
        )
        .await?;
        Ok((leader >= 0).then_some(leader))
    }

    /// Waits, bounded by the read timeout, until partition 0 has a leader, so that
    /// the first append and the first read do not race a new topic's election.
    async fn wait_for_leader(&self) -> Result<(), KafkaLogError> {
        let timeout = self.config.retry.read_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let err = match partition_metadata(&self.clients.producer, &self.topic, timeout).await {
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
        let queued = self.clients.producer.client.send_result(
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
        let consumer = self.clients.consumer(&self.topic).map_err(LogError::from)?;
        let (assignment, shared) = match consumer.assign(&self.topic, start)? {
            Some(a) => (a, true),
            // Another reader of this topic is open in the process (the shared
            // consumer holds one position per partition): this one reads through
            // a consumer of its own, released with it.
            None => {
                let private = self
                    .clients
                    .private_consumer(&self.topic)
                    .map_err(LogError::from)?;
                let Some(assignment) = private.assign(&self.topic, start)? else {
                    panic!(
                        "topic {}: a consumer just built already reads it",
                        self.topic
                    );
                };
                (assignment, false)
            }
        };
        tracing::info!(
            topic = %self.topic,
            partition = PARTITION,
            ?from,
            oldest,
            next,
            shared,
            "reader assigned"
        );
        Ok(KafkaReader {
            topic: self.topic.clone(),
            read_timeout: self.config.retry.read_timeout,
            assignment,
            clients: self.clients.clone(),
            expected,
            oldest_at_open: oldest,
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
    /// Partition 0 in the (usually shared) consumer's assignment.
    assignment: Assignment,
    /// The producer answers watermark queries when the position is out of range.
    clients: Arc<Clients>,
    /// The offset the next record must have; `None` until the first record when
    /// reading from the oldest one.
    expected: Option<i64>,
    /// The oldest offset when the reader was opened, reported if the very first
    /// fetch from the oldest record is out of range.
    oldest_at_open: i64,
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
            // librdkafka reports a position out of range as an error on the
            // partition's queue, after the records fetched before it.
            let record = match self.assignment.next().await {
                Ok(r) => r,
                Err(e) => return Err(self.consumer_error(e).await),
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
            self.out_of_range_error(e).await
        } else {
            unavailable(&self.topic, "consuming", &e)
        }
    }

    /// Builds the out-of-range error with the partition's current range, and
    /// remembers it for later calls.
    async fn out_of_range_error(&mut self, cause: KafkaError) -> LogError {
        let requested = self.expected.unwrap_or(self.oldest_at_open);
        match fetch_watermarks(&self.clients.producer, &self.topic, self.read_timeout).await {
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
                "topic {} partition {PARTITION}: offset {requested} is out of range ({cause}) \
                 and the watermarks cannot be read: {w}",
                self.topic
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

/// What a transport failure without any reported cause usually means.
const UNEXPLAINED_TRANSPORT_FAILURE: &str = "none reported; the brokers closed the \
    connection or could not be reached: check the broker addresses, and that \
    Kafka.TLS.Enabled and Kafka.SASLPlain.Enabled match the listener's security.protocol";

/// Creates the topic unless the metadata already lists it. TOPIC_ALREADY_EXISTS
/// (another node won the race) is success. The metadata probe runs on the shared
/// producer, which never asks the brokers to create a topic by itself
/// (`allow.auto.create.topics=false`); a refused connection is reported with the
/// cause the producer's context recorded.
async fn ensure_topic(
    clients: &Clients,
    config: &KafkaConfig,
    topic: &str,
) -> Result<(), KafkaLogError> {
    let timeout = config.retry.read_timeout;
    let producer = &clients.producer;
    let client = producer.client.clone();
    let owned_topic = topic.to_owned();
    let probed = tokio::task::spawn_blocking(move || {
        let probe = client
            .client()
            .fetch_metadata(Some(&owned_topic), Timeout::After(timeout));
        if probe.is_err() {
            // Deliver the client's queued log and error events (the connection's
            // cause) to the context before it is read.
            client.poll(Duration::ZERO);
        }
        probe.map(|md| {
            md.topics().iter().any(|t| {
                t.name() == owned_topic
                    && t.error().is_none_or(|e| {
                        RDKafkaErrorCode::from(e) != RDKafkaErrorCode::UnknownTopicOrPartition
                    })
            })
        })
    })
    .await
    .map_err(|e| KafkaLogError::MissingPartition {
        topic: topic.to_owned(),
        reason: format!("metadata task failed: {e}"),
    })?;
    let exists = probed.map_err(|source| {
        let broker_error = producer.context.last_error().or_else(|| {
            (source.rdkafka_error_code() == Some(RDKafkaErrorCode::BrokerTransportFailure))
                .then(|| UNEXPLAINED_TRANSPORT_FAILURE.to_owned())
        });
        KafkaLogError::Request {
            what: "metadata",
            topic: topic.to_owned(),
            source: Box::new(source),
            broker_error: broker_error.map(Into::into),
        }
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
    let admin = clients.admin(topic)?;
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
    producer: &SharedProducer,
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

/// The partition's low and high watermarks. A partition whose leader is still
/// being elected or announced (a topic created a moment ago: the broker answers
/// NOT_LEADER_FOR_PARTITION or LEADER_NOT_AVAILABLE until its metadata settles) is
/// asked again every [`METADATA_POLL_INTERVAL`] within `timeout`.
async fn fetch_watermarks(
    producer: &SharedProducer,
    topic: &str,
    timeout: Duration,
) -> Result<(i64, i64), KafkaLogError> {
    let deadline = Instant::now() + timeout;
    loop {
        let client = producer.client.clone();
        let owned_topic = topic.to_owned();
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_watermarks(&owned_topic, PARTITION, Timeout::After(left))
        })
        .await
        .map_err(|e| KafkaLogError::MissingPartition {
            topic: topic.to_owned(),
            reason: format!("watermark task failed: {e}"),
        })?;
        let settling = matches!(
            answer
                .as_ref()
                .err()
                .and_then(KafkaError::rdkafka_error_code),
            Some(RDKafkaErrorCode::NotLeaderForPartition | RDKafkaErrorCode::LeaderNotAvailable)
        );
        if settling && Instant::now() + METADATA_POLL_INTERVAL < deadline {
            tokio::time::sleep(METADATA_POLL_INTERVAL).await;
            continue;
        }
        return answer.map_err(|source| KafkaLogError::Request {
            what: "watermarks (ListOffsets)",
            topic: topic.to_owned(),
            source: Box::new(source),
            broker_error: producer.context.last_error().map(Into::into),
        });
    }
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
