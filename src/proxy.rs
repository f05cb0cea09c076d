//! The request path, top to bottom: classify, identify the caller, then serve
//! from the cache, through one coalesced fetch, or by one paced upstream call.
//!
//! CORS preflights and compression are handled by tower layers in `server`,
//! before this code runs. Errors become JSON answers in `error`. Which key
//! and egress a call uses is decided in `serve`; reading the request and
//! writing answers is in `request`.

mod request;
mod serve;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::auth::{ApiKey, KeyVerdicts, Verdict};
use crate::cache::{CacheKey, CacheResult, Policy, ResponseCache, Scope, WhenStale};
use crate::config::{Config, ConfigError, secs};
use crate::error::ProxyError;
use crate::headers::X_APIKEY;
use crate::metrics::Metrics;
use crate::once::{Once, OnceSettings};
use crate::pool::{Caller, CallerTag, Pool};
use crate::routes::{self, Freshness, Route, RouteClass};
use crate::store::{Store, StoreError};
use crate::upstream::pacer::Priority;
use crate::upstream::{Answer, Upstream};
pub use request::answer_response;
use request::{
    ClientLimiter, check_method, check_single_ids, client_limiter, idempotency_key,
    prune_periodically,
};

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
    /// What the upstream said about pass-through keys.
    pub verdicts: Arc<KeyVerdicts>,
    /// At-most-once guards for calls that move money.
    pub once: Arc<Once>,
    /// Accounts and clients.
    pub pool: Arc<Pool>,
    store: Arc<Store>,
    client_rate: Option<Arc<ClientLimiter>>,
    shutting_down: AtomicBool,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The durable store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An account's key could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

type Served = Result<Response<Full<Bytes>>, Arc<ProxyError>>;

/// How far a request got without waiting.
pub enum Handled {
    /// Answered at once: refused by a check, or a fresh cache hit.
    Now(Response<Full<Bytes>>),
    /// Still to be served: the rest waits for a fetch, the queue or the upstream.
    Later(Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>),
}

/// A request that passed every check that needs no waiting.
struct Admitted {
    route: &'static Route,
    path: String,
    caller: Caller,
    /// The upstream accepted the caller's own key recently.
    accepted: bool,
    deadline: Instant,
    idempotency_key: Option<String>,
}

/// A client's own key that must be shown to the upstream (one balance call)
/// before this keyed route may be served: not seen accepted recently.
fn key_to_check<'a>(caller: &'a Caller, route: &Route, accepted: bool) -> Option<&'a ApiKey> {
    match caller {
        Caller::PassThrough(key) if route.keyed && !accepted => Some(key),
        _ => None,
    }
}

/// What the access log and metrics say about one request.
struct Record {
    route: &'static Route,
    cache: Option<CacheResult>,
    caller: Option<CallerTag>,
    /// Queue wait and upstream status, when this request caused an upstream call.
    upstream: Option<(Duration, StatusCode)>,
}

impl Gateway {
    /// Assembles the gateway from a validated config: opens the store, reads
    /// the account keys, starts the pacers.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Self>, StartError> {
        let plan = config.pacing_plan().expect("config was validated");
        let store = Store::open(&config.store.path)?;
        tokio::spawn(prune_periodically(Arc::clone(&store)));
        let upstream = Upstream::new(&config, plan, Arc::clone(&metrics));
        let pool = Arc::new(Pool::load(&config, &upstream, Arc::clone(&metrics))?);
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
        let once = Once::new(Arc::clone(&store), Arc::clone(&upstream), settings);
        let client_rate = client_limiter(&config);
        Ok(Arc::new(Self {
            config: Arc::new(config),
            metrics,
            upstream,
            cache,
            verdicts,
            once,
            pool,
            store,
            client_rate,
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Refuses new requests and every queued call; calls already sent finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.upstream.close();
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
        match self.begin(request, peer) {
            Handled::Now(response) => response,
            Handled::Later(serving) => serving.await,
        }
    }

    /// Serves what needs no waiting at once (every check and refusal, and
    /// fresh catalog hits: most of a bot's traffic) and returns the rest as
    /// a future; errors are JSON answers.
    pub fn begin(self: &Arc<Self>, request: Request<Incoming>, peer: IpAddr) -> Handled {
        let started = Instant::now();
        let method = request.method().clone();
        let mut record = Record {
            route: &routes::UNKNOWN,
            cache: None,
            caller: None,
            upstream: None,
        };
        let admitted = match self.admit(&request, peer, &mut record) {
            Ok(admitted) => admitted,
            Err(error) => {
                return Handled::Now(self.finish(Err(error), &method, &record, started));
            }
        };
        if let Some(hit) = self.fresh_hit(&admitted, request.uri().query(), &mut record) {
            return Handled::Now(self.finish(Ok(hit), &method, &record, started));
        }
        let gateway = Arc::clone(self);
        Handled::Later(Box::pin(async move {
            let served = gateway.serve(request, admitted, &mut record).await;
            gateway.finish(served, &method, &record, started)
        }))
    }

    /// The answer to send, with its access log line and metrics written.
    fn finish(
        &self,
        served: Served,
        method: &Method,
        record: &Record,
        started: Instant,
    ) -> Response<Full<Bytes>> {
        let error_code = served.as_ref().err().map(|e| e.code());
        let mut response = served.unwrap_or_else(|error| error.to_response());
        if self.is_shutting_down() {
            let close = HeaderValue::from_static("close");
            response.headers_mut().insert(header::CONNECTION, close);
        }
        self.record(
            method,
            record,
            response.status(),
            error_code,
            started.elapsed(),
        );
        self.metrics
            .cache_entries
            .set(self.cache.entry_count() as i64);
        response
    }

    /// Every check that needs no waiting, in order: shutdown, query size,
    /// path, route, method, repeated ids, the caller and its key, the
    /// caller's rate, the headers.
    fn admit(
        &self,
        request: &Request<Incoming>,
        peer: IpAddr,
        record: &mut Record,
    ) -> Result<Admitted, Arc<ProxyError>> {
        if self.is_shutting_down() {
            return Err(Arc::new(ProxyError::ShuttingDown));
        }
        self.check_query(request.uri().query())?;
        let path = routes::normalise_path(request.uri().path()).map_err(ProxyError::BadPath)?;
        let route = routes::classify(&path).ok_or(ProxyError::NotFound)?;
        record.route = route;
        check_method(request.method(), route)?;
        check_single_ids(request.uri().query(), route)?;

        let (caller, verdict) = self.identify(request, route)?;
        record.caller = Some(caller.tag());
        self.check_client_rate(&caller, peer)?;

        Ok(Admitted {
            route,
            path,
            caller,
            accepted: verdict == Some(Verdict::Accepted),
            deadline: self.deadline(request.headers()),
            idempotency_key: idempotency_key(request.headers())?,
        })
    }

    /// A fresh catalog answer, for a caller that may read it now.
    fn fresh_hit(
        &self,
        admitted: &Admitted,
        query: Option<&str>,
        record: &mut Record,
    ) -> Option<Response<Full<Bytes>>> {
        let route = admitted.route;
        if route.class != RouteClass::Catalog
            || key_to_check(&admitted.caller, route, admitted.accepted).is_some()
        {
            return None;
        }
        let stored = self
            .cache
            .fresh(&CacheKey::new(Scope::Shared, route, query))?;
        Some(self.catalog_answer(route, &stored, CacheResult::Hit, record))
    }

    async fn serve(
        self: &Arc<Self>,
        request: Request<Incoming>,
        admitted: Admitted,
        record: &mut Record,
    ) -> Served {
        let Admitted {
            route,
            path,
            caller,
            accepted,
            deadline,
            idempotency_key,
        } = admitted;
        let call = self.outbound(request, path).await?;
        self.dispatch(
            route,
            call,
            &caller,
            accepted,
            idempotency_key,
            deadline,
            record,
        )
        .await
    }

    /// Who is calling, and for an own key what the upstream last said of it:
    /// a missing key on a keyed route, an unknown gateway key, or a recently
    /// rejected own key is refused here, for free.
    fn identify(
        &self,
        request: &Request<Incoming>,
        route: &Route,
    ) -> Result<(Caller, Option<Verdict>), ProxyError> {
        let key = ApiKey::from_header(request.headers().get(&X_APIKEY));
        let caller = self.pool.identify(key)?;
        let verdict = match &caller {
            Caller::Anonymous if route.keyed => return Err(ProxyError::MissingKey),
            Caller::PassThrough(key) => self.verdicts.verdict(key),
            _ => None,
        };
        if verdict == Some(Verdict::Rejected) {
            return Err(ProxyError::RejectedKey {
                remembered_for: self.verdicts.rejected_for(),
            });
        }
        Ok((caller, verdict))
    }

    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        self: &Arc<Self>,
        route: &'static Route,
        call: crate::upstream::OutboundCall,
        caller: &Caller,
        accepted: bool,
        idempotency_key: Option<String>,
        deadline: Instant,
        record: &mut Record,
    ) -> Served {
        if let Some(key) = key_to_check(caller, route, accepted)
            && let Some(refusal) = self.ensure_accepted(key, deadline).await?
        {
            return Ok(refusal);
        }
        match route.class {
            RouteClass::Catalog => {
                self.serve_catalog(route, call, caller, deadline, record)
                    .await
            }
            RouteClass::AccountRead => match caller {
                Caller::Pooled(client) => {
                    self.serve_pool_balance(route, call, client, deadline, record)
                        .await
                }
                _ => {
                    let target = self.target_for_new(caller, route, Priority::Interactive)?;
                    self.serve_per_key(route, call, &target, deadline, record)
                        .await
                }
            },
            RouteClass::Status => {
                let target = self
                    .target_for_id(caller, route, call.query.as_deref())
                    .await?;
                self.serve_per_key(route, call, &target, deadline, record)
                    .await
            }
            RouteClass::Mutating => {
                let target = match route.id {
                    Some(_) => {
                        self.target_for_id(caller, route, call.query.as_deref())
                            .await?
                    }
                    None => self.target_for_new(caller, route, Priority::Mutating)?,
                };
                self.serve_mutating(
                    route,
                    call,
                    caller,
                    target,
                    idempotency_key,
                    deadline,
                    record,
                )
                .await
            }
            RouteClass::Lookup | RouteClass::Unknown => {
                self.forward(route, call, caller, deadline, record).await
            }
        }
    }

    /// Lookups and unknown paths: one paced call, nothing cached. A pooled
    /// client's unknown paths use the first account of its pool.
    async fn forward(
        self: &Arc<Self>,
        route: &'static Route,
        call: crate::upstream::OutboundCall,
        caller: &Caller,
        deadline: Instant,
        record: &mut Record,
    ) -> Served {
        let target = self.target_for_forward(caller, route)?;
        let answer = self.send_once(route, call, &target, deadline).await?;
        record.upstream = Some((answer.queue_wait, answer.status));
        Ok(request::answer_response(&answer, None))
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
        let when_stale = match route.class {
            RouteClass::Catalog => WhenStale::Serve,
            RouteClass::Status => WhenStale::AwaitRefresh,
            _ => WhenStale::Refresh,
        };
        Policy {
            ttl: secs(ttl),
            final_ttl: secs(c.final_status_ttl_seconds).max(secs(ttl)),
            when_stale,
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
        self.metrics.count_lookup(route, result);
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
        let metrics = &self.metrics;
        metrics.count_request(record.route, record.caller.as_ref(), status, elapsed);
        if record.upstream.is_some() {
            let client = record
                .caller
                .as_ref()
                .map_or("anonymous", CallerTag::metrics_label);
            metrics
                .client_upstream_calls
                .with_label_values(&[client])
                .inc();
        }
        tracing::info!(
            target: "otpgate::access",
            method = %method,
            route,
            class,
            status = status.as_u16(),
            cache = record.cache.map(CacheResult::as_str),
            queue_wait_ms = record.upstream.map(|(wait, _)| wait.as_millis() as u64),
            upstream_status = record.upstream.map(|(_, status)| status.as_u16()),
            // Formatted only when the line is written; a string, so quoted.
            caller = record.caller.as_ref().map(ToString::to_string).as_deref(),
            error,
            duration_us = elapsed.as_micros() as u64,
            "request"
        );
    }
}
