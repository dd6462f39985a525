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
//!   delivered transaction (for a node on the same machine);
//! * `--channels N`: envelope `i` goes to channel `i mod N` (on stream `i mod K` as
//!   always, so a stream carries several channels, as one client connection of a
//!   peer or SDK does), one Deliver stream per channel measures latency, like a peer
//!   joined to every channel. Missing channels are created first through the system
//!   channel, many creations in flight at once, each awaited until its block 0 is
//!   served.

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
use super::channel::{CreationChoice, Creator, channel_exists, wait_for_genesis};
use super::client::{
    Conn, ConnArgs, DeliverSession, connect, connect_any, newest, open_broadcast, runtime,
    seek_envelope, signed_envelope, specified, status_name,
};

/// Channel names of `--channels N` without `--channel-prefix`: `bench0`, `bench1`, …
const DEFAULT_CHANNEL_PREFIX: &str = "bench";

/// Deliver streams opened on one connection with `--channels N`: well under the
/// server's default limit of concurrent streams per connection (1024).
const DELIVER_STREAMS_PER_CONNECTION: usize = 256;

/// Deliver streams set up at once (each reads its channel's height first).
const DELIVER_SETUP_IN_FLIGHT: usize = 64;

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
    /// Spread the load evenly over this many channels: envelope `i` goes to channel
    /// `i mod N`, one Deliver stream per channel. Channels that do not exist are
    /// created first through the system channel.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// The channels of `--channels N` are PREFIX0 … PREFIX{N-1} (default prefix
    /// `bench`; with `--channels 1` and no prefix, the channel is --channel's).
    #[arg(long, value_name = "PREFIX")]
    pub channel_prefix: Option<String>,
    /// Channel creations in flight at once.
    #[arg(long, default_value_t = 32)]
    pub create_in_flight: usize,
    /// Create the missing channels of `--channels`, report how long it took, and
    /// send nothing else.
    #[arg(long)]
    pub create_only: bool,
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

/// What the Deliver stream observed (with `--channels N`, the streams of all
/// channels together).
#[derive(Default)]
struct DeliverResult {
    delivered: Vec<(usize, Instant)>,
    duplicates: u64,
    blocks: u64,
    /// Block number and arrival time of every block received (one channel's).
    arrivals: Vec<(u64, Instant)>,
    error: Option<String>,
    /// Envelopes delivered, per channel.
    per_channel: Vec<usize>,
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
    anyhow::ensure!(args.channels > 0, "--channels must be at least 1");
    anyhow::ensure!(
        args.create_in_flight > 0,
        "--create-in-flight must be at least 1"
    );
    anyhow::ensure!(
        args.channels == 1 || args.deliver_clients == 1,
        "--deliver-clients above 1 needs --channels 1"
    );
    let conn = args.conn.resolve()?;
    let addresses = conn.addresses()?;
    let channels = channel_names(
        &conn.channel()?,
        args.channel_prefix.as_deref(),
        args.channels,
    )?;
    let channel = channel_label(&channels);
    let signer = Arc::new(conn.signer()?);
    let rt = runtime()?;

    // With the channel of --channel alone, it is used as it is (as before --channels).
    let creation = if args.channels == 1 && args.channel_prefix.is_none() {
        None
    } else {
        let c = rt.block_on(ensure_channels(
            &conn,
            &addresses,
            &channels,
            args.create_in_flight,
            Duration::from_secs(args.timeout_s),
        ))?;
        if !args.json || args.create_only {
            eprintln!(
                "{} channels: {} created in {:.3} s ({} existed)",
                channels.len(),
                c.created,
                c.seconds,
                channels.len() - c.created
            );
        }
        Some(c)
    };
    if args.create_only {
        if args.json {
            let c = creation.unwrap_or_default();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "channels": channels.len(),
                    "channels_created": c.created,
                    "channel_create_s": round3(c.seconds),
                }))?
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

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
        let prepared = presign(&signer, &channels, tx, args.size)?;
        let cpu_before = node_cpu_seconds(&args.node_pid)?;
        let mut summary =
            rt.block_on(drive(&args, rate, &addresses, &channels, &signer, prepared))?;
        if let Some(before) = cpu_before {
            let after = node_cpu_seconds(&args.node_pid)?.unwrap_or(before);
            add_cpu(&mut summary.json, after - before);
        }
        if let Some(c) = &creation {
            summary.json["channels_created"] = json!(c.created);
            summary.json["channel_create_s"] = json!(round3(c.seconds));
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

/// Signs `n` ENDORSER_TRANSACTION envelopes on every core; envelope `i` is for
/// channel [`channel_of`]`(i)`.
fn presign(
    signer: &SigningIdentity,
    channels: &[String],
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
                                &channels[channel_of(i, channels.len())],
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
    channels: &[String],
    signer: &Arc<SigningIdentity>,
    prepared: Vec<Prepared>,
) -> anyhow::Result<Summary> {
    let n = prepared.len();
    let c = channels.len();
    let timeout = Duration::from_secs(args.timeout_s);
    let connect_timeout = timeout.min(Duration::from_secs(10));
    let deadline = Instant::now() + timeout;

    // Deliver first: on every channel learn the height, then follow from there.
    let mut deliver_clients = Vec::with_capacity(c.div_ceil(DELIVER_STREAMS_PER_CONNECTION));
    for _ in 0..c.div_ceil(DELIVER_STREAMS_PER_CONNECTION) {
        deliver_clients.push(connect(&addresses[0], connect_timeout).await?);
    }
    let opened = bounded(
        channels.iter().cloned().enumerate().collect(),
        DELIVER_SETUP_IN_FLIGHT,
        |(k, channel)| {
            let mut client = deliver_clients[k / DELIVER_STREAMS_PER_CONNECTION].clone();
            let signer = signer.clone();
            let address = addresses[0].clone();
            async move {
                open_follower(&mut client, &signer, &channel, connect_timeout)
                    .await
                    .with_context(|| format!("Deliver of {channel} to {address}"))
            }
        },
    )
    .await;
    let mut sessions = Vec::with_capacity(c);
    let mut heights = Vec::with_capacity(c);
    for o in opened {
        let (session, height) = o?;
        sessions.push(session);
        heights.push(height);
    }

    // The other Deliver streams (one channel only), like peers pulling the same
    // blocks; each stops at the last block the measuring stream needed.
    let (last_block_tx, last_block_rx) = tokio::sync::watch::channel(None::<u64>);
    let mut followers = Vec::with_capacity(args.deliver_clients - 1);
    for f in 1..args.deliver_clients {
        let addr = &addresses[f % addresses.len()];
        let mut client = connect(addr, connect_timeout).await?;
        let s = DeliverSession::open(&mut client, connect_timeout)
            .await
            .with_context(|| format!("Deliver to {addr}"))?;
        s.send(follow_envelope(signer, &channels[0], heights[0])?)
            .await?;
        followers.push(tokio::spawn(watch_blocks(
            s,
            last_block_rx.clone(),
            deadline,
        )));
    }

    // Per channel: its envelopes' tx ids → (index in the run, index in the channel).
    let mut ids: Vec<HashMap<String, (usize, usize)>> = vec![HashMap::new(); c];
    for (i, p) in prepared.iter().enumerate() {
        let k = channel_of(i, c);
        let local = ids[k].len();
        ids[k].insert(p.tx_id.clone(), (i, local));
    }
    assert_eq!(
        ids.iter().map(HashMap::len).sum::<usize>(),
        n,
        "tx ids are unique"
    );
    let (acked_tx, acked_rx) = tokio::sync::watch::channel(None::<Arc<Vec<usize>>>);
    let deliverers: Vec<_> = sessions
        .into_iter()
        .zip(ids)
        .enumerate()
        .map(|(k, (session, ids))| {
            tokio::spawn(follow(session, ids, k, acked_rx.clone(), deadline))
        })
        .collect();

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
    // Tell the deliverers how many envelopes each can still expect.
    let mut acked = vec![0usize; c];
    for &(i, _) in results.iter().flat_map(|r| r.acks.iter()) {
        acked[channel_of(i, c)] += 1;
    }
    let _ = acked_tx.send(Some(Arc::new(acked)));
    let mut delivered = DeliverResult::default();
    for (ch, h) in channels.iter().zip(deliverers) {
        let r = h.await.context("a Deliver task panicked")?;
        delivered.per_channel.push(r.delivered.len());
        delivered.delivered.extend(r.delivered);
        delivered.duplicates += r.duplicates;
        delivered.blocks += r.blocks;
        if c == 1 {
            delivered.arrivals = r.arrivals;
        }
        if delivered.error.is_none() {
            delivered.error = r
                .error
                .map(|e| if c == 1 { e } else { format!("{ch}: {e}") });
        }
    }
    let _ = last_block_tx.send(Some(
        delivered.arrivals.last().map_or(heights[0], |&(b, _)| b),
    ));
    let mut others = Vec::with_capacity(followers.len());
    for f in followers {
        others.push(f.await.context("a Deliver follower panicked")?);
    }
    let mut summary = summarize(args, rate, n, start, &results, &delivered);
    add_fanout(&mut summary, &delivered, &others);
    add_channels(&mut summary, &delivered, args);
    Ok(summary)
}

/// The Deliver request that follows `channel` from block `height` on.
fn follow_envelope(
    signer: &SigningIdentity,
    channel: &str,
    height: u64,
) -> anyhow::Result<Envelope> {
    seek_envelope(
        signer,
        channel,
        specified(height),
        specified(u64::MAX),
        false,
    )
}

/// Opens a Deliver stream on `channel`, reads its height and asks for every block
/// from there on.
async fn open_follower(
    client: &mut korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient<
        tonic::transport::Channel,
    >,
    signer: &SigningIdentity,
    channel: &str,
    timeout: Duration,
) -> anyhow::Result<(DeliverSession, u64)> {
    let mut session = DeliverSession::open(client, timeout).await?;
    let last = session
        .fetch_one(signer, channel, newest(), false)
        .await
        .with_context(|| format!("reading the height of {channel}"))?;
    let height = last.header.as_ref().map_or(0, |h| h.number) + 1;
    session
        .send(follow_envelope(signer, channel, height)?)
        .await?;
    Ok((session, height))
}

/// The channels of a run: `--channel`'s alone, or PREFIX0 … PREFIX{n-1}.
fn channel_names(base: &str, prefix: Option<&str>, n: usize) -> anyhow::Result<Vec<String>> {
    assert!(n > 0, "at least one channel");
    let names: Vec<String> = match prefix {
        None if n == 1 => vec![base.to_owned()],
        p => {
            let p = p.unwrap_or(DEFAULT_CHANNEL_PREFIX);
            (0..n).map(|i| format!("{p}{i}")).collect()
        }
    };
    for name in &names {
        korder_channelconfig::bundle::validate_channel_id(name)
            .map_err(|e| anyhow::anyhow!("bad channel id {name:?}: {e}"))?;
    }
    Ok(names)
}

/// The channel of envelope `i` among `channels`: round-robin, so every channel gets
/// the same number of envelopes, give or take one.
fn channel_of(i: usize, channels: usize) -> usize {
    i % channels
}

/// How the channels of a run are named in messages.
fn channel_label(channels: &[String]) -> String {
    match channels {
        [only] => only.clone(),
        [first, .., last] => format!("{first} … {last} ({} channels)", channels.len()),
        [] => String::new(),
    }
}

/// What creating the missing channels took.
#[derive(Debug, Default, Clone, Copy)]
struct Creation {
    created: usize,
    seconds: f64,
}

/// Creates the channels that do not exist yet, `in_flight` at a time, each through
/// the system channel, and waits until every one serves its block 0.
async fn ensure_channels(
    conn: &Conn,
    addresses: &[String],
    channels: &[String],
    in_flight: usize,
    timeout: Duration,
) -> anyhow::Result<Creation> {
    let began = Instant::now();
    let deadline = began + timeout;
    let connect_timeout = timeout.min(Duration::from_secs(10));
    let (address, mut client) = connect_any(addresses, connect_timeout).await?;
    let signer = Arc::new(conn.signer()?);
    let exist = bounded(channels.to_vec(), in_flight, |channel| {
        let mut client = client.clone();
        let signer = signer.clone();
        async move { channel_exists(&mut client, &signer, &channel, connect_timeout).await }
    })
    .await;
    let mut missing = Vec::new();
    for (channel, e) in channels.iter().zip(exist) {
        if !e? {
            missing.push(channel.clone());
        }
    }
    if missing.is_empty() {
        return Ok(Creation {
            created: 0,
            seconds: began.elapsed().as_secs_f64(),
        });
    }
    let creator = Arc::new(
        Creator::prepare(
            conn,
            &CreationChoice::default(),
            &mut client,
            &address,
            connect_timeout,
        )
        .await?,
    );
    let created = missing.len();
    let done = bounded(missing, in_flight, |channel| {
        let mut client = client.clone();
        let creator = creator.clone();
        let address = address.clone();
        async move {
            creator
                .send(&mut client, &channel, connect_timeout)
                .await
                .with_context(|| format!("sending the creation of {channel} to {address}"))?;
            wait_for_genesis(
                &mut client,
                creator.client(),
                &channel,
                deadline,
                connect_timeout,
            )
            .await?;
            Ok(())
        }
    })
    .await;
    for d in done {
        d?;
    }
    Ok(Creation {
        created,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// Runs `task` on every item with at most `limit` running at once; the results in
/// the items' order.
async fn bounded<T, R, F, Fut>(items: Vec<T>, limit: usize, task: F) -> Vec<anyhow::Result<R>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>> + Send + 'static,
    R: Send + 'static,
{
    assert!(limit > 0, "at least one task at a time");
    let permits = Arc::new(Semaphore::new(limit));
    let handles: Vec<_> = items
        .into_iter()
        .map(|item| {
            let permits = permits.clone();
            let work = task(item);
            tokio::spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|_| anyhow::anyhow!("the task limiter closed"))?;
                work.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(
            h.await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("a task failed: {e}"))),
        );
    }
    out
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

/// Follows channel `k`'s Deliver stream until every acknowledged envelope of the
/// channel has been seen, or the deadline passes. `ids` maps the channel's tx ids to
/// (index in the run, index in the channel); `acked` brings the acknowledged count
/// per channel once the senders are done.
async fn follow(
    mut session: DeliverSession,
    ids: HashMap<String, (usize, usize)>,
    k: usize,
    mut acked: tokio::sync::watch::Receiver<Option<Arc<Vec<usize>>>>,
    deadline: Instant,
) -> DeliverResult {
    let mut r = DeliverResult::default();
    let n = ids.len();
    let mut seen = vec![false; n];
    let mut distinct = 0usize;
    let mut acked_open = true;
    loop {
        if distinct == n
            || acked
                .borrow()
                .as_ref()
                .is_some_and(|a| distinct >= a.get(k).copied().unwrap_or(0))
        {
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
            let Some(&(i, local)) = ids.get(&ch.tx_id) else {
                continue;
            };
            if seen[local] {
                r.duplicates += 1;
            } else {
                seen[local] = true;
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

/// With `--channels N` (N > 1, or a `--channel-prefix`): how many channels, and the
/// fewest and most envelopes delivered on one channel.
fn add_channels(summary: &mut Summary, d: &DeliverResult, args: &BenchArgs) {
    if args.channels == 1 && args.channel_prefix.is_none() {
        return;
    }
    let j = &mut summary.json;
    j["channels"] = json!(d.per_channel.len());
    j["channel_delivered_min"] = json!(d.per_channel.iter().min().copied().unwrap_or(0));
    j["channel_delivered_max"] = json!(d.per_channel.iter().max().copied().unwrap_or(0));
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
    if !v["channels"].is_null() {
        println!(
            "{} channels, one Deliver stream each; delivered per channel: min {}  max {}",
            v["channels"], v["channel_delivered_min"], v["channel_delivered_max"]
        );
    }
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

    /// One channel without a prefix is --channel's own; otherwise PREFIX0 …
    /// PREFIX{N-1} (default prefix `bench`), and a prefix making bad channel ids is
    /// refused.
    #[test]
    fn channel_names_use_the_prefix() {
        let names = |p, n| channel_names("mychannel", p, n).unwrap_or_default();
        assert_eq!(names(None, 1), ["mychannel"]);
        assert_eq!(names(Some("load-"), 1), ["load-0"]);
        assert_eq!(names(None, 3), ["bench0", "bench1", "bench2"]);
        assert_eq!(names(Some("c"), 12).last().map(String::as_str), Some("c11"));
        assert!(channel_names("mychannel", Some("Upper"), 2).is_err());
        assert!(channel_names("mychannel", Some("bad/"), 2).is_err());
        assert_eq!(channel_label(&names(None, 1)), "mychannel");
        assert_eq!(
            channel_label(&names(None, 3)),
            "bench0 … bench2 (3 channels)"
        );
    }

    /// Envelopes go round-robin over the channels: every channel gets the same count
    /// give or take one, and each Broadcast stream (`i mod K`) reaches several
    /// channels when the counts allow.
    #[test]
    fn envelopes_spread_evenly_over_channels() {
        for (n, c) in [(1003, 10), (10, 10), (7, 10), (5000, 1000), (9, 1)] {
            let mut per = vec![0usize; c];
            for i in 0..n {
                per[channel_of(i, c)] += 1;
            }
            let (min, max) = (per.iter().min(), per.iter().max());
            assert_eq!(per.iter().sum::<usize>(), n);
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 1),
                "{n} over {c}: {per:?}"
            );
        }
        let stream0: std::collections::BTreeSet<usize> =
            (0..1000).step_by(4).map(|i| channel_of(i, 10)).collect();
        assert_eq!(stream0.into_iter().collect::<Vec<_>>(), [0, 2, 4, 6, 8]);
    }

    /// Filler data has the asked size and differs between envelopes.
    #[test]
    fn filler_has_size_and_varies() {
        assert_eq!(filler(0, 100).len(), 100);
        assert_eq!(filler(5, 0).len(), 0);
        assert_ne!(filler(1, 32), filler(2, 32));
    }
}
