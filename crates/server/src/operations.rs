//! The operations endpoint (`Operations.ListenAddress`): `/healthz`, `/metrics`,
//! `/version`, in Fabric's shapes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::registrar::Registrar;

struct Ops {
    registrar: Registrar,
    metrics: Arc<Metrics>,
}

/// The operations router.
pub fn router(registrar: Registrar, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/version", get(version))
        .with_state(Arc::new(Ops { registrar, metrics }))
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Civil date from days since the epoch (proleptic Gregorian calendar).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

async fn healthz(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    let mut failed = Vec::new();
    for id in ops.registrar.channel_ids() {
        if let Some(c) = ops.registrar.channel(&id) {
            let s = c.chain.status().borrow().clone();
            if s.errored {
                let reason = s.error.clone().unwrap_or_else(|| {
                    if s.started {
                        "errored".into()
                    } else {
                        "starting".into()
                    }
                });
                failed
                    .push(serde_json::json!({ "component": format!("{id}/0"), "reason": reason }));
            }
        }
    }
    let time = now_rfc3339();
    if failed.is_empty() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "OK", "time": time })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "Service Unavailable",
                "time": time,
                "failed_checks": failed,
            })),
        )
    }
}

async fn metrics_text(State(ops): State<Arc<Ops>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
}

async fn version() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "CommitSHA": option_env!("KORDER_COMMIT").unwrap_or("development build"),
    }))
}

/// Serves the operations endpoint on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registrar: Registrar,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registrar, metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the operations listener.
pub async fn bind(address: &str) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(address).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

#[cfg(test)]
mod tests {
    /// The RFC 3339 timestamp is well-formed.
    #[test]
    fn timestamp_shape() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
