//! End-to-end: the gRPC wire off the happy path, where the binary's own listener
//! matters. A message over the receive limit set from orderer.yaml ends its stream
//! with RESOURCE_EXHAUSTED; idle connections cannot lock clients out. (Undecodable
//! requests, unknown fields and Deliver's order of checks are tested in process in
//! crates/server/tests/refusals.rs.)

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use hyper_util::rt::TokioIo;
use korder_msp::devpki::DevPki;
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{Envelope, HeaderType, Status};
use korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use support::*;
use tonic::transport::{Channel, Endpoint, Uri};

const BROADCAST: &str = "/orderer.AtomicBroadcast/Broadcast";
const DELIVER: &str = "/orderer.AtomicBroadcast/Deliver";
const CHANNEL: &str = "mychannel";
/// Bound on every wait for an answer.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

fn tx(client: &SigningIdentity, id: &str) -> Envelope {
    envelope(
        client,
        CHANNEL,
        HeaderType::EndorserTransaction,
        id,
        Bytes::from(vec![7u8; 64]),
    )
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
