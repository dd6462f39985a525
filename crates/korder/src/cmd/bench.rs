//! `korder bench`: Broadcast-to-Deliver throughput and latency against running orderers.
//!
//! ```text
//! pre-sign N envelopes (all cores) ── clock starts ──┐
//!   K Broadcast streams, round-robin over the nodes:  │ sender task ─▶ stream ─▶ receiver task
//!     at most --in-flight unacknowledged per stream   │   (send time)          (ack time, status)
//!   1 Deliver stream from the height before the run:  │ blocks ─▶ tx ids ─▶ delivered time
//! ```
//!
//! Every envelope carries a unique tx id; delivered blocks are scanned for those ids,
//! which gives the latency of each envelope from its send to its delivery and detects
//! envelopes delivered twice.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{Envelope, HeaderType, Status};
use korder_proto::orderer::deliver_response;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::block::envelope_channel_header;
use super::client::{
    ConnArgs, DeliverSession, connect, newest, open_broadcast, runtime, seek_envelope,
    signed_envelope, specified, status_name,
};

/// Options of `korder bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Number of envelopes to send.
    #[arg(long, default_value_t = 10_000)]
    pub tx: usize,
    /// Number of Broadcast streams (spread round-robin over the orderer addresses).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Bytes of payload data per envelope.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Unacknowledged envelopes allowed per Broadcast stream.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// The run ends after this many seconds whatever happened.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One envelope ready to send.
struct Prepared {
    tx_id: String,
    envelope: Envelope,
}

/// What one Broadcast stream observed, per envelope index.
#[derive(Default)]
struct StreamResult {
    sent: Vec<(usize, Instant)>,
    acks: Vec<(usize, Instant)>,
    failures: Vec<(usize, String)>,
    error: Option<String>,
}

/// What the Deliver stream observed.
#[derive(Default)]
struct DeliverResult {
    delivered: Vec<(usize, Instant)>,
    duplicates: u64,
    blocks: u64,
    error: Option<String>,
}

/// `korder bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.tx > 0, "--tx must be at least 1");
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    let conn = args.conn.resolve()?;
    let addresses = conn.addresses()?;
    let channel = conn.channel()?;
    let signer = conn.signer()?;
    if !args.json {
        eprintln!(
            "signing {} envelopes of {} bytes for channel {channel}…",
            args.tx, args.size
        );
    }
    let prepared = presign(&signer, &channel, args.tx, args.size)?;
    let rt = runtime()?;
    let summary = rt.block_on(drive(&args, &addresses, &channel, &signer, prepared))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary.json)?);
    } else {
        print_text(&summary.json);
    }
    for p in &summary.problems {
        eprintln!("korder bench: {p}");
    }
    Ok(if summary.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Signs `n` ENDORSER_TRANSACTION envelopes on every core.
fn presign(
    signer: &SigningIdentity,
    channel: &str,
    n: usize,
    size: usize,
) -> anyhow::Result<Vec<Prepared>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n);
    let per_thread = n.div_ceil(threads);
    let chunks: Vec<anyhow::Result<Vec<Prepared>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = t * per_thread;
                let end = ((t + 1) * per_thread).min(n);
                s.spawn(move || {
                    (start..end)
                        .map(|i| {
                            let (envelope, tx_id) = signed_envelope(
                                signer,
                                HeaderType::EndorserTransaction,
                                channel,
                                filler(i, size),
                                true,
                            )?;
                            Ok(Prepared { tx_id, envelope })
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a signing thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    for c in chunks {
        out.extend(c?);
    }
    assert_eq!(out.len(), n, "every envelope is signed");
    Ok(out)
}

/// `size` bytes of payload data that differ from envelope to envelope.
fn filler(index: usize, size: usize) -> Bytes {
    let mut x = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

struct Summary {
    json: serde_json::Value,
    problems: Vec<String>,
}

async fn drive(
    args: &BenchArgs,
    addresses: &[String],
    channel: &str,
    signer: &SigningIdentity,
    prepared: Vec<Prepared>,
) -> anyhow::Result<Summary> {
    let n = prepared.len();
    let timeout = Duration::from_secs(args.timeout_s);
    let connect_timeout = timeout.min(Duration::from_secs(10));
    let deadline = Instant::now() + timeout;

    // Deliver first: learn the height, then follow from there.
    let mut deliver_client = connect(&addresses[0], connect_timeout).await?;
    let mut session = DeliverSession::open(&mut deliver_client, connect_timeout)
        .await
        .with_context(|| format!("Deliver to {}", addresses[0]))?;
    let last = session
        .fetch_one(signer, channel, newest(), false)
        .await
        .with_context(|| format!("reading the height of {channel}"))?;
    let height = last.header.as_ref().map_or(0, |h| h.number) + 1;
    session
        .send(seek_envelope(
            signer,
            channel,
            specified(height),
            specified(u64::MAX),
            false,
        )?)
        .await?;

    let ids: HashMap<String, usize> = prepared
        .iter()
        .enumerate()
        .map(|(i, p)| (p.tx_id.clone(), i))
        .collect();
    assert_eq!(ids.len(), n, "tx ids are unique");
    let (acked_tx, acked_rx) = tokio::sync::watch::channel(None::<usize>);
    let deliverer = tokio::spawn(follow(session, ids, n, acked_rx, deadline));

    // Broadcast streams, connected before the clock starts.
    let k = args.clients;
    let mut per_stream: Vec<Vec<(usize, Envelope)>> = (0..k).map(|_| Vec::new()).collect();
    for (i, p) in prepared.into_iter().enumerate() {
        per_stream[i % k].push((i, p.envelope));
    }
    let mut clients = Vec::with_capacity(k);
    for s in 0..k {
        let addr = &addresses[s % addresses.len()];
        clients.push((addr.clone(), connect(addr, connect_timeout).await?));
    }
    let start = Instant::now();
    let streams: Vec<_> = clients
        .into_iter()
        .zip(per_stream)
        .map(|((addr, client), envs)| {
            tokio::spawn(broadcast_stream(
                addr,
                client,
                envs,
                args.in_flight,
                deadline,
            ))
        })
        .collect();
    let mut results = Vec::with_capacity(k);
    for h in streams {
        results.push(h.await.context("a Broadcast task panicked")?);
    }
    let acked: usize = results.iter().map(|r| r.acks.len()).sum();
    // Tell the deliverer how many envelopes it can still expect.
    let _ = acked_tx.send(Some(acked));
    let delivered = deliverer.await.context("the Deliver task panicked")?;
    Ok(summarize(args, n, start, &results, &delivered))
}

/// One Broadcast stream: a sender task bounded by `in_flight` permits and a receiver
/// matching the in-order responses to the envelopes sent.
async fn broadcast_stream(
    address: String,
    client: korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient<
        tonic::transport::Channel,
    >,
    envs: Vec<(usize, Envelope)>,
    in_flight: usize,
    deadline: Instant,
) -> StreamResult {
    let mut result = StreamResult::default();
    // The stream opens in the background: the first envelope goes out before the
    // server's headers, which Fabric's orderer sends only with its first answer.
    let (req_tx, mut responses) = open_broadcast(&client, in_flight);
    let permits = Arc::new(Semaphore::new(in_flight));
    let (pending_tx, mut pending_rx) = mpsc::unbounded_channel::<usize>();
    let total = envs.len();
    let sender_permits = permits.clone();
    let sender = tokio::spawn(async move {
        let mut sent = Vec::with_capacity(total);
        for (i, env) in envs {
            let Ok(permit) = sender_permits.acquire().await else {
                break;
            };
            permit.forget();
            let t = Instant::now();
            if pending_tx.send(i).is_err() || req_tx.send(env).await.is_err() {
                break;
            }
            sent.push((i, t));
        }
        sent
    });
    let mut received = 0usize;
    while received < total {
        let msg = match responses.message_until(deadline).await {
            Err(e) => {
                result.error = Some(format!("{address}: waiting for acks: {e:#}"));
                break;
            }
            Ok(None) => {
                result.error = Some(format!("{address}: the Broadcast stream ended"));
                break;
            }
            Ok(Some(m)) => m,
        };
        let t = Instant::now();
        let Some(i) = pending_rx.recv().await else {
            result.error = Some(format!("{address}: a response without a request"));
            break;
        };
        received += 1;
        permits.add_permits(1);
        if msg.status == Status::Success as i32 {
            result.acks.push((i, t));
        } else {
            result
                .failures
                .push((i, format!("{} {}", status_name(msg.status), msg.info)));
        }
    }
    // Unblocks a sender still waiting for a permit, then collects its send times.
    permits.close();
    result.sent = sender.await.unwrap_or_default();
    result
}

/// Follows the Deliver stream until every acknowledged envelope has been seen, or the
/// deadline passes.
async fn follow(
    mut session: DeliverSession,
    ids: HashMap<String, usize>,
    n: usize,
    mut acked: tokio::sync::watch::Receiver<Option<usize>>,
    deadline: Instant,
) -> DeliverResult {
    let mut r = DeliverResult::default();
    let mut seen = vec![false; n];
    let mut distinct = 0usize;
    let mut acked_open = true;
    loop {
        if distinct == n || acked.borrow().is_some_and(|a| distinct >= a) {
            return r;
        }
        let next = tokio::select! {
            next = session.next_until(deadline) => next,
            changed = acked.changed(), if acked_open => {
                // Without a count from the senders, follow until the deadline.
                acked_open = changed.is_ok();
                continue;
            }
        };
        let t = Instant::now();
        let block = match next {
            Ok(Some(deliver_response::Type::Block(b))) => b,
            Ok(Some(deliver_response::Type::Status(s))) => {
                r.error = Some(format!("Deliver ended with {}", status_name(s)));
                return r;
            }
            Ok(None) => {
                r.error = Some("the Deliver stream ended".into());
                return r;
            }
            Err(e) => {
                r.error = Some(format!("{e:#}"));
                return r;
            }
        };
        r.blocks += 1;
        for entry in block.data.iter().flat_map(|d| d.data.iter()) {
            let Some((_, ch)) = envelope_channel_header(entry) else {
                continue;
            };
            let Some(&i) = ids.get(&ch.tx_id) else {
                continue;
            };
            if seen[i] {
                r.duplicates += 1;
            } else {
                seen[i] = true;
                distinct += 1;
                r.delivered.push((i, t));
            }
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn summarize(
    args: &BenchArgs,
    n: usize,
    start: Instant,
    streams: &[StreamResult],
    d: &DeliverResult,
) -> Summary {
    let mut sent_at = vec![None; n];
    for r in streams {
        for &(i, t) in &r.sent {
            sent_at[i] = Some(t);
        }
    }
    let sent = sent_at.iter().filter(|t| t.is_some()).count();
    let first_send = sent_at.iter().flatten().min().copied().unwrap_or(start);
    let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;

    let mut ack_ms: Vec<f64> = streams
        .iter()
        .flat_map(|r| r.acks.iter())
        .filter_map(|&(i, t)| sent_at[i].map(|s| ms(s, t)))
        .collect();
    ack_ms.sort_by(f64::total_cmp);
    let mut lat_ms: Vec<f64> = d
        .delivered
        .iter()
        .filter_map(|&(i, t)| sent_at[i].map(|s| ms(s, t)))
        .collect();
    lat_ms.sort_by(f64::total_cmp);
    let acked = ack_ms.len();
    let delivered = d.delivered.len();
    let failed: usize = streams.iter().map(|r| r.failures.len()).sum();
    let last_delivery = d.delivered.iter().map(|&(_, t)| t).max();
    let elapsed_s = last_delivery.map_or_else(
        || start.elapsed().as_secs_f64(),
        |t| t.saturating_duration_since(first_send).as_secs_f64(),
    );
    let tx_per_s = if elapsed_s > 0.0 {
        delivered as f64 / elapsed_s
    } else {
        0.0
    };

    let mut problems = Vec::new();
    for r in streams {
        if let Some(e) = &r.error {
            problems.push(e.clone());
        }
        if let Some((i, why)) = r.failures.first() {
            problems.push(format!(
                "envelope {i} refused: {why} ({} refused on that stream)",
                r.failures.len()
            ));
        }
    }
    if let Some(e) = &d.error {
        problems.push(e.clone());
    }
    if acked < n {
        problems.push(format!("{acked} of {n} envelopes acknowledged"));
    }
    if delivered < n {
        problems.push(format!("{delivered} of {n} envelopes delivered"));
    }
    if d.duplicates > 0 {
        problems.push(format!(
            "{} envelopes delivered more than once",
            d.duplicates
        ));
    }

    let json = json!({
        "sent": sent,
        "acked": acked,
        "failed": failed,
        "delivered": delivered,
        "duplicates": d.duplicates,
        "blocks": d.blocks,
        "tx_per_s": round3(tx_per_s),
        "latency_ms_p50": round3(percentile(&lat_ms, 50.0)),
        "latency_ms_p90": round3(percentile(&lat_ms, 90.0)),
        "latency_ms_p99": round3(percentile(&lat_ms, 99.0)),
        "latency_ms_max": round3(lat_ms.last().copied().unwrap_or(0.0)),
        "ack_ms_p50": round3(percentile(&ack_ms, 50.0)),
        "ack_ms_p90": round3(percentile(&ack_ms, 90.0)),
        "ack_ms_p99": round3(percentile(&ack_ms, 99.0)),
        "ack_ms_max": round3(ack_ms.last().copied().unwrap_or(0.0)),
        "elapsed_s": round3(elapsed_s),
        "clients": args.clients,
        "size": args.size,
        "in_flight": args.in_flight,
        "ok": problems.is_empty(),
    });
    Summary { json, problems }
}

fn print_text(v: &serde_json::Value) {
    println!(
        "sent {}  acked {}  delivered {}  duplicates {}  in {} blocks, {} s",
        v["sent"], v["acked"], v["delivered"], v["duplicates"], v["blocks"], v["elapsed_s"]
    );
    println!(
        "throughput: {} tx/s (first send to last delivery; {} streams, {} bytes per envelope)",
        v["tx_per_s"], v["clients"], v["size"]
    );
    println!(
        "broadcast→delivered ms: p50 {}  p90 {}  p99 {}  max {}",
        v["latency_ms_p50"], v["latency_ms_p90"], v["latency_ms_p99"], v["latency_ms_max"]
    );
    println!(
        "broadcast→ack ms:       p50 {}  p90 {}  p99 {}  max {}",
        v["ack_ms_p50"], v["ack_ms_p90"], v["ack_ms_p99"], v["ack_ms_max"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentiles pick the expected element and cope with empty and single samples.
    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 90.0), 90.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), 2.0);
    }

    /// Filler data has the asked size and differs between envelopes.
    #[test]
    fn filler_has_size_and_varies() {
        assert_eq!(filler(0, 100).len(), 100);
        assert_eq!(filler(5, 0).len(), 0);
        assert_ne!(filler(1, 32), filler(2, 32));
    }
}
