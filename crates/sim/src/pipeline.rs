//! The path of one emulated API call: record it, let the Cloudflare-like limiter count it,
//! carry out any injected fault, apply it to the world, then answer (gzipped if asked).
//!
//! The order matters and mirrors the real thing: Cloudflare counts and blocks before the
//! origin sees anything, and faults sit between Cloudflare and the origin.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::sleep;

use crate::api::{self, ApiCall};
use crate::audit::RecordedRequest;
use crate::faults::{FaultOutcome, FaultPlan};
use crate::protection::Verdict;
use crate::query::Params;
use crate::respond::{self, SimResponse};
use crate::state::{Shared, lock};

/// Returned instead of a response when a fault drops the connection: hyper closes the
/// connection without writing anything when a service fails.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
pub(crate) struct DropConnection;

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) conn_id: u64,
}

/// Serves one emulated API call.
pub(crate) async fn serve_api(
    shared: &Shared,
    request: Request<Incoming>,
    route: String,
    peer: Peer,
) -> Result<SimResponse, DropConnection> {
    let record = record_of(&request, peer);
    let key = record.key.clone();
    let accept_encoding = header_str(request.headers(), header::ACCEPT_ENCODING);
    let (seq, verdict) = shared.arrive(record, peer.addr.ip());
    if verdict != Verdict::Pass {
        tracing::debug!(ip = %peer.addr.ip(), seq, route, "blocked by protection");
        return Ok(respond::cloudflare_block(&shared.next_ray()));
    }

    let plan = lock(&shared.faults).plan(&route);
    if plan.latency_ms > 0 {
        sleep(Duration::from_millis(plan.latency_ms)).await;
    }
    if let Some(early) = unapplied_fault(shared, &plan, seq) {
        return early;
    }

    let call = read_call(request, route, key).await;
    let response = apply(shared, &call);
    if plan.hold_ms > 0 {
        sleep(Duration::from_millis(plan.hold_ms)).await;
    }
    if plan.outcome == FaultOutcome::ApplyThenDrop {
        tracing::debug!(seq, route = %call.route, "applied, dropping the connection");
        shared.finish(seq, 0, true);
        return Err(DropConnection);
    }

    let gzip = shared.settings.borrow().gzip;
    let response = if gzip {
        respond::maybe_gzip(response, accept_encoding.as_deref())
    } else {
        response
    };
    shared.finish(seq, response.status().as_u16(), false);
    Ok(response)
}

/// Faults that answer (or drop) without applying the call.
fn unapplied_fault(
    shared: &Shared,
    plan: &FaultPlan,
    seq: u64,
) -> Option<Result<SimResponse, DropConnection>> {
    let answer = match plan.outcome {
        FaultOutcome::Normal | FaultOutcome::ApplyThenDrop => return None,
        FaultOutcome::Reset => Err(DropConnection),
        FaultOutcome::HtmlError => Ok(respond::cloudflare_bad_gateway(&shared.next_ray())),
        FaultOutcome::ServerError => Ok(respond::error_envelope(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        )),
    };
    let status = answer.as_ref().map_or(0, |r| r.status().as_u16());
    tracing::debug!(seq, status, outcome = ?plan.outcome, "fault answered");
    shared.finish(seq, status, true);
    Some(answer)
}

/// Applies the call to the world and builds the upstream's envelope.
fn apply(shared: &Shared, call: &ApiCall) -> SimResponse {
    let result = {
        let (mut world, now) = shared.world_now();
        api::handle(&mut world, call, now)
    };
    if let Err(refusal) = &result {
        let status = refusal.status().as_u16();
        tracing::debug!(route = %call.route, status, %refusal, "refused");
    }
    respond::api_result(result)
}

/// Reads query and (for POST) form-body parameters.
async fn read_call(request: Request<Incoming>, route: String, key: Option<String>) -> ApiCall {
    let method = request.method().clone();
    let mut params = Params::parse(request.uri().query());
    if method == Method::POST && is_form(request.headers()) {
        let body = request.into_body().collect().await.map(|b| b.to_bytes());
        let body = body.unwrap_or_else(|_| Bytes::new());
        params.extend(Params::parse(Some(&String::from_utf8_lossy(&body))));
    }
    ApiCall {
        method,
        route,
        params,
        key,
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    header_str(headers, header::CONTENT_TYPE)
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
}

/// The audit record of a request as received (status filled in later).
fn record_of(request: &Request<Incoming>, peer: Peer) -> RecordedRequest {
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    RecordedRequest {
        seq: 0,
        at_ms: 0,
        ip: peer.addr.ip().to_string(),
        peer_port: peer.addr.port(),
        conn_id: peer.conn_id,
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        query: request.uri().query().map(str::to_string),
        headers,
        key: header_str(request.headers(), "x-apikey"),
        status: 0,
        blocked: false,
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}
