//! Virtual-number orders: buying a number, the SMS arriving, and the ways an order ends.
//!
//! Lifecycle (`/v1/orders/get_status`): `waiting` → `received` after `sms_delay`; `done` →
//! `completed`; `cancel` → `canceled` with refund (refused before `cancel_lock` and once an OTP
//! arrived); `resend` → `waiting` until the next SMS; without OTP `expiring` during the last
//! `expiring_window`, then `expired` with refund. An order that got an OTP and reaches its end of
//! life becomes `completed` without refund. Orders are visible only to the key that created them.

use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{World, fake};
use crate::clock::rupiah;
use crate::error::{ApiError, ApiResult};

/// One bought number.
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) id: String,
    owner: usize,
    phone: String,
    service: &'static str,
    country: &'static str,
    operator: &'static str,
    price: i64,
    created: Instant,
    state: OrderState,
    sms_due: Option<Instant>,
    otp: Option<(String, String)>,
    ever_received: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderState {
    Waiting,
    Received,
    Completed,
    Canceled,
    Expired,
}

/// What `/v2/orders` asks for.
#[derive(Debug, Clone)]
pub(crate) struct OrderRequest<'a> {
    pub(crate) number_id: u64,
    pub(crate) provider_id: &'a str,
    pub(crate) operator_id: u32,
}

/// The `set_status` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderAction {
    Cancel,
    Done,
    Resend,
}

impl World {
    /// Buys a number: checks the offer, stock and balance, then debits and takes one from stock.
    pub(crate) fn create_order(
        &mut self,
        owner: usize,
        req: &OrderRequest<'_>,
        now: Instant,
    ) -> ApiResult {
        let offer = self
            .catalog
            .offer_mut(req.number_id)
            .ok_or_else(|| ApiError::refused("Invalid number_id"))?;
        let operator = offer
            .operator_name(req.provider_id, req.operator_id)
            .ok_or_else(|| ApiError::refused("Invalid operator_id"))?;
        let (country, prefix, service_code) =
            (offer.country_name(), offer.prefix(), offer.service_code);
        let line = offer
            .providers
            .iter_mut()
            .find(|p| p.provider_id == req.provider_id)
            .ok_or_else(|| ApiError::refused("Invalid provider_id"))?;
        if line.stock <= 0 {
            return Err(ApiError::refused(
                "Stock not available, try another provider",
            ));
        }
        self.accounts[owner].debit(line.price)?;
        line.stock -= 1;
        let price = line.price;

        let service = self
            .catalog
            .service(service_code)
            .map_or("Unknown", |s| s.name);
        self.ids.orders += 1;
        let order = Order {
            id: format!("RO{:010}", self.ids.order_base + self.ids.orders),
            owner,
            phone: fake::phone_number(prefix, self.ids.orders),
            service,
            country,
            operator,
            price,
            created: now,
            state: OrderState::Waiting,
            sms_due: Some(now + self.config.sms_delay),
            otp: None,
            ever_received: false,
        };
        self.created.orders += 1;
        tracing::debug!(order_id = %order.id, price, "order created");
        let view = self.created_view(&order);
        self.orders.push(order);
        Ok(view)
    }

    /// `/v1/orders/get_status` data for an order of `owner`.
    pub(crate) fn order_status(&self, owner: usize, id: &str, now: Instant) -> ApiResult {
        let order = self.order_of(owner, id)?;
        Ok(self.status_view(order, now))
    }

    /// Applies `set_status` to an order of `owner`.
    pub(crate) fn set_order_status(
        &mut self,
        owner: usize,
        id: &str,
        action: OrderAction,
        now: Instant,
    ) -> ApiResult {
        let index = self.order_index(Some(owner), id)?;
        let (cancel_lock, sms_delay) = (self.config.cancel_lock, self.config.sms_delay);
        let order = &mut self.orders[index];
        match action {
            OrderAction::Cancel => {
                check_cancel(order, now, cancel_lock)?;
                order.state = OrderState::Canceled;
                self.accounts[owner].credit(order.price);
            }
            OrderAction::Done => {
                if order.state == OrderState::Completed || !order.is_open() || !order.ever_received
                {
                    return Err(refusal_for_done(order));
                }
                order.state = OrderState::Completed;
            }
            OrderAction::Resend => {
                if order.state != OrderState::Received {
                    return Err(ApiError::refused(
                        "Resend is only possible after an OTP arrived",
                    ));
                }
                order.state = OrderState::Waiting;
                order.otp = None;
                order.sms_due = Some(now + sms_delay);
            }
        }
        Ok(self.status_view(&self.orders[index], now))
    }

    /// Delivers an SMS now (control call); `code` defaults to a random 6-digit one.
    pub(crate) fn deliver_sms(
        &mut self,
        id: &str,
        code: Option<String>,
        now: Instant,
    ) -> ApiResult {
        let index = self.order_index(None, id)?;
        if !self.orders[index].is_open() {
            return Err(ApiError::refused("Order is no longer active"));
        }
        let code = code.unwrap_or_else(|| self.otp_code());
        self.orders[index].receive(code);
        Ok(self.status_view(&self.orders[index], now))
    }

    /// Moves every order to where it stands at `now`: SMS arrivals and ends of life.
    pub(super) fn advance_orders(&mut self, now: Instant) {
        for index in 0..self.orders.len() {
            let end = self.orders[index].created + self.config.order_lifetime;
            let due = self.orders[index]
                .sms_due
                .filter(|&due| due <= now && due < end);
            if due.is_some() && self.orders[index].is_open() {
                let code = self.otp_code();
                self.orders[index].receive(code);
            }
            if now >= end {
                self.end_of_life(index);
            }
        }
    }

    fn end_of_life(&mut self, index: usize) {
        let order = &mut self.orders[index];
        match order.state {
            OrderState::Waiting if !order.ever_received => {
                order.state = OrderState::Expired;
                let (owner, price) = (order.owner, order.price);
                self.accounts[owner].credit(price);
            }
            OrderState::Waiting | OrderState::Received => order.state = OrderState::Completed,
            _ => {}
        }
    }

    fn otp_code(&mut self) -> String {
        format!("{:06}", self.rng.random_range(0..1_000_000u32))
    }

    fn order_of(&self, owner: usize, id: &str) -> Result<&Order, ApiError> {
        let index = self.order_index(Some(owner), id)?;
        Ok(&self.orders[index])
    }

    fn order_index(&self, owner: Option<usize>, id: &str) -> Result<usize, ApiError> {
        self.orders
            .iter()
            .position(|o| o.id == id && owner.is_none_or(|k| k == o.owner))
            .ok_or(ApiError::NotFound("Order"))
    }

    fn expires_in_minute(&self) -> u64 {
        self.config.order_lifetime.as_secs().div_ceil(60).max(1)
    }

    fn created_view(&self, order: &Order) -> Value {
        let created_at = self.clock.wall_ms(order.created);
        let expired_at = self
            .clock
            .wall_ms(order.created + self.config.order_lifetime);
        json!({
            "order_id": order.id,
            "phone_number": order.phone,
            "service": order.service,
            "country": order.country,
            "operator": order.operator,
            "price": order.price,
            "price_formated": rupiah(order.price),
            "created_at": created_at,
            "expired_at": expired_at,
            "expires_in_minute": self.expires_in_minute(),
        })
    }

    fn status_view(&self, order: &Order, now: Instant) -> Value {
        let expires_at = self
            .clock
            .wall_ms(order.created + self.config.order_lifetime);
        let (code, msg) = order
            .otp
            .clone()
            .unwrap_or_else(|| ("-".into(), "-".into()));
        json!({
            "order_id": order.id,
            "phone_number": order.phone,
            "service": order.service,
            "country": order.country,
            "status": self.status_name(order, now),
            "otp_code": code,
            "otp_msg": msg,
            "created_at": self.clock.wall_ms(order.created),
            "expires_at": expires_at,
            "expired_at": expires_at,
        })
    }

    fn status_name(&self, order: &Order, now: Instant) -> &'static str {
        let end = order.created + self.config.order_lifetime;
        let expiring_from = end
            .checked_sub(self.config.expiring_window)
            .unwrap_or(order.created);
        match order.state {
            OrderState::Waiting if !order.ever_received && now >= expiring_from => "expiring",
            OrderState::Waiting => "waiting",
            OrderState::Received => "received",
            OrderState::Completed => "completed",
            OrderState::Canceled => "canceled",
            OrderState::Expired => "expired",
        }
    }
}

impl Order {
    fn is_open(&self) -> bool {
        matches!(self.state, OrderState::Waiting | OrderState::Received)
    }

    fn receive(&mut self, code: String) {
        let text = fake::sms_text(self.service, &code);
        self.otp = Some((code, text));
        self.state = OrderState::Received;
        self.sms_due = None;
        self.ever_received = true;
    }
}

fn check_cancel(
    order: &Order,
    now: Instant,
    cancel_lock: std::time::Duration,
) -> Result<(), ApiError> {
    if order.ever_received || order.state == OrderState::Completed {
        return Err(ApiError::refused(
            "Order already received an OTP and cannot be canceled",
        ));
    }
    if !order.is_open() {
        return Err(ApiError::refused("Order is no longer active"));
    }
    if now.saturating_duration_since(order.created) < cancel_lock {
        let secs = cancel_lock.as_secs();
        return Err(ApiError::refused(format!(
            "Order can only be canceled {secs} seconds after it was created"
        )));
    }
    Ok(())
}

fn refusal_for_done(order: &Order) -> ApiError {
    match order.state {
        OrderState::Completed => ApiError::refused("Order is already completed"),
        OrderState::Canceled | OrderState::Expired => {
            ApiError::refused("Order is no longer active")
        }
        _ => ApiError::refused("No OTP received yet"),
    }
}
