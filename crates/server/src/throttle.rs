//! Broadcast rate limiting (`General.Throttling`, as Fabric 3.x does it).
//!
//! A [`RateLimiter`] shares `Rate` messages per second among the clients it has seen
//! recently: each gets `Rate / clients` (integer division) per second. Once a client
//! has used its share, its next message waits for the next one-second tick, which
//! hands every client one new allowance (at most one is kept) and forgets the clients
//! not seen for `InactivityTimeout` (a client is "seen" when it is first counted and
//! each time it waited for an allowance).
//!
//! [`Throttle`] applies two such limiters to every message received on a Broadcast
//! stream whose TLS client presented a certificate: one keyed by the certificate's
//! Subject Key Identifier (the client), one by its Authority Key Identifier (the
//! issuing CA, i.e. the organisation). Streams without a client certificate are not
//! throttled.
//!
//! Time is tokio's, so tests run it on a paused clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use korder_types::sync::{MutexExt, RwLockExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How often allowances are handed out and idle clients forgotten.
pub const TICK: Duration = Duration::from_secs(1);

/// `InactivityTimeout` when the setting is zero, as in Fabric.
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(5);

/// Shares a rate among clients; see the module documentation.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Messages per second for all clients together (not 0).
    rate_per_s: u64,
    inactivity_timeout: Duration,
    clients: RwLock<HashMap<String, Arc<Client>>>,
}

#[derive(Debug)]
struct Client {
    /// Messages counted since the client last waited for an allowance.
    used: AtomicU64,
    /// The allowance handed out on each tick: zero or one permit.
    allowance: Semaphore,
    /// Held while one of the client's messages waits for an allowance, so that the
    /// client's other streams wait behind it.
    waiting: tokio::sync::Mutex<()>,
    last_seen: Mutex<Instant>,
}

impl RateLimiter {
    /// A limiter of `rate_per_s` (not 0) messages per second; starts the tick task on
    /// the current tokio runtime, which ends when the last clone is dropped.
    pub fn new(rate_per_s: u64, inactivity_timeout: Duration) -> Self {
        assert!(rate_per_s > 0, "a rate limiter needs a rate");
        let inactivity_timeout = if inactivity_timeout.is_zero() {
            DEFAULT_INACTIVITY_TIMEOUT
        } else {
            inactivity_timeout
        };
        let inner = Arc::new(Inner {
            rate_per_s,
            inactivity_timeout,
            clients: RwLock::new(HashMap::new()),
        });
        tokio::spawn(tick(Arc::downgrade(&inner)));
        RateLimiter { inner }
    }

    /// Counts one message of `client`, waiting for the client's next allowance when
    /// it has used its share of the rate.
    pub async fn limit(&self, client: &str) {
        let state = self.inner.client(client);
        let clients = self.inner.clients.read_unpoisoned().len().max(1) as u64;
        let share = self.inner.rate_per_s / clients;
        // The count before this message is below the share: it fits.
        if state.used.fetch_add(1, Ordering::AcqRel) < share {
            return;
        }
        let _waiting = state.waiting.lock().await;
        if state.used.load(Ordering::Acquire) <= share {
            // Another stream of the client waited meanwhile and reset the count.
            return;
        }
        if let Ok(permit) = state.allowance.acquire().await {
            permit.forget();
        }
        *state.last_seen.lock_unpoisoned() = Instant::now();
        state.used.store(0, Ordering::Release);
    }

    /// How many clients currently share the rate.
    pub fn clients(&self) -> usize {
        self.inner.clients.read_unpoisoned().len()
    }
}

impl Inner {
    fn client(&self, id: &str) -> Arc<Client> {
        if let Some(c) = self.clients.read_unpoisoned().get(id) {
            return c.clone();
        }
        self.clients
            .write_unpoisoned()
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Client {
                    used: AtomicU64::new(0),
                    allowance: Semaphore::new(0),
                    waiting: tokio::sync::Mutex::new(()),
                    last_seen: Mutex::new(Instant::now()),
                })
            })
            .clone()
    }

    /// One tick: an allowance for every client that has none, then the idle
    /// clients forgotten.
    fn distribute(&self) {
        let now = Instant::now();
        let idle: Vec<String> = {
            let clients = self.clients.read_unpoisoned();
            for c in clients.values() {
                if c.allowance.available_permits() == 0 {
                    c.allowance.add_permits(1);
                }
            }
            clients
                .iter()
                .filter(|(_, c)| {
                    now.saturating_duration_since(*c.last_seen.lock_unpoisoned())
                        > self.inactivity_timeout
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        if !idle.is_empty() {
            let mut clients = self.clients.write_unpoisoned();
            for id in idle {
                clients.remove(&id);
            }
        }
    }
}

async fn tick(inner: Weak<Inner>) {
    let mut interval = tokio::time::interval_at(Instant::now() + TICK, TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match inner.upgrade() {
            Some(inner) => inner.distribute(),
            None => return,
        }
    }
}

/// The per-client and per-organisation limiters of Broadcast.
#[derive(Clone, Debug)]
pub struct Throttle {
    clients: RateLimiter,
    orgs: RateLimiter,
}

/// Whom a Broadcast stream's messages count against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleKey {
    /// Hex of the client certificate's Subject Key Identifier.
    pub client: String,
    /// Hex of its Authority Key Identifier.
    pub org: String,
}

impl ThrottleKey {
    /// The key of a client presenting the certificate `der`; `None` when it does
    /// not parse (such a client was refused by the TLS handshake already).
    pub fn of_certificate(der: &[u8]) -> Option<ThrottleKey> {
        let cert = korder_msp::Certificate::from_der(der).ok()?;
        Some(ThrottleKey {
            client: hex(cert.subject_key_id().unwrap_or_default()),
            org: hex(cert.authority_key_id().unwrap_or_default()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Throttle {
    /// Limiters of `rate_per_s` messages per second each; `None` when the rate is 0
    /// (throttling off).
    pub fn new(rate_per_s: u64, inactivity_timeout: Duration) -> Option<Throttle> {
        (rate_per_s > 0).then(|| Throttle {
            clients: RateLimiter::new(rate_per_s, inactivity_timeout),
            orgs: RateLimiter::new(rate_per_s, inactivity_timeout),
        })
    }

    /// Counts one received message of `key`'s client and organisation, waiting
    /// while either has used its share.
    pub async fn received(&self, key: &ThrottleKey) {
        self.clients.limit(&key.client).await;
        self.orgs.limit(&key.org).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls `limit` `n` times for `client`; the (paused, virtual) time it took.
    async fn send(limiter: &RateLimiter, client: &str, n: usize) -> Duration {
        let began = Instant::now();
        for _ in 0..n {
            limiter.limit(client).await;
        }
        began.elapsed()
    }

    /// A lone client sends its whole rate at once; the message after it waits for the next tick.
    #[tokio::test(start_paused = true)]
    async fn a_lone_client_gets_the_whole_rate() {
        let limiter = RateLimiter::new(10, Duration::from_secs(60));
        assert_eq!(send(&limiter, "a", 10).await, Duration::ZERO);
        assert_eq!(send(&limiter, "a", 1).await, TICK);
        // The waited message reset the count: ten more pass at once.
        assert_eq!(send(&limiter, "a", 10).await, Duration::ZERO);
        assert_eq!(send(&limiter, "a", 1).await, TICK);
    }

    /// Two known clients share the rate equally.
    #[tokio::test(start_paused = true)]
    async fn the_rate_is_shared_among_clients() {
        let limiter = RateLimiter::new(10, Duration::from_secs(60));
        limiter.limit("b").await;
        assert_eq!(limiter.clients(), 1);
        assert_eq!(send(&limiter, "a", 5).await, Duration::ZERO);
        assert_eq!(limiter.clients(), 2);
        assert_eq!(send(&limiter, "a", 1).await, TICK);
    }

    /// An allowance not used is kept, but only one: a client that waited once idle
    /// passes its next wait at once, then waits for the tick again.
    #[tokio::test(start_paused = true)]
    async fn one_allowance_is_kept() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        assert_eq!(send(&limiter, "a", 2).await, Duration::ZERO);
        tokio::time::sleep(TICK * 3 + TICK / 2).await;
        assert_eq!(send(&limiter, "a", 1).await, Duration::ZERO);
        assert_eq!(send(&limiter, "a", 2).await, Duration::ZERO);
        assert_eq!(send(&limiter, "a", 1).await, TICK / 2);
    }

    /// A client not seen for the inactivity timeout stops counting; one seen recently still counts.
    #[tokio::test(start_paused = true)]
    async fn idle_clients_are_forgotten() {
        let limiter = RateLimiter::new(10, Duration::from_secs(5));
        limiter.limit("b").await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(limiter.clients(), 1, "b was seen 4s ago");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(limiter.clients(), 0, "b was seen 7s ago");
        assert_eq!(send(&limiter, "a", 10).await, Duration::ZERO);

        let patient = RateLimiter::new(10, Duration::from_secs(60));
        patient.limit("b").await;
        // Between two ticks, so that none hands "a" an allowance as it arrives.
        tokio::time::sleep(Duration::from_millis(7500)).await;
        assert_eq!(send(&patient, "a", 5).await, Duration::ZERO);
        assert_eq!(send(&patient, "a", 1).await, TICK / 2, "b still counts");
    }

    /// A zero inactivity timeout means Fabric's 5s.
    #[tokio::test(start_paused = true)]
    async fn zero_inactivity_timeout_is_five_seconds() {
        let limiter = RateLimiter::new(10, Duration::ZERO);
        assert_eq!(limiter.inner.inactivity_timeout, DEFAULT_INACTIVITY_TIMEOUT);
    }

    /// Both limiters apply: a second client of the same organisation halves the organisation's share.
    #[tokio::test(start_paused = true)]
    async fn organisation_share_applies_too() {
        let throttle = Throttle::new(4, Duration::from_secs(60)).unwrap();
        let a = ThrottleKey {
            client: "a".into(),
            org: "org1".into(),
        };
        let other_org = ThrottleKey {
            client: "c".into(),
            org: "org2".into(),
        };
        throttle.received(&other_org).await;
        let began = Instant::now();
        for _ in 0..2 {
            throttle.received(&a).await;
        }
        assert_eq!(
            began.elapsed(),
            Duration::ZERO,
            "2 of 4/2 per client and org"
        );
        throttle.received(&a).await;
        assert_eq!(began.elapsed(), TICK);
    }

    /// Rate 0 turns throttling off.
    #[tokio::test]
    async fn rate_zero_is_off() {
        assert!(Throttle::new(0, Duration::from_secs(5)).is_none());
    }

    /// The key is the hex of the certificate's key identifiers.
    #[test]
    fn key_of_a_certificate() {
        let pki = korder_msp::devpki::DevPki::generate("Org1MSP", "org1.test").unwrap();
        let issued = pki.issue_tls("client", &["localhost".to_string()]).unwrap();
        let cert = korder_msp::Certificate::from_pem(issued.cert_pem.as_bytes()).unwrap();
        let key = ThrottleKey::of_certificate(cert.der()).unwrap();
        assert_eq!(key.client, hex(cert.subject_key_id().unwrap()));
        assert_eq!(key.org, hex(cert.authority_key_id().unwrap()));
        assert!(!key.client.is_empty() && !key.org.is_empty());
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
        assert!(ThrottleKey::of_certificate(b"not a certificate").is_none());
    }
}
