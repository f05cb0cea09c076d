//! The response cache: catalog answers shared by all accepted keys, and
//! status and balance answers reused briefly for their own key only.
//!
//! A miss starts one fill, a task of its own that every concurrent asker for
//! the same key waits on; a client hanging up never cancels it for the others,
//! and it is withdrawn only if nobody waits any more and it has not been sent.
//! Only `200` answers with `"success": true` are stored. Freshness is judged
//! here with tokio's clock; moka only bounds memory and drops long-stale entries.

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::auth::ApiKey;
use crate::error::ProxyError;
use crate::flight::{self, Flight, Flights, Role};
use crate::routes::Route;
use crate::upstream::{Answer, CallMeta, OutboundCall, Upstream};

mod refresh;

/// Route, scope and the query parameters that matter, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Arc<str>);

/// Who may read an entry.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Any accepted key (catalog).
    Shared,
    /// One key, by full hex fingerprint (status, balance).
    Key(&'a str),
}

impl CacheKey {
    /// Builds the key from the route's own parameters only, so that junk
    /// parameters neither split entries nor cost upstream calls. Values are
    /// form-decoded (`+` and `%20` are one) and trimmed, sorted, and empty
    /// ones are kept. (A repeated identifying parameter is refused earlier.)
    pub fn new(scope: Scope<'_>, route: &Route, query: Option<&str>) -> Self {
        let scope = match scope {
            Scope::Shared => "*",
            Scope::Key(fingerprint) => fingerprint,
        };
        let query = query.unwrap_or_default();
        let mut key = String::with_capacity(scope.len() + route.template.len() + query.len() + 2);
        key.push_str(scope);
        key.push(' ');
        key.push_str(route.template);
        // Most catalog calls carry no parameter: no parsing, no list.
        if query.is_empty() || route.cache_params.is_empty() {
            return Self(key.into());
        }
        let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .filter(|(name, _)| route.cache_params.contains(&name.as_ref()))
            .map(|(name, value)| (name.into_owned(), value.trim().to_owned()))
            .collect();
        params.sort();
        for (name, value) in params {
            key.push(' ');
            key.extend(form_urlencoded::byte_serialize(name.as_bytes()));
            key.push('=');
            key.extend(form_urlencoded::byte_serialize(value.as_bytes()));
        }
        Self(key.into())
    }
}

/// A stored answer and when it was fetched.
#[derive(Debug)]
pub struct Stored {
    /// The upstream's answer.
    pub answer: Answer,
    /// When the fetch finished.
    pub fetched_at: Instant,
    /// How long it counts as fresh.
    pub fresh_for: Duration,
    /// Fingerprint of the key the call carried, if any: whoever joined the
    /// fetch learns from it which key an answer (a 401) is about.
    pub fetched_with: Option<crate::auth::Fingerprint>,
}

impl Stored {
    /// Whether it is still within its fresh time.
    pub fn is_fresh(&self) -> bool {
        self.fetched_at.elapsed() < self.fresh_for
    }
}

/// How a lookup was served, for `x-cache` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Fresh entry.
    Hit,
    /// Entry past its fresh time.
    Stale,
    /// Fetched upstream for this request (or joined a fetch under way).
    Miss,
}

impl CacheResult {
    /// The `x-cache` header value (`as_str`, built once).
    pub fn header_value(self) -> http::HeaderValue {
        static HIT: http::HeaderValue = http::HeaderValue::from_static("HIT");
        static STALE: http::HeaderValue = http::HeaderValue::from_static("STALE");
        static MISS: http::HeaderValue = http::HeaderValue::from_static("MISS");
        match self {
            CacheResult::Hit => HIT.clone(),
            CacheResult::Stale => STALE.clone(),
            CacheResult::Miss => MISS.clone(),
        }
    }

    /// `x-cache` header value and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "HIT",
            CacheResult::Stale => "STALE",
            CacheResult::Miss => "MISS",
        }
    }
}

/// How one route's answers are cached.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Fresh time of an answer; `final_ttl` applies when the answer is final.
    pub ttl: Duration,
    /// Fresh time of a final status.
    pub final_ttl: Duration,
    /// What a lookup does with an entry past its fresh time.
    pub when_stale: WhenStale,
}

/// What a lookup does with an entry past its fresh time. Whatever it is
/// served with, a stale answer says so (`x-cache: STALE`, `age`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenStale {
    /// Serve it at once and refresh it in the background (catalog).
    Serve,
    /// Ask for a refresh, which is made in turn, oldest answer first, behind
    /// interactive calls (see `refresh`); wait for it until the caller's
    /// deadline if it is under way and expected to start by then, else
    /// serve the entry at once; also serve it if the refresh is late or
    /// refused (status: under a poll storm every status is refreshed once a
    /// round, and nobody waits in vain or gets an error while an earlier
    /// answer exists).
    AwaitRefresh,
    /// Refresh first; serve the entry only when the upstream fails or
    /// blocks, never because the gateway's own queue refused (balance:
    /// it must not look current when it is not).
    Refresh,
}

type Outcome = Result<Arc<Stored>, Arc<ProxyError>>;

/// How long past a refresh's expected start a poll waits for its answer.
const REFRESH_GRACE: Duration = Duration::from_secs(1);

struct StoredExpiry {
    max_stale: Duration,
}

impl Expiry<CacheKey, Arc<Stored>> for StoredExpiry {
    fn expire_after_create(
        &self,
        _: &CacheKey,
        stored: &Arc<Stored>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(stored.fresh_for + self.max_stale)
    }
}

/// Answers by cache key, with one fill at a time per key.
pub struct ResponseCache {
    entries: moka::sync::Cache<CacheKey, Arc<Stored>>,
    /// Fills under way, tagged with when their call is expected to start
    /// (`None`: not known).
    fills: Flights<CacheKey, Outcome, Option<Instant>>,
    refreshes: refresh::Refreshes,
    upstream: Arc<Upstream>,
}

impl ResponseCache {
    /// A cache of at most `max_entries`, each kept `max_stale` past its fresh time.
    pub fn new(max_entries: u64, max_stale: Duration, upstream: Arc<Upstream>) -> Arc<Self> {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(StoredExpiry { max_stale })
            .build();
        let refreshes = refresh::Refreshes::new(upstream.egresses().len(), max_entries as usize);
        Arc::new(Self {
            entries,
            fills: Flights::default(),
            refreshes,
            upstream,
        })
    }

    /// Entries held now (approximate, as moka counts).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// The entry for `key` while it is fresh: what a lookup answers without
    /// waiting for anything.
    pub fn fresh(&self, key: &CacheKey) -> Option<Arc<Stored>> {
        self.held(key).filter(|stored| stored.is_fresh())
    }

    /// The entry for `key` at any age (up to `max_stale` past fresh).
    pub fn held(&self, key: &CacheKey) -> Option<Arc<Stored>> {
        self.entries.get(key)
    }

    /// Serves `key` from the cache or through one shared upstream fetch of `call`.
    pub async fn get_or_fetch(
        self: &Arc<Self>,
        key: CacheKey,
        policy: Policy,
        call: OutboundCall,
        meta: CallMeta,
    ) -> Result<(Arc<Stored>, CacheResult), Arc<ProxyError>> {
        let cached = self.entries.get(&key);
        if let Some(stored) = cached.as_ref().filter(|s| s.is_fresh()) {
            return Ok((Arc::clone(stored), CacheResult::Hit));
        }
        let deadline = meta.deadline;
        let done = match (&cached, policy.when_stale) {
            (Some(stored), WhenStale::Serve) => {
                drop(self.join_or_start(key, policy, call, background(meta), false));
                return Ok((Arc::clone(stored), CacheResult::Stale));
            }
            (Some(stored), WhenStale::AwaitRefresh) => {
                let stale = || Ok((Arc::clone(stored), CacheResult::Stale));
                let under_way = match self.fills.join(&key) {
                    Some(under_way) => under_way,
                    None => {
                        let fetched_at = stored.fetched_at;
                        self.refreshes.want(&key, fetched_at, call, meta, policy);
                        self.start_refreshes();
                        let Some(under_way) = self.fills.join(&key) else {
                            return stale();
                        };
                        under_way
                    }
                };
                // Wait for the refresh only while it can still be on time:
                // until its expected start plus an answer's travel, at most
                // the deadline. Interactive calls may push it back.
                let (fill, done) = under_way;
                let Some(start) = fill.tag.filter(|start| *start <= deadline) else {
                    return stale();
                };
                let until = deadline.min(start.max(Instant::now()) + REFRESH_GRACE);
                let Ok(outcome) = tokio::time::timeout_at(until, flight::wait(done)).await else {
                    return stale();
                };
                outcome
            }
            _ => flight::wait(self.join_or_start(key, policy, call, meta, true).0).await,
        };
        let outcome = done.unwrap_or(Err(Arc::new(ProxyError::Internal)));
        match (outcome, cached) {
            (Ok(fetched), Some(stale)) if fetched.answer.status.is_server_error() => {
                tracing::warn!(
                    status = fetched.answer.status.as_u16(),
                    "upstream failed; serving stale entry"
                );
                Ok((stale, CacheResult::Stale))
            }
            (Ok(stored), _) => Ok((stored, CacheResult::Miss)),
            (Err(error), Some(stale)) if serves_stale_on(&error, policy) => {
                tracing::warn!(
                    code = error.code(),
                    "upstream unavailable; serving stale entry"
                );
                Ok((stale, CacheResult::Stale))
            }
            (Err(error), _) => Err(error),
        }
    }

    /// Forgets `key` and detaches any fill under way, so that the next
    /// lookup fetches anew and an older fill cannot store its answer.
    pub fn invalidate(&self, key: &CacheKey) {
        self.fills.detach(key);
        self.entries.invalidate(key);
    }

    /// Starts the refreshes whose turn it is (oldest answer first, a few
    /// per egress at a time); each one that ends starts the next.
    fn start_refreshes(self: &Arc<Self>) {
        while let Some((key, wish, place)) = self.refreshes.next() {
            let meta = background(wish.meta);
            let (done, _) = self.join_or_start(key, wish.policy, wish.call, meta, false);
            let cache = Arc::clone(self);
            tokio::spawn(async move {
                let _ = flight::wait(done).await;
                drop(place);
                cache.start_refreshes();
            });
        }
    }

    /// Joins the fill of `key` or starts one; returns its result channel and
    /// when its call is expected to start (`None` if the egress is blocked,
    /// or unknown for a fill started by a plain miss).
    fn join_or_start(
        self: &Arc<Self>,
        key: CacheKey,
        policy: Policy,
        call: OutboundCall,
        meta: CallMeta,
        abandonable: bool,
    ) -> (watch::Receiver<Option<Outcome>>, Option<Instant>) {
        let expected = if abandonable {
            None
        } else {
            self.upstream.predicted_start(&meta)
        };
        let (fill, receiver) = match self.fills.join_or_lead(&key, expected, |_| true) {
            Role::Join(fill, receiver) => return (receiver, fill.tag),
            Role::Lead(fill, receiver) => (fill, receiver),
        };
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let unwatched = async {
                if abandonable {
                    cache.fills.until_unwatched(&key, &fill).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let fetched_with = call.api_key.as_ref().map(ApiKey::fingerprint);
            let outcome = match cache.upstream.call(call, meta, unwatched).await {
                Ok(answer) => Ok(cache.store(&key, &fill, answer, policy, fetched_with)),
                Err(error) => Err(Arc::new(error)),
            };
            cache.fills.finish(&key, &fill, outcome);
        });
        (receiver, expected)
    }

    fn store(
        &self,
        key: &CacheKey,
        fill: &Arc<Flight<Outcome, Option<Instant>>>,
        answer: Answer,
        policy: Policy,
        fetched_with: Option<crate::auth::Fingerprint>,
    ) -> Arc<Stored> {
        let storable = answer.status == http::StatusCode::OK && answer.is_success();
        let fresh_for = if is_final_status(&answer) {
            policy.final_ttl
        } else {
            policy.ttl
        };
        let stored = Arc::new(Stored {
            answer,
            fetched_at: Instant::now(),
            fresh_for,
            fetched_with,
        });
        if storable && self.fills.is_current(key, fill) {
            self.entries.insert(key.clone(), Arc::clone(&stored));
        }
        stored
    }
}

use crate::upstream::pacer::Priority::Background;
use crate::upstream::pacer::Refusal;

/// The refresh of a stale entry: behind interactive calls, and kept in the
/// queue until its turn (the pacer bounds how many such calls wait).
fn background(meta: CallMeta) -> CallMeta {
    CallMeta {
        priority: Background,
        deadline: Instant::now() + Duration::from_secs(3600),
        ..meta
    }
}

/// Failures during which a stale answer beats an error.
fn serves_stale_on(error: &ProxyError, policy: Policy) -> bool {
    match error {
        ProxyError::Upstream(_) | ProxyError::Refused(Refusal::Blocked { .. }) => true,
        ProxyError::Refused(_) => policy.when_stale != WhenStale::Refresh,
        _ => false,
    }
}

/// Whether a status answer is final: it will not change any more.
fn is_final_status(answer: &Answer) -> bool {
    const FINAL: &[&str] = &[
        "completed",
        "canceled",
        "cancel",
        "expired",
        "success",
        "failed",
    ];
    serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|json| json.pointer("/data/status")?.as_str().map(str::to_owned))
        .is_some_and(|status| FINAL.contains(&status.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::classify;

    #[test]
    fn junk_parameters_order_and_space_spelling_do_not_split_entries() {
        let route = classify("/v2/countries").unwrap();
        let a = CacheKey::new(Scope::Shared, route, Some("service_id=13&x=1"));
        let b = CacheKey::new(Scope::Shared, route, Some("cb=9&service_id=13"));
        assert_eq!(a, b);

        let operators = classify("/v2/operators").unwrap();
        let plus = CacheKey::new(Scope::Shared, operators, Some("provider_id=1&country=a+b"));
        let pct = CacheKey::new(
            Scope::Shared,
            operators,
            Some("country=a%20b&provider_id=1"),
        );
        assert_eq!(plus, pct);
    }

    #[test]
    fn keys_of_different_scopes_or_values_differ() {
        let route = classify("/v1/orders/get_status").unwrap();
        let mine = CacheKey::new(Scope::Key("aa"), route, Some("order_id=RO1"));
        let theirs = CacheKey::new(Scope::Key("bb"), route, Some("order_id=RO1"));
        let other = CacheKey::new(Scope::Key("aa"), route, Some("order_id=RO2"));
        assert_ne!(mine, theirs);
        assert_ne!(mine, other);
    }

    #[test]
    fn an_empty_value_is_kept_apart_from_a_missing_one() {
        let route = classify("/v2/operators").unwrap();
        let empty = CacheKey::new(Scope::Shared, route, Some("country=&provider_id=1"));
        let missing = CacheKey::new(Scope::Shared, route, Some("provider_id=1"));
        assert_ne!(empty, missing);
    }
}
