//! Serving each class of route once the caller is known: which key and
//! egress a call uses (its target), the cache, and the money guards.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderValue, Method, Response};
use http_body_util::Full;
use tokio::time::Instant;

use super::request::{answer_response, query_value};
use super::{Gateway, Record, Served};
use crate::auth::{ApiKey, Verdict};
use crate::cache::{CacheKey, CacheResult, Scope, Stored};
use crate::error::ProxyError;
use crate::headers::X_CACHE;
use crate::once::{AfterSettled, Delivery, MutatingCall};
use crate::pool::{AccountId, Caller, Client};
use crate::routes::{self, Route, RouteClass};
use crate::store::Affinity;
use crate::upstream::pacer::{Priority, Turn};
use crate::upstream::{Answer, CallMeta, EgressId, OutboundCall};

/// The upstream identity a call uses: the key it carries, the egress it
/// leaves by, and the account when the gateway holds the key.
#[derive(Debug, Clone)]
pub(super) struct Target {
    key: Option<ApiKey>,
    egress: EgressId,
    account: Option<AccountId>,
    turn: Turn,
}

impl Target {
    /// Cache scope of per-key answers: the fingerprint of the key sent.
    fn scope(&self) -> String {
        self.key
            .as_ref()
            .map_or_else(|| "-".into(), |k| k.fingerprint().to_hex())
    }

    fn apply(&self, mut call: OutboundCall) -> OutboundCall {
        call.api_key = self.key.clone();
        call
    }

    fn meta(&self, route: &'static Route, priority: Priority, deadline: Instant) -> CallMeta {
        CallMeta {
            route,
            priority,
            deadline,
            egress: self.egress,
            turn: self.turn,
        }
    }
}

impl Gateway {
    /// A caller's own key, on the first egress (pass-through mode).
    fn own_target(&self, key: &ApiKey, turn: Turn) -> Target {
        let key = Some(key.clone());
        Target {
            key,
            egress: EgressId(0),
            account: None,
            turn,
        }
    }

    /// No key at all, on whichever egress is free first.
    fn keyless_target(&self, priority: Priority, turn: Turn) -> Target {
        let all = (0..self.upstream.egresses().len()).map(EgressId);
        let egress = self
            .upstream
            .soonest(all, priority, turn)
            .unwrap_or(EgressId(0));
        Target {
            key: None,
            egress,
            account: None,
            turn,
        }
    }

    fn account_target(&self, id: AccountId, turn: Turn) -> Target {
        let account = self.pool.account(id);
        let key = Some(account.key().clone());
        Target {
            key,
            egress: account.egress,
            account: Some(id),
            turn,
        }
    }

    /// Where a call that names no id goes.
    pub(super) fn target_for_new(
        &self,
        caller: &Caller,
        route: &Route,
        priority: Priority,
    ) -> Result<Target, ProxyError> {
        let turn = caller.turn();
        match caller {
            Caller::PassThrough(key) if route.keyed => Ok(self.own_target(key, turn)),
            Caller::Pooled(client) if route.keyed => {
                let buying = route.class == RouteClass::Mutating;
                let id = self.pool.choose(client, &self.upstream, priority, buying)?;
                Ok(self.account_target(id, turn))
            }
            Caller::Anonymous if route.keyed => Err(ProxyError::MissingKey),
            _ => Ok(self.keyless_target(priority, turn)),
        }
    }

    /// Where a lookup or an unknown path goes: a client's own key as it came;
    /// no key on lookups (they need none). Unknown paths are refused to pooled
    /// clients, and to key-less callers when pass-through is off.
    pub(super) fn target_for_forward(
        &self,
        caller: &Caller,
        route: &Route,
    ) -> Result<Target, ProxyError> {
        let turn = caller.turn();
        match caller {
            Caller::PassThrough(key) => Ok(self.own_target(key, turn)),
            // An endpoint the table does not know might read or change ids
            // the gateway cannot check ownership of: not with an account key.
            Caller::Pooled(_) if route.class == RouteClass::Unknown => Err(ProxyError::NotFound),
            Caller::Anonymous
                if route.class == RouteClass::Unknown && !self.pool.pass_through() =>
            {
                Err(ProxyError::MissingKey)
            }
            _ => Ok(self.keyless_target(Priority::Interactive, turn)),
        }
    }

    /// One paced call, nothing cached or coalesced.
    pub(super) async fn send_once(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        target: &Target,
        deadline: Instant,
    ) -> Result<Answer, ProxyError> {
        let meta = target.meta(route, Priority::Interactive, deadline);
        let answer = self
            .upstream
            .call(target.apply(call), meta, std::future::pending())
            .await?;
        // A route that needs no key says nothing about the key sent with it.
        if route.keyed {
            self.learn(target, &answer);
        }
        Ok(answer)
    }

    /// Where a call about an existing id goes: back to the account that
    /// created it, and only for the caller that created it.
    pub(super) async fn target_for_id(
        &self,
        caller: &Caller,
        route: &Route,
        query: Option<&str>,
    ) -> Result<Target, ProxyError> {
        let client = match caller {
            Caller::PassThrough(key) => return Ok(self.own_target(key, caller.turn())),
            Caller::Anonymous => return Err(ProxyError::MissingKey),
            Caller::Pooled(client) => client,
        };
        let (param, kind) = route.id.expect("id routes name their parameter");
        let id = query_value(query, param).ok_or(ProxyError::IdNotFound)?;
        let affinity = self
            .store
            .affinity(kind.as_str(), &id)
            .await
            .map_err(|error| {
                tracing::error!(%error, "store read failed");
                ProxyError::StoreUnavailable
            })?;
        let owned = affinity.filter(|a| a.owner == caller.identity());
        let account = owned.and_then(|a| self.pool.account_id(&a.account));
        match account {
            Some(account) => Ok(self.account_target(account, caller.turn())),
            None => {
                tracing::debug!(client = %client.name, route = route.template, "id not owned");
                Err(ProxyError::IdNotFound)
            }
        }
    }

    /// Catalog: shared by every accepted key, fetched once per miss.
    pub(super) async fn serve_catalog(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        caller: &Caller,
        deadline: Instant,
        record: &mut Record,
    ) -> Served {
        let cache_key = CacheKey::new(Scope::Shared, route, call.query.as_deref());
        let target = match self.target_for_new(caller, route, Priority::Interactive) {
            Ok(target) => target,
            // No account of a pool can take a call now (rejected, blocked,
            // queues full): what the cache holds, at any age, needs none.
            Err(error) => {
                let Some(stored) = self.cache.held(&cache_key) else {
                    return Err(error.into());
                };
                let result = if stored.is_fresh() {
                    CacheResult::Hit
                } else {
                    CacheResult::Stale
                };
                return Ok(self.catalog_answer(route, &stored, result, record));
            }
        };
        let meta = target.meta(route, Priority::Interactive, deadline);
        let call = target.apply(call);
        let fetched = self
            .cache
            .get_or_fetch(cache_key, self.policy(route), call, meta)
            .await?;
        let (stored, result) = fetched;
        Ok(self.catalog_answer(route, &stored, result, record))
    }

    /// A catalog answer, from the cache or from whichever fetch it came.
    pub(super) fn catalog_answer(
        &self,
        route: &'static Route,
        stored: &Stored,
        result: CacheResult,
        record: &mut Record,
    ) -> Response<Full<Bytes>> {
        // The fetch may have been another caller's, with another key.
        if stored.answer.status == http::StatusCode::UNAUTHORIZED
            && let Some(fingerprint) = stored.fetched_with
        {
            self.pool.mark_rejected_key(fingerprint);
        }
        self.note_lookup(route, result, &stored.answer, record);
        answer_response(&stored.answer, Some((result, stored)))
    }

    /// Status and a single key's balance: reused briefly for that key only.
    pub(super) async fn serve_per_key(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        target: &Target,
        deadline: Instant,
        record: &mut Record,
    ) -> Served {
        let fetched = self.fetch_per_key(route, call, target, deadline, Priority::Interactive);
        let (stored, result) = fetched.await?;
        self.note_lookup(route, result, &stored.answer, record);
        Ok(answer_response(&stored.answer, Some((result, &stored))))
    }

    async fn fetch_per_key(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        target: &Target,
        deadline: Instant,
        priority: Priority,
    ) -> Result<(Arc<Stored>, CacheResult), Arc<ProxyError>> {
        let scope = target.scope();
        let cache_key = CacheKey::new(Scope::Key(&scope), route, call.query.as_deref());
        let meta = target.meta(route, priority, deadline);
        let policy = self.policy(route);
        let fetched = self
            .cache
            .get_or_fetch(cache_key, policy, target.apply(call), meta)
            .await?;
        if fetched.1 == CacheResult::Miss {
            self.learn(target, &fetched.0.answer);
        }
        if route.class == RouteClass::AccountRead {
            self.once.note_balance(&scope, &fetched.0.answer);
        }
        Ok(fetched)
    }

    /// A pooled client's balance: the sum over its pool, in the upstream's shape.
    pub(super) async fn serve_pool_balance(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        client: &Client,
        deadline: Instant,
        record: &mut Record,
    ) -> Served {
        let turn = client.turn();
        let reads = client.pool.iter().map(|id| {
            let target = self.account_target(*id, turn);
            let call = call.clone();
            async move {
                let read =
                    self.fetch_per_key(route, call, &target, deadline, Priority::Interactive);
                read.await
            }
        });
        let mut total = 0_i64;
        let mut result = CacheResult::Hit;
        let mut oldest = Instant::now();
        for read in join_all(reads).await {
            let (stored, lookup) = read?;
            let Some(balance) = crate::once::balance_of(&stored.answer) else {
                return Ok(answer_response(&stored.answer, None));
            };
            total += balance;
            oldest = oldest.min(stored.fetched_at);
            if lookup != CacheResult::Hit {
                result = lookup;
            }
        }
        record.cache = Some(result);
        let body = serde_json::json!({
            "success": true,
            "data": {
                "balance": total,
                "formated": otpgate_sim::rupiah(total),
                "username": client.name,
                "first_name": client.name,
                "last_name": "-",
                "email": "-",
            }
        });
        let mut response = crate::error::json_response(http::StatusCode::OK, body.to_string());
        let headers = response.headers_mut();
        headers.insert(X_CACHE.clone(), result.header_value());
        // The age of the oldest balance in the sum.
        headers.insert(http::header::AGE, oldest.elapsed().as_secs().into());
        Ok(response)
    }

    /// Buying, cancelling, depositing: sent at most once (see `once`), never
    /// cached; a success records who made the new id, and any settled call
    /// (answered or lost) makes the id's status and the key's balance stale,
    /// before anyone hears of it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn serve_mutating(
        self: &Arc<Self>,
        route: &'static Route,
        call: OutboundCall,
        caller: &Caller,
        target: Target,
        idempotency_key: Option<String>,
        deadline: Instant,
        record: &mut Record,
    ) -> Served {
        let query = call.query.clone();
        let gateway = Arc::clone(self);
        let (owner, settled_target) = (caller.identity(), target.clone());
        let after: AfterSettled = Box::new(move |answer: Option<Answer>| {
            Box::pin(async move {
                if let Some(answer) = answer.filter(Answer::is_success) {
                    gateway
                        .record_creation(route, &owner, &settled_target, &answer)
                        .await;
                }
                // Also after a lost answer: the balance the client is told to
                // check must not come from before the call.
                gateway.invalidate_after(route, &settled_target, query.as_deref());
            })
        });
        let mutating = MutatingCall {
            client: caller.identity(),
            idempotency_key,
            meta: target.meta(route, Priority::Mutating, deadline),
            call: target.apply(call),
        };

        let (answer, delivery) = self.once.run(mutating, after).await?;
        if delivery == Delivery::Sent {
            record.upstream = Some((answer.queue_wait, answer.status));
            self.learn(&target, &answer);
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

    /// Writes id → (owner, account) for a new order, deposit or transaction.
    async fn record_creation(&self, route: &Route, owner: &str, target: &Target, answer: &Answer) {
        let Some(kind) = route.creates else { return };
        let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let data = &json["data"];
        let Some(id) = data["order_id"].as_str().or_else(|| data["id"].as_str()) else {
            tracing::warn!(
                route = route.template,
                "created an id the gateway cannot read"
            );
            return;
        };
        let account = match target.account {
            Some(id) => self.pool.account(id).name.clone(),
            None => target.scope(),
        };
        let affinity = Affinity {
            owner: owner.to_owned(),
            account,
            last_status: data["status"].as_str().map(str::to_owned),
        };
        let ttl = crate::config::secs(self.config.store.affinity_ttl_seconds);
        if let Err(error) = self
            .store
            .put_affinity(kind.as_str(), id, affinity, ttl)
            .await
        {
            tracing::error!(%error, route = route.template, "could not record who made an id");
        }
    }

    /// Checks a pass-through key the gateway has not seen accepted, with one
    /// balance call, before it may read the shared catalog or queue anything
    /// else; the upstream's refusal is passed on as it came. The check runs
    /// at background priority, so unknown keys cannot crowd out buys.
    pub(super) async fn ensure_accepted(
        self: &Arc<Self>,
        key: &ApiKey,
        deadline: Instant,
    ) -> Result<Option<Response<Full<Bytes>>>, Arc<ProxyError>> {
        if self.verdicts.verdict(key) == Some(Verdict::Accepted) {
            return Ok(None);
        }
        let balance = routes::classify("/v1/user/balance").expect("balance is in the table");
        let call = OutboundCall {
            method: Method::GET,
            path: balance.template.to_owned(),
            query: None,
            api_key: None,
            accept: None,
            content_type: None,
            body: Bytes::new(),
        };
        let target = self.own_target(key, Caller::PassThrough(key.clone()).turn());
        let checked = self.fetch_per_key(balance, call, &target, deadline, Priority::Background);
        let (stored, _) = checked.await?;
        // A successful balance for this key shows the upstream took it, also
        // when the balance was reused (fetched a moment ago by another request
        // of this key, or stale during a block) and so taught no verdict.
        // Anything else is the upstream's refusal or failure: passed on.
        let answer = &stored.answer;
        let took_it = answer.status.is_success() && answer.is_success();
        if took_it || self.verdicts.verdict(key) == Some(Verdict::Accepted) {
            Ok(None)
        } else {
            Ok(Some(answer_response(answer, None)))
        }
    }

    fn invalidate_after(&self, route: &Route, target: &Target, query: Option<&str>) {
        let fingerprint = target.scope();
        let scope = Scope::Key(&fingerprint);
        if let (true, Some((param, kind))) = (route.invalidates.status, route.id) {
            for status in routes::status_routes(kind) {
                let (status_param, _) = status.id.expect("status routes name their id");
                let id = query_value(query, param).unwrap_or_default();
                let id_query = form_urlencoded::Serializer::new(String::new())
                    .append_pair(status_param, &id)
                    .finish();
                self.cache
                    .invalidate(&CacheKey::new(scope, status, Some(&id_query)));
            }
        }
        if route.invalidates.balance {
            let balance = routes::classify("/v1/user/balance").expect("balance is in the table");
            self.cache.invalidate(&CacheKey::new(scope, balance, None));
        }
    }

    /// What an upstream answer says about the key that made it: a client's
    /// own key is accepted or rejected; an account's key is taken out when
    /// rejected, and its balance is learnt.
    fn learn(&self, target: &Target, answer: &Answer) {
        match (target.account, &target.key) {
            (Some(account), _) => {
                self.pool.note_answer(account, answer.status);
                if answer.status == http::StatusCode::UNAUTHORIZED {
                    self.pool.mark_rejected(account);
                } else if let Some(balance) = crate::once::balance_of(answer) {
                    self.pool.note_balance(account, balance);
                } else if answer.status == http::StatusCode::BAD_REQUEST && mentions_balance(answer)
                {
                    self.pool.note_balance(account, 0);
                }
            }
            (None, Some(key)) => {
                self.verdicts.learn(key, answer.status, answer.is_success());
            }
            (None, None) => {}
        }
    }
}

fn mentions_balance(answer: &Answer) -> bool {
    let text = String::from_utf8_lossy(&answer.body).to_ascii_lowercase();
    text.contains("balance") || text.contains("saldo")
}
