//! The gRPC `orderer.AtomicBroadcast` service.
//!
//! Requests are decoded by [`EnvelopeCodec`], which keeps the bytes the client sent
//! next to the decoded [`Envelope`]: an envelope is ordered, logged and stored in a
//! block exactly as it was received (unknown fields included), never re-encoded.
//!
//! A request message that cannot be received ends its stream with a non-OK gRPC
//! status, as Fabric's orderer does:
//!
//! | what was received | gRPC status |
//! | --- | --- |
//! | bytes that do not decode as an `Envelope` | INTERNAL `grpc: failed to unmarshal the received message ...` |
//! | a message over [`MAX_MESSAGE_BYTES`] | RESOURCE_EXHAUSTED `grpc: received message larger than max ...` |
//! | a broken gRPC frame (bad compression flag, truncated body) | INTERNAL |
//!
//! Answers already due for earlier messages of the stream are sent first.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use korder_proto::Message;
use korder_proto::common::Envelope;
use korder_proto::orderer::{BroadcastResponse, DeliverResponse};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::deliver::DeliverConfig;
use crate::metrics::{Metrics, Series, grpc_code_name};
use crate::registrar::Registrar;
use crate::throttle::{Throttle, ThrottleKey};

/// Largest message the server receives or sends: 100 MiB, as Fabric's orderer.
pub const MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;

/// gRPC service name.
pub const SERVICE_NAME: &str = "orderer.AtomicBroadcast";
const BROADCAST_PATH: &str = "/orderer.AtomicBroadcast/Broadcast";
const DELIVER_PATH: &str = "/orderer.AtomicBroadcast/Deliver";

/// An envelope as received: the client's bytes and their decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedEnvelope {
    /// The message bytes exactly as the client sent them.
    pub raw: Bytes,
    /// `raw` decoded.
    pub envelope: Envelope,
}

impl ReceivedEnvelope {
    /// Decodes `raw`, keeping it.
    pub fn decode(raw: Bytes) -> Result<Self, prost::DecodeError> {
        let envelope = Envelope::decode(raw.clone())?;
        Ok(ReceivedEnvelope { raw, envelope })
    }
}

/// Decodes requests into [`ReceivedEnvelope`]s and encodes responses of type `R`.
#[derive(Debug)]
pub struct EnvelopeCodec<R>(std::marker::PhantomData<fn(R)>);

impl<R> Default for EnvelopeCodec<R> {
    fn default() -> Self {
        EnvelopeCodec(std::marker::PhantomData)
    }
}

impl<R: Message + Send + 'static> Codec for EnvelopeCodec<R> {
    type Encode = R;
    type Decode = ReceivedEnvelope;
    type Encoder = ResponseEncoder<R>;
    type Decoder = EnvelopeDecoder;

    fn encoder(&mut self) -> ResponseEncoder<R> {
        ResponseEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> EnvelopeDecoder {
        EnvelopeDecoder
    }
}

/// Encodes a response message.
#[derive(Debug)]
pub struct ResponseEncoder<R>(std::marker::PhantomData<fn(R)>);

impl<R: Message> Encoder for ResponseEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(format!("grpc: error while marshaling: {e}")))
    }
}

/// Decodes a request message into a [`ReceivedEnvelope`].
#[derive(Debug, Default)]
pub struct EnvelopeDecoder;

impl Decoder for EnvelopeDecoder {
    type Item = ReceivedEnvelope;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ReceivedEnvelope>, Status> {
        let raw = src.copy_to_bytes(src.remaining());
        ReceivedEnvelope::decode(raw).map(Some).map_err(|e| {
            Status::internal(format!(
                "grpc: failed to unmarshal the received message: {e}"
            ))
        })
    }
}

/// The inbound messages of a Broadcast or Deliver stream.
pub struct Inbound(Streaming<ReceivedEnvelope>, Series);

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbound")
    }
}

impl Inbound {
    /// The next message; `Ok(None)` at the end of the stream (also when the client
    /// cancelled it), `Err` with the status that must end the stream when the next
    /// message cannot be received.
    pub async fn message(&mut self) -> Result<Option<ReceivedEnvelope>, Status> {
        let m = self.0.message().await.map_err(receive_error);
        self.count(&m);
        m
    }

    fn count(&self, m: &Result<Option<ReceivedEnvelope>, Status>) {
        if let Ok(Some(_)) = m {
            self.1.inc();
        }
    }

    /// The next message if it is already there, without waiting: one poll of the
    /// stream that registers no interest in a wake-up. Nothing is lost when it is
    /// not ready: a partly received message stays buffered in the stream, and the
    /// next [`Inbound::message`] waits for it properly.
    pub fn ready_message(&mut self) -> Option<Result<Option<ReceivedEnvelope>, Status>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let m = match futures::Stream::poll_next(std::pin::Pin::new(&mut self.0), &mut cx) {
            Poll::Pending => None,
            Poll::Ready(Some(Ok(m))) => Some(Ok(Some(m))),
            Poll::Ready(Some(Err(status))) => Some(Err(receive_error(status))),
            Poll::Ready(None) => Some(Ok(None)),
        };
        if let Some(m) = &m {
            self.count(m);
        }
        m
    }
}

/// The status a receive failure ends the stream with: a message over the limit is
/// RESOURCE_EXHAUSTED (as gRPC-Go reports it), everything else as received.
fn receive_error(status: Status) -> Status {
    if status.code() == Code::OutOfRange {
        Status::resource_exhausted(format!(
            "grpc: received message larger than max: {}",
            status.message()
        ))
    } else {
        status
    }
}

/// Broadcast and Deliver over one registrar.
#[derive(Clone, Debug)]
pub struct AtomicBroadcastService {
    registrar: Registrar,
    deliver: DeliverConfig,
    max_recv: usize,
    max_send: usize,
    throttle: Option<Throttle>,
}

impl AtomicBroadcastService {
    /// The service for `registrar`'s channels.
    pub fn new(registrar: Registrar, deliver: DeliverConfig) -> Self {
        AtomicBroadcastService {
            registrar,
            deliver,
            max_recv: MAX_MESSAGE_BYTES,
            max_send: MAX_MESSAGE_BYTES,
            throttle: None,
        }
    }

    /// Rate-limits the Broadcast streams of clients that present a TLS certificate
    /// (`General.Throttling`); `None` leaves Broadcast unthrottled.
    pub fn with_throttle(mut self, throttle: Option<Throttle>) -> Self {
        self.throttle = throttle;
        self
    }

    /// The largest message received and sent (`General.MaxRecvMsgSize` and
    /// `MaxSendMsgSize`; [`MAX_MESSAGE_BYTES`] unless set).
    pub fn with_message_limits(mut self, max_recv: usize, max_send: usize) -> Self {
        self.max_recv = max_recv;
        self.max_send = max_send;
        self
    }

    /// The tonic service, with Fabric's message size limits.
    pub fn into_server(self) -> AtomicBroadcastServer {
        AtomicBroadcastServer {
            inner: std::sync::Arc::new(self),
        }
    }
}

/// Routes `orderer.AtomicBroadcast` requests to Broadcast and Deliver.
#[derive(Clone, Debug)]
pub struct AtomicBroadcastServer {
    inner: std::sync::Arc<AtomicBroadcastService>,
}

impl NamedService for AtomicBroadcastServer {
    const NAME: &'static str = SERVICE_NAME;
}

/// Fabric's gRPC server metrics of one stream: counted as received when it
/// opens, its messages counted both ways, and counted as completed, with its
/// status code and duration, when it ends (`Canceled` when the client leaves first).
pub struct Metered<S> {
    inner: S,
    metrics: Arc<Metrics>,
    method: &'static str,
    began: Instant,
    code: Code,
    done: bool,
}

impl<S> Metered<S> {
    fn new(inner: S, metrics: Arc<Metrics>, method: &'static str) -> Self {
        metrics
            .grpc_stream_received
            .with_label_values(&[SERVICE_NAME, method])
            .inc();
        Metered {
            inner,
            metrics,
            method,
            began: Instant::now(),
            code: Code::Ok,
            done: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let labels = [SERVICE_NAME, self.method, grpc_code_name(code)];
        self.metrics
            .grpc_stream_completed
            .with_label_values(&labels)
            .inc();
        self.metrics
            .grpc_stream_duration
            .with_label_values(&labels)
            .observe(self.began.elapsed().as_secs_f64());
    }
}

impl<S> Drop for Metered<S> {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

impl<T, S> futures::Stream for Metered<S>
where
    S: futures::Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = Pin::new(&mut self.inner).poll_next(cx);
        match &item {
            Poll::Ready(Some(Ok(_))) => self
                .metrics
                .grpc_stream_messages_sent
                .with_label_values(&[SERVICE_NAME, self.method])
                .inc(),
            Poll::Ready(Some(Err(status))) => self.code = status.code(),
            Poll::Ready(None) => {
                let code = self.code;
                self.finish(code);
            }
            Poll::Pending => {}
        }
        item
    }
}

/// The inbound side of a stream, its messages counted under `method`.
fn inbound(
    metrics: &Metrics,
    method: &str,
    request: Request<Streaming<ReceivedEnvelope>>,
) -> Inbound {
    let received = metrics
        .grpc_stream_messages_received
        .with_label_values(&[SERVICE_NAME, method]);
    Inbound(request.into_inner(), received)
}

struct BroadcastMethod(std::sync::Arc<AtomicBroadcastService>);

impl StreamingService<ReceivedEnvelope> for BroadcastMethod {
    type Response = BroadcastResponse;
    type ResponseStream = Metered<ReceiverStream<Result<BroadcastResponse, Status>>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<ReceivedEnvelope>>) -> Self::Future {
        let registrar = self.0.registrar.clone();
        let throttle = self.0.throttle.clone().and_then(|t| {
            let key =
                crate::tls::peer_certificate(&request).and_then(ThrottleKey::of_certificate)?;
            Some((t, key))
        });
        Box::pin(async move {
            let metrics = registrar.metrics();
            let inbound = inbound(&metrics, "Broadcast", request);
            let out = crate::broadcast::serve(registrar, inbound, throttle);
            Ok(Response::new(Metered::new(out, metrics, "Broadcast")))
        })
    }
}

struct DeliverMethod(std::sync::Arc<AtomicBroadcastService>);

impl StreamingService<ReceivedEnvelope> for DeliverMethod {
    type Response = DeliverResponse;
    type ResponseStream = Metered<ReceiverStream<Result<DeliverResponse, Status>>>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<ReceivedEnvelope>>) -> Self::Future {
        let registrar = self.0.registrar.clone();
        let config = self.0.deliver;
        Box::pin(async move {
            let binding = crate::tls::TlsBinding::of_request(&request);
            let metrics = registrar.metrics();
            let inbound = inbound(&metrics, "Deliver", request);
            let out = crate::deliver::serve(registrar, config, binding, inbound);
            Ok(Response::new(Metered::new(out, metrics, "Deliver")))
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for AtomicBroadcastServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let (max_recv, max_send) = (inner.max_recv, inner.max_send);
        match request.uri().path() {
            BROADCAST_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(EnvelopeCodec::<BroadcastResponse>::default())
                    .apply_max_message_size_config(Some(max_recv), Some(max_send));
                Ok(grpc.streaming(BroadcastMethod(inner), request).await)
            }),
            DELIVER_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(EnvelopeCodec::<DeliverResponse>::default())
                    .apply_max_message_size_config(Some(max_recv), Some(max_send));
                Ok(grpc.streaming(DeliverMethod(inner), request).await)
            }),
            _ => Box::pin(async move {
                Ok(Status::unimplemented("unknown method").into_http::<tonic::body::Body>())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    /// The received bytes are kept as sent, unknown fields included.
    #[test]
    fn received_envelope_keeps_unknown_fields() {
        let envelope = Envelope {
            payload: Bytes::from_static(b"payload"),
            signature: Bytes::from_static(b"sig"),
        };
        let mut raw = envelope.encode_to_vec();
        // field 15, length-delimited, two bytes
        raw.put_slice(&[0x7a, 0x02, 0xab, 0xcd]);
        let received = ReceivedEnvelope::decode(Bytes::from(raw.clone())).unwrap();
        assert_eq!(received.envelope, envelope);
        assert_eq!(received.raw.as_ref(), raw.as_slice());
        assert_ne!(received.envelope.encode_to_vec(), raw);
    }

    /// Bytes that are not an Envelope do not decode.
    #[test]
    fn undecodable_bytes_are_refused() {
        assert!(ReceivedEnvelope::decode(Bytes::from_static(&[0xff, 0xff, 0xff])).is_err());
        assert!(ReceivedEnvelope::decode(Bytes::from_static(&[0x0a, 0x05])).is_err());
    }

    /// Tonic's over-the-limit error becomes RESOURCE_EXHAUSTED; others pass through.
    #[test]
    fn oversize_is_resource_exhausted() {
        let s = receive_error(Status::out_of_range("too large"));
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s = receive_error(Status::internal("x"));
        assert_eq!(s.code(), Code::Internal);
    }
}
