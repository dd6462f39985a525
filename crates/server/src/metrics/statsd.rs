//! StatsD as Fabric sends it (go-kit's statsd writer behind Fabric's namer).
//!
//! Recordings collect in a buffer; every `Metrics.Statsd.WriteInterval` the buffer is
//! drained into lines and sent:
//!
//! | kind | line | what is sent |
//! | --- | --- | --- |
//! | counter | `name:1.000000\|c` | the increase since the last flush, when there was one |
//! | gauge | `name:3.000000\|g` | the value last set |
//! | histogram | `name:0.001200\|ms` | every observation since the last flush, in seconds, as Fabric sends it |
//!
//! Values are printed with six decimals as Go's `%f` prints them. One difference from
//! go-kit: a gauge is sent at every flush, not only in the interval it was set in,
//! so a StatsD server that starts late still learns the channel heights.
//!
//! The sender is a small loop over std UDP/TCP sockets rather than a StatsD crate:
//! Fabric's semantics (counters summed over the interval, every observation of an
//! interval flushed at once, its exact line format, TCP as well as UDP) are not what
//! the crates' immediate-send clients do, and the loop is short. Over UDP the lines
//! are packed into datagrams of at most [`MAX_DATAGRAM_BYTES`], one line never split.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use korder_types::sync::MutexExt;
use tokio::io::AsyncWriteExt;

/// Largest UDP datagram sent: fits an Ethernet MTU with IP and UDP headers.
pub const MAX_DATAGRAM_BYTES: usize = 1432;

/// Most histogram observations kept between two flushes; later ones are dropped
/// (and counted in a warning) until the next flush.
pub const MAX_TIMINGS_PER_INTERVAL: usize = 100_000;

/// How long a TCP connection to the StatsD server may take.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Pending {
    counters: BTreeMap<String, f64>,
    gauges: BTreeMap<String, f64>,
    timings: Vec<(String, f64)>,
    dropped_timings: u64,
}

/// The recordings not yet sent.
#[derive(Debug)]
pub struct Statsd {
    prefix: String,
    pending: Mutex<Pending>,
}

impl Statsd {
    /// An empty buffer whose names start with `prefix` (with a `.` added when it is
    /// not empty and lacks one, as Fabric does).
    pub fn new(prefix: &str) -> Statsd {
        let mut prefix = prefix.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('.') {
            prefix.push('.');
        }
        Statsd {
            prefix,
            pending: Mutex::default(),
        }
    }

    fn full(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(crate) fn count(&self, name: &str, delta: f64) {
        let name = self.full(name);
        *self
            .pending
            .lock_unpoisoned()
            .counters
            .entry(name)
            .or_insert(0.0) += delta;
    }

    pub(crate) fn gauge(&self, name: &str, value: f64) {
        let name = self.full(name);
        self.pending.lock_unpoisoned().gauges.insert(name, value);
    }

    pub(crate) fn timing(&self, name: &str, seconds: f64) {
        let name = self.full(name);
        let mut p = self.pending.lock_unpoisoned();
        if p.timings.len() < MAX_TIMINGS_PER_INTERVAL {
            p.timings.push((name, seconds));
        } else {
            p.dropped_timings += 1;
        }
    }

    /// The lines due now: counters and timings since the last call, every gauge.
    pub fn take_lines(&self) -> Vec<String> {
        let (counters, timings, dropped, gauges) = {
            let mut p = self.pending.lock_unpoisoned();
            (
                std::mem::take(&mut p.counters),
                std::mem::take(&mut p.timings),
                std::mem::take(&mut p.dropped_timings),
                p.gauges.clone(),
            )
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                limit = MAX_TIMINGS_PER_INTERVAL,
                "StatsD: more histogram observations than kept per write interval; the rest were dropped"
            );
        }
        let mut lines = Vec::with_capacity(counters.len() + gauges.len() + timings.len());
        lines.extend(counters.iter().map(|(n, v)| format!("{n}:{v:.6}|c")));
        lines.extend(gauges.iter().map(|(n, v)| format!("{n}:{v:.6}|g")));
        lines.extend(timings.iter().map(|(n, v)| format!("{n}:{v:.6}|ms")));
        lines
    }
}

/// The network a StatsD server listens on (`Metrics.Statsd.Network`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// Datagrams.
    Udp,
    /// A stream, reconnected when it breaks.
    Tcp,
}

/// Sends a [`Statsd`] buffer to a server every write interval.
#[derive(Debug)]
pub struct StatsdSender {
    network: Network,
    address: SocketAddr,
    interval: Duration,
    udp: Option<tokio::net::UdpSocket>,
    tcp: Option<tokio::net::TcpStream>,
}

impl StatsdSender {
    /// Resolves `address` and, for TCP, connects once, as Fabric checks the server
    /// at start-up: an address that does not resolve, or a TCP server that does not
    /// answer, is an error here rather than silent loss later.
    pub async fn connect(
        network: Network,
        address: &str,
        interval: Duration,
    ) -> std::io::Result<StatsdSender> {
        assert!(!interval.is_zero(), "the write interval is checked at load");
        let resolved = tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{address} resolves to no address"),
                )
            })?;
        let mut sender = StatsdSender {
            network,
            address: resolved,
            interval,
            udp: None,
            tcp: None,
        };
        sender.ensure_socket().await?;
        Ok(sender)
    }

    /// The server's address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    async fn ensure_socket(&mut self) -> std::io::Result<()> {
        match self.network {
            Network::Udp if self.udp.is_none() => {
                let local: SocketAddr = if self.address.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = tokio::net::UdpSocket::bind(local).await?;
                socket.connect(self.address).await?;
                self.udp = Some(socket);
            }
            Network::Tcp if self.tcp.is_none() => {
                let stream = tokio::time::timeout(
                    TCP_CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect(self.address),
                )
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out")
                })??;
                stream.set_nodelay(true)?;
                self.tcp = Some(stream);
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends `lines`; on a TCP error the connection is dropped and made again at
    /// the next flush (the lines of this flush are lost, as with go-kit).
    pub async fn send(&mut self, lines: &[String]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.ensure_socket().await?;
        let result = match self.network {
            Network::Udp => {
                let mut sent = Ok(());
                for datagram in pack(lines, MAX_DATAGRAM_BYTES) {
                    if let Some(socket) = &self.udp
                        && let Err(e) = socket.send(datagram.as_bytes()).await
                    {
                        // A refused datagram (no listener yet) is not a reason to
                        // stop sending the others.
                        sent = Err(e);
                    }
                }
                sent
            }
            Network::Tcp => {
                let mut text = lines.join("\n");
                text.push('\n');
                match &mut self.tcp {
                    Some(stream) => stream.write_all(text.as_bytes()).await,
                    None => Ok(()),
                }
            }
        };
        if result.is_err() {
            self.tcp = None;
        }
        result
    }

    /// Flushes `statsd` every interval until `stop` resolves, then once more.
    pub async fn run(mut self, statsd: std::sync::Arc<Statsd>, stop: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        tokio::pin!(stop);
        let mut failing = false;
        loop {
            let last = tokio::select! {
                _ = ticker.tick() => false,
                () = &mut stop => true,
            };
            match self.send(&statsd.take_lines()).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(address = %self.address, "StatsD: sending again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(address = %self.address, error = %e, "StatsD: cannot send metrics");
                }
                Err(_) => {}
            }
            if last {
                return;
            }
        }
    }
}

/// `lines` joined with newlines into chunks of at most `max` bytes; a longer line
/// goes alone.
fn pack(lines: &[String], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in lines {
        if !cur.is_empty() && cur.len() + 1 + line.len() > max {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push('\n');
        }
        cur.push_str(line);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters are summed over the interval and sent once; gauges are sent at
    /// every flush; timings are sent one line per observation.
    #[test]
    fn lines_follow_go_kit() {
        let s = Statsd::new("p");
        s.count("a.b", 1.0);
        s.count("a.b", 2.0);
        s.gauge("g", 7.0);
        s.timing("t", 0.25);
        s.timing("t", 0.5);
        assert_eq!(
            s.take_lines(),
            [
                "p.a.b:3.000000|c",
                "p.g:7.000000|g",
                "p.t:0.250000|ms",
                "p.t:0.500000|ms"
            ]
        );
        assert_eq!(s.take_lines(), ["p.g:7.000000|g"]);
    }

    /// A prefix that ends with a dot keeps it; no prefix adds none.
    #[test]
    fn prefix_gets_one_dot() {
        let s = Statsd::new("orderer.");
        s.count("x", 1.0);
        assert_eq!(s.take_lines(), ["orderer.x:1.000000|c"]);
        let s = Statsd::new("");
        s.count("x", 1.0);
        assert_eq!(s.take_lines(), ["x:1.000000|c"]);
    }

    /// Datagrams never exceed the limit unless a single line does, and no line is
    /// split or lost.
    #[test]
    fn packing_keeps_lines_whole() {
        let lines: Vec<String> = (0..100).map(|i| format!("metric.{i}:1.000000|c")).collect();
        let packed = pack(&lines, 100);
        assert!(packed.len() > 1);
        assert!(packed.iter().all(|d| d.len() <= 100));
        let back: Vec<String> = packed
            .iter()
            .flat_map(|d| d.split('\n').map(str::to_owned))
            .collect();
        assert_eq!(back, lines);
        assert_eq!(pack(&["x".repeat(200)], 100), ["x".repeat(200)]);
    }

    /// Past the per-interval limit observations are dropped, not buffered.
    #[test]
    fn timings_are_bounded() {
        let s = Statsd::new("");
        for _ in 0..MAX_TIMINGS_PER_INTERVAL + 5 {
            s.timing("t", 1.0);
        }
        assert_eq!(s.take_lines().len(), MAX_TIMINGS_PER_INTERVAL);
        assert!(s.take_lines().is_empty());
    }

    /// A sender delivers the lines to a UDP server.
    #[tokio::test]
    async fn udp_sender_delivers() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let mut sender = StatsdSender::connect(Network::Udp, &addr, Duration::from_secs(1))
            .await
            .unwrap();
        sender
            .send(&["a:1.000000|c".to_string(), "b:2.000000|g".to_string()])
            .await
            .unwrap();
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"a:1.000000|c\nb:2.000000|g");
    }

    /// A sender delivers newline-terminated lines to a TCP server.
    #[tokio::test]
    async fn tcp_sender_delivers() {
        use tokio::io::AsyncReadExt;
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let mut sender = StatsdSender::connect(Network::Tcp, &addr, Duration::from_secs(1))
            .await
            .unwrap();
        let (mut conn, _) = server.accept().await.unwrap();
        sender.send(&["a:1.000000|c".to_string()]).await.unwrap();
        drop(sender);
        let mut got = String::new();
        conn.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "a:1.000000|c\n");
    }

    /// A TCP server that does not answer fails the start-up check.
    #[tokio::test]
    async fn tcp_without_server_fails() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(
            StatsdSender::connect(Network::Tcp, &addr, Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
