//! The operations endpoint (`Operations.ListenAddress`): `/healthz`, `/metrics`,
//! `/version` and `/logspec`, in Fabric's shapes.
//!
//! `/logspec` answers GET with `{"spec":"..."}` (200) and takes PUT
//! `{"spec":"..."}` (204, or 400 `{"error":"..."}` when the body or the spec is
//! bad); any other method is 400 `{"error":"invalid request method: M"}`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The process's logging level, as `/logspec` reads and changes it.
pub trait LogSpecControl: Send + Sync {
    /// The active spec.
    fn spec(&self) -> String;
    /// Activates `spec`; the error text is returned to the caller.
    fn set_spec(&self, spec: &str) -> Result<(), String>;
}

static LOG_SPEC: OnceLock<Arc<dyn LogSpecControl>> = OnceLock::new();

/// Installs the logging control `/logspec` serves (once per process; later calls
/// are ignored). Without one, `/logspec` is not served.
pub fn install_log_spec(control: Arc<dyn LogSpecControl>) {
    let _ = LOG_SPEC.set(control);
}

use crate::metrics::Metrics;
use crate::registrar::Registrar;

struct Ops {
    registrar: Registrar,
    metrics: Arc<Metrics>,
}

/// The operations router.
pub fn router(registrar: Registrar, metrics: Arc<Metrics>) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/version", get(version));
    // As in Fabric, `/metrics` exists only with the Prometheus provider.
    let router = if metrics.is_prometheus() {
        router.route("/metrics", get(metrics_text))
    } else {
        router
    };
    let router = match LOG_SPEC.get() {
        Some(control) => router.merge(logspec_router(control.clone())),
        None => router,
    };
    router.with_state(Arc::new(Ops { registrar, metrics }))
}

/// `/logspec` over `control`, in Fabric's shapes and status codes.
pub fn logspec_router<S: Clone + Send + Sync + 'static>(
    control: Arc<dyn LogSpecControl>,
) -> Router<S> {
    Router::new().route(
        "/logspec",
        axum::routing::any(move |method: Method, body: Bytes| {
            let control = control.clone();
            async move { logspec(control.as_ref(), &method, &body) }
        }),
    )
}

fn json_answer(code: StatusCode, body: serde_json::Value) -> Response {
    (code, axum::Json(body)).into_response()
}

fn logspec(control: &dyn LogSpecControl, method: &Method, body: &[u8]) -> Response {
    let error = |e: String| json_answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e }));
    match *method {
        Method::GET => json_answer(
            StatusCode::OK,
            serde_json::json!({ "spec": control.spec() }),
        ),
        Method::PUT => {
            let spec = match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(m)) => match m.get("spec") {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => {
                        return error(format!(
                            "json: cannot unmarshal {} into Go struct field LogSpec.spec of type string",
                            json_kind(other)
                        ));
                    }
                },
                Ok(other) => {
                    return error(format!(
                        "json: cannot unmarshal {} into Go value of type httpadmin.LogSpec",
                        json_kind(&other)
                    ));
                }
                Err(e) => return error(e.to_string()),
            };
            match control.set_spec(&spec) {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => error(e),
            }
        }
        ref other => error(format!("invalid request method: {other}")),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
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
    use super::*;

    struct Fake(std::sync::Mutex<String>);

    impl LogSpecControl for Fake {
        fn spec(&self) -> String {
            self.0.lock().map(|s| s.clone()).unwrap_or_default()
        }
        fn set_spec(&self, spec: &str) -> Result<(), String> {
            if spec.contains("bad") {
                return Err(format!("invalid logging specification '{spec}'"));
            }
            if let Ok(mut s) = self.0.lock() {
                *s = spec.to_string();
            }
            Ok(())
        }
    }

    async fn body_json(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
    }

    /// /logspec answers as Fabric's: GET 200 with the spec, PUT 204, a bad spec or
    /// body 400 with an error, another method 400 naming it.
    #[tokio::test]
    async fn logspec_shapes_and_codes() {
        let fake = Fake(std::sync::Mutex::new("info".into()));
        let r = logspec(&fake, &Method::GET, b"");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body_json(r).await, serde_json::json!({"spec": "info"}));
        let r = logspec(&fake, &Method::PUT, br#"{"spec":"debug"}"#);
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(fake.spec(), "debug");
        let r = logspec(&fake, &Method::PUT, br#"{"spec":"bad"}"#);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body_json(r).await,
            serde_json::json!({"error": "invalid logging specification 'bad'"})
        );
        assert_eq!(fake.spec(), "debug");
        let r = logspec(&fake, &Method::PUT, b"{not json");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body_json(r).await["error"].is_string());
        let r = logspec(&fake, &Method::POST, b"");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body_json(r).await,
            serde_json::json!({"error": "invalid request method: POST"})
        );
    }

    /// The RFC 3339 timestamp is well-formed.
    #[test]
    fn timestamp_shape() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
