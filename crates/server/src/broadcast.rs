//! Broadcast: one response per envelope, in request order; the stream ends after
//! the first response that is not SUCCESS.
//!
//! A stream is pipelined: while earlier envelopes wait for their log records to
//! become durable, later ones are already validated and appended. Validation runs
//! in request order and stops at the first refusal, so nothing after a refused
//! envelope is ever ordered. A consenter failure (SERVICE_UNAVAILABLE) is only known
//! once the append resolves; envelopes appended behind it may then be ordered
//! without an answer, as with any client that loses its connection after sending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_consensus::MsgClass;
use korder_proto::Message;
use korder_proto::common::{Envelope, HeaderType, Status};
use korder_proto::orderer::BroadcastResponse;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::chain::BoxFuture;
use crate::metrics::Metrics;
use crate::msgprocessor::{parse, process_normal};
use crate::registrar::Registrar;
use crate::status::ProcessError;

/// Most envelopes of one stream that may wait for their acknowledgement at once.
pub const MAX_IN_FLIGHT_PER_STREAM: usize = 1024;

fn response(status: Status, info: String) -> BroadcastResponse {
    BroadcastResponse {
        status: status as i32,
        info,
    }
}

fn refused(e: ProcessError) -> BroadcastResponse {
    response(e.status(), e.to_string())
}

/// Labels and timings of one message, recorded with its final status.
struct Tracker {
    metrics: Arc<Metrics>,
    channel: String,
    kind: String,
    began: Instant,
    validated: Option<Duration>,
}

impl Tracker {
    fn done(self, r: &BroadcastResponse) {
        let status = Status::try_from(r.status)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| r.status.to_string());
        let labels = [self.channel.as_str(), self.kind.as_str(), status.as_str()];
        let total = self.began.elapsed();
        let validate = self.validated.unwrap_or(total);
        self.metrics
            .broadcast_validate_duration
            .with_label_values(&labels)
            .observe(validate.as_secs_f64());
        if self.validated.is_some() {
            self.metrics
                .broadcast_enqueue_duration
                .with_label_values(&labels)
                .observe(total.saturating_sub(validate).as_secs_f64());
        }
        self.metrics
            .broadcast_processed_count
            .with_label_values(&labels)
            .inc();
    }
}

/// Validates one envelope and starts ordering it. Returns the future of its
/// response, and whether the stream may continue (false after a refusal).
pub async fn process(
    registrar: &Registrar,
    envelope: Envelope,
) -> (BoxFuture<'static, BroadcastResponse>, bool) {
    let mut tracker = Tracker {
        metrics: registrar.metrics(),
        channel: "unknown".into(),
        kind: "unknown".into(),
        began: Instant::now(),
        validated: None,
    };
    let done = |tracker: Tracker, r: BroadcastResponse| -> BoxFuture<'static, BroadcastResponse> {
        tracker.done(&r);
        Box::pin(async move { r })
    };
    let parsed = match parse(envelope) {
        Ok(p) => p,
        Err(e) => return (done(tracker, refused(e)), false),
    };
    tracker.channel = parsed.channel_header.channel_id.clone();
    tracker.kind = HeaderType::try_from(parsed.channel_header.r#type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| parsed.channel_header.r#type.to_string());
    let channel = match registrar.broadcast_target(&parsed) {
        Ok(c) => c,
        Err(e) => return (done(tracker, refused(e)), false),
    };
    let class = parsed.class();
    let filters = registrar.filters();
    // Validation verifies signatures: CPU work kept off the async workers.
    let validated = {
        let registrar = registrar.clone();
        let channel = channel.clone();
        tokio::task::spawn_blocking(move || {
            let id = &parsed.channel_header.channel_id;
            if class == MsgClass::ConfigUpdate {
                registrar
                    .process_config_update(&channel, &parsed.envelope, id)
                    .map(|(env, seq)| (env.encode_to_vec().into(), seq, true))
            } else {
                process_normal(&parsed.envelope, id, &channel.state.bundle(), &filters)
                    .map(|seq| (parsed.envelope.encode_to_vec().into(), seq, false))
            }
        })
        .await
    };
    let (bytes, config_seq, is_config): (Bytes, u64, bool) = match validated {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return (done(tracker, refused(e)), false),
        Err(e) => {
            return (
                done(
                    tracker,
                    response(Status::InternalServerError, e.to_string()),
                ),
                false,
            );
        }
    };
    tracker.validated = Some(tracker.began.elapsed());
    if let Err(e) = channel.chain.wait_ready().await {
        return (done(tracker, response(e.status(), e.to_string())), false);
    }
    let ordered = if is_config {
        channel.chain.configure(bytes, config_seq)
    } else {
        channel.chain.order(bytes, config_seq)
    };
    (
        Box::pin(async move {
            let r = match ordered.await {
                Ok(()) => response(Status::Success, String::new()),
                Err(e) => response(e.status(), e.to_string()),
            };
            tracker.done(&r);
            r
        }),
        true,
    )
}

/// Serves one Broadcast stream.
pub fn serve(
    registrar: Registrar,
    mut inbound: tonic::Streaming<Envelope>,
) -> ReceiverStream<Result<BroadcastResponse, tonic::Status>> {
    let (out_tx, out_rx) = mpsc::channel(64);
    let (pending_tx, mut pending_rx) =
        mpsc::channel::<BoxFuture<'static, BroadcastResponse>>(MAX_IN_FLIGHT_PER_STREAM);
    let registrar = Arc::new(registrar);
    tokio::spawn(async move {
        loop {
            let envelope = match inbound.message().await {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(%status, "broadcast stream ended by the client");
                    break;
                }
            };
            let (answer, go_on) = process(&registrar, envelope).await;
            if pending_tx.send(answer).await.is_err() || !go_on {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(answer) = pending_rx.recv().await {
            let r = answer.await;
            let success = r.status == Status::Success as i32;
            if out_tx.send(Ok(r)).await.is_err() || !success {
                break;
            }
        }
    });
    ReceiverStream::new(out_rx)
}
