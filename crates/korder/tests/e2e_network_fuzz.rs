//! A black-box fuzz run against a running node: mutated Broadcast and Deliver
//! messages and mutated gRPC frames over real connections. Every request must get
//! an answer (a Fabric status, or a non-OK gRPC status), the node must neither
//! crash nor stall, its memory stays bounded, and its ledger verifies afterwards.
//!
//! The mutations come from a seeded generator; a failure prints the seed
//! (`KORDER_NETFUZZ_SEED` replays it) and the message that went unanswered.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use korder_proto::Message;
use korder_proto::common::{HeaderType, Status};
use korder_proto::orderer::{SeekInfo, SeekSpecified, seek_position};
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const BROADCAST: &str = "/orderer.AtomicBroadcast/Broadcast";
const DELIVER: &str = "/orderer.AtomicBroadcast/Deliver";
/// How long one request may go unanswered before the node counts as stalled.
const ANSWER_LIMIT: Duration = Duration::from_secs(15);

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `input`: bit flips, byte changes, insertions,
/// deletions, truncation, duplication of a slice, or an interesting integer.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(16).min(len - i);
                out.drain(i..i + n);
            }
            4 => out.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(32).min(len - i);
                let slice = out[i..i + n].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, slice);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                let v = [0x00, 0x7f, 0x80, 0xff][rng.below(4)];
                out[i] = v;
            }
            _ => out.push(0xff),
        }
    }
    out
}

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

/// How a stream ended.
#[derive(Debug)]
struct Outcome {
    /// Responses received, as raw bytes.
    responses: Vec<Bytes>,
    /// The gRPC status the stream ended with (`Ok` as code 0).
    code: tonic::Code,
}

/// Sends `messages` on one stream of `path` and reads until the stream ends; `None`
/// when nothing ends it within [`ANSWER_LIMIT`].
async fn exchange(address: &str, path: &'static str, messages: Vec<Bytes>) -> Option<Outcome> {
    let run = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(200 << 20)
            .max_encoding_message_size(200 << 20);
        grpc.ready().await.ok()?;
        let (tx, rx) = mpsc::channel(messages.len().max(1));
        for m in messages {
            tx.send(m).await.ok()?;
        }
        drop(tx);
        let request = tonic::Request::new(ReceiverStream::new(rx));
        let response = grpc
            .streaming(request, PathAndQuery::from_static(path), RawCodec)
            .await;
        let mut stream = match response {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Some(Outcome {
                    responses: Vec::new(),
                    code: status.code(),
                });
            }
        };
        let mut responses = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(m)) => responses.push(m),
                Ok(None) => {
                    return Some(Outcome {
                        responses,
                        code: tonic::Code::Ok,
                    });
                }
                Err(status) => {
                    return Some(Outcome {
                        responses,
                        code: status.code(),
                    });
                }
            }
        }
    };
    tokio::time::timeout(ANSWER_LIMIT, run).await.ok().flatten()
}

fn broadcast_status(response: &Bytes) -> Option<i32> {
    korder_proto::orderer::BroadcastResponse::decode(response.clone())
        .ok()
        .map(|r| r.status)
}

/// A Broadcast stream is answered when every message got a response, or when the
/// stream ended with a non-OK gRPC status, or after a refusal (which ends it).
fn broadcast_answered(sent: usize, outcome: &Outcome) -> bool {
    if outcome.code != tonic::Code::Ok || outcome.responses.len() == sent {
        return true;
    }
    outcome
        .responses
        .last()
        .and_then(broadcast_status)
        .is_some_and(|s| s != Status::Success as i32)
}

/// A Deliver request is answered when the stream ends with a non-OK gRPC status or
/// carries a final status response.
fn deliver_answered(outcome: &Outcome) -> bool {
    if outcome.code != tonic::Code::Ok {
        return true;
    }
    outcome.responses.iter().any(|r| {
        matches!(
            korder_proto::orderer::DeliverResponse::decode(r.clone()).map(|d| d.r#type),
            Ok(Some(korder_proto::orderer::deliver_response::Type::Status(
                _
            )))
        )
    })
}

/// Whether a mutated Deliver request may legitimately wait for blocks that do not
/// exist yet (a valid seek that blocks until ready): such requests are not
/// required to finish.
fn may_wait(request: &[u8]) -> bool {
    let Ok(env) = korder_proto::common::Envelope::decode(request) else {
        return false;
    };
    let Ok(payload) = korder_proto::common::Payload::decode(env.payload) else {
        return false;
    };
    SeekInfo::decode(payload.data).is_ok_and(|s| s.behavior == 0)
}

/// One HTTP/2 request with a hand-made gRPC body: the grpc-status it ends with
/// (from the headers or the trailers; `None` when there is none), or why the
/// exchange broke (a transport error, or no answer in time).
async fn raw_frame(address: &str, path: &str, body: Bytes) -> Result<Option<String>, String> {
    let run = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut client, connection) = h2::client::handshake(tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{address}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let (response, mut send) = client
            .send_request(request, false)
            .map_err(|e| format!("send request: {e}"))?;
        send.send_data(body, true)
            .map_err(|e| format!("send data: {e}"))?;
        let response = response.await.map_err(|e| format!("response: {e}"))?;
        if let Some(s) = response.headers().get("grpc-status") {
            return Ok(s.to_str().ok().map(str::to_owned));
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("body: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|e| format!("trailers: {e}"))?;
        Ok(trailers
            .and_then(|t| t.get("grpc-status").cloned())
            .and_then(|v| v.to_str().ok().map(str::to_owned)))
    };
    tokio::time::timeout(ANSWER_LIMIT, run)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ANSWER_LIMIT:?}")))
}

/// A gRPC length-prefixed frame: flag, big-endian length, message.
fn frame(compressed: u8, length: u32, message: &[u8]) -> Bytes {
    let mut b = bytes::BytesMut::with_capacity(5 + message.len());
    b.put_u8(compressed);
    b.put_u32(length);
    b.put_slice(message);
    b.freeze()
}

/// A message for a failure report: its length and first bytes in hex.
fn show(bytes: &[u8]) -> String {
    let head: String = bytes.iter().take(48).map(|b| format!("{b:02x}")).collect();
    format!("{} bytes {head}…", bytes.len())
}

fn shows(messages: &[Bytes]) -> String {
    messages
        .iter()
        .map(|m| show(m))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Thousands of mutated Broadcast and Deliver messages and hundreds of mutated gRPC
/// frames: every request answered, no crash, no stall, bounded memory, a ledger
/// that verifies, and the node still orders afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutated_requests_are_all_answered() {
    let seed = std::env::var("KORDER_NETFUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("network fuzz seed {seed} (KORDER_NETFUZZ_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let mut net = Net::init(&[]);
    net.start();
    let address = net.address();
    let pid = net.child.as_ref().map(|c| c.id()).unwrap();
    let client = net.client();
    let rss_start = rss_kib(pid);
    let started = Instant::now();

    // Base messages: a signed transaction and a seek for the genesis block.
    let tx = |n: usize| {
        Bytes::from(
            envelope(
                &client,
                "mychannel",
                HeaderType::EndorserTransaction,
                &format!("netfuzz-{seed}-{n}"),
                Bytes::from(vec![7u8; 64]),
            )
            .encode_to_vec(),
        )
    };
    let seek0 = |behavior| {
        Bytes::from(
            seek(
                &client,
                "mychannel",
                seek_position::Type::Specified(SeekSpecified { number: 0 }),
                seek_position::Type::Specified(SeekSpecified { number: 0 }),
                behavior,
            )
            .encode_to_vec(),
        )
    };

    // Broadcast: 300 streams of 1–8 messages, each mutated with probability 3/4.
    let mut failures = Vec::new();
    let mut sent_total = 0;
    for round in 0..30 {
        let mut tasks = Vec::new();
        for s in 0..10 {
            let n = 1 + rng.below(8);
            let messages: Vec<Bytes> = (0..n)
                .map(|i| {
                    let base = tx(round * 100 + s * 10 + i);
                    if rng.below(4) == 0 {
                        base
                    } else {
                        Bytes::from(mutate(&mut rng, &base))
                    }
                })
                .collect();
            sent_total += n;
            let address = address.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = exchange(&address, BROADCAST, messages.clone()).await;
                (messages, outcome)
            }));
        }
        for t in tasks {
            let (messages, outcome) = t.await.unwrap();
            match outcome {
                None => failures.push(format!("Broadcast stalled: {}", shows(&messages))),
                Some(o) if !broadcast_answered(messages.len(), &o) => failures.push(format!(
                    "Broadcast of {} messages got {} responses and gRPC {:?}: {}",
                    messages.len(),
                    o.responses.len(),
                    o.code,
                    shows(&messages)
                )),
                Some(_) => {}
            }
        }
    }

    // Deliver: 1,500 single requests, most mutated.
    let mut deliver_total = 0;
    for _ in 0..50 {
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let base = seek0(1 + rng.below(2) as i32 - 1);
            let request = if rng.below(5) == 0 {
                base
            } else {
                Bytes::from(mutate(&mut rng, &base))
            };
            deliver_total += 1;
            let address = address.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = exchange(&address, DELIVER, vec![request.clone()]).await;
                (request, outcome)
            }));
        }
        for t in tasks {
            let (request, outcome) = t.await.unwrap();
            match outcome {
                None if may_wait(&request) => {}
                None => failures.push(format!("Deliver stalled: {}", show(&request))),
                Some(o) if !deliver_answered(&o) && !may_wait(&request) => failures.push(format!(
                    "Deliver got {} responses and gRPC {:?} without a status: {}",
                    o.responses.len(),
                    o.code,
                    show(&request)
                )),
                Some(_) => {}
            }
        }
    }

    // Raw gRPC frames: wrong flags, lengths that lie, truncated and empty bodies.
    let mut frames_total = 0;
    for i in 0..200 {
        let message = if i % 2 == 0 { tx(10_000 + i) } else { seek0(1) };
        let path = if i % 2 == 0 { BROADCAST } else { DELIVER };
        let len = message.len() as u32;
        let body = match rng.below(6) {
            0 => frame(1, len, &message),
            1 => frame(0, len + 1 + rng.below(1000) as u32, &message),
            2 => frame(0, len, &message[..rng.below(message.len())]),
            3 => frame(0, u32::MAX, &message),
            4 => Bytes::from(mutate(&mut rng, &frame(0, len, &message))),
            _ => Bytes::from(vec![0u8; rng.below(5)]),
        };
        frames_total += 1;
        match raw_frame(&address, path, body.clone()).await {
            Err(why) => failures.push(format!("raw frame on {path}: {why}: {}", show(&body))),
            Ok(None) => failures.push(format!(
                "raw frame on {path} ended without grpc-status: {}",
                show(&body)
            )),
            Ok(Some(_)) => {}
        }
    }

    let rss_end = rss_kib(pid);
    eprintln!(
        "{sent_total} Broadcast messages, {deliver_total} Deliver requests, {frames_total} raw frames in {:?}; RSS {rss_start} → {rss_end} KiB",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "seed {seed}: {} unanswered requests, first ones:\n{}\nnode log:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        net.log()
    );
    assert!(
        net.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the node exited; log:\n{}",
        net.log()
    );
    assert!(
        rss_end < 1024 * 1024,
        "the node's RSS grew to {rss_end} KiB (from {rss_start})"
    );

    // Still ordering: a valid transaction is acknowledged and delivered.
    let ok = broadcast_all(
        &address,
        vec![korder_proto::common::Envelope::decode(tx(99_999)).unwrap()],
    )
    .await;
    assert_eq!(
        ok.first().map(|r| r.0),
        Some(Status::Success as i32),
        "{ok:?}"
    );

    net.stop();
    let dir = net.data_dir().to_str().unwrap().to_owned();
    korder(&["ledger", "verify", &dir]);
}
