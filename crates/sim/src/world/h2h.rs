//! h2h (PPOB) transactions: buying a product for a target number or account.
//!
//! A transaction is `processing` until `h2h_settle` has passed (or the control call settles
//! it), then `success` with a serial number, or `failed` with a refund. A target ending in
//! `0000` always fails, so bots can exercise their refund path.

use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{World, ppob};
use crate::clock::{jakarta_compact, jakarta_hhmm};
use crate::error::{ApiError, ApiResult};

/// One PPOB purchase.
#[derive(Debug, Clone)]
pub(crate) struct Transaction {
    id: String,
    owner: usize,
    product: ppob::Product,
    target: String,
    created: Instant,
    state: TransactionState,
    finished: Option<Instant>,
    serial: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransactionState {
    Processing,
    Success,
    Failed,
}

impl World {
    /// Buys product `code` for `target`, debiting its price.
    pub(crate) fn create_transaction(
        &mut self,
        owner: usize,
        code: &str,
        target: &str,
        now: Instant,
    ) -> ApiResult {
        let product =
            ppob::Product::find(code).ok_or_else(|| ApiError::refused("Product not found"))?;
        self.accounts[owner].debit(product.price)?;

        self.ids.transactions += 1;
        let day = &jakarta_compact(self.clock.wall_ms(now))[..8];
        let transaction = Transaction {
            id: format!(
                "H2H{day}{:08}",
                self.ids.transaction_base + self.ids.transactions
            ),
            owner,
            product,
            target: target.to_string(),
            created: now,
            state: TransactionState::Processing,
            finished: None,
            serial: String::new(),
        };
        self.created.transactions += 1;
        let price = product.price;
        tracing::debug!(transaksi_id = %transaction.id, price, "transaction created");
        let view = json!({
            "id": transaction.id,
            "status": "processing",
            "created_at": self.clock.wall_ms(now),
            "product": product.summary(),
            "tujuan": transaction.target,
            "sisa_balance": self.accounts[owner].balance,
            "message": "Memproses pesanan...",
        });
        self.transactions.push(transaction);
        Ok(view)
    }

    /// `/v1/h2h/transaksi/status` data for a transaction of `owner`.
    pub(crate) fn transaction_status(&self, owner: usize, id: &str) -> ApiResult {
        let index = self.transaction_index(Some(owner), id)?;
        Ok(self.transaction_view(&self.transactions[index]))
    }

    /// Settles a processing transaction now (control call).
    pub(crate) fn settle_transaction(
        &mut self,
        id: &str,
        success: bool,
        now: Instant,
    ) -> ApiResult {
        let index = self.transaction_index(None, id)?;
        if self.transactions[index].state != TransactionState::Processing {
            return Err(ApiError::refused("Transaction is already final"));
        }
        self.settle(index, success, now);
        Ok(self.transaction_view(&self.transactions[index]))
    }

    /// Settles every transaction whose processing time has passed.
    pub(super) fn advance_transactions(&mut self, now: Instant) {
        let settle_after = self.config.h2h_settle;
        for index in 0..self.transactions.len() {
            let transaction = &self.transactions[index];
            let due = transaction.created + settle_after;
            if transaction.state == TransactionState::Processing && now >= due {
                let success = !transaction.target.ends_with("0000");
                self.settle(index, success, due);
            }
        }
    }

    fn settle(&mut self, index: usize, success: bool, at: Instant) {
        let serial = format!(
            "SIM{:015}",
            self.rng.random_range(0..1_000_000_000_000_000u64)
        );
        let transaction = &mut self.transactions[index];
        transaction.finished = Some(at);
        if success {
            transaction.state = TransactionState::Success;
            transaction.serial = serial;
        } else {
            transaction.state = TransactionState::Failed;
            let (owner, price) = (transaction.owner, transaction.product.price);
            self.accounts[owner].credit(price);
        }
    }

    fn transaction_index(&self, owner: Option<usize>, id: &str) -> Result<usize, ApiError> {
        self.transactions
            .iter()
            .position(|t| t.id == id && owner.is_none_or(|k| k == t.owner))
            .ok_or(ApiError::NotFound("Transaction"))
    }

    fn transaction_view(&self, transaction: &Transaction) -> Value {
        let product = &transaction.product;
        let finished_ms = transaction.finished.map(|at| self.clock.wall_ms(at));
        let provider_time = finished_ms.unwrap_or(self.clock.wall_ms(transaction.created));
        let (status, provider_status) = match transaction.state {
            TransactionState::Processing => ("processing", "pending"),
            TransactionState::Success => ("success", "sukses"),
            TransactionState::Failed => ("failed", "gagal"),
        };
        let holder = ppob::holder_name(self.config.seed, &transaction.target);
        json!({
            "id": transaction.id,
            "status": status,
            "created_at": self.clock.wall_ms(transaction.created),
            "finish_at": finished_ms,
            "tujuan": transaction.target,
            "refund": transaction.state == TransactionState::Failed,
            "price": product.price,
            "product": product.summary(),
            "tujuan_info": {
                "available": true,
                "name": holder,
                "nominal": product.nominal(),
            },
            "response": {
                "available": transaction.state != TransactionState::Processing,
                "id": transaction.id,
                "product": product.note,
                "code": product.code,
                "tujuan": transaction.target,
                "time": jakarta_hhmm(provider_time),
                "status": provider_status,
                "sn": transaction.serial,
            },
        })
    }
}
