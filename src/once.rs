//! At most once, for calls that move money.
//!
//! Three guards sit in front of every buy, cancel and deposit:
//! - an `Idempotency-Key` is claimed durably before the call is queued; the
//!   same key with the same call replays the first outcome (even after a
//!   restart), with another call it is refused;
//! - without a key, an identical call from the same client while the first is
//!   still queued or in flight is joined to it, not sent again;
//! - after a lost answer, identical calls (without a key) are held until a
//!   balance read shows the first was not carried out.
//!
//! Once its slot is granted, a call runs to its end in a task of its own and
//! its outcome is recorded, whoever is still listening.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::flight::{self, Flights, Role};
use crate::store::{Claim, IdemState, Store, StoredAnswer, UnknownOutcome, now_ms};
use crate::upstream::{Answer, CallMeta, OutboundCall, Upstream};

/// How an answer reached the client, for headers and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// This request's own upstream call.
    Sent,
    /// The outcome stored for its `Idempotency-Key`.
    Replayed,
    /// The outcome of an identical call under way when it arrived.
    Joined,
}

/// What guards a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Guard {
    /// The client's `Idempotency-Key`.
    Explicit { client: String, key: String },
    /// The call itself.
    Identical { client: String, hash: String },
}

impl Guard {
    fn client(&self) -> &str {
        match self {
            Guard::Explicit { client, .. } | Guard::Identical { client, .. } => client,
        }
    }
}

type Outcome = Result<(Answer, Delivery), Arc<ProxyError>>;

/// When a flight started and for which call.
struct Tag {
    hash: String,
    started: Instant,
}

/// Settings of the guards, from `[safety]`.
#[derive(Debug, Clone, Copy)]
pub struct OnceSettings {
    /// How long an idempotency record is kept.
    pub idempotency_ttl: Duration,
    /// Join identical calls at most this long after the first started; zero disables.
    pub join_window: Duration,
    /// How long identical calls are held after a lost answer.
    pub unknown_hold: Duration,
}

/// A mutating call and who makes it.
pub struct MutatingCall {
    /// The client's identity (key fingerprint).
    pub client: String,
    /// The client's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// The call.
    pub call: OutboundCall,
    /// Its route, priority and deadline.
    pub meta: CallMeta,
}

/// Runs once the upstream answered (`Some`) or the answer was lost (`None`),
/// before anyone hears of it: records and invalidations.
pub type AfterSettled = Box<dyn FnOnce(Option<Answer>) -> BoxFuture<'static, ()> + Send>;

/// The guards.
pub struct Once {
    store: Arc<Store>,
    upstream: Arc<Upstream>,
    flights: Flights<Guard, Outcome, Tag>,
    /// Answers of key-less calls whose client had gone when they came, with
    /// when the call started: an identical retry within the join window gets
    /// the answer instead of buying again.
    undelivered: Mutex<std::collections::HashMap<Guard, (Instant, Outcome)>>,
    /// Each key's last balance read, and when.
    last_balance: Arc<Mutex<BalanceNotes>>,
    settings: OnceSettings,
}

/// Balances read per key (fingerprint hex), and the keys with a buy, cancel
/// or deposit in flight: a balance read before or during such a call is no
/// longer the balance "before" the next one, so it is forgotten.
#[derive(Default)]
struct BalanceNotes {
    read: std::collections::HashMap<String, (i64, Instant)>,
    moving: std::collections::HashMap<String, u32>,
}

/// A key's money may move while this lives (one mutating call in flight).
struct Moving {
    notes: Arc<Mutex<BalanceNotes>>,
    key_fp: String,
}

impl Moving {
    fn start(notes: &Arc<Mutex<BalanceNotes>>, key_fp: &str) -> Self {
        let mut locked = notes.lock().expect("balance lock");
        locked.read.remove(key_fp);
        *locked.moving.entry(key_fp.to_owned()).or_default() += 1;
        Self {
            notes: Arc::clone(notes),
            key_fp: key_fp.to_owned(),
        }
    }
}

impl Drop for Moving {
    fn drop(&mut self) {
        let mut locked = self.notes.lock().expect("balance lock");
        locked.read.remove(&self.key_fp);
        if let Some(count) = locked.moving.get_mut(&self.key_fp) {
            *count -= 1;
            if *count == 0 {
                locked.moving.remove(&self.key_fp);
            }
        }
    }
}

/// A balance read longer ago than this is not quoted as evidence.
const RECENT_BALANCE: Duration = Duration::from_secs(60);

impl Once {
    /// Guards calls sent through `upstream`, recording in `store`.
    pub fn new(store: Arc<Store>, upstream: Arc<Upstream>, settings: OnceSettings) -> Arc<Self> {
        Arc::new(Self {
            store,
            upstream,
            flights: Flights::default(),
            undelivered: Mutex::default(),
            last_balance: Arc::default(),
            settings,
        })
    }

    /// Remembers a key's balance (by fingerprint hex) from any balance answer
    /// that passes by, as the "before" figure for reconciling a lost answer.
    pub fn note_balance(&self, key_fingerprint: &str, answer: &Answer) {
        if let Some(balance) = balance_of(answer) {
            let mut notes = self.last_balance.lock().expect("balance lock");
            let read = (balance, Instant::now());
            notes.read.insert(key_fingerprint.to_owned(), read);
        }
    }

    /// Sends `mutating` at most once under its guard; `after` runs on success.
    pub async fn run(self: &Arc<Self>, mutating: MutatingCall, after: AfterSettled) -> Outcome {
        let hash = request_hash(&mutating.call, mutating.meta.route.cache_params);
        let guard = match &mutating.idempotency_key {
            Some(key) => Guard::Explicit {
                client: mutating.client.clone(),
                key: key.clone(),
            },
            None => Guard::Identical {
                client: mutating.client.clone(),
                hash: hash.clone(),
            },
        };
        let join_window = self.settings.join_window;
        let explicit = matches!(guard, Guard::Explicit { .. });
        let tag = Tag {
            hash: hash.clone(),
            started: Instant::now(),
        };
        let joinable = |tag: &Tag| explicit || tag.started.elapsed() < join_window;
        if !explicit && let Some(outcome) = self.take_undelivered(&guard) {
            return outcome.map(|(answer, _)| (answer, Delivery::Joined));
        }

        match self.flights.join_or_lead(&guard, tag, joinable) {
            Role::Join(flight, receiver) => {
                if flight.tag.hash != hash {
                    return Err(Arc::new(ProxyError::IdempotencyConflict));
                }
                let outcome = flight::wait(receiver)
                    .await
                    .unwrap_or(Err(ProxyError::Internal.into()));
                outcome.map(|(answer, delivery)| {
                    let joined = if explicit {
                        Delivery::Replayed
                    } else {
                        Delivery::Joined
                    };
                    (
                        answer,
                        if delivery == Delivery::Sent {
                            joined
                        } else {
                            delivery
                        },
                    )
                })
            }
            Role::Lead(flight, receiver) => {
                let once = Arc::clone(self);
                tokio::spawn(async move {
                    let unwatched = once.flights.until_unwatched(&guard, &flight);
                    let outcome = once.lead(&guard, &hash, mutating, unwatched, after).await;
                    let answered = outcome.is_ok();
                    let heard = once.flights.finish(&guard, &flight, outcome.clone());
                    if !heard && answered && !explicit {
                        once.keep_undelivered(guard, flight.tag.started, outcome);
                    }
                });
                flight::wait(receiver)
                    .await
                    .unwrap_or(Err(ProxyError::Internal.into()))
            }
        }
    }

    async fn lead(
        &self,
        guard: &Guard,
        hash: &str,
        mutating: MutatingCall,
        unwatched: impl std::future::Future<Output = ()>,
        after: AfterSettled,
    ) -> Outcome {
        if let Guard::Explicit { client, key } = guard
            && let Some(earlier) = self.claim(client, key, hash).await?
        {
            return earlier;
        }
        let key_fp = key_fingerprint(&mutating.call);
        let balance_before = self.recent_balance(&key_fp);
        // Until this call settles no balance read is "before" the next one.
        let moving = Moving::start(&self.last_balance, &key_fp);
        let route = mutating.meta.route.template;
        let pending = UnknownOutcome {
            route: route.to_owned(),
            key_fp,
            balance_before,
            at_ms: now_ms(),
        };
        if let Guard::Identical { client, .. } = guard {
            self.hold_if_lost(client, hash).await?;
            // Durable before sending: if the gateway dies mid-call, the
            // restarted one holds identical calls as if the answer was lost.
            // (A keyed call has its idempotency record for that.)
            let hold = self.settings.unknown_hold;
            let written = self
                .store
                .record_unknown(client, hash, pending.clone(), hold)
                .await;
            written.map_err(store_failure)?;
        }

        let result = self
            .upstream
            .call(mutating.call, mutating.meta, unwatched)
            .await;
        drop(moving);
        self.record(guard, hash, pending, &result).await;
        log_settled(route, &mutating.client, &result);
        match result {
            Ok(answer) => {
                after(Some(answer.clone())).await;
                Ok((answer, Delivery::Sent))
            }
            Err(error) => {
                if matches!(error, ProxyError::OutcomeUnknown { .. }) {
                    after(None).await;
                }
                Err(Arc::new(error))
            }
        }
    }

    /// The key's balance if it was read within the last minute, after every
    /// earlier buy, cancel and deposit of the key had settled.
    fn recent_balance(&self, key_fp: &str) -> Option<i64> {
        let notes = self.last_balance.lock().expect("balance lock");
        if notes.moving.contains_key(key_fp) {
            return None;
        }
        let (balance, read_at) = notes.read.get(key_fp)?;
        (read_at.elapsed() < RECENT_BALANCE).then_some(*balance)
    }

    /// The answer of an identical key-less call whose client had gone, if it
    /// started within the join window.
    fn take_undelivered(&self, guard: &Guard) -> Option<Outcome> {
        let mut undelivered = self.undelivered.lock().expect("undelivered lock");
        let (started, outcome) = undelivered.remove(guard)?;
        (started.elapsed() < self.settings.join_window).then_some(outcome)
    }

    fn keep_undelivered(&self, guard: Guard, started: Instant, outcome: Outcome) {
        let window = self.settings.join_window;
        let mut undelivered = self.undelivered.lock().expect("undelivered lock");
        undelivered.retain(|_, (at, _)| at.elapsed() < window);
        undelivered.insert(guard, (started, outcome));
    }

    /// Claims an idempotency key; `Some` is the outcome to give instead of sending.
    async fn claim(
        &self,
        client: &str,
        key: &str,
        hash: &str,
    ) -> Result<Option<Outcome>, Arc<ProxyError>> {
        let claim = self
            .store
            .claim(client, key, hash, self.settings.idempotency_ttl)
            .await;
        let record = match claim.map_err(store_failure)? {
            Claim::Claimed => return Ok(None),
            Claim::Existing(record) => record,
        };
        if record.request_hash != hash {
            return Ok(Some(Err(Arc::new(ProxyError::IdempotencyConflict))));
        }
        let outcome = match record.state {
            IdemState::Done(stored) => Ok((answer_from(stored), Delivery::Replayed)),
            IdemState::Unknown | IdemState::Pending => {
                Err(Arc::new(ProxyError::OutcomeUnknown { source: None }))
            }
        };
        Ok(Some(outcome))
    }

    /// Refuses an identical call while an earlier one's answer is lost (or
    /// its gateway died mid-call), for `safety.unknown_outcome_hold_seconds`.
    /// No balance read can prove a call was not carried out (refunds, paid
    /// deposits and expiries move it too), so none is made: the client is
    /// told what is known and how to proceed.
    async fn hold_if_lost(&self, client: &str, hash: &str) -> Result<(), Arc<ProxyError>> {
        let lost = self
            .store
            .unknown_outcome(client, hash)
            .await
            .map_err(store_failure)?;
        let Some(lost) = lost else { return Ok(()) };
        let ago = Duration::from_millis((now_ms() - lost.at_ms).max(0) as u64);
        Err(Arc::new(ProxyError::PreviousOutcomeUnknown {
            ago,
            balance_before: lost.balance_before,
            hold_left: self.settings.unknown_hold.saturating_sub(ago),
        }))
    }

    async fn record(
        &self,
        guard: &Guard,
        hash: &str,
        lost: UnknownOutcome,
        result: &Result<Answer, ProxyError>,
    ) {
        let client = guard.client();
        let lost_now = matches!(result, Err(ProxyError::OutcomeUnknown { .. }));
        let keyed = match (guard, result) {
            (Guard::Explicit { key, .. }, Ok(answer)) => Some(
                self.store
                    .settle(client, key, Some(stored_from(answer)))
                    .await,
            ),
            (Guard::Explicit { key, .. }, Err(_)) if lost_now => {
                Some(self.store.settle(client, key, None).await)
            }
            (Guard::Explicit { key, .. }, Err(_)) => Some(self.store.release(client, key).await),
            (Guard::Identical { .. }, _) => None,
        };
        // A lost answer holds identical calls, keyed or not (a retry that
        // drops its key must not buy again). A settled call lifts only the
        // hold it wrote itself before sending (key-less calls), never one
        // another call left.
        let held = if lost_now {
            let lost = UnknownOutcome {
                at_ms: now_ms(),
                ..lost
            };
            let hold = self.settings.unknown_hold;
            Some(self.store.record_unknown(client, hash, lost, hold).await)
        } else if keyed.is_none() {
            Some(self.store.clear_unknown(client, hash, lost.at_ms).await)
        } else {
            None
        };
        for written in keyed.into_iter().chain(held) {
            if let Err(error) = written {
                tracing::error!(%error, "could not record the outcome of a mutating call");
            }
        }
    }
}

/// One line per mutating call that reached its end, whether or not its
/// client was still there to hear it.
fn log_settled(route: &str, client: &str, result: &Result<Answer, ProxyError>) {
    let client = &client[..12.min(client.len())];
    match result {
        Ok(answer) => {
            let status = answer.status.as_u16();
            tracing::info!(route, client.fp = client, status, "mutating call settled");
        }
        Err(ProxyError::Abandoned) => {
            tracing::info!(
                route,
                client.fp = client,
                "mutating call withdrawn before sending"
            );
        }
        Err(error) => {
            let code = error.code();
            tracing::info!(route, client.fp = client, code, "mutating call settled");
        }
    }
}

/// Same call, same hash: the path and the route's identifying parameters
/// (all of them for a route the table does not know), read as the upstream
/// reads them: from the query, then from a form body (GET or POST alike),
/// first occurrence wins, spaces trimmed, empty values dropped and numbers
/// without leading zeros. Junk, order, repeats and spelling cannot make a
/// retry look new. A body that is not a form is hashed as it is.
pub fn request_hash(call: &OutboundCall, identifying: &[&str]) -> String {
    let form_body = call
        .content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let query = call.query.as_deref().unwrap_or("").as_bytes();
    let body: &[u8] = if form_body { &call.body } else { &[] };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query).chain(form_urlencoded::parse(body)) {
        let wanted = identifying.is_empty() || identifying.contains(&name.as_ref());
        if wanted && !pairs.iter().any(|(seen, _)| *seen == name) {
            pairs.push((name.into_owned(), canonical(&value)));
        }
    }
    pairs.retain(|(_, value)| !value.is_empty());
    pairs.sort();

    let mut hasher = Sha256::new();
    hasher.update(&call.path);
    for (name, value) in pairs {
        hasher.update([0]);
        hasher.update(name);
        hasher.update([1]);
        hasher.update(value);
    }
    hasher.update([0]);
    if !form_body {
        hasher.update(&call.body);
    }
    hex::encode(hasher.finalize())
}

/// A parameter value as the upstream compares it: trimmed, and a number
/// (the upstream parses `+1`, `001` and `1.50` as numbers) without its plus
/// sign, leading zeros or trailing fraction zeros.
fn canonical(value: &str) -> String {
    let value = value.trim();
    let unsigned = value.strip_prefix('+').unwrap_or(value);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return value.to_owned();
    }
    let whole = match whole.trim_start_matches('0') {
        "" => "0",
        whole => whole,
    };
    match fraction.trim_end_matches('0') {
        "" => whole.to_owned(),
        fraction => format!("{whole}.{fraction}"),
    }
}

/// `data.balance` of a successful balance answer.
pub fn balance_of(answer: &Answer) -> Option<i64> {
    if !answer.is_success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    json.pointer("/data/balance")?.as_f64().map(|b| b as i64)
}

/// Fingerprint (hex) of the key a call carries; `-` for none.
fn key_fingerprint(call: &OutboundCall) -> String {
    let key = call.api_key.as_ref();
    key.map_or_else(|| "-".into(), |k| k.fingerprint().to_hex())
}

fn stored_from(answer: &Answer) -> StoredAnswer {
    StoredAnswer {
        status: answer.status.as_u16(),
        content_type: answer
            .content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: answer.body.to_vec(),
    }
}

fn answer_from(stored: StoredAnswer) -> Answer {
    Answer {
        status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
        content_type: stored
            .content_type
            .and_then(|v| HeaderValue::from_str(&v).ok()),
        body: Bytes::from(stored.body),
        queue_wait: Duration::ZERO,
    }
}

fn store_failure(error: crate::store::StoreError) -> Arc<ProxyError> {
    tracing::error!(%error, "store failed; refusing the mutating call");
    Arc::new(ProxyError::StoreUnavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn call(query: &str) -> OutboundCall {
        OutboundCall {
            method: Method::GET,
            path: "/v2/orders".into(),
            query: Some(query.into()),
            api_key: None,
            accept: None,
            content_type: None,
            body: Bytes::new(),
        }
    }

    const ORDER: &[&str] = &["number_id", "provider_id", "operator_id"];

    #[test]
    fn parameter_order_does_not_change_the_hash_but_values_do() {
        let a = request_hash(&call("number_id=1&provider_id=2&operator_id=1"), ORDER);
        let b = request_hash(&call("operator_id=1&provider_id=2&number_id=1"), ORDER);
        let c = request_hash(&call("number_id=2&provider_id=2&operator_id=1"), ORDER);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_form_body_counts_like_the_query_whatever_its_order() {
        let mut posted = call("");
        posted.query = None;
        posted.content_type = Some(HeaderValue::from_static(
            "application/x-www-form-urlencoded",
        ));
        posted.body = Bytes::from_static(b"target=0812&id=D1&ts=1");
        let mut reordered = posted.clone();
        reordered.body = Bytes::from_static(b"id=D1&target=0812&ts=2");
        let fields = &["id", "target"];
        assert_eq!(
            request_hash(&posted, fields),
            request_hash(&reordered, fields)
        );
        let as_query = call("id=D1&target=0812");
        assert_eq!(
            request_hash(&posted, fields),
            request_hash(&as_query, fields)
        );
    }

    #[test]
    fn numbers_are_compared_as_the_upstream_parses_them() {
        for (spelling, canonical_form) in [
            ("+340018", "340018"),
            ("007", "7"),
            ("0", "0"),
            ("000", "0"),
            ("50000.00", "50000"),
            ("1.50", "1.5"),
            (".5", "0.5"),
            ("+", "+"),
            ("1.2.3", "1.2.3"),
            ("-1", "-1"),
            ("qris", "qris"),
            ("", ""),
        ] {
            assert_eq!(canonical(spelling), canonical_form, "{spelling}");
        }
    }

    #[test]
    fn junk_repeats_and_spaces_do_not_make_a_call_look_new() {
        let plain = request_hash(&call("number_id=1&provider_id=2&operator_id=1"), ORDER);
        for variant in [
            "number_id=1&provider_id=2&operator_id=1&_=1733",
            "number_id=1&provider_id=2&operator_id=1&operator_id=1",
            "number_id=1&provider_id=2&operator_id=+1",
            "number_id=01&provider_id=2&operator_id=1",
            "number_id=1&provider_id=2&operator_id=1&service_id=",
            "number_id=%2B1&provider_id=2&operator_id=1",
            "number_id=1&provider_id=2.00&operator_id=%2B001",
        ] {
            assert_eq!(request_hash(&call(variant), ORDER), plain, "{variant}");
        }
    }
}
