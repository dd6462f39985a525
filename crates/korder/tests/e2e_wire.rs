//! End-to-end: the gRPC wire off the happy path. Requests that cannot be received
//! end their stream with a non-OK gRPC status; envelopes are stored exactly as
//! sent; idle connections cannot lock clients out; Deliver answers access
//! failures with the status Fabric's orderer gives, in its order of checks.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use korder_msp::devpki::DevPki;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{ChannelHeader, Envelope, Header, HeaderType, Payload, Status};
use korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use korder_proto::orderer::{BroadcastResponse, SeekSpecified, seek_position};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint, Uri};

const BROADCAST: &str = "/orderer.AtomicBroadcast/Broadcast";
const DELIVER: &str = "/orderer.AtomicBroadcast/Deliver";
const CHANNEL: &str = "mychannel";
/// Bound on every wait for an answer.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Sends message bytes as they are and returns response bytes as they are.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Sends `messages` on one stream of `path`: the responses received and the status
/// the stream ended with (`Ok` as code 0).
async fn exchange(
    address: &str,
    path: &'static str,
    messages: Vec<Bytes>,
) -> (Vec<Bytes>, tonic::Status) {
    let run = async {
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let (tx, rx) = mpsc::channel(messages.len().max(1));
        for m in messages {
            tx.send(m).await.unwrap();
        }
        drop(tx);
        let response = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static(path),
                RawCodec,
            )
            .await;
        let mut stream = match response {
            Ok(r) => r.into_inner(),
            Err(status) => return (Vec::new(), status),
        };
        let mut responses = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(m)) => responses.push(m),
                Ok(None) => return (responses, tonic::Status::ok("")),
                Err(status) => return (responses, status),
            }
        }
    };
    tokio::time::timeout(WAIT_LIMIT, run)
        .await
        .expect("the stream ended in time")
}

fn tx(client: &SigningIdentity, id: &str) -> Envelope {
    envelope(
        client,
        CHANNEL,
        HeaderType::EndorserTransaction,
        id,
        Bytes::from(vec![7u8; 64]),
    )
}

fn broadcast_statuses(responses: &[Bytes]) -> Vec<i32> {
    responses
        .iter()
        .map(|r| BroadcastResponse::decode(r.clone()).unwrap().status)
        .collect()
}

/// Bytes that do not decode as an Envelope end a Broadcast or a Deliver stream
/// with INTERNAL, after the answers due for earlier messages; the node keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_end_the_stream_with_internal() {
    let mut net = Net::init(&["--batch-timeout", "200ms"]);
    net.start();
    let address = net.address();
    let client = net.client();
    for garbage in [&[0xff, 0xff, 0xff][..], &[0x0a, 0x05][..]] {
        for path in [BROADCAST, DELIVER] {
            let (responses, status) =
                exchange(&address, path, vec![Bytes::copy_from_slice(garbage)]).await;
            assert!(responses.is_empty(), "{path} {garbage:02x?}: {responses:?}");
            assert_eq!(
                status.code(),
                tonic::Code::Internal,
                "{path} {garbage:02x?}: {status:?}"
            );
            assert!(
                status.message().contains("failed to unmarshal"),
                "{status:?}"
            );
        }
    }
    // A valid envelope, then garbage: the first is answered, then the stream ends.
    let good = Bytes::from(tx(&client, "wire-before-garbage").encode_to_vec());
    let (responses, status) = exchange(
        &address,
        BROADCAST,
        vec![good, Bytes::from_static(&[0x0a, 0x05])],
    )
    .await;
    assert_eq!(broadcast_statuses(&responses), [Status::Success as i32]);
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");

    let ok = broadcast_all(&address, vec![tx(&client, "wire-after-garbage")]).await;
    assert_eq!(
        ok.first().map(|r| r.0),
        Some(Status::Success as i32),
        "{ok:?}"
    );
    net.stop();
}

/// One HTTP/2 request whose gRPC frame announces `length` bytes: the grpc-status
/// the stream ends with.
async fn announce_length(address: &str, path: &str, length: u32) -> String {
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let mut body = bytes::BytesMut::new();
    body.put_u8(0);
    body.put_u32(length);
    body.put_slice(&[0x0a; 64]);
    send.send_data(body.freeze(), true).unwrap();
    let response = tokio::time::timeout(WAIT_LIMIT, response)
        .await
        .unwrap()
        .unwrap();
    if let Some(s) = response.headers().get("grpc-status") {
        return s.to_str().unwrap().to_owned();
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk.map(|c| body.flow_control().release_capacity(c.len()));
    }
    let trailers = body.trailers().await.unwrap().unwrap();
    trailers
        .get("grpc-status")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// A message over the 100 MiB receive limit ends a Broadcast or a Deliver stream
/// with RESOURCE_EXHAUSTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_resource_exhausted() {
    let mut net = Net::init(&[]);
    net.start();
    let address = net.address();
    for path in [BROADCAST, DELIVER] {
        let status = announce_length(&address, path, 100 * 1024 * 1024 + 1).await;
        assert_eq!(
            status,
            (tonic::Code::ResourceExhausted as i32).to_string(),
            "{path}"
        );
    }
    let ok = broadcast_all(&address, vec![tx(&net.client(), "wire-after-oversize")]).await;
    assert_eq!(
        ok.first().map(|r| r.0),
        Some(Status::Success as i32),
        "{ok:?}"
    );
    net.stop();
}

/// An envelope carrying an unknown field (15) is stored in its block byte for byte
/// as it was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_stored_as_sent() {
    let mut net = Net::init(&["--batch-timeout", "200ms"]);
    net.start();
    let address = net.address();
    let client = net.client();
    let mut sent = tx(&client, "wire-unknown-field").encode_to_vec();
    // Field 15, length-delimited: tag (15 << 3) | 2 = 0x7a, then 2 bytes.
    sent.extend_from_slice(&[0x7a, 0x02, 0xbe, 0xef]);
    let sent = Bytes::from(sent);
    let (responses, status) = exchange(&address, BROADCAST, vec![sent.clone()]).await;
    assert_eq!(
        broadcast_statuses(&responses),
        [Status::Success as i32],
        "{status:?}"
    );

    let request = seek(
        &client,
        CHANNEL,
        seek_position::Type::Specified(SeekSpecified { number: 1 }),
        seek_position::Type::Specified(SeekSpecified { number: 1 }),
        0,
    );
    let (blocks, status) = tokio::time::timeout(WAIT_LIMIT, deliver(&address, request))
        .await
        .unwrap();
    assert_eq!(status, Some(Status::Success as i32));
    let stored = &blocks[0].data.as_ref().unwrap().data;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].len(),
        sent.len(),
        "stored size differs from sent size"
    );
    assert_eq!(stored[0], sent, "stored bytes differ from the bytes sent");
    net.stop();
    let dir = net.data_dir().to_str().unwrap().to_owned();
    korder(&["ledger", "verify", &dir]);
}

/// Deliver follows Fabric's order of checks: an undecodable signature header is
/// BAD_REQUEST, an unknown channel NOT_FOUND, an undecodable SeekInfo BAD_REQUEST
/// (before the access check, as in Fabric v2.5), and a seek by an identity the
/// channel's Readers policy refuses is FORBIDDEN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_statuses_follow_fabric_order_of_checks() {
    let mut net = Net::init(&[]);
    net.start();
    let address = net.address();
    let client = net.client();
    let stranger = foreign_identity("stranger", "Org1MSP");
    let block0 = || seek_position::Type::Specified(SeekSpecified { number: 0 });

    let (blocks, status) = deliver(&address, seek(&client, CHANNEL, block0(), block0(), 0)).await;
    assert_eq!((blocks.len(), status), (1, Some(Status::Success as i32)));

    let (blocks, status) = deliver(&address, seek(&stranger, CHANNEL, block0(), block0(), 0)).await;
    assert_eq!((blocks.len(), status), (0, Some(Status::Forbidden as i32)));

    let (blocks, status) = deliver(
        &address,
        seek(&stranger, "nosuchchannel", block0(), block0(), 0),
    )
    .await;
    assert_eq!((blocks.len(), status), (0, Some(Status::NotFound as i32)));

    // SeekInfo that does not decode, signed by the stranger.
    let bad_seek = envelope(
        &stranger,
        CHANNEL,
        HeaderType::DeliverSeekInfo,
        "",
        Bytes::from_static(&[0x0a, 0x05]),
    );
    let (blocks, status) = deliver(&address, bad_seek).await;
    assert_eq!((blocks.len(), status), (0, Some(Status::BadRequest as i32)));

    // A signature header that does not decode.
    let ch = ChannelHeader {
        r#type: HeaderType::DeliverSeekInfo as i32,
        channel_id: CHANNEL.into(),
        timestamp: Some(now_stamp()),
        ..Default::default()
    };
    let good = seek(&client, CHANNEL, block0(), block0(), 0);
    let data = Payload::decode(good.payload.clone()).unwrap().data;
    let payload = Payload {
        header: Some(Header {
            channel_header: ch.encode_to_vec().into(),
            signature_header: Bytes::from_static(&[0xff, 0xff]),
        }),
        data,
    };
    let bad_header = client
        .sign_envelope(payload.encode_to_vec().into())
        .unwrap();
    let (blocks, status) = deliver(&address, bad_header).await;
    assert_eq!((blocks.len(), status), (0, Some(Status::BadRequest as i32)));
    net.stop();
}

fn now_stamp() -> korder_proto::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    korder_proto::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    }
}

/// Sets `key: value` in the node's orderer.yaml, replacing the line `key: old`
/// (indentation included in `key`).
fn set_key(net: &Net, key: &str, value: &str) {
    let path = net.data_dir().join("orderer.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let at = yaml
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} in\n{yaml}"))
        .to_owned();
    std::fs::write(&path, yaml.replacen(&at, &format!("{key}: {value}"), 1)).unwrap();
}

/// Turns on mutual TLS in the node's orderer.yaml; the server's CA PEM and a
/// trusted client's certificate and key PEM.
fn mutual_tls(net: &Net) -> (String, String, String) {
    let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let pki = DevPki::generate("OrdererTlsMSP", "orderer.test").unwrap();
    let dir = net.data_dir().join("server-tls");
    pki.write_tls_dir(&dir, &pki.issue_tls("orderer", &hosts).unwrap())
        .unwrap();
    let client_pki = DevPki::generate("ClientTlsMSP", "clients.test").unwrap();
    let client_ca = net.data_dir().join("client-tls-ca.pem");
    std::fs::write(&client_ca, client_pki.tls_ca_cert_pem()).unwrap();
    let issued = client_pki.issue_tls("client", &hosts).unwrap();
    let path = net.data_dir().join("orderer.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let old = "  TLS:\n    Enabled: false\n    PrivateKey: null\n    Certificate: null\n    RootCAs: []\n    ClientAuthRequired: false\n    ClientRootCAs: []\n";
    let at = yaml.find(old).expect("General.TLS");
    assert!(at < yaml.find("\nKafka:").expect("Kafka section"));
    let quoted = |p: PathBuf| format!("{:?}", p.display().to_string());
    let new = format!(
        "  TLS:\n    Enabled: true\n    PrivateKey: {}\n    Certificate: {}\n    RootCAs: []\n    ClientAuthRequired: true\n    ClientRootCAs: [{}]\n",
        quoted(dir.join("server.key")),
        quoted(dir.join("server.crt")),
        quoted(client_ca),
    );
    std::fs::write(&path, yaml.replacen(old, &new, 1)).unwrap();
    (
        pki.tls_ca_cert_pem().to_owned(),
        issued.cert_pem.clone(),
        issued.key_pem.clone(),
    )
}

/// A gRPC client over mutual TLS (server name `localhost`).
async fn connect_mtls(
    address: &str,
    server_ca: &str,
    cert: &str,
    key: &str,
) -> AtomicBroadcastClient<Channel> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let target = address.to_owned();
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let target = target.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&target).await?;
                let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap();
    AtomicBroadcastClient::new(channel)
}

/// One transaction broadcast on `client`: its status.
async fn broadcast_one(client: &mut AtomicBroadcastClient<Channel>, envelope: Envelope) -> i32 {
    let stream = tokio_stream::iter(vec![envelope]);
    let mut responses = client.broadcast(stream).await.unwrap().into_inner();
    responses.message().await.unwrap().unwrap().status
}

/// `n` TCP connections to `address` that never send a byte.
async fn idle_connections(address: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    idle
}

/// Whether the server closed `socket` (EOF or reset) within `limit`; bytes it
/// sends (the HTTP/2 server's SETTINGS) are read and dropped.
async fn closed_by_server(socket: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let drain = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, drain).await.is_ok()
}

/// 1,000 idle TCP connections to the TLS port (never sending a ClientHello) do not
/// keep a mutual-TLS client from being served in under a second, and are closed
/// after `General.ConnectionTimeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_out_tls_clients() {
    let mut net = Net::init(&["--batch-timeout", "100ms"]);
    let (server_ca, cert, key) = mutual_tls(&net);
    set_key(&net, "  ConnectionTimeout", "3s");
    net.start();
    let address = net.address();
    let signer = net.client();
    let opened = Instant::now();
    let mut idle = idle_connections(&address, 1000).await;
    let opened = opened.elapsed();
    eprintln!("1000 idle connections opened in {opened:?}");
    // The listener keeps accepting: the idle connections do not fill its queue
    // (bound loose for a loaded machine; a listener that stops accepting takes
    // tens of seconds here).
    assert!(opened < Duration::from_secs(10), "opened in {opened:?}");

    let began = Instant::now();
    let mut client = connect_mtls(&address, &server_ca, &cert, &key).await;
    let status = broadcast_one(&mut client, tx(&signer, "wire-mtls-1")).await;
    let served = began.elapsed();
    eprintln!("mutual-TLS client served in {served:?} beside 1000 idle connections");
    assert_eq!(status, Status::Success as i32);
    assert!(served < Duration::from_secs(1), "served after {served:?}");

    // The idle ones are closed at the deadline (3 s after they were accepted).
    assert!(closed_by_server(&mut idle[0], Duration::from_secs(10)).await);
    assert!(closed_by_server(&mut idle[999], Duration::from_secs(10)).await);
    // The working client stays connected.
    let status = broadcast_one(&mut client, tx(&signer, "wire-mtls-2")).await;
    assert_eq!(status, Status::Success as i32);
    net.stop();
}

/// With the connection caps reached by idle connections, a new client evicts the
/// oldest idle one instead of being refused; a proven connection is not evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_listener_evicts_the_oldest_idle_connection() {
    let mut net = Net::init(&["--batch-timeout", "100ms"]);
    set_key(&net, "  MaxConnections", "100");
    set_key(&net, "  MaxConnectionsPerAddress", "50");
    set_key(&net, "  ConnectionTimeout", "60s");
    net.start();
    let address = net.address();
    let signer = net.client();
    // A working client first: it must survive the flood.
    let mut early = connect(&address).await;
    assert_eq!(
        broadcast_one(&mut early, tx(&signer, "wire-evict-0")).await,
        Status::Success as i32
    );
    let mut idle = idle_connections(&address, 200).await;
    // The per-address cap (50) evicted the oldest idle ones as new ones came.
    assert!(
        closed_by_server(&mut idle[0], Duration::from_secs(5)).await,
        "the oldest idle connection is still open; log:\n{}",
        net.log()
    );

    let began = Instant::now();
    let mut late = connect(&address).await;
    let status = broadcast_one(&mut late, tx(&signer, "wire-evict-1")).await;
    let served = began.elapsed();
    eprintln!("client served in {served:?} with the per-address cap full of idle connections");
    assert_eq!(status, Status::Success as i32);
    assert!(served < Duration::from_secs(1), "served after {served:?}");
    assert_eq!(
        broadcast_one(&mut early, tx(&signer, "wire-evict-2")).await,
        Status::Success as i32
    );
    // The newest idle connection is still open (only the oldest were evicted).
    assert!(!closed_by_server(&mut idle[199], Duration::from_millis(300)).await);
    drop((idle, early, late));
    net.stop();
}
