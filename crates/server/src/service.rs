//! The gRPC `orderer.AtomicBroadcast` service.

use korder_proto::common::Envelope;
use korder_proto::orderer::atomic_broadcast_server::AtomicBroadcast;
use korder_proto::orderer::{BroadcastResponse, DeliverResponse};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::deliver::DeliverConfig;
use crate::registrar::Registrar;

/// Largest message the server receives or sends: 100 MiB, as Fabric's orderer.
pub const MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;

/// Broadcast and Deliver over one registrar.
#[derive(Clone, Debug)]
pub struct AtomicBroadcastService {
    registrar: Registrar,
    deliver: DeliverConfig,
}

impl AtomicBroadcastService {
    /// The service for `registrar`'s channels.
    pub fn new(registrar: Registrar, deliver: DeliverConfig) -> Self {
        AtomicBroadcastService { registrar, deliver }
    }

    /// The tonic server for this service, with Fabric's message size limits.
    pub fn into_server(
        self,
    ) -> korder_proto::orderer::atomic_broadcast_server::AtomicBroadcastServer<Self> {
        korder_proto::orderer::atomic_broadcast_server::AtomicBroadcastServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl AtomicBroadcast for AtomicBroadcastService {
    type BroadcastStream = ReceiverStream<Result<BroadcastResponse, Status>>;
    type DeliverStream = ReceiverStream<Result<DeliverResponse, Status>>;

    async fn broadcast(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::BroadcastStream>, Status> {
        Ok(Response::new(crate::broadcast::serve(
            self.registrar.clone(),
            request.into_inner(),
        )))
    }

    async fn deliver(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        let binding = crate::tls::TlsBinding::of_request(&request);
        Ok(Response::new(crate::deliver::serve(
            self.registrar.clone(),
            self.deliver,
            binding,
            request.into_inner(),
        )))
    }
}
