//! Reading the client's request: its upstream call, deadline, idempotency
//! key and limits; and writing an upstream answer back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::Gateway;
use crate::cache::{CacheResult, Stored};
use crate::config::{Config, secs};
use crate::error::ProxyError;
use crate::headers::{APPLICATION_JSON, IDEMPOTENCY_KEY, PREFER, X_CACHE};
use crate::pool::Caller;
use crate::routes::Route;
use crate::store::Store;
use crate::upstream::{Answer, OutboundCall};

impl Gateway {
    /// The upstream call the client asked for, without a key yet: the key
    /// is decided by the caller's target.
    pub(super) async fn outbound(
        &self,
        request: Request<Incoming>,
        path: String,
    ) -> Result<OutboundCall, ProxyError> {
        let (parts, body) = request.into_parts();
        let body = if parts.method == Method::POST {
            let limit = self.config.server.max_body_bytes;
            let patience = secs(self.config.server.header_read_timeout_seconds);
            let read = tokio::time::timeout(patience, Limited::new(body, limit).collect());
            read.await
                .map_err(|_| ProxyError::SlowBody)?
                .map_err(|_| ProxyError::BodyTooLarge)?
                .to_bytes()
        } else {
            Bytes::new()
        };
        Ok(OutboundCall {
            method: parts.method,
            path,
            query: parts.uri.query().map(str::to_owned),
            api_key: None,
            accept: parts.headers.get(header::ACCEPT).cloned(),
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            body,
        })
    }

    pub(super) fn check_query(&self, query: Option<&str>) -> Result<(), ProxyError> {
        let limits = &self.config.limits;
        let query = query.unwrap_or_default();
        let params = query.split('&').filter(|p| !p.is_empty()).count();
        if query.len() > limits.max_query_bytes || params > limits.max_query_params {
            return Err(ProxyError::QueryTooLarge);
        }
        Ok(())
    }

    /// One client's share of the gateway: a configured client's own rate if
    /// it has one, else `[limits]` by caller identity (by IP without a key).
    pub(super) fn check_client_rate(
        &self,
        caller: &Caller,
        peer: IpAddr,
    ) -> Result<(), ProxyError> {
        let now = || governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        let refused = |not_until: governor::NotUntil<_>| {
            self.metrics
                .refusals
                .with_label_values(&["client_rate"])
                .inc();
            ProxyError::ClientRateLimited {
                retry_after: not_until.wait_time_from(now()),
            }
        };
        if let Caller::Pooled(client) = caller
            && let Some(rate) = &client.rate
        {
            return rate.check().map_err(refused);
        }
        let Some(limiter) = &self.client_rate else {
            return Ok(());
        };
        limiter.check_key(&caller.rate_key(peer)).map_err(refused)
    }

    /// The latest time a call may start: `Prefer: wait=N` seconds, bounded by
    /// `queue.max_deadline_seconds`, else `queue.default_deadline_seconds`.
    pub(super) fn deadline(&self, headers: &HeaderMap) -> Instant {
        let queue = &self.config.queue;
        let asked = headers
            .get_all(&PREFER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|pref| {
                pref.trim()
                    .strip_prefix("wait=")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .filter(|wait| wait.is_finite() && *wait >= 0.0);
        let wait = asked
            .unwrap_or(queue.default_deadline_seconds)
            .min(queue.max_deadline_seconds);
        Instant::now() + secs(wait)
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ProxyError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ProxyError::BadIdempotencyKey)?
        .trim();
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > 255 || !visible {
        return Err(ProxyError::BadIdempotencyKey);
    }
    Ok(Some(key.to_owned()))
}

pub(super) type ClientLimiter = governor::DefaultKeyedRateLimiter<crate::pool::RateKey>;

pub(super) fn client_limiter(config: &Config) -> Option<Arc<ClientLimiter>> {
    let limits = &config.limits;
    let rate = std::num::NonZeroU32::new(limits.client_requests_per_second)?;
    let burst = std::num::NonZeroU32::new(limits.client_burst).unwrap_or(rate);
    let quota = governor::Quota::per_second(rate).allow_burst(burst);
    let limiter = Arc::new(governor::RateLimiter::keyed(quota));
    tokio::spawn(forget_idle_clients(Arc::downgrade(&limiter)));
    Some(limiter)
}

/// Drops the rate state of clients that have been quiet, once a minute.
async fn forget_idle_clients(limiter: std::sync::Weak<ClientLimiter>) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Deletes expired durable records every ten minutes.
pub(super) async fn prune_periodically(store: Arc<Store>) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        match store.prune().await {
            Ok(pruned) => tracing::debug!(pruned, "expired durable records deleted"),
            Err(error) => tracing::warn!(%error, "could not prune durable records"),
        }
    }
}

pub(super) fn check_method(method: &Method, route: &Route) -> Result<(), ProxyError> {
    let allowed = *method == Method::GET || (*method == Method::POST && route.allows_post);
    if allowed {
        Ok(())
    } else {
        Err(ProxyError::MethodNotAllowed)
    }
}

/// Refuses a query naming one of the route's identifying parameters twice,
/// or under another spelling: the gateway reads the first value, by its
/// exact name (ownership, cache, holds), and an upstream may read the last,
/// or, like PHP, read `service.id` and `service_id[]` as `service_id`; the
/// call would not be what was checked, and its answer could be cached under
/// another call's key.
pub(super) fn check_single_ids(query: Option<&str>, route: &Route) -> Result<(), ProxyError> {
    let Some(query) = query else { return Ok(()) };
    let mut seen: Vec<&'static str> = Vec::new();
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        let read = read_as(&name);
        let Some(&known) = route.cache_params.iter().find(|p| **p == read) else {
            continue;
        };
        if name != known {
            return Err(ProxyError::AliasedParameter(known));
        }
        if seen.contains(&known) {
            return Err(ProxyError::DuplicateParameter(known));
        }
        seen.push(known);
    }
    Ok(())
}

/// The name a PHP-style server reads for `name`: leading spaces dropped, an
/// array suffix (`[]`, `[x]`) cut, then `.`, ` ` and `[` read as `_`.
fn read_as(name: &str) -> std::borrow::Cow<'_, str> {
    let name = name.trim_start_matches(' ');
    let name = match name.find('[') {
        Some(open) if name[open..].contains(']') => &name[..open],
        _ => name,
    };
    if name.contains(['.', ' ', '[']) {
        name.replace(['.', ' ', '['], "_").into()
    } else {
        name.into()
    }
}

/// The first value of query parameter `name`, form-decoded and trimmed.
pub(super) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(param, _)| param == name)
        .map(|(_, value)| value.trim().to_owned())
}

/// The upstream's answer as the client gets it, with `x-cache` and `age`
/// for answers the cache served.
pub fn answer_response(
    answer: &Answer,
    cached: Option<(CacheResult, &Stored)>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(answer.body.clone()));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    let content_type = answer
        .content_type
        .clone()
        .unwrap_or_else(|| APPLICATION_JSON.clone());
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Some((result, stored)) = cached {
        headers.insert(X_CACHE.clone(), result.header_value());
        headers.insert(header::AGE, stored.fetched_at.elapsed().as_secs().into());
    }
    response
}
