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
//!
//! Modes:
//! * closed loop (default): each stream sends as fast as its in-flight window allows,
//!   which measures saturation;
//! * open loop (`--rate`): envelope `i` is due at `start + i / rate` whatever happened
//!   before, and its latency counts from that due time, so a stall delays every
//!   envelope queued behind it (no coordinated omission);
//! * a sweep (`--sweep`): open-loop runs at several rates, one line each, and
//!   optionally an SVG plot of latency against offered load (`--plot`);
//! * `--deliver-clients N`: N Deliver streams follow the channel like N peers; each
//!   block's arrival at every stream is compared with its first arrival anywhere;
//! * `--node-pid PID`: the CPU time the node's process used during the run, per
//!   delivered transaction (for a node on the same machine).

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
    /// Open loop: offer this many envelopes per second in all (spread over the
    /// streams), latency measured from each envelope's due time.
    #[arg(long, conflicts_with = "sweep")]
    pub rate: Option<f64>,
    /// Open-loop runs at each of these rates (tx/s, comma-separated), each for
    /// `--seconds`; replaces `--tx` and `--rate`.
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<f64>,
    /// Seconds per rate of a `--sweep`.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Write an SVG plot of delivered latency against offered rate (with `--sweep`).
    #[arg(long, requires = "sweep")]
    pub plot: Option<std::path::PathBuf>,
    /// Deliver streams that follow the channel during the run, like peers (spread
    /// round-robin over the orderer addresses); the first also measures latency.
    #[arg(long, default_value_t = 1)]
    pub deliver_clients: usize,
    /// Report the CPU time this process (a node on the same machine) used during
    /// the run, per delivered envelope. May be given more than once.
    #[arg(long)]
    pub node_pid: Vec<u32>,
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
    /// Block number and arrival time of every block received.
    arrivals: Vec<(u64, Instant)>,
    error: Option<String>,
}

/// What one of the extra Deliver streams (`--deliver-clients`) observed.
#[derive(Default)]
struct FollowerResult {
    arrivals: Vec<(u64, Instant)>,
    error: Option<String>,
}

/// `korder bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.tx > 0, "--tx must be at least 1");
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.in_flight > 0, "--in-flight must be at least 1");
    anyhow::ensure!(
        args.deliver_clients > 0,
        "--deliver-clients must be at least 1"
    );
    for r in args.rate.iter().chain(&args.sweep) {
        anyhow::ensure!(r.is_finite() && *r > 0.0, "a rate must be positive: {r}");
    }
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0,
        "--seconds must be positive"
    );
    let conn = args.conn.resolve()?;
    let addresses = conn.addresses()?;
    let channel = conn.channel()?;
    let signer = conn.signer()?;
    let rt = runtime()?;

    // One run per rate of a sweep, else one run.
    let plan: Vec<(usize, Option<f64>)> = if args.sweep.is_empty() {
        vec![(args.tx, args.rate)]
    } else {
        args.sweep
            .iter()
            .map(|&r| (((r * args.seconds).round() as usize).max(1), Some(r)))
            .collect()
    };
    let mut runs = Vec::with_capacity(plan.len());
    let mut problems = Vec::new();
    for (tx, rate) in plan {
        if !args.json {
            match rate {
                Some(r) => eprintln!(
                    "signing {tx} envelopes of {} bytes for channel {channel}, to offer at {r} tx/s…",
                    args.size
                ),
                None => eprintln!(
                    "signing {tx} envelopes of {} bytes for channel {channel}…",
                    args.size
                ),
            }
        }
        let prepared = presign(&signer, &channel, tx, args.size)?;
        let cpu_before = node_cpu_seconds(&args.node_pid)?;
        let mut summary =
            rt.block_on(drive(&args, rate, &addresses, &channel, &signer, prepared))?;
        if let Some(before) = cpu_before {
            let after = node_cpu_seconds(&args.node_pid)?.unwrap_or(before);
            add_cpu(&mut summary.json, after - before);
        }
        if !args.json {
            print_text(&summary.json);
        }
        problems.extend(summary.problems);
        runs.push(summary.json);
    }
    if args.json {
        let out = if args.sweep.is_empty() {
            runs[0].clone()
        } else {
            serde_json::Value::Array(runs.clone())
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if runs.len() > 1 {
        print_sweep(&runs);
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot_svg(&runs))
            .with_context(|| format!("writing {}", path.display()))?;
        if !args.json {
            eprintln!("plot written to {}", path.display());
        }
    }
    for p in &problems {
        eprintln!("korder bench: {p}");
    }
    Ok(if problems.is_empty() {
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
    rate: Option<f64>,
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
    let follow_from = || {
        seek_envelope(
            signer,
            channel,
            specified(height),
            specified(u64::MAX),
            false,
        )
    };
    session.send(follow_from()?).await?;

    // The other Deliver streams, like peers pulling the same blocks; each stops at
    // the last block the measuring stream needed.
    let (last_block_tx, last_block_rx) = tokio::sync::watch::channel(None::<u64>);
    let mut followers = Vec::with_capacity(args.deliver_clients - 1);
    for c in 1..args.deliver_clients {
        let addr = &addresses[c % addresses.len()];
        let mut client = connect(addr, connect_timeout).await?;
        let s = DeliverSession::open(&mut client, connect_timeout)
            .await
            .with_context(|| format!("Deliver to {addr}"))?;
        s.send(follow_from()?).await?;
        followers.push(tokio::spawn(watch_blocks(
            s,
            last_block_rx.clone(),
            deadline,
        )));
    }

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
    let pace = rate.map(|r| Pace { start, rate: r });
    let streams: Vec<_> = clients
        .into_iter()
        .zip(per_stream)
        .map(|((addr, client), envs)| {
            tokio::spawn(broadcast_stream(
                addr,
                client,
                envs,
                args.in_flight,
                pace,
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
    let _ = last_block_tx.send(Some(delivered.arrivals.last().map_or(height, |&(b, _)| b)));
    let mut others = Vec::with_capacity(followers.len());
    for f in followers {
        others.push(f.await.context("a Deliver follower panicked")?);
    }
    let mut summary = summarize(args, rate, n, start, &results, &delivered);
    add_fanout(&mut summary, &delivered, &others);
    Ok(summary)
}

/// When each envelope is due in an open-loop run: envelope `i` at `start + i / rate`.
#[derive(Clone, Copy)]
struct Pace {
    start: Instant,
    rate: f64,
}

impl Pace {
    fn due(&self, i: usize) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }
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
    pace: Option<Pace>,
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
            // Open loop: wait for the due time, and count latency from it even when
            // the in-flight window makes the envelope leave later.
            let due = pace.map(|p| p.due(i));
            if let Some(due) = due {
                tokio::time::sleep_until(due).await;
            }
            let Ok(permit) = sender_permits.acquire().await else {
                break;
            };
            permit.forget();
            let t = due.unwrap_or_else(Instant::now);
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
        r.arrivals
            .push((block.header.as_ref().map_or(0, |h| h.number), t));
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

/// One extra Deliver stream: records when each block arrives, until it has the last
/// block the measuring stream needed (known once that stream is done) or the deadline.
async fn watch_blocks(
    mut session: DeliverSession,
    mut last: tokio::sync::watch::Receiver<Option<u64>>,
    deadline: Instant,
) -> FollowerResult {
    let mut r = FollowerResult::default();
    let mut last_open = true;
    loop {
        let newest = r.arrivals.last().map(|&(b, _)| b);
        if let (Some(stop), Some(have)) = (*last.borrow(), newest)
            && have >= stop
        {
            return r;
        }
        let next = tokio::select! {
            next = session.next_until(deadline) => next,
            changed = last.changed(), if last_open => {
                last_open = changed.is_ok();
                continue;
            }
        };
        let t = Instant::now();
        match next {
            Ok(Some(deliver_response::Type::Block(b))) => r
                .arrivals
                .push((b.header.as_ref().map_or(0, |h| h.number), t)),
            Ok(Some(deliver_response::Type::Status(s))) => {
                r.error = Some(format!(
                    "a follower's Deliver ended with {}",
                    status_name(s)
                ));
                return r;
            }
            Ok(None) => {
                r.error = Some("a follower's Deliver stream ended".into());
                return r;
            }
            Err(e) => {
                r.error = Some(format!("a follower: {e:#}"));
                return r;
            }
        }
    }
}

/// How far behind the first arrival of each block the streams received it: every
/// (stream, block) pair counts, the measuring stream included. Adds `fanout_*` fields
/// when there is more than one Deliver stream.
fn add_fanout(summary: &mut Summary, main: &DeliverResult, others: &[FollowerResult]) {
    if others.is_empty() {
        return;
    }
    let streams: Vec<&[(u64, Instant)]> = std::iter::once(main.arrivals.as_slice())
        .chain(others.iter().map(|o| o.arrivals.as_slice()))
        .collect();
    let mut first: HashMap<u64, Instant> = HashMap::new();
    for &(b, t) in streams.iter().flat_map(|s| s.iter()) {
        first.entry(b).and_modify(|f| *f = (*f).min(t)).or_insert(t);
    }
    let mut lag_ms: Vec<f64> = streams
        .iter()
        .flat_map(|s| s.iter())
        .map(|&(b, t)| t.saturating_duration_since(first[&b]).as_secs_f64() * 1e3)
        .collect();
    lag_ms.sort_by(f64::total_cmp);
    let wanted = main.arrivals.len();
    let short = others.iter().filter(|o| o.arrivals.len() < wanted).count();
    for o in others {
        if let Some(e) = &o.error {
            summary.problems.push(e.clone());
        }
    }
    if short > 0 {
        summary.problems.push(format!(
            "{short} of {} follower streams received fewer than {wanted} blocks",
            others.len()
        ));
    }
    let j = &mut summary.json;
    j["deliver_clients"] = json!(streams.len());
    j["fanout_lag_ms_p50"] = json!(round3(percentile(&lag_ms, 50.0)));
    j["fanout_lag_ms_p99"] = json!(round3(percentile(&lag_ms, 99.0)));
    j["fanout_lag_ms_max"] = json!(round3(lag_ms.last().copied().unwrap_or(0.0)));
}

/// Linux reports process CPU time in USER_HZ ticks, which the kernel fixes at 100
/// per second for user space on every architecture it supports.
const USER_HZ: f64 = 100.0;

/// The CPU time (user + system, all threads) the processes have used so far, from
/// `/proc/PID/stat`; `None` when no process was named.
fn node_cpu_seconds(pids: &[u32]) -> anyhow::Result<Option<f64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    let mut total = 0.0;
    for pid in pids {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        total += cpu_ticks(&stat).with_context(|| format!("parsing {path}"))? as f64 / USER_HZ;
    }
    Ok(Some(total))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces, so fields count from its end.
fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("no command name")?;
    // After ")": field 3 (state) is the first.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .context("too few fields")?
            .parse::<u64>()
            .with_context(|| format!("field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

/// Adds the node's CPU use over the run: seconds, share of one core, µs per
/// delivered envelope.
fn add_cpu(json: &mut serde_json::Value, cpu_s: f64) {
    let delivered = json["delivered"].as_f64().unwrap_or(0.0);
    let elapsed = json["elapsed_s"].as_f64().unwrap_or(0.0);
    json["node_cpu_s"] = json!(round3(cpu_s));
    if elapsed > 0.0 {
        json["node_cpu_cores"] = json!(round3(cpu_s / elapsed));
    }
    if delivered > 0.0 {
        json["node_cpu_us_per_tx"] = json!(round3(cpu_s * 1e6 / delivered));
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
    rate: Option<f64>,
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
        "offered_tx_per_s": rate,
        "clients": args.clients,
        "size": args.size,
        "in_flight": args.in_flight,
        "ok": problems.is_empty(),
    });
    Summary { json, problems }
}

fn print_text(v: &serde_json::Value) {
    if let Some(r) = v["offered_tx_per_s"].as_f64() {
        println!("offered: {r} tx/s (open loop)");
    }
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
    if !v["deliver_clients"].is_null() {
        println!(
            "{} Deliver streams, lag behind a block's first arrival ms: p50 {}  p99 {}  max {}",
            v["deliver_clients"],
            v["fanout_lag_ms_p50"],
            v["fanout_lag_ms_p99"],
            v["fanout_lag_ms_max"]
        );
    }
    if !v["node_cpu_s"].is_null() {
        println!(
            "node CPU: {} s ({} cores), {} µs per delivered envelope",
            v["node_cpu_s"], v["node_cpu_cores"], v["node_cpu_us_per_tx"]
        );
    }
}

/// One line per rate of a sweep.
fn print_sweep(runs: &[serde_json::Value]) {
    println!();
    println!(
        "{:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "offered", "achieved", "p50 ms", "p90 ms", "p99 ms", "max ms", "cpu µs/tx"
    );
    for v in runs {
        let cpu = v["node_cpu_us_per_tx"]
            .as_f64()
            .map_or_else(|| "-".to_string(), |c| format!("{c:.1}"));
        println!(
            "{:>10} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>12}",
            v["offered_tx_per_s"].as_f64().unwrap_or(0.0),
            v["tx_per_s"].as_f64().unwrap_or(0.0),
            v["latency_ms_p50"].as_f64().unwrap_or(0.0),
            v["latency_ms_p90"].as_f64().unwrap_or(0.0),
            v["latency_ms_p99"].as_f64().unwrap_or(0.0),
            v["latency_ms_max"].as_f64().unwrap_or(0.0),
            cpu
        );
    }
}

/// An SVG line chart of delivered latency (p50, p90, p99; log scale) against the
/// offered rate (log scale) of a sweep's runs.
fn plot_svg(runs: &[serde_json::Value]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 440.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 20.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    let series = [
        ("latency_ms_p50", "p50", "#1f77b4"),
        ("latency_ms_p90", "p90", "#2ca02c"),
        ("latency_ms_p99", "p99", "#d62728"),
    ];
    let points: Vec<(f64, [f64; 3])> = runs
        .iter()
        .filter_map(|v| {
            let x = v["offered_tx_per_s"].as_f64()?;
            let y = series.map(|(k, _, _)| v[k].as_f64().unwrap_or(0.0).max(0.1));
            Some((x, y))
        })
        .collect();
    // Decade bounds that hold every point.
    let decades = |lo: f64, hi: f64| {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    };
    let (x_lo, x_hi) = decades(
        points
            .iter()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
            .max(0.1),
        points.iter().map(|p| p.0).fold(0.1, f64::max),
    );
    let ys = points.iter().flat_map(|p| p.1);
    let (y_lo, y_hi) = decades(
        ys.clone().fold(f64::INFINITY, f64::min).max(0.1),
        ys.fold(0.1, f64::max),
    );
    let px = |x: f64| LEFT + (x.log10() - x_lo) / (x_hi - x_lo) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (y.log10() - y_lo) / (y_hi - y_lo) * (H - TOP - BOTTOM);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\
         korder bench: broadcast→delivered latency against offered load</text>\n",
        W / 2.0
    );
    // Grid and labels, one line per decade.
    for d in (x_lo as i32)..=(x_hi as i32) {
        let x = px(10f64.powi(d));
        svg += &format!(
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            H - BOTTOM,
            H - BOTTOM + 16.0,
            10f64.powi(d)
        );
    }
    for d in (y_lo as i32)..=(y_hi as i32) {
        let y = py(10f64.powi(d));
        svg += &format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            10f64.powi(d)
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">offered load, tx/s</text>\n\
         <text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">latency, ms</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        H - 18.0,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0
    );
    for (k, (_, name, colour)) in series.iter().enumerate() {
        let line: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(y[k])))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            line.join(" ")
        );
        for (x, y) in &points {
            svg += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>\n",
                px(*x),
                py(y[k])
            );
        }
        let ly = TOP + 14.0 + 16.0 * k as f64;
        svg += &format!(
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{name}</text>\n",
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            ly + 4.0
        );
    }
    svg += "</svg>\n";
    svg
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

    /// utime and stime are read after the parenthesised command name, even one with
    /// spaces and a closing parenthesis inside.
    #[test]
    fn cpu_ticks_reads_utime_and_stime() {
        let stat = "4242 (kor der) x) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat).unwrap_or(0), 325);
        assert!(cpu_ticks("4242 (short) S 1 2").is_err());
        assert!(cpu_ticks("no name").is_err());
    }

    /// Open-loop due times are evenly spaced at the offered rate.
    #[test]
    fn pace_spaces_envelopes_at_the_rate() {
        let start = Instant::now();
        let p = Pace { start, rate: 200.0 };
        assert_eq!(p.due(0), start);
        assert_eq!(p.due(1) - start, Duration::from_millis(5));
        assert_eq!(p.due(400) - start, Duration::from_secs(2));
    }

    /// The sweep plot has one polyline per percentile with a point per rate, and
    /// higher latency is drawn higher up (smaller y).
    #[test]
    fn plot_has_a_line_per_percentile() {
        let runs: Vec<serde_json::Value> = [(100.0, 5.0), (1000.0, 50.0), (10000.0, 500.0)]
            .iter()
            .map(|&(r, ms)| {
                json!({"offered_tx_per_s": r, "latency_ms_p50": ms,
                       "latency_ms_p90": ms * 2.0, "latency_ms_p99": ms * 4.0})
            })
            .collect();
        let svg = plot_svg(&runs);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 9);
        let first = svg
            .split("points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .unwrap_or_default();
        let ys: Vec<f64> = first
            .split(' ')
            .filter_map(|xy| xy.split(',').nth(1)?.parse().ok())
            .collect();
        assert_eq!(ys.len(), 3);
        assert!(ys[0] > ys[1] && ys[1] > ys[2], "{ys:?}");
    }

    /// Filler data has the asked size and differs between envelopes.
    #[test]
    fn filler_has_size_and_varies() {
        assert_eq!(filler(0, 100).len(), 100);
        assert_eq!(filler(5, 0).len(), 0);
        assert_ne!(filler(1, 32), filler(2, 32));
    }
}
