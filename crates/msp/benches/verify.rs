//! ECDSA P-256 signature verification rate, the cost Broadcast pays per envelope
//! for its signature filter: `cargo bench -p korder-msp --bench verify`.
//! `KORDER_BENCH_SECS` sets the duration of each case (default 3).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use korder_msp::devpki::{DevPki, NodeRole};
use korder_msp::signer::SigningIdentity;

fn main() {
    let secs: u64 = std::env::var("KORDER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let pki = DevPki::generate("Org1MSP", "org1.example.com").unwrap();
    let issued = pki.issue("bench", NodeRole::Client).unwrap();
    let signer = SigningIdentity::from_pem(
        "Org1MSP",
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap();
    let message = vec![7u8; 3000];
    let signature = signer.sign(&message).unwrap();
    let identity = signer.identity().clone();

    let run = |threads: usize| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let counts: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (identity, message, signature) = (&identity, &message, &signature);
                    s.spawn(move || {
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            for _ in 0..64 {
                                identity.verify(message, signature).unwrap();
                            }
                            n += 64;
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: u64 = counts.iter().sum();
        total as f64 / started.elapsed().as_secs_f64()
    };
    let sign_rate = {
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(secs) {
            signer.sign(&message).unwrap();
            n += 1;
        }
        n as f64 / started.elapsed().as_secs_f64()
    };
    println!(
        "ecdsa-p256 verify (3 KB message), 1 thread:  {:>9.0} verifies/s",
        run(1)
    );
    println!(
        "ecdsa-p256 verify (3 KB message), 2 threads: {:>9.0} verifies/s",
        run(2)
    );
    println!(
        "ecdsa-p256 sign   (3 KB message), 1 thread:  {:>9.0} signs/s",
        sign_rate
    );
}
