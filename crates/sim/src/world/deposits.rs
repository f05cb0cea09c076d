//! Deposits: QRIS (or USDT) payment requests that credit the balance once paid.
//!
//! v1 and v2 create into one store and read the same deposits, each in its own shape. At most
//! three may be pending per account. A deposit ends `success` (paid through the control call,
//! crediting `diterima`), `cancel` (`/v1/deposit/cancel`) or `expired` after `deposit_lifetime`.

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{World, fake};
use crate::clock::{jakarta_compact, jakarta_datetime};
use crate::error::{ApiError, ApiResult};

/// Payment methods `payment_id` accepts.
const METHODS: &[&str] = &[
    "qris",
    "usdt-bep-20",
    "usdt-trc-20",
    "usdt-polygon",
    "usdt-erc-20",
];

/// Most pending deposits one account may have.
const MAX_PENDING: usize = 3;

/// Smallest and largest deposit, in rupiah.
const AMOUNT_RANGE: std::ops::RangeInclusive<i64> = 1_000..=10_000_000;

/// One deposit.
#[derive(Debug, Clone)]
pub(crate) struct Deposit {
    id: String,
    owner: usize,
    method: &'static str,
    amount: i64,
    fee: i64,
    created: Instant,
    state: DepositState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DepositState {
    Pending,
    Success,
    Cancel,
    Expired,
}

/// Which API version's shape to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DepositShape {
    V1,
    V2,
}

impl World {
    /// Creates a pending deposit of `amount` rupiah paid with `payment_id`.
    pub(crate) fn create_deposit(
        &mut self,
        owner: usize,
        amount: i64,
        payment_id: &str,
        shape: DepositShape,
        now: Instant,
    ) -> ApiResult {
        let method = METHODS
            .iter()
            .copied()
            .find(|m| m.eq_ignore_ascii_case(payment_id))
            .ok_or_else(|| ApiError::refused("Invalid payment_id"))?;
        if !AMOUNT_RANGE.contains(&amount) {
            return Err(ApiError::refused(
                "amount must be between 1000 and 10000000",
            ));
        }
        let pending = self
            .deposits
            .iter()
            .filter(|d| d.owner == owner && d.is_pending())
            .count();
        if pending >= MAX_PENDING {
            return Err(ApiError::refused(
                "Maximum 3 pending deposits reached, finish or cancel one first",
            ));
        }

        self.ids.deposits += 1;
        let stem = jakarta_compact(self.clock.wall_ms(now));
        let deposit = Deposit {
            id: format!("RO{stem}{:04}", self.ids.deposits % 10_000),
            owner,
            method,
            amount,
            fee: fee_for(method, amount),
            created: now,
            state: DepositState::Pending,
        };
        self.created.deposits += 1;
        tracing::debug!(deposit_id = %deposit.id, amount, "deposit created");
        let view = self.deposit_view(&deposit, shape, true);
        self.deposits.push(deposit);
        Ok(view)
    }

    /// `get_status` data for a deposit of `owner`, in the asked shape.
    pub(crate) fn deposit_status(&self, owner: usize, id: &str, shape: DepositShape) -> ApiResult {
        let index = self.deposit_index(Some(owner), id)?;
        Ok(self.deposit_view(&self.deposits[index], shape, false))
    }

    /// `/v1/deposit/cancel`: cancels a pending deposit of `owner`.
    pub(crate) fn cancel_deposit(&mut self, owner: usize, id: &str) -> ApiResult {
        let index = self.deposit_index(Some(owner), id)?;
        let deposit = &mut self.deposits[index];
        if !deposit.is_pending() {
            return Err(ApiError::refused("Deposit is no longer pending"));
        }
        deposit.state = DepositState::Cancel;
        Ok(json!({ "id": deposit.id, "status": deposit.state.name() }))
    }

    /// Marks a pending deposit paid (control call) and credits `diterima` to its owner.
    pub(crate) fn pay_deposit(&mut self, id: &str) -> ApiResult {
        let index = self.deposit_index(None, id)?;
        let deposit = &mut self.deposits[index];
        if !deposit.is_pending() {
            return Err(ApiError::refused("Deposit is no longer pending"));
        }
        deposit.state = DepositState::Success;
        let (owner, credited) = (deposit.owner, deposit.amount);
        self.accounts[owner].credit(credited);
        Ok(self.deposit_view(&self.deposits[index], DepositShape::V2, false))
    }

    /// Expires pending deposits older than `deposit_lifetime`.
    pub(super) fn advance_deposits(&mut self, now: Instant) {
        let lifetime = self.config.deposit_lifetime;
        for deposit in self.deposits.iter_mut().filter(|d| d.is_pending()) {
            if now >= deposit.created + lifetime {
                deposit.state = DepositState::Expired;
            }
        }
    }

    fn deposit_index(&self, owner: Option<usize>, id: &str) -> Result<usize, ApiError> {
        self.deposits
            .iter()
            .position(|d| d.id == id && owner.is_none_or(|k| k == d.owner))
            .ok_or(ApiError::NotFound("Deposit"))
    }

    fn deposit_view(&self, deposit: &Deposit, shape: DepositShape, created: bool) -> Value {
        match shape {
            DepositShape::V1 => self.v1_view(deposit, created),
            DepositShape::V2 => self.v2_view(deposit),
        }
    }

    fn v1_view(&self, deposit: &Deposit, created: bool) -> Value {
        let expired = self
            .clock
            .wall_ms(deposit.created + self.config.deposit_lifetime);
        let mut view = json!({
            "id": deposit.id,
            "amount": deposit.amount,
            "currency": {
                "total": deposit.total(),
                "fee": deposit.fee,
                "diterima": deposit.amount,
            },
            "expired": expired,
        });
        if created {
            view["qr"] = json!(fake::qr_data_url(&deposit.id));
        } else {
            view["status"] = json!(deposit.state.name());
        }
        view
    }

    fn v2_view(&self, deposit: &Deposit) -> Value {
        let created_ms = self.clock.wall_ms(deposit.created);
        let expired_ms = self
            .clock
            .wall_ms(deposit.created + self.config.deposit_lifetime);
        let total = deposit.total();
        json!({
            "id": deposit.id,
            "status": deposit.state.name(),
            "method": deposit.method,
            "total": total,
            "fee": deposit.fee,
            "diterima": deposit.amount,
            "currency": {
                "type": "IDR",
                "total": total,
                "fee": deposit.fee,
                "diterima": deposit.amount,
            },
            "qr_string": fake::qris_payload(&deposit.id, total),
            "qr_image": format!("https://sim.invalid/qr/{}.png", deposit.id),
            "created_at": jakarta_datetime(created_ms),
            "expired_at": jakarta_datetime(expired_ms),
            "created_at_ts": created_ms,
            "expired_at_ts": expired_ms,
        })
    }
}

impl Deposit {
    fn is_pending(&self) -> bool {
        self.state == DepositState::Pending
    }

    fn total(&self) -> i64 {
        self.amount + self.fee
    }
}

impl DepositState {
    fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Success => "success",
            Self::Cancel => "cancel",
            Self::Expired => "expired",
        }
    }
}

/// QRIS costs 0.7 % (rounded up); USDT networks a flat 2,000.
fn fee_for(method: &str, amount: i64) -> i64 {
    if method == "qris" {
        (amount * 7 + 999) / 1000
    } else {
        2_000
    }
}
