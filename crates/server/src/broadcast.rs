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
use korder_proto::common::{HeaderType, Status};
use korder_proto::orderer::BroadcastResponse;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::chain::BoxFuture;
use crate::metrics::Metrics;
use crate::msgprocessor::parse;
use crate::processor::{MessageKind, Validated};
use crate::registrar::Registrar;
use crate::service::{Inbound, ReceivedEnvelope};
use crate::status::ProcessError;
use crate::throttle::{Throttle, ThrottleKey};

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

/// Most envelopes of one stream validated in one hand-off to the blocking pool.
pub const MAX_VALIDATION_BATCH: usize = 64;

/// An envelope that parsed and names a channel this node serves, waiting for
/// validation.
struct Prepared {
    tracker: Tracker,
    /// The envelope's bytes as received: what is ordered and stored.
    raw: Bytes,
    parsed: crate::msgprocessor::Parsed,
    channel: Arc<crate::registrar::Channel>,
}

/// The response future of a message that ends the stream.
fn finish(tracker: Tracker, r: BroadcastResponse) -> BoxFuture<'static, BroadcastResponse> {
    tracker.done(&r);
    Box::pin(async move { r })
}

/// Parses `received` and finds its channel (cheap, on the async worker); `Err` is
/// the refusal that ends the stream.
fn prepare(
    registrar: &Registrar,
    received: ReceivedEnvelope,
) -> Result<Prepared, BoxFuture<'static, BroadcastResponse>> {
    let mut tracker = Tracker {
        metrics: registrar.metrics(),
        channel: "unknown".into(),
        kind: "unknown".into(),
        began: Instant::now(),
        validated: None,
    };
    let ReceivedEnvelope { raw, envelope } = received;
    let parsed = match parse(envelope) {
        Ok(p) => p,
        Err(e) => return Err(finish(tracker, refused(e))),
    };
    tracker.channel = parsed.channel_header.channel_id.clone();
    tracker.kind = HeaderType::try_from(parsed.channel_header.r#type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| parsed.channel_header.r#type.to_string());
    let channel = match registrar.broadcast_target(&parsed) {
        Ok(c) => c,
        Err(e) => return Err(finish(tracker, refused(e))),
    };
    Ok(Prepared {
        tracker,
        raw,
        parsed,
        channel,
    })
}

/// Runs the filters (signature checks included) on each prepared envelope in
/// order, stopping at the first refusal. CPU work: called on the blocking pool.
fn validate_batch(batch: &[Prepared]) -> Vec<Result<Validated, ProcessError>> {
    let mut out = Vec::with_capacity(batch.len());
    for p in batch {
        let r = p.channel.processor.process(&p.parsed, &p.raw);
        let refused = r.is_err();
        out.push(r);
        if refused {
            break;
        }
    }
    out
}

/// Starts ordering a validated envelope; the future of its response.
async fn submit(
    mut tracker: Tracker,
    channel: &crate::registrar::Channel,
    validated: Validated,
) -> (BoxFuture<'static, BroadcastResponse>, bool) {
    tracker.validated = Some(tracker.began.elapsed());
    if let Err(e) = channel.chain.wait_ready().await {
        return (finish(tracker, response(e.status(), e.to_string())), false);
    }
    let Validated {
        envelope,
        config_seq,
        kind,
    } = validated;
    let ordered = match kind {
        MessageKind::Config => channel.chain.configure(envelope, config_seq),
        MessageKind::Normal => channel.chain.order(envelope, config_seq),
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

/// Validates a batch of a stream's envelopes in one blocking-pool hand-off and
/// starts ordering them in order; one response future per envelope handed over,
/// and whether the stream may continue (false after a refusal).
async fn process_batch(batch: Vec<Prepared>) -> (Vec<BoxFuture<'static, BroadcastResponse>>, bool) {
    let validated = tokio::task::spawn_blocking(move || {
        let results = validate_batch(&batch);
        (batch, results)
    })
    .await;
    let (batch, results) = match validated {
        Ok(v) => v,
        Err(e) => {
            // The validation task panicked: the batch's first message gets the
            // answer, nothing of it is ordered.
            let r = response(Status::InternalServerError, e.to_string());
            return (vec![Box::pin(async move { r })], false);
        }
    };
    let mut answers = Vec::with_capacity(results.len());
    for (p, result) in batch.into_iter().zip(results) {
        match result {
            Ok(v) => {
                let (answer, go_on) = submit(p.tracker, &p.channel, v).await;
                answers.push(answer);
                if !go_on {
                    return (answers, false);
                }
            }
            Err(e) => {
                answers.push(finish(p.tracker, refused(e)));
                return (answers, false);
            }
        }
    }
    (answers, true)
}

/// What the answering task sends next: a response once its future resolves, or
/// the gRPC status that ends the stream.
enum Pending {
    Answer(BoxFuture<'static, BroadcastResponse>),
    End(tonic::Status),
}

/// Logs why a stream's next message could not be received; the status ends it.
fn receive_failed(status: tonic::Status) -> Pending {
    tracing::debug!(code = ?status.code(), message = status.message(), "broadcast: ending the stream, a request could not be received");
    Pending::End(status)
}

/// Serves one Broadcast stream; with `throttle`, every message received counts
/// against the key's client and organisation, and receiving waits while either has
/// used its share of the rate.
pub fn serve(
    registrar: Registrar,
    mut inbound: Inbound,
    throttle: Option<(Throttle, ThrottleKey)>,
) -> ReceiverStream<Result<BroadcastResponse, tonic::Status>> {
    let (out_tx, out_rx) = mpsc::channel(64);
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT_PER_STREAM);
    let registrar = Arc::new(registrar);
    tokio::spawn(async move {
        let mut ended = false;
        while !ended {
            let mut envelope = match inbound.message().await {
                Ok(Some(e)) => {
                    if let Some((t, key)) = &throttle {
                        t.received(key).await;
                    }
                    Some(e)
                }
                Ok(None) => break,
                Err(status) => {
                    let _ = pending_tx.send(receive_failed(status)).await;
                    break;
                }
            };
            // Take what the client has already sent, up to a batch, without waiting.
            let mut batch = Vec::new();
            let mut refusal = None;
            let mut failure = None;
            while let Some(e) = envelope.take() {
                match prepare(&registrar, e) {
                    Ok(p) => batch.push(p),
                    Err(answer) => {
                        refusal = Some(answer);
                        break;
                    }
                }
                if batch.len() == MAX_VALIDATION_BATCH {
                    break;
                }
                envelope = match inbound.ready_message() {
                    Some(Ok(Some(e))) => {
                        if let Some((t, key)) = &throttle {
                            t.received(key).await;
                        }
                        Some(e)
                    }
                    Some(Ok(None)) => {
                        ended = true;
                        None
                    }
                    Some(Err(status)) => {
                        ended = true;
                        failure = Some(status);
                        None
                    }
                    None => None,
                };
            }
            let (answers, go_on) = if batch.is_empty() {
                (Vec::new(), true)
            } else {
                process_batch(batch).await
            };
            for answer in answers {
                if pending_tx.send(Pending::Answer(answer)).await.is_err() {
                    return;
                }
            }
            if !go_on {
                break;
            }
            if let Some(answer) = refusal {
                let _ = pending_tx.send(Pending::Answer(answer)).await;
                break;
            }
            if let Some(status) = failure {
                let _ = pending_tx.send(receive_failed(status)).await;
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(pending) = pending_rx.recv().await {
            let answer = match pending {
                Pending::Answer(answer) => answer,
                Pending::End(status) => {
                    let _ = out_tx.send(Err(status)).await;
                    break;
                }
            };
            let r = answer.await;
            let success = r.status == Status::Success as i32;
            if out_tx.send(Ok(r)).await.is_err() || !success {
                break;
            }
        }
    });
    ReceiverStream::new(out_rx)
}
