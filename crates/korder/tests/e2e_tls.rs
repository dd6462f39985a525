//! End-to-end: Broadcast and Deliver over TLS and mutual TLS (`General.TLS`), with
//! `korder start` as a process and gRPC clients that connect through rustls.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use korder_msp::devpki::{DevPki, IssuedCert};
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{Block, ChannelHeader, Envelope, Header, HeaderType, Payload, Status};
use korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use korder_proto::orderer::{
    DeliverResponse, SeekInfo, SeekPosition, SeekSpecified, deliver_response, seek_position,
};
use korder_proto::{Message, Timestamp};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use support::{Net, envelope};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Bound on every wait for a block or an answer.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

const CHANNEL: &str = "mychannel";

fn hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

/// Replaces the `General.TLS` section of the node's orderer.yaml.
fn set_general_tls(
    net: &Net,
    cert: &Path,
    key: &Path,
    client_auth_required: bool,
    client_root_cas: &[PathBuf],
) {
    let path = net.data_dir().join("orderer.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let old = "  TLS:\n    Enabled: false\n    PrivateKey: null\n    Certificate: null\n    RootCAs: []\n    ClientAuthRequired: false\n    ClientRootCAs: []\n";
    // The first TLS section is General's (Kafka and Operations have one too).
    let at = yaml.find(old).expect("General.TLS");
    assert!(at < yaml.find("\nKafka:").expect("Kafka section"), "{yaml}");
    let roots: Vec<String> = client_root_cas
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let new = format!(
        "  TLS:\n    Enabled: true\n    PrivateKey: {:?}\n    Certificate: {:?}\n    RootCAs: []\n    ClientAuthRequired: {client_auth_required}\n    ClientRootCAs: [{}]\n",
        key.display().to_string(),
        cert.display().to_string(),
        roots.join(", ")
    );
    std::fs::write(&path, yaml.replacen(old, &new, 1)).unwrap();
}

/// A server TLS key pair from a fresh PKI, written under `DIR/server-tls`; the PKI
/// is returned so that clients can trust its TLS CA.
fn server_tls(net: &Net) -> (DevPki, PathBuf) {
    let pki = DevPki::generate("OrdererTlsMSP", "orderer.test").unwrap();
    let dir = net.data_dir().join("server-tls");
    pki.write_tls_dir(&dir, &pki.issue_tls("orderer", &hosts()).unwrap())
        .unwrap();
    (pki, dir)
}

/// How a test client connects.
struct TlsClient {
    /// PEM roots for the server's certificate.
    server_ca_pem: String,
    /// The client's certificate and key (PEM), for mutual TLS.
    identity: Option<(String, String)>,
}

impl TlsClient {
    fn new(server_ca_pem: &str, identity: Option<&IssuedCert>) -> Self {
        TlsClient {
            server_ca_pem: server_ca_pem.to_owned(),
            identity: identity.map(|c| (c.cert_pem.clone(), c.key_pem.clone())),
        }
    }

    /// A client with the files of a TLS directory (`ca.crt`, `server.crt`, `server.key`).
    fn from_dir(server_ca: &Path, client_dir: &Path) -> Self {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).unwrap_or_else(|e| {
                panic!("{}: {e}", p.display());
            })
        };
        TlsClient {
            server_ca_pem: read(server_ca.to_path_buf()),
            identity: Some((
                read(client_dir.join("server.crt")),
                read(client_dir.join("server.key")),
            )),
        }
    }

    /// SHA-256 of the client certificate's DER: the seek requests' `tls_cert_hash`.
    fn cert_hash(&self) -> Vec<u8> {
        let (cert, _) = self.identity.as_ref().expect("a client certificate");
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        sha256(der.as_ref())
    }

    /// Connects to `address` over TLS (server name `localhost`).
    async fn connect(&self, address: &str) -> Result<AtomicBroadcastClient<Channel>, String> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.server_ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let target = address.to_owned();
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| e.to_string())?
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
            .map_err(|e| format!("{e:?}"))?;
        Ok(AtomicBroadcastClient::new(channel))
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    }
}

/// A signed seek request for block `number` of `channel`, with `tls_cert_hash`.
fn seek_block(signer: &SigningIdentity, number: u64, tls_cert_hash: &[u8]) -> Envelope {
    let at = || SeekPosition {
        r#type: Some(seek_position::Type::Specified(SeekSpecified { number })),
    };
    let info = SeekInfo {
        start: Some(at()),
        stop: Some(at()),
        behavior: 0, // BLOCK_UNTIL_READY
        error_response: 0,
    };
    let ch = ChannelHeader {
        r#type: HeaderType::DeliverSeekInfo as i32,
        channel_id: CHANNEL.into(),
        timestamp: Some(now()),
        tls_cert_hash: Bytes::copy_from_slice(tls_cert_hash),
        ..Default::default()
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: ch.encode_to_vec().into(),
            signature_header: signer.new_signature_header().unwrap(),
        }),
        data: info.encode_to_vec().into(),
    };
    signer
        .sign_envelope(payload.encode_to_vec().into())
        .unwrap()
}

/// One Deliver request on a fresh connection: the blocks and the final status, or
/// why the connection or the call failed.
async fn deliver(
    client: Result<AtomicBroadcastClient<Channel>, String>,
    request: Envelope,
) -> Result<(Vec<Block>, Option<i32>), String> {
    let mut client = client?;
    let (tx, rx) = mpsc::channel(1);
    tx.send(request).await.unwrap();
    let call = async {
        let mut stream = client
            .deliver(ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let mut blocks = Vec::new();
        loop {
            match stream.message().await.map_err(|e| e.to_string())? {
                Some(DeliverResponse { r#type }) => match r#type {
                    Some(deliver_response::Type::Block(b)) => blocks.push(b),
                    Some(deliver_response::Type::Status(s)) => return Ok((blocks, Some(s))),
                    None => {}
                },
                None => return Ok((blocks, None)),
            }
        }
    };
    let out = tokio::time::timeout(WAIT_LIMIT, call)
        .await
        .map_err(|_| "no answer in time".to_string())?;
    drop(tx);
    out
}

/// One envelope on a fresh Broadcast stream: its status, or why it failed.
async fn broadcast(
    client: Result<AtomicBroadcastClient<Channel>, String>,
    envelope: Envelope,
) -> Result<i32, String> {
    let mut client = client?;
    let (tx, rx) = mpsc::channel(1);
    tx.send(envelope).await.unwrap();
    drop(tx);
    let call = async {
        let mut stream = client
            .broadcast(ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        match stream.message().await.map_err(|e| e.to_string())? {
            Some(r) => Ok(r.status),
            None => Err("no response".to_string()),
        }
    };
    tokio::time::timeout(WAIT_LIMIT, call)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

fn tx(signer: &SigningIdentity, tx_id: &str) -> Envelope {
    envelope(
        signer,
        CHANNEL,
        HeaderType::EndorserTransaction,
        tx_id,
        Bytes::from_static(b"over TLS"),
    )
}

/// The tx ids in a block.
fn tx_ids(block: &Block) -> Vec<String> {
    block
        .data
        .as_ref()
        .map(|d| d.data.iter().filter_map(|e| support::tx_id_of(e)).collect())
        .unwrap_or_default()
}

/// Handshakes the node has refused so far, as its log tells.
fn handshake_failures(net: &Net) -> usize {
    net.log().matches("TLS handshake failed").count()
}

/// Waits until the node logged the failed handshake of the harness's start-up probe
/// (a bare TCP connection), so that later counts are the test's own.
async fn probe_logged(net: &Net) {
    let deadline = std::time::Instant::now() + WAIT_LIMIT;
    while handshake_failures(net) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the start-up probe's handshake was not logged; log:\n{}",
            net.log()
        );
        tokio::task::yield_now().await;
    }
}

/// Asserts that a client's attempt got nothing (no block, no SUCCESS) and that the
/// node logged one more refused handshake than `failures_before`.
async fn assert_refused(
    net: &Net,
    failures_before: usize,
    what: &str,
    result: Result<(Vec<Block>, Option<i32>), String>,
) {
    if let Ok((blocks, status)) = result {
        assert!(
            blocks.is_empty() && status != Some(Status::Success as i32),
            "{what}: served {} blocks, status {status:?}",
            blocks.len()
        );
    }
    let deadline = std::time::Instant::now() + WAIT_LIMIT;
    while handshake_failures(net) <= failures_before {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: the node logged no refused handshake; log:\n{}",
            net.log()
        );
        tokio::task::yield_now().await;
    }
}

/// Broadcasts one transaction with `client` and reads it back in block 1 of the
/// channel (waiting for it to be cut), sending `hash` as the seek's TLS binding.
async fn broadcast_and_deliver(net: &Net, client: &TlsClient, hash: &[u8]) {
    let signer = net.client();
    let address = net.address();
    let status = broadcast(client.connect(&address).await, tx(&signer, "tls-tx-1")).await;
    assert_eq!(status, Ok(Status::Success as i32), "log:\n{}", net.log());
    let (blocks, status) = deliver(client.connect(&address).await, seek_block(&signer, 1, hash))
        .await
        .unwrap_or_else(|e| panic!("deliver: {e}; log:\n{}", net.log()));
    assert_eq!(status, Some(Status::Success as i32));
    assert_eq!(blocks.len(), 1);
    assert_eq!(tx_ids(&blocks[0]), ["tls-tx-1"]);
}

/// With TLS on, a plaintext client gets nothing, a client that does not trust the
/// server's CA gets nothing, and a client trusting it can Broadcast and Deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_only_tls_clients_that_trust_the_server() {
    let mut net = Net::init(&["--batch-timeout", "200ms"]);
    let (pki, dir) = server_tls(&net);
    set_general_tls(
        &net,
        &dir.join("server.crt"),
        &dir.join("server.key"),
        false,
        &[],
    );
    net.start();
    probe_logged(&net).await;
    let signer = net.client();
    let address = net.address();

    // Counted before connecting: the client speaks first, so the refusal may be
    // logged before `connect` returns.
    let before = handshake_failures(&net);
    let plain = AtomicBroadcastClient::connect(format!("http://{address}"))
        .await
        .map_err(|e| e.to_string());
    let result = deliver(plain, seek_block(&signer, 0, b"")).await;
    assert_refused(&net, before, "plaintext client", result).await;

    let other = DevPki::generate("OtherMSP", "other.test").unwrap();
    let distrustful = TlsClient::new(other.tls_ca_cert_pem(), None);
    let before = handshake_failures(&net);
    let result = deliver(
        distrustful.connect(&address).await,
        seek_block(&signer, 0, b""),
    )
    .await;
    assert_refused(&net, before, "client trusting another CA", result).await;

    let client = TlsClient::new(pki.tls_ca_cert_pem(), None);
    broadcast_and_deliver(&net, &client, b"").await;
    net.stop();
}

/// With client authentication required, clients without a certificate or with one
/// from an unknown CA are refused; a certificate from a `ClientRootCAs` CA is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_only_trusted_client_certificates() {
    let mut net = Net::init(&["--batch-timeout", "200ms"]);
    let (pki, dir) = server_tls(&net);
    let client_pki = DevPki::generate("ClientTlsMSP", "clients.test").unwrap();
    let client_ca = net.data_dir().join("client-tls-ca.pem");
    std::fs::write(&client_ca, client_pki.tls_ca_cert_pem()).unwrap();
    set_general_tls(
        &net,
        &dir.join("server.crt"),
        &dir.join("server.key"),
        true,
        &[client_ca],
    );
    net.start();
    probe_logged(&net).await;
    let signer = net.client();
    let address = net.address();

    let anonymous = TlsClient::new(pki.tls_ca_cert_pem(), None);
    let before = handshake_failures(&net);
    let result = deliver(
        anonymous.connect(&address).await,
        seek_block(&signer, 0, b""),
    )
    .await;
    assert_refused(&net, before, "client without a certificate", result).await;

    let stranger_pki = DevPki::generate("StrangerMSP", "stranger.test").unwrap();
    let stranger = stranger_pki.issue_tls("client", &hosts()).unwrap();
    let stranger = TlsClient::new(pki.tls_ca_cert_pem(), Some(&stranger));
    let before = handshake_failures(&net);
    let result = deliver(
        stranger.connect(&address).await,
        seek_block(&signer, 0, &stranger.cert_hash()),
    )
    .await;
    assert_refused(
        &net,
        before,
        "client with a certificate of an unknown CA",
        result,
    )
    .await;

    let issued = client_pki.issue_tls("client", &hosts()).unwrap();
    let client = TlsClient::new(pki.tls_ca_cert_pem(), Some(&issued));
    broadcast_and_deliver(&net, &client, &client.cert_hash()).await;
    net.stop();
}

/// With client authentication required, a seek request whose `tls_cert_hash` is
/// empty or is not SHA-256 of the connection's client certificate gets BAD_REQUEST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_deliver_checks_the_tls_binding() {
    let mut net = Net::init(&["--batch-timeout", "200ms"]);
    let (pki, dir) = server_tls(&net);
    let client_pki = DevPki::generate("ClientTlsMSP", "clients.test").unwrap();
    let client_ca = net.data_dir().join("client-tls-ca.pem");
    std::fs::write(&client_ca, client_pki.tls_ca_cert_pem()).unwrap();
    set_general_tls(
        &net,
        &dir.join("server.crt"),
        &dir.join("server.key"),
        true,
        &[client_ca],
    );
    net.start();
    let signer = net.client();
    let address = net.address();
    let issued = client_pki.issue_tls("client", &hosts()).unwrap();
    let client = TlsClient::new(pki.tls_ca_cert_pem(), Some(&issued));
    let other = client_pki.issue_tls("other", &hosts()).unwrap();
    let other_hash = TlsClient::new(pki.tls_ca_cert_pem(), Some(&other)).cert_hash();

    let good = deliver(
        client.connect(&address).await,
        seek_block(&signer, 0, &client.cert_hash()),
    )
    .await
    .unwrap();
    assert_eq!(good.1, Some(Status::Success as i32));
    assert_eq!(good.0.len(), 1);
    for (what, hash) in [
        ("empty hash", Vec::new()),
        ("another certificate's hash", other_hash),
    ] {
        let (blocks, status) = deliver(
            client.connect(&address).await,
            seek_block(&signer, 0, &hash),
        )
        .await
        .unwrap();
        assert!(blocks.is_empty(), "{what}: blocks served");
        assert_eq!(status, Some(Status::BadRequest as i32), "{what}");
    }
    net.stop();
}

/// With client authentication required and no `ClientRootCAs`, a client TLS
/// certificate issued by a channel organisation's TLS CA (the dev network's
/// `client/tls`, from Org1's TLS CA) is accepted, through the channel MSP's TLS
/// roots; the orderer serves the dev network's `tls/` key pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_trusts_channel_msp_tls_roots() {
    let mut net = Net::init(&["--batch-timeout", "200ms"]);
    let server_dir = net.data_dir().join("tls");
    let client_dir = net.data_dir().join("client/tls");
    for p in [
        server_dir.join("server.crt"),
        server_dir.join("server.key"),
        server_dir.join("ca.crt"),
        client_dir.join("server.crt"),
        client_dir.join("server.key"),
    ] {
        assert!(p.exists(), "korder init did not write {}", p.display());
    }
    set_general_tls(
        &net,
        &server_dir.join("server.crt"),
        &server_dir.join("server.key"),
        true,
        &[],
    );
    net.start();
    let client = TlsClient::from_dir(&server_dir.join("ca.crt"), &client_dir);
    broadcast_and_deliver(&net, &client, &client.cert_hash()).await;
    net.stop();
}

/// Fabric 3.x's Broadcast throttling over mutual TLS (`General.Throttling.Rate:
/// 10`): a client sending 60 envelopes on one stream gets every one acknowledged,
/// but no faster than its share of ten a second: the answers take at least three
/// seconds (ten at once, then ten per one-second tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_clients_are_throttled_to_their_share() {
    let mut net = Net::init(&["--batch-timeout", "200ms"]);
    let (pki, dir) = server_tls(&net);
    let client_pki = DevPki::generate("ClientTlsMSP", "clients.test").unwrap();
    let client_ca = net.data_dir().join("client-tls-ca.pem");
    std::fs::write(&client_ca, client_pki.tls_ca_cert_pem()).unwrap();
    set_general_tls(
        &net,
        &dir.join("server.crt"),
        &dir.join("server.key"),
        true,
        &[client_ca],
    );
    let path = net.data_dir().join("orderer.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap();
    let throttled = yaml.replacen(
        "General:\n",
        "General:\n  Throttling:\n    Rate: 10\n    InactivityTimeout: 5s\n",
        1,
    );
    assert_ne!(yaml, throttled);
    std::fs::write(&path, throttled).unwrap();
    net.start();
    let signer = net.client();
    let issued = client_pki.issue_tls("client", &hosts()).unwrap();
    let client = TlsClient::new(pki.tls_ca_cert_pem(), Some(&issued));
    let mut connection = client.connect(&net.address()).await.unwrap();
    let (tx_sender, rx) = mpsc::channel(64);
    let began = std::time::Instant::now();
    for i in 0..60 {
        tx_sender
            .send(tx(&signer, &format!("throttled-{i}")))
            .await
            .unwrap();
    }
    drop(tx_sender);
    let mut stream = connection
        .broadcast(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut statuses = Vec::new();
    while let Some(r) = tokio::time::timeout(WAIT_LIMIT, stream.message())
        .await
        .expect("an answer in time")
        .unwrap()
    {
        statuses.push(r.status);
    }
    let took = began.elapsed();
    assert_eq!(statuses, vec![Status::Success as i32; 60]);
    assert!(
        took >= Duration::from_secs(3),
        "60 envelopes at 10 a second answered in {took:?}"
    );
    net.stop();
}
