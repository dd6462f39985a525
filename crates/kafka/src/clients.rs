//! The librdkafka clients of the process, shared by every log with the same client
//! configuration.
//!
//! A librdkafka client runs a main thread, an internal thread and one thread (and
//! connection) per broker. Built per channel, 1,000 channels would mean thousands of
//! threads and connections; shared, they do not grow with the channel count:
//!
//! ```text
//!   KafkaLog(ch1) ─┐                     ┌─ producer  (all topics; order is per partition)
//!   KafkaLog(ch2) ─┼─▶ Clients(config) ──┼─ consumer  (one partition queue per reader)
//!   KafkaLog(ch3) ─┘    one per distinct └─ admin     (built when a topic is created)
//!                       client settings
//! ```
//!
//! The registry is keyed by the librdkafka properties the clients are built from and
//! holds its entries weakly: they live while some log or reader uses them.
//! Settings that are not client properties (the replication factor of new topics,
//! whether to create a missing topic) stay with each log. A statistics hook is not
//! part of the key either: the clients report to the hook of the configuration that
//! built them (the figures are process-wide in any case, see [`crate::stats`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use korder_types::sync::MutexExt;
use rdkafka::admin::AdminClient;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::producer::{FutureProducer, Producer};

use crate::config::{KafkaConfig, is_secret};
use crate::consumer::SharedConsumer;
use crate::context::TracingContext;
use crate::error::KafkaLogError;

/// The `topic` a shared client's log lines are tagged with: it serves many.
pub(crate) const SHARED_TOPICS: &str = "*";

/// The librdkafka properties of the producer and of the consumer (with a placeholder
/// group id), sorted: configurations with equal keys can share clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    producer: Vec<(&'static str, String)>,
    consumer: Vec<(&'static str, String)>,
}

impl ClientKey {
    fn of(config: &KafkaConfig) -> Self {
        let mut producer = config.producer_properties();
        let mut consumer = config.consumer_properties("");
        producer.sort();
        consumer.sort();
        Self { producer, consumer }
    }
}

/// Every [`Clients`] of the process that some log still uses.
static REGISTRY: LazyLock<Mutex<HashMap<ClientKey, Weak<Clients>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The producer with its context, whose last connection error request failures quote
/// (librdkafka's producer context is not reachable through the producer itself).
pub(crate) struct SharedProducer {
    pub(crate) client: FutureProducer<TracingContext>,
    pub(crate) context: TracingContext,
}

/// The clients of one configuration: a producer (built with the entry), and a
/// consumer and an admin client built on first use.
pub(crate) struct Clients {
    /// The configuration the clients are built from (the first log's).
    config: Arc<KafkaConfig>,
    pub(crate) producer: SharedProducer,
    consumer: Mutex<Option<Arc<SharedConsumer>>>,
    admin: Mutex<Option<Arc<AdminClient<TracingContext>>>>,
}

impl Clients {
    /// The clients for `config`, built if no log of the process uses them yet.
    /// `topic` names the log being opened, for errors.
    pub(crate) fn for_config(
        config: &KafkaConfig,
        topic: &str,
    ) -> Result<Arc<Self>, KafkaLogError> {
        let key = ClientKey::of(config);
        // Held while the producer is built so that concurrent opens share one.
        let mut registry = REGISTRY.lock_unpoisoned();
        registry.retain(|_, clients| clients.strong_count() > 0);
        if let Some(clients) = registry.get(&key).and_then(Weak::upgrade) {
            // An idempotent producer that hit a fatal error refuses every record
            // from then on: a log opened now (a chain restarting) gets new clients,
            // and the logs still on the old ones move over as they reopen.
            match clients.producer.client.client().fatal_error() {
                None => return Ok(clients),
                Some((code, reason)) => tracing::error!(
                    %code,
                    reason,
                    "the shared Kafka producer failed for good; building new clients"
                ),
            }
        }
        let context = TracingContext::new("producer", SHARED_TOPICS).with_stats(config);
        let client = build_client(&config.producer_properties(), context.clone(), topic)?;
        let clients = Arc::new(Self {
            config: Arc::new(config.clone()),
            producer: SharedProducer { client, context },
            consumer: Mutex::new(None),
            admin: Mutex::new(None),
        });
        registry.insert(key, Arc::downgrade(&clients));
        tracing::debug!(configurations = registry.len(), "Kafka clients built");
        Ok(clients)
    }

    /// The consumer every reader of these clients shares.
    pub(crate) fn consumer(&self, topic: &str) -> Result<Arc<SharedConsumer>, KafkaLogError> {
        let mut slot = self.consumer.lock_unpoisoned();
        if let Some(consumer) = &*slot {
            return Ok(consumer.clone());
        }
        let consumer = SharedConsumer::build(&self.config, SHARED_TOPICS, topic)?;
        *slot = Some(consumer.clone());
        Ok(consumer)
    }

    /// A consumer of its own for a reader of `topic`, which the shared consumer
    /// already reads for another reader; it lives as long as that reader.
    pub(crate) fn private_consumer(
        &self,
        topic: &str,
    ) -> Result<Arc<SharedConsumer>, KafkaLogError> {
        SharedConsumer::build(&self.config, topic, topic)
    }

    /// The admin client (topic creation), built on first use.
    pub(crate) fn admin(
        &self,
        topic: &str,
    ) -> Result<Arc<AdminClient<TracingContext>>, KafkaLogError> {
        let mut slot = self.admin.lock_unpoisoned();
        if let Some(admin) = &*slot {
            return Ok(admin.clone());
        }
        let admin: Arc<AdminClient<TracingContext>> = Arc::new(build_client(
            &self.config.admin_properties(),
            TracingContext::new("admin", SHARED_TOPICS),
            topic,
        )?);
        *slot = Some(admin.clone());
        Ok(admin)
    }
}

/// Builds a librdkafka client from `props`, logging the effective settings. `topic`
/// names the log that needed the client, for the error.
pub(crate) fn build_client<T>(
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
    tracing::info!(
        client,
        topics = %context.topic,
        opened_for = topic,
        settings = %rendered.join(" "),
        "Kafka client settings"
    );
    T::from_config_and_context(&config, context).map_err(|source| KafkaLogError::Client {
        client,
        topic: topic.to_owned(),
        source,
    })
}
