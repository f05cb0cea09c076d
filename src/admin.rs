//! The admin listener: `/metrics`, `/healthz`, `/readyz`, apart from the
//! client port so that it can stay on loopback.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::{error_response, json_response};
use crate::proxy::Gateway;

/// Serves the admin endpoints until the task is aborted.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let gateway = Arc::clone(&gateway);
        let service = service_fn(move |request| {
            let gateway = Arc::clone(&gateway);
            async move { Ok::<_, Infallible>(answer(&gateway, &request)) }
        });
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

fn answer<B>(gateway: &Gateway, request: &Request<B>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(gateway.metrics.render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        "/healthz" => json_response(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        "/readyz" => readiness(gateway),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "Unknown admin path: use /metrics, /healthz or /readyz",
        ),
    }
}

/// Ready unless shutting down; degraded (503) while the upstream blocks an egress.
fn readiness(gateway: &Gateway) -> Response<Full<Bytes>> {
    if gateway.is_shutting_down() {
        let body = r#"{"status":"shutting_down"}"#.into();
        return json_response(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    let now = tokio::time::Instant::now();
    let blocked: Vec<_> = gateway
        .upstream
        .egresses()
        .iter()
        .filter_map(|egress| {
            let until = egress.pacer.blocked_until()?;
            let seconds = until.saturating_duration_since(now).as_secs();
            Some(serde_json::json!({"egress": egress.name, "blocked_for_seconds": seconds}))
        })
        .collect();
    if blocked.is_empty() {
        return json_response(StatusCode::OK, r#"{"status":"ready"}"#.into());
    }
    let body = serde_json::json!({
        "status": "degraded",
        "reason": "the upstream is blocking an egress",
        "blocked": blocked,
    });
    json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
}
