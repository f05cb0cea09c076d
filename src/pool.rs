//! Who is calling, and which upstream account serves the call.
//!
//! A caller is either a configured client (its gateway key in `x-apikey`,
//! known by hash) with a pool of accounts whose keys the gateway holds, or,
//! in pass-through mode, anyone with a RumahOTP key of their own. Account
//! keys are read from files or the environment at start-up and never leave
//! this module except as the `x-apikey` of an upstream call.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use http::HeaderValue;

use crate::auth::{ApiKey, Fingerprint};
use crate::config::{Config, ConfigError};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::upstream::pacer::{Priority, Refusal, Turn};
use crate::upstream::{EgressId, Upstream};

/// An index into the gateway's accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountId(pub usize);

const UNKNOWN_BALANCE: i64 = i64::MIN;

/// A RumahOTP account whose key the gateway holds.
pub struct Account {
    /// Name from config.
    pub name: String,
    key: ApiKey,
    /// The egress its calls leave by.
    pub egress: EgressId,
    balance: AtomicI64,
    /// Until when the account is out after the upstream rejected its key.
    rejected_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Account {
    /// The key, for the `x-apikey` of an upstream call.
    pub fn key(&self) -> &ApiKey {
        &self.key
    }

    /// Last balance learnt, if any.
    pub fn balance(&self) -> Option<i64> {
        let balance = self.balance.load(Ordering::Relaxed);
        (balance != UNKNOWN_BALANCE).then_some(balance)
    }

    /// Whether the upstream rejected the key within `auth.rejected_key_ttl_seconds`.
    pub fn is_rejected(&self) -> bool {
        let until = self.rejected_until.lock().expect("rejected lock");
        until.is_some_and(|until| tokio::time::Instant::now() < until)
    }
}

/// A bot with a gateway key.
pub struct Client {
    /// Name from config.
    pub name: String,
    /// Accounts its calls may use.
    pub pool: Vec<AccountId>,
    /// Calls per turn in the upstream queue against other callers.
    pub queue_weight: u32,
    /// Queue flow of this client, from its name.
    flow: u64,
    /// Its own request rate, when configured (else `[limits]` applies).
    pub rate: Option<Arc<governor::DefaultDirectRateLimiter>>,
}

impl Client {
    /// Its turn in the upstream queue.
    pub fn turn(&self) -> Turn {
        Turn {
            flow: self.flow,
            weight: self.queue_weight,
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client's own RumahOTP key, forwarded as is.
    PassThrough(ApiKey),
    /// A configured client.
    Pooled(Arc<Client>),
    /// No key (key-less routes only).
    Anonymous,
}

impl Caller {
    /// Stable identity for ownership records, idempotency and rate limits.
    pub fn identity(&self) -> String {
        match self {
            Caller::PassThrough(key) => format!("key:{}", key.fingerprint().to_hex()),
            Caller::Pooled(client) => format!("client:{}", client.name),
            Caller::Anonymous => "anonymous".into(),
        }
    }

    /// Queue turn: calls of one caller take turns with other callers' calls.
    pub fn turn(&self) -> Turn {
        let flow = match self {
            Caller::Pooled(client) => return client.turn(),
            // A key's flow is read off its SHA-256: no string to build.
            Caller::PassThrough(key) => key.fingerprint().flow(),
            Caller::Anonymous => flow_of("anonymous"),
        };
        Turn { flow, weight: 1 }
    }

    /// Who the per-client gateway rate applies to: the key, the client, or
    /// (with no key) the IP address.
    pub fn rate_key(&self, peer: std::net::IpAddr) -> RateKey {
        match self {
            Caller::PassThrough(key) => RateKey::Key(key.fingerprint()),
            Caller::Pooled(client) => RateKey::Client(client.flow),
            Caller::Anonymous => RateKey::Ip(peer),
        }
    }

    /// What logs and metrics say of this caller, built without a string.
    pub fn tag(&self) -> CallerTag {
        match self {
            Caller::PassThrough(key) => CallerTag::Key(key.fingerprint()),
            Caller::Pooled(client) => CallerTag::Client(Arc::clone(client)),
            Caller::Anonymous => CallerTag::Anonymous,
        }
    }
}

/// A caller as logs and metrics name it; displayed as a client's name or the
/// key's fingerprint, formatted only when a log line is written.
#[derive(Debug, Clone)]
pub enum CallerTag {
    /// A pass-through key.
    Key(Fingerprint),
    /// A configured client.
    Client(Arc<Client>),
    /// No key.
    Anonymous,
}

impl CallerTag {
    /// Bounded metrics label: a client's name, or `pass_through`/`anonymous`.
    pub fn metrics_label(&self) -> &str {
        match self {
            CallerTag::Key(_) => "pass_through",
            CallerTag::Client(client) => &client.name,
            CallerTag::Anonymous => "anonymous",
        }
    }
}

impl std::fmt::Display for CallerTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallerTag::Key(fingerprint) => fingerprint.fmt(f),
            CallerTag::Client(client) => f.write_str(&client.name),
            CallerTag::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// Key of the per-client gateway rate limiter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// A pass-through key.
    Key(Fingerprint),
    /// A configured client (its flow).
    Client(u64),
    /// A caller without a key.
    Ip(std::net::IpAddr),
}

/// Accounts and clients.
pub struct Pool {
    metrics: Arc<Metrics>,
    accounts: Vec<Account>,
    clients: HashMap<Fingerprint, Arc<Client>>,
    pass_through: bool,
    rejected_for: std::time::Duration,
}

impl Pool {
    /// Reads every account's key (from its `key_file`, else from
    /// `OTPGATE_ACCOUNT_<NAME>_KEY`) and indexes clients by key hash.
    pub fn load(
        config: &Config,
        upstream: &Upstream,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let mut accounts = Vec::new();
        for account in &config.accounts {
            let egress_name = account.egress.as_deref().unwrap_or("default");
            let egress = upstream
                .egress_id(egress_name)
                .expect("validated egress name");
            let key = read_key(&account.name, account.key_file.as_deref())?;
            tracing::info!(account = %account.name, key.fp = %key.fingerprint(), egress = egress_name, "account loaded");
            accounts.push(Account {
                name: account.name.clone(),
                key,
                egress,
                balance: AtomicI64::new(UNKNOWN_BALANCE),
                rejected_until: std::sync::Mutex::new(None),
            });
        }
        let clients = config
            .clients
            .iter()
            .map(|client| {
                let mut digest = [0; 32];
                hex::decode_to_slice(&client.key_sha256, &mut digest).expect("validated hex");
                let pool = client
                    .pool
                    .iter()
                    .map(|name| {
                        let at = accounts.iter().position(|a| &a.name == name);
                        AccountId(at.expect("validated pool"))
                    })
                    .collect();
                let rate = client.requests_per_second.map(|rate| {
                    let rate = std::num::NonZeroU32::new(rate.max(1)).expect("at least 1");
                    Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
                        rate,
                    )))
                });
                let client = Client {
                    name: client.name.clone(),
                    pool,
                    queue_weight: client.queue_weight.unwrap_or(1).max(1),
                    flow: flow_of(&format!("client:{}", client.name)),
                    rate,
                };
                (Fingerprint::from_digest(digest), Arc::new(client))
            })
            .collect();
        for account in &accounts {
            metrics
                .account_rejected
                .with_label_values(&[&account.name])
                .set(0.0);
        }
        let pass_through = config.auth.pass_through;
        let rejected_for = crate::config::secs(config.auth.rejected_key_ttl_seconds);
        Ok(Self {
            metrics,
            accounts,
            clients,
            pass_through,
            rejected_for,
        })
    }

    /// Identifies the caller from its `x-apikey`: a client's gateway key, else
    /// (in pass-through mode) a RumahOTP key of its own.
    pub fn identify(&self, key: Option<ApiKey>) -> Result<Caller, ProxyError> {
        let Some(key) = key else {
            return Ok(Caller::Anonymous);
        };
        if let Some(client) = self.clients.get(&key.fingerprint()) {
            return Ok(Caller::Pooled(Arc::clone(client)));
        }
        if self.pass_through {
            return Ok(Caller::PassThrough(key));
        }
        Err(ProxyError::UnknownGatewayKey)
    }

    /// Whether callers may use RumahOTP keys of their own.
    pub fn pass_through(&self) -> bool {
        self.pass_through
    }

    /// The account with this id.
    pub fn account(&self, id: AccountId) -> &Account {
        &self.accounts[id.0]
    }

    /// The account named `name`.
    pub fn account_id(&self, name: &str) -> Option<AccountId> {
        self.accounts
            .iter()
            .position(|a| a.name == name)
            .map(AccountId)
    }

    /// Picks the account of `client`'s pool for a new call: not rejected, not
    /// known to be out of balance when `buying`, on an open egress, with the
    /// earliest free slot; ties go to the higher known balance.
    pub fn choose(
        &self,
        client: &Client,
        upstream: &Upstream,
        priority: Priority,
        buying: bool,
    ) -> Result<AccountId, ProxyError> {
        let usable = client.pool.iter().copied().filter(|id| {
            let account = self.account(*id);
            let broke = buying && account.balance().is_some_and(|b| b <= 0);
            !(account.is_rejected() || broke)
        });
        let ranked = usable.filter_map(|id| {
            let account = self.account(id);
            let start = upstream
                .egress(account.egress)
                .pacer
                .predicted_start(priority, client.turn())?;
            Some((start, std::cmp::Reverse(account.balance().unwrap_or(0)), id))
        });
        if let Some((_, _, id)) = ranked.min_by_key(|(start, balance, _)| (*start, *balance)) {
            return Ok(id);
        }
        Err(self.why_none(client, upstream))
    }

    fn why_none(&self, client: &Client, upstream: &Upstream) -> ProxyError {
        let blocked = client
            .pool
            .iter()
            .filter_map(|id| {
                upstream
                    .egress(self.account(*id).egress)
                    .pacer
                    .blocked_until()
            })
            .min();
        match blocked {
            Some(until) => {
                let retry_after = until.saturating_duration_since(tokio::time::Instant::now());
                ProxyError::Refused(Refusal::Blocked { retry_after })
            }
            None => ProxyError::NoUsableAccount,
        }
    }

    /// Records a balance the upstream reported for an account.
    pub fn note_balance(&self, id: AccountId, balance: i64) {
        let account = self.account(id);
        account.balance.store(balance, Ordering::Relaxed);
        let gauge = self
            .metrics
            .account_balance
            .with_label_values(&[&account.name]);
        gauge.set(balance as f64);
    }

    /// Counts an upstream answer for an account; any answer but a 401
    /// means its key is accepted again.
    pub fn note_answer(&self, id: AccountId, status: http::StatusCode) {
        let account = self.account(id);
        let name = &account.name;
        self.metrics
            .account_answers
            .with_label_values(&[name, status.as_str()])
            .inc();
        if status != http::StatusCode::UNAUTHORIZED
            && account
                .rejected_until
                .lock()
                .expect("rejected lock")
                .take()
                .is_some()
        {
            self.metrics
                .account_rejected
                .with_label_values(&[name])
                .set(0.0);
            tracing::info!(account = %name, key.fp = %account.key.fingerprint(),
                "the upstream accepts this account's key again; it is back in its pools");
        }
    }

    /// Takes out the account whose key has `fingerprint`, if the gateway
    /// holds it (a 401 to a fetch others may have joined).
    pub fn mark_rejected_key(&self, fingerprint: crate::auth::Fingerprint) {
        let held = self
            .accounts
            .iter()
            .position(|a| a.key.fingerprint() == fingerprint);
        if let Some(at) = held {
            self.mark_rejected(AccountId(at));
        }
    }

    /// Takes an account out for `auth.rejected_key_ttl_seconds` after the
    /// upstream rejected its key; the first call after that tries it again.
    pub fn mark_rejected(&self, id: AccountId) {
        let account = self.account(id);
        self.metrics
            .account_rejected
            .with_label_values(&[&account.name])
            .set(1.0);
        let until = tokio::time::Instant::now() + self.rejected_for;
        let earlier = account
            .rejected_until
            .lock()
            .expect("rejected lock")
            .replace(until);
        if earlier.is_none() {
            tracing::error!(account = %account.name, key.fp = %account.key.fingerprint(),
                retry_in_s = self.rejected_for.as_secs(),
                "the upstream rejected this account's key; it is out of every pool until then");
        }
    }
}

/// Queue flow of an identity; stable within one process.
pub fn flow_of(identity: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    identity.hash(&mut hasher);
    hasher.finish()
}

/// The environment variable that holds an account's key.
pub fn key_variable(account: &str) -> String {
    let name: String = account
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("OTPGATE_ACCOUNT_{name}_KEY")
}

/// Reads every account's key and forgets it: start-up and `check-config`
/// fail on a missing or unreadable key, naming the account.
pub fn check_account_keys(config: &Config) -> Result<usize, ConfigError> {
    for account in &config.accounts {
        read_key(&account.name, account.key_file.as_deref())?;
    }
    Ok(config.accounts.len())
}

fn read_key(account: &str, key_file: Option<&str>) -> Result<ApiKey, ConfigError> {
    let entry = |reason: String| ConfigError::Entry {
        table: "accounts",
        name: account.to_owned(),
        reason,
    };
    let raw = match key_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| entry(format!("cannot read key_file {path:?}: {e}")))?,
        None => {
            let variable = key_variable(account);
            std::env::var(&variable)
                .map_err(|_| entry(format!("no key_file and {variable} is not set")))?
        }
    };
    let value = HeaderValue::from_str(raw.trim())
        .map_err(|_| entry("the key is not a valid header value".into()))?;
    ApiKey::from_header(Some(&value)).ok_or_else(|| entry("the key is empty".into()))
}
