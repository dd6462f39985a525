//! korder's client commands against a server that sends its response headers only
//! with its first response, as Go's gRPC server (Fabric's orderer) does: an
//! in-process proxy in front of a korder node holds each response's headers back
//! until the first message (or the trailers) is ready.

#![allow(clippy::unwrap_used)] // test helpers; failures should panic

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::process::Output;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame};
use korder_proto::orderer::SeekNewest;
use korder_proto::orderer::seek_position;
use support::{KORDER, Net, seek};
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};

/// A response body whose first frame was read ahead, then the rest of the original.
struct Held {
    first: Option<Frame<Bytes>>,
    inner: Body,
}

impl http_body::Body for Held {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }
}

/// Forwards `orderer.AtomicBroadcast` to a korder node, answering each call only
/// once the node's first response message (or the end of the stream) is there.
#[derive(Clone)]
struct HeadersWithFirstMessage {
    upstream: Channel,
}

impl tonic::server::NamedService for HeadersWithFirstMessage {
    const NAME: &'static str = "orderer.AtomicBroadcast";
}

impl tower::Service<http::Request<Body>> for HeadersWithFirstMessage {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let mut upstream = self.upstream.clone();
        Box::pin(async move {
            let response = match tower::ServiceExt::oneshot(&mut upstream, request).await {
                Ok(r) => r,
                Err(e) => return Ok(tonic::Status::unavailable(e.to_string()).into_http()),
            };
            let (parts, mut inner) = response.into_parts();
            let first = std::future::poll_fn(|cx| Pin::new(&mut inner).poll_frame(cx)).await;
            let first = match first {
                Some(Ok(frame)) => Some(frame),
                Some(Err(status)) => return Ok(status.into_http()),
                None => None,
            };
            Ok(http::Response::from_parts(
                parts,
                Body::new(Held { first, inner }),
            ))
        })
    }
}

/// Starts the proxy in front of `upstream` and returns its address.
async fn proxy(upstream: &str) -> String {
    let channel = Endpoint::from_shared(format!("http://{upstream}"))
        .unwrap()
        .connect_lazy();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let incoming = futures::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HeadersWithFirstMessage { upstream: channel })
            .serve_with_incoming(incoming),
    );
    address
}

/// Runs `korder args` in `cwd` off the async runtime.
async fn korder(cwd: &std::path::Path, args: Vec<String>) -> Output {
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(KORDER)
            .current_dir(cwd)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The proxy really withholds the headers: a client that waits for them before it
/// sends anything gets no answer, while one that sends first gets its block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_sends_headers_only_with_the_first_message() {
    let mut net = Net::init(&[]);
    net.start();
    let address = proxy(&net.address()).await;
    let mut client = support::connect(&address).await;
    let (_keep_open, rx) = tokio::sync::mpsc::channel(1);
    let waited = tokio::time::timeout(
        Duration::from_secs(2),
        client.deliver(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await;
    assert!(waited.is_err(), "headers came before any message");
    let newest = seek_position::Type::Newest(SeekNewest {});
    let (blocks, status) = support::deliver(
        &address,
        seek(&net.client(), "mychannel", newest, newest, 0),
    )
    .await;
    assert_eq!(blocks.len(), 1);
    assert_eq!(status, Some(korder_proto::common::Status::Success as i32));
}

/// `korder fetch` (newest and config), `korder broadcast`, `korder bench` and
/// `korder channel create` / `channel fetch config` all work through a server that
/// sends its headers only with its first response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_send_first() {
    let mut net = Net::init(&["--batch-timeout", "100ms"]);
    net.start();
    let address = proxy(&net.address()).await;
    let dir = net.data_dir().to_str().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    let with = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--data-dir".into(),
            dir.clone(),
            "--orderer".into(),
            address.clone(),
        ]);
        v
    };

    let out = korder(
        work.path(),
        with(&[
            "fetch",
            "newest",
            "--out",
            "newest.block",
            "--timeout-s",
            "20",
        ]),
    )
    .await;
    ok(&out, "fetch newest");
    let out = korder(
        work.path(),
        with(&[
            "fetch",
            "config",
            "--out",
            "config.block",
            "--timeout-s",
            "20",
        ]),
    )
    .await;
    ok(&out, "fetch config");

    // One envelope, made with the dev network's client identity.
    let envelope = support::envelope(
        &net.client(),
        "mychannel",
        korder_proto::common::HeaderType::EndorserTransaction,
        "go-headers-tx",
        Bytes::from_static(b"payload"),
    );
    std::fs::write(
        work.path().join("tx.env"),
        korder_proto::Message::encode_to_vec(&envelope),
    )
    .unwrap();
    let out = korder(
        work.path(),
        with(&["broadcast", "tx.env", "--timeout-s", "20"]),
    )
    .await;
    assert!(ok(&out, "broadcast").contains("SUCCESS"));

    let out = korder(
        work.path(),
        with(&[
            "bench",
            "--tx",
            "40",
            "--clients",
            "2",
            "--size",
            "100",
            "--json",
            "--timeout-s",
            "60",
        ]),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&ok(&out, "bench")).unwrap();
    assert_eq!(v["acked"], 40, "{v}");
    assert_eq!(v["delivered"], 40, "{v}");

    let out = korder(
        work.path(),
        with(&["channel", "create", "--channel", "gochan"]),
    )
    .await;
    ok(&out, "channel create");
    assert!(work.path().join("gochan.block").is_file());
    let out = korder(
        work.path(),
        with(&[
            "channel",
            "fetch",
            "config",
            "--channel",
            "gochan",
            "--out",
            "gochan-config.block",
        ]),
    )
    .await;
    ok(&out, "channel fetch config");
}
