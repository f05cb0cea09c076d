//! The simulated upstream's state: accounts, catalog, orders, deposits and transactions.
//!
//! The world is plain data behind one lock, driven by explicit instants: every entry point
//! first calls [`World::advance`] so time-based transitions (SMS arrival, expiry, settlement,
//! stock drift) are applied lazily and deterministically. It knows nothing about HTTP.

mod accounts;
mod catalog;
mod deposits;
mod fake;
mod h2h;
mod orders;
mod ppob;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::SimConfig;
use crate::error::ApiError;
use accounts::Account;
use catalog::Catalog;

pub(crate) use deposits::DepositShape;
pub(crate) use orders::{OrderAction, OrderRequest};
pub(crate) use ppob::{banks_view, check_view, games_view, is_bank, is_game, products_view};

/// How often provider stock drifts on its own.
const STOCK_DRIFT_EVERY: Duration = Duration::from_secs(60);

/// Counts of things created since the last reset.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Created {
    pub(crate) orders: u64,
    pub(crate) deposits: u64,
    pub(crate) transactions: u64,
}

/// Id counters and their seeded starting points.
#[derive(Debug, Clone, Copy, Default)]
struct IdCounters {
    order_base: u64,
    orders: u64,
    deposits: u64,
    transaction_base: u64,
    transactions: u64,
}

/// The whole simulated upstream state.
#[derive(Debug)]
pub(crate) struct World {
    config: SimConfig,
    clock: Clock,
    rng: StdRng,
    accounts: Vec<Account>,
    catalog: Catalog,
    orders: Vec<orders::Order>,
    deposits: Vec<deposits::Deposit>,
    transactions: Vec<h2h::Transaction>,
    ids: IdCounters,
    created: Created,
    next_drift: Instant,
}

impl World {
    /// A fresh world generated from `config.seed`.
    pub(crate) fn new(config: &SimConfig, clock: Clock, now: Instant) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let catalog = Catalog::generate(&mut rng);
        let ids = IdCounters {
            order_base: rng.random_range(4_000_000..5_000_000),
            transaction_base: rng.random_range(10_000_000..20_000_000),
            ..IdCounters::default()
        };
        Self {
            config: config.clone(),
            clock,
            rng,
            accounts: config.accounts.iter().map(Account::from_seed).collect(),
            catalog,
            orders: Vec::new(),
            deposits: Vec::new(),
            transactions: Vec::new(),
            ids,
            created: Created::default(),
            next_drift: now + STOCK_DRIFT_EVERY,
        }
    }

    /// Applies every time-based transition due by `now`.
    pub(crate) fn advance(&mut self, now: Instant) {
        self.advance_orders(now);
        self.advance_deposits(now);
        self.advance_transactions(now);
        while self.next_drift <= now {
            self.catalog.drift_stock(&mut self.rng);
            self.next_drift += STOCK_DRIFT_EVERY;
        }
    }

    /// The account index for an `x-apikey`, or the upstream's 401 refusal.
    pub(crate) fn authenticate(&self, key: Option<&str>) -> Result<usize, ApiError> {
        let key = key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::MissingKey)?;
        self.accounts
            .iter()
            .position(|a| a.key == key)
            .ok_or(ApiError::InvalidKey)
    }

    /// `/v1/user/balance` data for an account.
    pub(crate) fn profile(&self, owner: usize) -> Value {
        self.accounts[owner].profile_view()
    }

    /// The balance of the account with this key.
    pub(crate) fn balance(&self, key: &str) -> Option<i64> {
        self.accounts
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.balance)
    }

    /// `/__sim/accounts` data.
    pub(crate) fn accounts_view(&self) -> Value {
        let list: Vec<Value> = self
            .accounts
            .iter()
            .map(|a| json!({ "key": a.key, "username": a.username, "balance": a.balance }))
            .collect();
        json!({ "accounts": list })
    }

    /// What was created since the last reset.
    pub(crate) fn created(&self) -> Created {
        self.created
    }

    /// The number catalog.
    pub(crate) fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

impl World {
    /// The seed the world was generated from (fake names in checks derive from it).
    pub(crate) fn seed(&self) -> u64 {
        self.config.seed
    }
}
