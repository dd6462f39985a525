//! The channel participation API against an in-process node on the in-memory log:
//! the router's answers and the registrar's join and remove under it.

#![allow(clippy::unwrap_used)]

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use korder_proto::Message;
use korder_proto::common::Status;
use korder_server::ParticipationError;
use korder_server::participation::{Settings, router};
use support::{APP, Node, envelopes_of, statuses, tx};
use tower::ServiceExt;

const ON: Settings = Settings {
    enabled: true,
    max_request_body_bytes: 1 << 20,
};

/// One request to the router: status and body.
async fn call(node: &Node, settings: Settings, request: Request<Body>) -> (StatusCode, String) {
    let r = router(node.registrar.clone(), settings)
        .oneshot(request)
        .await
        .unwrap();
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn join_request(block: &[u8]) -> Request<Body> {
    let mut body = b"--b0\r\nContent-Disposition: form-data; name=\"config-block\"; filename=\"g.block\"\r\n\r\n".to_vec();
    body.extend_from_slice(block);
    body.extend_from_slice(b"\r\n--b0--\r\n");
    Request::post("/participation/v1/channels")
        .header("Content-Type", "multipart/form-data; boundary=b0")
        .body(Body::from(body))
        .unwrap()
}

/// Whether `block`'s only envelope carries `data`.
fn holds(block: &korder_proto::common::Block, data: &str) -> bool {
    let envs = envelopes_of(block);
    envs.len() == 1 && envs[0].windows(data.len()).any(|w| w == data.as_bytes())
}

/// Four joins of the same channel at once: exactly one succeeds, the others are refused as an existing channel, and the channel orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_of_one_channel_one_wins() {
    let node = Node::start_empty(1).await;
    let joins: Vec<_> = (0..4)
        .map(|_| {
            let registrar = node.registrar.clone();
            let block = node.net.app_genesis.clone();
            tokio::spawn(async move { registrar.join(block).await })
        })
        .collect();
    let mut won = 0;
    for j in joins {
        match j.await.unwrap() {
            Ok(info) => {
                won += 1;
                assert_eq!((info.name.as_str(), info.height), (APP, 1));
            }
            Err(e) => assert_eq!(e, ParticipationError::ChannelAlreadyExists),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(node.registrar.channel_ids(), vec![APP.to_string()]);
    let responses = node.broadcast(vec![tx(&node.net.client, APP, "a")]).await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
}

/// Through the router: join 201, info 200, remove 204, then info 404, Broadcast NOT_FOUND, and a second join starts again from block 0 on a fresh log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_remove_join_through_the_router() {
    let node = Node::start_empty(1).await;
    let genesis = node.net.app_genesis.encode_to_vec();
    let (code, body) = call(&node, ON, join_request(&genesis)).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        "{\"name\":\"mychannel\",\"url\":\"/participation/v1/channels/mychannel\",\"consensusRelation\":\"other\",\"status\":\"active\",\"height\":1}\n"
    );
    let responses = node
        .broadcast(vec![tx(&node.net.client, APP, "first")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
    let blocks = node
        .blocks_until(&node.net.client, APP, |b| b.len() == 2)
        .await;
    assert!(holds(&blocks[1], "first"));

    let delete = Request::delete("/participation/v1/channels/mychannel")
        .body(Body::empty())
        .unwrap();
    let (code, body) = call(&node, ON, delete).await;
    assert_eq!((code, body.as_str()), (StatusCode::NO_CONTENT, ""));
    let (code, body) = call(&node, ON, get("/participation/v1/channels/mychannel")).await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::NOT_FOUND,
            "{\"error\":\"channel does not exist\"}\n"
        )
    );
    let responses = node
        .broadcast(vec![tx(&node.net.client, APP, "gone")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::NotFound]);
    assert!(node.registrar.channel_ids().is_empty());

    let (code, body) = call(&node, ON, join_request(&genesis)).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let responses = node
        .broadcast(vec![tx(&node.net.client, APP, "second")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
    let blocks = node
        .blocks_until(&node.net.client, APP, |b| b.len() == 2)
        .await;
    assert!(holds(&blocks[1], "second"), "block 1 is the new channel's");
}

/// With the API disabled every call under /participation/v1/ is 503; outside it, 404 as Go's ServeMux.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_api_and_unknown_paths() {
    let node = Node::start_empty(1).await;
    let off = Settings {
        enabled: false,
        ..ON
    };
    let (code, body) = call(&node, off, get("/participation/v1/channels")).await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"channel participation API is disabled\"}\n"
        )
    );
    let (code, body) = call(&node, ON, get("/healthz")).await;
    assert_eq!(
        (code, body.as_str()),
        (StatusCode::NOT_FOUND, "404 page not found\n")
    );
    let (code, _) = call(&node, ON, get("/participation/v1/channels/a/b")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, body) = call(&node, ON, get("/participation/v1/channels")).await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::OK,
            "{\"systemChannel\":null,\"channels\":null}\n"
        )
    );
}

/// A Deliver stream waiting for blocks of a channel that is removed ends with SERVICE_UNAVAILABLE; a new request is NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_ends_a_waiting_deliver_stream() {
    use korder_proto::orderer::{DeliverResponse, deliver_response, seek_info};
    use support::{at, oldest, seek};
    let node = Node::start_empty(1).await;
    node.registrar
        .join(node.net.app_genesis.clone())
        .await
        .unwrap();
    let request = seek(
        &node.net.client,
        APP,
        oldest(),
        at(5),
        seek_info::SeekBehavior::BlockUntilReady,
    );
    let mut client = node.client().await;
    let mut stream = client
        .deliver(tokio_stream::iter(vec![request.clone()]))
        .await
        .unwrap()
        .into_inner();
    // Block 0 arrives: the stream is serving, and now waits for block 1.
    let first = stream.message().await.unwrap();
    assert!(matches!(
        first,
        Some(DeliverResponse {
            r#type: Some(deliver_response::Type::Block(_))
        })
    ));
    node.registrar.remove(APP).await.unwrap();
    let last = stream.message().await.unwrap();
    assert_eq!(
        last.and_then(|r| r.r#type),
        Some(deliver_response::Type::Status(
            Status::ServiceUnavailable as i32
        ))
    );
    let (blocks, status) = node.deliver(request).await;
    assert_eq!((blocks.len(), status), (0, Some(Status::NotFound)));
}

/// One request to the router: status, Content-Type and raw body.
async fn call_raw(node: &Node, request: Request<Body>) -> (StatusCode, String, Vec<u8>) {
    let r = router(node.registrar.clone(), ON)
        .oneshot(request)
        .await
        .unwrap();
    let status = r.status();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, content_type, body.to_vec())
}

/// Fabric 3.x's block fetch (`osnadmin channel fetch`): `oldest`, `newest`,
/// `config` and a number answer the marshalled block as an octet stream; a block
/// above the height and an unknown channel are 404, a malformed block id 400 (its
/// text with `<` and `>` escaped, as Go's JSON encoder writes them), and another
/// method 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_blocks_through_the_router() {
    let node = Node::start_empty(1).await;
    let genesis = node.net.app_genesis.encode_to_vec();
    let (code, body) = call(&node, ON, join_request(&genesis)).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let responses = node
        .broadcast(vec![tx(&node.net.client, APP, "first")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
    let blocks = node
        .blocks_until(&node.net.client, APP, |b| b.len() == 2)
        .await;
    let base = "/participation/v1/channels/mychannel/blocks";
    for (id, want) in [
        ("oldest", &blocks[0]),
        ("newest", &blocks[1]),
        ("config", &blocks[0]),
        ("1", &blocks[1]),
        ("0", &blocks[0]),
    ] {
        let (code, content_type, body) = call_raw(&node, get(&format!("{base}/{id}"))).await;
        assert_eq!(code, StatusCode::OK, "{id}");
        assert_eq!(content_type, "application/octet-stream");
        let got = korder_proto::common::Block::decode(body.as_slice()).unwrap();
        assert_eq!(&got, want, "block {id}");
    }
    let (code, _, body) = call_raw(&node, get(&format!("{base}/7"))).await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, body) = call(&node, ON, get(&format!("{base}/next"))).await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "{\"error\":\"invalid block ID: 'next' not equal \\u003cnewest|oldest|config|(number)\\u003e\"}\n"
        )
    );
    let (code, body) = call(
        &node,
        ON,
        get("/participation/v1/channels/other/blocks/newest"),
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (
            StatusCode::NOT_FOUND,
            "{\"error\":\"channel does not exist\"}\n"
        )
    );
    let delete = Request::delete(format!("{base}/newest"))
        .body(Body::empty())
        .unwrap();
    let (code, _) = call(&node, ON, delete).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
}
