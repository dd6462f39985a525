//! One consumer read by many readers: each reader's partition is added to the
//! consumer's assignment at the reader's own offset and read through a queue of its
//! own.
//!
//! ```text
//!   fetcher ──▶ topic-a/0 queue ──▶ reader of a      (split from the consumer
//!           ──▶ topic-b/0 queue ──▶ reader of b       queue before assigning)
//!           ──▶ consumer queue  ──▶ events thread    (logs, statistics, client errors)
//! ```
//!
//! A reader nobody polls fills only its own queue; librdkafka stops fetching that
//! partition at the prefetch limits while the others go on. A reader dropped takes
//! its partition out of the assignment. Nothing is committed and no group is joined:
//! partitions are assigned explicitly.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use korder_log::{LogError, LogOffset, LogRecord};
use korder_types::sync::MutexExt;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::clients::build_client;
use crate::config::KafkaConfig;
use crate::context::TracingContext;
use crate::error::KafkaLogError;
use crate::log::PARTITION;

/// Distinguishes the consumer groups of the consumers of one process (librdkafka
/// needs a group id to assign partitions; nothing is committed under it).
static CONSUMER_SEQ: AtomicU64 = AtomicU64::new(0);

/// Longest wait of the events thread for an event before it looks whether the
/// consumer was released.
const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A consumer and the topics it reads, partition 0 of each, one reader per topic.
pub(crate) struct SharedConsumer {
    consumer: Arc<BaseConsumer<TracingContext>>,
    /// Topics whose partition 0 is in the assignment, each read by one reader.
    assigned: Mutex<HashSet<Arc<str>>>,
    /// Tells the events thread to stop; it releases its handle of the consumer,
    /// which is then destroyed.
    stop: Arc<AtomicBool>,
}

impl SharedConsumer {
    /// Builds a consumer and the thread that serves its events. `label` tags the
    /// client's log lines; `topic` names the log that needed it, for errors.
    pub(crate) fn build(
        config: &KafkaConfig,
        label: &str,
        topic: &str,
    ) -> Result<Arc<Self>, KafkaLogError> {
        let group_id = format!(
            "korder-reader-{}-{}",
            std::process::id(),
            CONSUMER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let context = TracingContext::new("consumer", label).with_stats(config);
        let consumer: Arc<BaseConsumer<TracingContext>> = Arc::new(build_client(
            &config.consumer_properties(&group_id),
            context,
            topic,
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("korder-kafka-events".to_owned())
            .spawn({
                let consumer = consumer.clone();
                let stop = stop.clone();
                move || serve_events(consumer, &stop)
            })
            .map_err(|e| KafkaLogError::Client {
                client: "consumer",
                topic: topic.to_owned(),
                source: KafkaError::ClientCreation(format!("starting its events thread: {e}")),
            })?;
        Ok(Arc::new(Self {
            consumer,
            assigned: Mutex::new(HashSet::new()),
            stop,
        }))
    }

    /// Adds partition 0 of `topic` to the assignment at `start` and returns its
    /// reading end; `None` if a reader of `topic` already reads it here.
    pub(crate) fn assign(
        self: &Arc<Self>,
        topic: &Arc<str>,
        start: Offset,
    ) -> Result<Option<Assignment>, LogError> {
        let mut assigned = self.assigned.lock_unpoisoned();
        if assigned.contains(topic) {
            return Ok(None);
        }
        // Split before assigning: records fetched from then on go to this queue,
        // never to the consumer queue.
        let mut queue = self
            .consumer
            .split_partition_queue(topic, PARTITION)
            .ok_or_else(|| {
                LogError::Unavailable(format!(
                    "topic {topic} partition {PARTITION}: the consumer gives no queue for it"
                ))
            })?;
        // Whatever an earlier reader of the topic left unread (an error event it
        // never polled) does not concern this one.
        let mut stale = 0usize;
        while queue.poll(Duration::ZERO).is_some() {
            stale += 1;
        }
        if stale > 0 {
            tracing::debug!(%topic, stale, "dropped events left by an earlier reader");
        }
        let ready = Arc::new(Notify::new());
        queue.set_nonempty_callback({
            let ready = ready.clone();
            move || ready.notify_one()
        });
        let mut partition = TopicPartitionList::new();
        partition
            .add_partition_offset(topic, PARTITION, start)
            .map_err(|e| unavailable(topic, "setting the start offset", &e))?;
        self.consumer
            .incremental_assign(&partition)
            .map_err(|e| unavailable(topic, "assigning partition 0", &e))?;
        assigned.insert(topic.clone());
        Ok(Some(Assignment {
            queue,
            ready,
            topic: topic.clone(),
            owner: self.clone(),
        }))
    }
}

impl Drop for SharedConsumer {
    fn drop(&mut self) {
        // The events thread holds the last handle: the consumer is closed there,
        // not on the caller's (possibly async) thread.
        self.stop.store(true, Ordering::Release);
    }
}

/// Serves the consumer queue (client logs, errors and statistics reach the
/// context from there) until told to stop.
fn serve_events(consumer: Arc<BaseConsumer<TracingContext>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(EVENT_POLL_INTERVAL) {
            // Errors were handed to the context (which logs them) while polled.
            None | Some(Err(_)) => {}
            Some(Ok(m)) => {
                // Every partition's queue is split before it is assigned.
                tracing::error!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "a record reached the consumer queue instead of its partition's; dropped"
                );
            }
        }
    }
}

/// A partition in a consumer's assignment, read by one reader; dropping it takes
/// the partition out of the assignment.
pub(crate) struct Assignment {
    /// Released before the consumer below.
    queue: PartitionQueue<TracingContext>,
    /// Raised by librdkafka when the queue becomes non-empty.
    ready: Arc<Notify>,
    topic: Arc<str>,
    owner: Arc<SharedConsumer>,
}

impl Assignment {
    /// The next record of the partition or the error librdkafka reports in its
    /// place, waiting for one. Cancel-safe: a record taken from the queue is
    /// returned in the same poll.
    pub(crate) async fn next(&self) -> KafkaResult<LogRecord> {
        loop {
            if let Some(received) = self.queue.poll(Duration::ZERO) {
                return received.map(|m| {
                    assert_eq!(
                        (m.topic(), m.partition()),
                        (&*self.topic, PARTITION),
                        "a partition queue returned another partition's record"
                    );
                    LogRecord {
                        offset: LogOffset::new(m.offset()),
                        value: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                    }
                });
            }
            // A record arriving after the poll above stores a permit: no lost wakeup.
            self.ready.notified().await;
        }
    }
}

impl Drop for Assignment {
    fn drop(&mut self) {
        let mut partition = TopicPartitionList::new();
        partition.add_partition(&self.topic, PARTITION);
        match self.owner.consumer.incremental_unassign(&partition) {
            Ok(()) => {
                self.owner.assigned.lock_unpoisoned().remove(&self.topic);
            }
            // The partition stays marked as read: later readers of the topic get
            // a consumer of their own.
            Err(e) => tracing::warn!(
                topic = %self.topic,
                partition = PARTITION,
                error = %e,
                "cannot take a closed reader's partition out of the consumer's assignment"
            ),
        }
    }
}

fn unavailable(topic: &str, what: &str, e: &KafkaError) -> LogError {
    LogError::Unavailable(format!("topic {topic} partition {PARTITION}: {what}: {e}"))
}
