//! The simulator's own endpoints under `/__sim/`: stats, the request log, faults, settings,
//! reset, and calls that make things happen now (SMS, payment, settlement, blocks).
//!
//! Control calls are never counted by the limiter, never blocked, never faulted and never
//! recorded in the request log; they answer JSON.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::Duration;

use crate::error::ApiResult;
use crate::faults::Fault;
use crate::respond::{self, SimResponse, json_response};
use crate::state::{RuntimeSettings, Shared, lock};

#[derive(Debug, Deserialize)]
struct SmsBody {
    code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SettleBody {
    status: String,
}

#[derive(Debug, Deserialize)]
struct BlockBody {
    ip: IpAddr,
    seconds: f64,
}

/// `POST /__sim/settings`: absent fields keep their value; `idle_close_ms: null` turns idle
/// closing off.
#[derive(Debug, Deserialize)]
struct SettingsBody {
    #[serde(default, deserialize_with = "present")]
    idle_close_ms: Option<Option<u64>>,
    gzip: Option<bool>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// Serves one control call.
pub(crate) async fn serve_control(
    shared: &Shared,
    request: Request<Incoming>,
    segments: Vec<String>,
) -> SimResponse {
    let method = request.method().clone();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    tracing::debug!(%method, path = ?segments, "control call");
    route(shared, &method, &segments, &body)
}

fn route(shared: &Shared, method: &Method, segments: &[&str], body: &Bytes) -> SimResponse {
    match (method.as_str(), segments) {
        ("GET", ["stats"]) => json_response(StatusCode::OK, &shared.stats()),
        ("GET", ["requests"]) => {
            json_response(StatusCode::OK, &json!({ "requests": shared.requests() }))
        }
        ("POST", ["reset"]) => {
            shared.reset();
            ok(json!({ "reset": true }))
        }
        ("GET", ["faults"]) => ok(json!(lock(&shared.faults).list())),
        ("POST", ["faults"]) => with_body(body, |fault: Fault| {
            lock(&shared.faults).add(fault);
            ok(json!(lock(&shared.faults).list()))
        }),
        ("DELETE", ["faults"]) => {
            lock(&shared.faults).clear();
            ok(json!([]))
        }
        ("GET", ["settings"]) => ok(settings_view(*shared.settings.borrow())),
        ("POST", ["settings"]) => with_body(body, |s: SettingsBody| update_settings(shared, s)),
        ("GET", ["accounts"]) => {
            let (world, _) = shared.world_now();
            json_response(StatusCode::OK, &world.accounts_view())
        }
        ("POST", ["block"]) => with_body(body, |b: BlockBody| block(shared, b)),
        ("DELETE", ["block"]) => {
            lock(&shared.gate).protection.unblock_all();
            ok(json!({ "blocks": 0 }))
        }
        ("POST", ["orders", id, "sms"]) => {
            let code = parse_optional::<SmsBody>(body).and_then(|b| b.code);
            world_call(shared, |world, now| world.deliver_sms(id, code, now))
        }
        ("POST", ["deposits", id, "pay"]) => world_call(shared, |world, _| world.pay_deposit(id)),
        ("POST", ["transactions", id, "settle"]) => with_body(body, |b: SettleBody| {
            let success = match b.status.as_str() {
                "success" => true,
                "failed" => false,
                _ => return bad_request("status must be success or failed"),
            };
            world_call(shared, |world, now| {
                world.settle_transaction(id, success, now)
            })
        }),
        _ => respond::error_envelope(StatusCode::NOT_FOUND, "Unknown simulator control call"),
    }
}

fn world_call(
    shared: &Shared,
    call: impl FnOnce(&mut crate::world::World, tokio::time::Instant) -> ApiResult,
) -> SimResponse {
    let (mut world, now) = shared.world_now();
    respond::api_result(call(&mut world, now))
}

fn update_settings(shared: &Shared, body: SettingsBody) -> SimResponse {
    shared.settings.send_modify(|settings| {
        if let Some(idle) = body.idle_close_ms {
            settings.idle_close = idle.map(Duration::from_millis);
        }
        if let Some(gzip) = body.gzip {
            settings.gzip = gzip;
        }
    });
    ok(settings_view(*shared.settings.borrow()))
}

fn settings_view(settings: RuntimeSettings) -> Value {
    json!({
        "idle_close_ms": settings.idle_close.map(|d| d.as_millis() as u64),
        "gzip": settings.gzip,
    })
}

fn block(shared: &Shared, body: BlockBody) -> SimResponse {
    if !body.seconds.is_finite() || body.seconds < 0.0 {
        return bad_request("seconds must be a non-negative number");
    }
    shared.block(body.ip, Duration::from_secs_f64(body.seconds));
    ok(json!({ "ip": body.ip, "seconds": body.seconds }))
}

fn with_body<T: DeserializeOwned>(
    body: &Bytes,
    then: impl FnOnce(T) -> SimResponse,
) -> SimResponse {
    match serde_json::from_slice(body) {
        Ok(parsed) => then(parsed),
        Err(err) => bad_request(&format!("invalid JSON body: {err}")),
    }
}

fn parse_optional<T: DeserializeOwned>(body: &Bytes) -> Option<T> {
    serde_json::from_slice(body).ok()
}

fn ok(data: Value) -> SimResponse {
    json_response(StatusCode::OK, &json!({ "success": true, "data": data }))
}

fn bad_request(message: &str) -> SimResponse {
    respond::error_envelope(StatusCode::BAD_REQUEST, message)
}
