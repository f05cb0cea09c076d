//! The request path, top to bottom: classify, identify, then serve from the
//! cache, through one coalesced fetch, or by a single paced upstream call.
//!
//! CORS preflights and compression are handled by tower layers in `server`,
//! before this code runs. Errors become JSON answers in `error`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::auth::{ApiKey, KeyVerdicts, Verdict};
use crate::cache::{CacheKey, CacheResult, Policy, ResponseCache, Scope, Stored};
use crate::config::{Config, secs};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::once::{AfterSuccess, Delivery, MutatingCall, Once, OnceSettings};
use crate::routes::{self, Freshness, Route, RouteClass};
use crate::store::{Store, StoreError};
use crate::upstream::pacer::Priority;
use crate::upstream::{Answer, CallMeta, OutboundCall, Upstream};

/// Everything the request path needs, shared by all connections.
pub struct Gateway {
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// The paced upstream.
    pub upstream: Arc<Upstream>,
    /// Catalog, status and balance answers.
    pub cache: Arc<ResponseCache>,
    /// What the upstream said about client keys.
    pub verdicts: Arc<KeyVerdicts>,
    /// At-most-once guards for calls that move money.
    pub once: Arc<Once>,
    client_rate: Option<Arc<ClientLimiter>>,
    shutting_down: AtomicBool,
}

type Served = Result<Response<Full<Bytes>>, Arc<ProxyError>>;

/// What the access log and metrics say about one request.
struct Record {
    route: &'static Route,
    cache: Option<CacheResult>,
    key: Option<ApiKey>,
    /// Queue wait and upstream status, when this request caused an upstream call.
    upstream: Option<(Duration, StatusCode)>,
}

impl Gateway {
    /// Assembles the gateway from a validated config; starts the pacer.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Self>, StoreError> {
        let plan = config.pacing_plan().expect("config was validated");
        let store = Store::open(&config.store.path)?;
        tokio::spawn(prune_periodically(Arc::clone(&store)));
        let upstream = Upstream::new(&config, plan, Arc::clone(&metrics));
        let cache = ResponseCache::new(
            config.cache.max_entries,
            secs(config.cache.max_stale_seconds),
            Arc::clone(&upstream),
        );
        let verdicts = KeyVerdicts::new(
            secs(config.auth.verified_key_ttl_seconds),
            secs(config.auth.rejected_key_ttl_seconds),
        );
        let safety = &config.safety;
        let settings = OnceSettings {
            idempotency_ttl: secs(safety.idempotency_ttl_seconds),
            join_window: secs(safety.join_window_seconds),
            unknown_hold: secs(safety.unknown_outcome_hold_seconds),
        };
        let once = Once::new(store, Arc::clone(&upstream), settings);
        let client_rate = client_limiter(&config);
        Ok(Arc::new(Self {
            config: Arc::new(config),
            metrics,
            upstream,
            cache,
            verdicts,
            once,
            client_rate,
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Refuses new requests and every queued call; calls already sent finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.upstream.egress().pacer.close();
    }

    /// Whether `begin_shutdown` was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Serves one client request; never fails, errors are JSON answers.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: IpAddr,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let method = request.method().clone();
        let mut record = Record {
            route: &routes::UNKNOWN,
            cache: None,
            key: None,
            upstream: None,
        };

        let served = self.serve(request, peer, &mut record).await;
        let error_code = served.as_ref().err().map(|e| e.code());
        let mut response = served.unwrap_or_else(|error| error.to_response());
        if self.is_shutting_down() {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }

        self.record(
            &method,
            &record,
            response.status(),
            error_code,
            started.elapsed(),
        );
        self.metrics
            .cache_entries
            .set(self.cache.entry_count() as i64);
        response
    }

    async fn serve(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: IpAddr,
        record: &mut Record,
    ) -> Served {
        if self.is_shutting_down() {
            return Err(Arc::new(ProxyError::ShuttingDown));
        }
        self.check_query(request.uri().query())?;
        let path = routes::normalise_path(request.uri().path()).map_err(ProxyError::BadPath)?;
        let route = routes::classify(&path).ok_or(ProxyError::NotFound)?;
        record.route = route;
        check_method(request.method(), route)?;

        let key = ApiKey::from_header(request.headers().get("x-apikey"));
        record.key.clone_from(&key);
        self.check_client_rate(key.as_ref(), peer)?;
        if route.keyed && key.is_none() {
            return Err(Arc::new(ProxyError::MissingKey));
        }
        if let Some(key) = &key
            && self.verdicts.verdict(key).await == Some(Verdict::Rejected)
        {
            let remembered_for = self.verdicts.rejected_for();
            return Err(Arc::new(ProxyError::RejectedKey { remembered_for }));
        }

        let deadline = self.deadline(request.headers());
        let idempotency_key = idempotency_key(request.headers())?;
        let call = self.outbound(request, path, key.as_ref()).await?;
        match route.class {
            RouteClass::Catalog => self.serve_catalog(route, call, key, deadline, record).await,
            RouteClass::AccountRead | RouteClass::Status => {
                let key = key.expect("keyed routes were checked for a key");
                self.serve_per_key(route, call, &key, deadline, record)
                    .await
            }
            RouteClass::Mutating => {
                self.serve_mutating(route, call, key, idempotency_key, deadline, record)
                    .await
            }
            RouteClass::Lookup | RouteClass::Unknown => {
                let meta = CallMeta {
                    route,
                    priority: Priority::Interactive,
                    deadline,
                };
                let answer = self
                    .upstream
                    .call(call, meta, std::future::pending())
                    .await?;
                self.learn(key.as_ref(), &answer).await;
                record.upstream = Some((answer.queue_wait, answer.status));
                Ok(answer_response(&answer, None))
            }
        }
    }

    /// Catalog: shared by every accepted key, fetched once per miss.
    async fn serve_catalog(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        key: Option<ApiKey>,
        deadline: Instant,
        record: &mut Record,
    ) -> Served {
        if let Some(key) = key.as_ref().filter(|_| route.keyed)
            && let Some(refusal) = self.ensure_accepted(key, deadline).await?
        {
            return Ok(refusal);
        }
        let cache_key = CacheKey::new(Scope::Shared, route, call.query.as_deref());
        let policy = self.policy(route);
        let meta = CallMeta {
            route,
            priority: Priority::Interactive,
            deadline,
        };
        let (stored, result) = self
            .cache
            .get_or_fetch(cache_key, policy, call, meta)
            .await?;
        self.note_lookup(route, result, &stored.answer, record);
        Ok(answer_response(&stored.answer, Some((result, &stored))))
    }

    /// Status and balance: reused briefly for the same key only.
    async fn serve_per_key(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        key: &ApiKey,
        deadline: Instant,
        record: &mut Record,
    ) -> Served {
        let (stored, result) = self.fetch_per_key(route, call, key, deadline).await?;
        self.note_lookup(route, result, &stored.answer, record);
        Ok(answer_response(&stored.answer, Some((result, &stored))))
    }

    async fn fetch_per_key(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        key: &ApiKey,
        deadline: Instant,
    ) -> Result<(Arc<Stored>, CacheResult), Arc<ProxyError>> {
        let fingerprint = key.fingerprint().to_hex();
        let cache_key = CacheKey::new(Scope::Key(&fingerprint), route, call.query.as_deref());
        let meta = CallMeta {
            route,
            priority: Priority::Interactive,
            deadline,
        };
        let fetched = self
            .cache
            .get_or_fetch(cache_key, self.policy(route), call, meta)
            .await?;
        if fetched.1 == CacheResult::Miss {
            self.learn(Some(key), &fetched.0.answer).await;
        }
        if route.class == RouteClass::AccountRead {
            self.once.note_balance(&fingerprint, &fetched.0.answer);
        }
        Ok(fetched)
    }

    /// Buying, cancelling, depositing: sent at most once (see `once`), never
    /// cached; a success makes the id's status and the key's balance stale.
    async fn serve_mutating(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        key: Option<ApiKey>,
        idempotency_key: Option<String>,
        deadline: Instant,
        record: &mut Record,
    ) -> Served {
        let key = key.expect("mutating routes are keyed");
        let query = call.query.clone();
        let gateway = Arc::clone(self);
        let owner = key.clone();
        let after: AfterSuccess = Box::new(move |_answer| {
            Box::pin(async move {
                gateway
                    .invalidate_after(route, &owner, query.as_deref())
                    .await;
            })
        });
        let mutating = MutatingCall {
            client: key.fingerprint().to_hex(),
            idempotency_key,
            call,
            meta: CallMeta {
                route,
                priority: Priority::Mutating,
                deadline,
            },
        };

        let (answer, delivery) = self.once.run(mutating, after).await?;
        if delivery == Delivery::Sent {
            record.upstream = Some((answer.queue_wait, answer.status));
            self.learn(Some(&key), &answer).await;
        }
        let mut response = answer_response(&answer, None);
        let marker = match delivery {
            Delivery::Sent => None,
            Delivery::Replayed => Some("idempotent-replayed"),
            Delivery::Joined => Some("x-otpgate-joined"),
        };
        if let Some(name) = marker {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static("true"));
        }
        Ok(response)
    }

    /// Checks an unknown key once with a balance call before it may read the
    /// shared catalog; the upstream's refusal is passed on as it came.
    async fn ensure_accepted(
        self: &Arc<Self>,
        key: &ApiKey,
        deadline: Instant,
    ) -> Result<Option<Response<Full<Bytes>>>, Arc<ProxyError>> {
        if self.verdicts.verdict(key).await == Some(Verdict::Accepted) {
            return Ok(None);
        }
        let balance = routes::classify("/v1/user/balance").expect("balance is in the table");
        let call = OutboundCall {
            method: Method::GET,
            path: balance.template.to_owned(),
            query: None,
            api_key: Some(key.header_value().clone()),
            accept: None,
            content_type: None,
            body: Bytes::new(),
        };
        let (stored, _) = self.fetch_per_key(balance, call, key, deadline).await?;
        match self.verdicts.verdict(key).await {
            Some(Verdict::Accepted) => Ok(None),
            Some(Verdict::Rejected) => Ok(Some(answer_response(&stored.answer, None))),
            None => Ok(Some(answer_response(&stored.answer, None))),
        }
    }

    async fn invalidate_after(&self, route: &Route, key: &ApiKey, query: Option<&str>) {
        let fingerprint = key.fingerprint().to_hex();
        let scope = Scope::Key(&fingerprint);
        if let (true, Some((param, kind))) = (route.invalidates.status, route.id) {
            for status in routes::status_routes(kind) {
                let (status_param, _) = status.id.expect("status routes name their id");
                let id = query_value(query, param).unwrap_or_default();
                let id_query = form_urlencoded::Serializer::new(String::new())
                    .append_pair(status_param, &id)
                    .finish();
                self.cache
                    .invalidate(&CacheKey::new(scope, status, Some(&id_query)))
                    .await;
            }
        }
        if route.invalidates.balance {
            let balance = routes::classify("/v1/user/balance").expect("balance is in the table");
            self.cache
                .invalidate(&CacheKey::new(scope, balance, None))
                .await;
        }
    }

    async fn learn(&self, key: Option<&ApiKey>, answer: &Answer) {
        if let Some(key) = key {
            self.verdicts
                .learn(key, answer.status, answer.is_success())
                .await;
        }
    }

    async fn outbound(
        &self,
        request: Request<Incoming>,
        path: String,
        key: Option<&ApiKey>,
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
            api_key: key.map(|k| k.header_value().clone()),
            accept: parts.headers.get(header::ACCEPT).cloned(),
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            body,
        })
    }

    fn check_query(&self, query: Option<&str>) -> Result<(), ProxyError> {
        let limits = &self.config.limits;
        let query = query.unwrap_or_default();
        let params = query.split('&').filter(|p| !p.is_empty()).count();
        if query.len() > limits.max_query_bytes || params > limits.max_query_params {
            return Err(ProxyError::QueryTooLarge);
        }
        Ok(())
    }

    /// One client's share of the gateway: by key fingerprint, else by IP.
    fn check_client_rate(&self, key: Option<&ApiKey>, peer: IpAddr) -> Result<(), ProxyError> {
        let Some(limiter) = &self.client_rate else {
            return Ok(());
        };
        let client = key.map_or_else(|| format!("ip {peer}"), |k| k.fingerprint().to_hex());
        limiter.check_key(&client).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            self.metrics
                .refusals
                .with_label_values(&["client_rate"])
                .inc();
            ProxyError::ClientRateLimited { retry_after }
        })
    }

    /// The latest time a call may start: `Prefer: wait=N` seconds, bounded by
    /// `queue.max_deadline_seconds`, else `queue.default_deadline_seconds`.
    fn deadline(&self, headers: &HeaderMap) -> Instant {
        let queue = &self.config.queue;
        let asked = headers
            .get_all("prefer")
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

    fn policy(&self, route: &Route) -> Policy {
        let c = &self.config.cache;
        let ttl = match route.freshness {
            Freshness::Catalog => c.catalog_ttl_seconds,
            Freshness::Countries => c.countries_ttl_seconds,
            Freshness::Static => c.static_ttl_seconds,
            Freshness::Status => c.status_ttl_seconds,
            Freshness::Balance => c.balance_ttl_seconds,
            Freshness::Never => 0.0,
        };
        Policy {
            ttl: secs(ttl),
            final_ttl: secs(c.final_status_ttl_seconds).max(secs(ttl)),
            stale_while_refresh: route.class == RouteClass::Catalog,
        }
    }

    fn note_lookup(
        &self,
        route: &Route,
        result: CacheResult,
        answer: &Answer,
        record: &mut Record,
    ) {
        record.cache = Some(result);
        if result == CacheResult::Miss {
            record.upstream = Some((answer.queue_wait, answer.status));
        }
        self.metrics
            .cache_lookups
            .with_label_values(&[route.template, result.as_str()])
            .inc();
    }

    fn record(
        &self,
        method: &Method,
        record: &Record,
        status: StatusCode,
        error: Option<&'static str>,
        elapsed: Duration,
    ) {
        let route = record.route.template;
        let class = record.route.class.as_str();
        self.metrics
            .requests
            .with_label_values(&[route, class, status.as_str()])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[route, class])
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            target: "otpgate::access",
            method = %method,
            route,
            class,
            status = status.as_u16(),
            cache = record.cache.map(CacheResult::as_str),
            queue_wait_ms = record.upstream.map(|(wait, _)| wait.as_millis() as u64),
            upstream_status = record.upstream.map(|(_, status)| status.as_u16()),
            key.fp = record.key.as_ref().map(|k| k.fingerprint().to_string()),
            error,
            duration_us = elapsed.as_micros() as u64,
            "request"
        );
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ProxyError> {
    let Some(value) = headers.get("idempotency-key") else {
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

type ClientLimiter = governor::DefaultKeyedRateLimiter<String>;

fn client_limiter(config: &Config) -> Option<Arc<ClientLimiter>> {
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
async fn prune_periodically(store: Arc<Store>) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        match store.prune().await {
            Ok(pruned) => tracing::debug!(pruned, "expired durable records deleted"),
            Err(error) => tracing::warn!(%error, "could not prune durable records"),
        }
    }
}

fn check_method(method: &Method, route: &Route) -> Result<(), ProxyError> {
    let allowed = *method == Method::GET || (*method == Method::POST && route.allows_post);
    if allowed {
        Ok(())
    } else {
        Err(ProxyError::MethodNotAllowed)
    }
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(param, _)| param == name)
        .map(|(_, value)| value.into_owned())
}

/// The upstream's answer as the client gets it, with `x-cache` and `age`
/// for answers the cache served.
fn answer_response(
    answer: &Answer,
    cached: Option<(CacheResult, &Stored)>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(answer.body.clone()));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    let content_type = answer
        .content_type
        .clone()
        .unwrap_or(HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Some((result, stored)) = cached {
        headers.insert("x-cache", HeaderValue::from_static(result.as_str()));
        headers.insert(header::AGE, stored.fetched_at.elapsed().as_secs().into());
    }
    response
}
