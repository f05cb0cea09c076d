//! Accounts the simulator accepts: key, balance and the profile `/v1/user/balance` shows.
//!
//! Balances are whole rupiah and never go below zero: every debit is checked first.

use serde_json::{Value, json};

use crate::clock::rupiah;
use crate::config::AccountSeed;
use crate::error::ApiError;

/// One account.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) key: String,
    pub(crate) username: String,
    pub(crate) balance: i64,
}

impl Account {
    /// An account as seeded by the configuration.
    pub(crate) fn from_seed(seed: &AccountSeed) -> Self {
        Self {
            key: seed.key.clone(),
            username: seed.username.clone(),
            balance: seed.balance,
        }
    }

    /// Takes `amount` from the balance, or refuses when it is short.
    pub(crate) fn debit(&mut self, amount: i64) -> Result<(), ApiError> {
        if self.balance < amount {
            return Err(ApiError::refused("Insufficient balance"));
        }
        self.balance -= amount;
        Ok(())
    }

    /// Adds `amount` to the balance (refunds, paid deposits).
    pub(crate) fn credit(&mut self, amount: i64) {
        self.balance += amount;
    }

    /// `/v1/user/balance` data: the balance, `formated` (sic) and a fake profile.
    pub(crate) fn profile_view(&self) -> Value {
        json!({
            "balance": self.balance,
            "formated": rupiah(self.balance),
            "username": self.username,
            "first_name": "Demo",
            "last_name": self.username,
            "email": format!("{}@sim.invalid", self.username),
        })
    }
}
