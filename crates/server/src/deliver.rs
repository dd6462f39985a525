//! Deliver: blocks of a channel from a seek position, each request closed by one
//! status; after SUCCESS the stream takes another request, after any other status
//! it ends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use korder_channelconfig::policies::{CHANNEL_READERS, ORDERER_READERS, SignedData};
use korder_msp::Identity;
use korder_proto::Message;
use korder_proto::common::{ChannelHeader, Envelope, Payload, SignatureHeader, Status};
use korder_proto::orderer::{DeliverResponse, SeekInfo, deliver_response, seek_info};
use korder_types::ids::ConfigSeq;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::msgprocessor::{Parsed, parse};
use crate::registrar::Registrar;

/// Deliver settings from `General.Authentication`.
#[derive(Clone, Copy, Debug)]
pub struct DeliverConfig {
    /// Largest accepted difference between a request's timestamp and the node's clock.
    pub time_window: Duration,
    /// Skip the client certificate expiry check.
    pub no_expiration_checks: bool,
}

impl Default for DeliverConfig {
    fn default() -> Self {
        DeliverConfig {
            time_window: Duration::from_secs(15 * 60),
            no_expiration_checks: false,
        }
    }
}

type Out = mpsc::Sender<Result<DeliverResponse, tonic::Status>>;

fn status_msg(s: Status) -> DeliverResponse {
    DeliverResponse {
        r#type: Some(deliver_response::Type::Status(s as i32)),
    }
}

/// Serves one Deliver stream.
pub fn serve(
    registrar: Registrar,
    config: DeliverConfig,
    binding: crate::tls::TlsBinding,
    mut inbound: crate::service::Inbound,
) -> ReceiverStream<Result<DeliverResponse, tonic::Status>> {
    let (tx, rx) = mpsc::channel(16);
    let metrics = registrar.metrics();
    metrics.deliver_streams_opened.inc();
    tokio::spawn(async move {
        loop {
            let envelope = match inbound.message().await {
                Ok(Some(e)) => e.envelope,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "deliver: ending the stream, a request could not be received");
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            let Some(status) = handle(&registrar, &config, &binding, envelope, &tx).await else {
                break; // the client went away
            };
            if tx.send(Ok(status_msg(status))).await.is_err() || status != Status::Success {
                break;
            }
        }
        metrics.deliver_streams_closed.inc();
    });
    ReceiverStream::new(rx)
}

fn now_unix() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Processes one seek request; `None` when the client disconnected mid-way.
async fn handle(
    registrar: &Registrar,
    config: &DeliverConfig,
    binding: &crate::tls::TlsBinding,
    envelope: Envelope,
    out: &Out,
) -> Option<Status> {
    let Ok(Parsed {
        envelope,
        payload,
        channel_header: ch,
    }) = parse(envelope)
    else {
        return Some(Status::BadRequest);
    };
    let signature_header = payload
        .header
        .as_ref()
        .map(|h| SignatureHeader::decode(h.signature_header.as_ref()));
    if !matches!(signature_header, Some(Ok(_))) {
        return Some(Status::BadRequest);
    }
    let Some(ts) = ch.timestamp.as_ref() else {
        return Some(Status::BadRequest);
    };
    let now = now_unix().as_secs_f64();
    let stamp = ts.seconds as f64 + f64::from(ts.nanos) / 1e9;
    if (now - stamp).abs() > config.time_window.as_secs_f64() {
        return Some(Status::BadRequest);
    }
    if let Err(e) = binding.check(&ch.tls_cert_hash) {
        tracing::warn!(error = %e, "deliver: TLS binding check failed");
        return Some(Status::BadRequest);
    }
    let Some(channel) = registrar.channel(&ch.channel_id) else {
        tracing::debug!(channel = %ch.channel_id, "deliver for an unknown channel");
        return Some(Status::NotFound);
    };
    let metrics = registrar.metrics();
    metrics
        .deliver_requests_received
        .with_label_values(&[ch.channel_id.as_str(), "false", "block"])
        .inc();
    let status = serve_request(&channel, &ch, &envelope, &payload, config, out, &metrics).await;
    if let Some(s) = status {
        let success = if s == Status::Success {
            "true"
        } else {
            "false"
        };
        metrics
            .deliver_requests_completed
            .with_label_values(&[ch.channel_id.as_str(), "false", "block", success])
            .inc();
    }
    status
}

#[allow(clippy::too_many_arguments)]
async fn serve_request(
    channel: &crate::registrar::Channel,
    ch: &ChannelHeader,
    envelope: &Envelope,
    payload: &Payload,
    config: &DeliverConfig,
    out: &Out,
    metrics: &crate::metrics::Metrics,
) -> Option<Status> {
    let Ok(seek) = SeekInfo::decode(payload.data.as_ref()) else {
        return Some(Status::BadRequest);
    };
    let strict = seek.error_response == seek_info::SeekErrorResponse::Strict as i32;
    let mut status = channel.chain.status();
    if strict && status.borrow().errored {
        return Some(Status::ServiceUnavailable);
    }
    // Session: the creator's certificate must not have expired, and the channel's
    // Readers policy must accept the request; re-checked before every block, the
    // policy again whenever the config changed.
    let Ok(signed) = SignedData::from_envelope(envelope) else {
        return Some(Status::BadRequest);
    };
    let expires_at = if config.no_expiration_checks {
        None
    } else {
        signed
            .first()
            .and_then(|sd| Identity::from_serialized(&sd.identity).ok())
            .map(|id| id.expires_at())
    };
    let mut sequence = channel.state.watch_sequence();
    let mut session = Session {
        signed,
        expires_at,
        checked_at: None,
    };
    if !session.allowed(&channel.state, &mut sequence) {
        return Some(Status::Forbidden);
    }
    let store = &channel.store;
    let range = match crate::seek::resolve(&seek, store.height()) {
        Ok(range) => range,
        Err(status) => return Some(status),
    };
    let mut iter = store.iter_from(range.start);
    let closer = iter.closer();
    let mut number = range.start;
    loop {
        if range.fail_if_not_ready && number.get() >= store.height() {
            return Some(Status::NotFound);
        }
        let next = tokio::select! {
            r = iter.next_async() => r,
            _ = out.closed() => { closer.close(); return None; }
            _ = status.wait_for(|s| s.errored), if strict => {
                closer.close();
                return Some(Status::ServiceUnavailable);
            }
        };
        let block = match next {
            Ok(Some(b)) => b,
            Ok(None) | Err(_) => return Some(Status::ServiceUnavailable),
        };
        if !session.allowed(&channel.state, &mut sequence) {
            return Some(Status::Forbidden);
        }
        let msg = DeliverResponse {
            r#type: Some(deliver_response::Type::Block(block)),
        };
        if out.send(Ok(msg)).await.is_err() {
            return None;
        }
        metrics
            .deliver_blocks_sent
            .with_label_values(&[ch.channel_id.as_str(), "false", "block"])
            .inc();
        if range.stop.is_last(number) {
            return Some(Status::Success);
        }
        number = number.next();
    }
}

/// Access control of one Deliver request.
struct Session {
    signed: Vec<SignedData>,
    expires_at: Option<SystemTime>,
    /// The config sequence the Readers policy last accepted the request at.
    checked_at: Option<ConfigSeq>,
}

impl Session {
    fn allowed(
        &mut self,
        state: &crate::channel::ChannelState,
        sequence: &mut tokio::sync::watch::Receiver<ConfigSeq>,
    ) -> bool {
        if self.expires_at.is_some_and(|t| SystemTime::now() > t) {
            return false;
        }
        let seq = *sequence.borrow_and_update();
        if self.checked_at == Some(seq) {
            return true;
        }
        let bundle = state.bundle();
        let policy = if bundle.orderer.maintenance {
            ORDERER_READERS
        } else {
            CHANNEL_READERS
        };
        match bundle.evaluate(policy, &self.signed) {
            Ok(()) => {
                self.checked_at = Some(bundle.sequence);
                true
            }
            Err(e) => {
                tracing::warn!(channel = %bundle.channel_id, error = %e, "deliver request refused by {policy}");
                false
            }
        }
    }
}
