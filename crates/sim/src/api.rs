//! The emulated RumahOTP routes: which path does what, which need a key, and how their query
//! parameters are read.
//!
//! Handlers only translate parameters into [`World`] calls; the rules live in the world. The
//! pipeline has already counted, recorded and possibly faulted the call before it gets here.

use http::Method;
use tokio::time::Instant;

use crate::error::{ApiError, ApiResult};
use crate::query::Params;
use crate::world::{self, DepositShape, OrderAction, OrderRequest, World};

/// One emulated API call, as the handlers see it.
#[derive(Debug)]
pub(crate) struct ApiCall {
    pub(crate) method: Method,
    pub(crate) route: String,
    pub(crate) params: Params,
    pub(crate) key: Option<String>,
}

/// Every route the upstream serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Services,
    Countries,
    Operators,
    Products,
    Banks,
    Games,
    Balance,
    OrderCreate,
    OrderStatus,
    OrderSetStatus,
    DepositCreate(DepositShape),
    DepositStatus(DepositShape),
    DepositCancel,
    CheckBank,
    CheckGame,
    TransactionCreate,
    TransactionStatus,
}

impl Route {
    fn parse(route: &str) -> Option<Self> {
        let found = match route {
            "/v2/services" => Self::Services,
            "/v2/countries" => Self::Countries,
            "/v2/operators" => Self::Operators,
            "/v1/h2h/product" => Self::Products,
            "/v1/h2h/list/rekening" => Self::Banks,
            "/v1/h2h/list/username" => Self::Games,
            "/v1/user/balance" => Self::Balance,
            "/v2/orders" => Self::OrderCreate,
            "/v1/orders/get_status" => Self::OrderStatus,
            "/v1/orders/set_status" => Self::OrderSetStatus,
            "/v1/deposit/create" => Self::DepositCreate(DepositShape::V1),
            "/v2/deposit/create" => Self::DepositCreate(DepositShape::V2),
            "/v1/deposit/get_status" => Self::DepositStatus(DepositShape::V1),
            "/v2/deposit/get_status" => Self::DepositStatus(DepositShape::V2),
            "/v1/deposit/cancel" => Self::DepositCancel,
            "/v1/h2h/check/rekening" => Self::CheckBank,
            "/v1/h2h/check/username" => Self::CheckGame,
            "/v1/h2h/transaksi/create" => Self::TransactionCreate,
            "/v1/h2h/transaksi/status" => Self::TransactionStatus,
            _ => return None,
        };
        Some(found)
    }

    /// The h2h catalog and check routes answer without a key.
    fn needs_key(self) -> bool {
        !matches!(
            self,
            Self::Products | Self::Banks | Self::Games | Self::CheckBank | Self::CheckGame
        )
    }

    fn allows(self, method: &Method) -> bool {
        *method == Method::GET || (self == Self::TransactionCreate && *method == Method::POST)
    }
}

/// Answers one emulated API call against the world (already advanced to `now`).
pub(crate) fn handle(world: &mut World, call: &ApiCall, now: Instant) -> ApiResult {
    let route = Route::parse(&call.route).ok_or(ApiError::UnknownRoute)?;
    if !route.allows(&call.method) {
        return Err(ApiError::MethodNotAllowed);
    }
    if !route.needs_key() {
        return keyless(world, route, &call.params);
    }

    let owner = world.authenticate(call.key.as_deref())?;
    let params = &call.params;
    match route {
        Route::Services => Ok(world.catalog().services_view()),
        Route::Countries => countries(world, params),
        Route::Operators => operators(world, params),
        Route::Balance => Ok(world.profile(owner)),
        Route::OrderCreate => create_order(world, owner, params, now),
        Route::OrderStatus => world.order_status(owner, required(params, "order_id")?, now),
        Route::OrderSetStatus => set_order_status(world, owner, params, now),
        Route::DepositCreate(shape) => create_deposit(world, owner, params, shape, now),
        Route::DepositStatus(shape) => {
            world.deposit_status(owner, required(params, "deposit_id")?, shape)
        }
        Route::DepositCancel => world.cancel_deposit(owner, required(params, "deposit_id")?),
        Route::TransactionCreate => {
            let (code, target) = (required(params, "id")?, required(params, "target")?);
            world.create_transaction(owner, code, target, now)
        }
        Route::TransactionStatus => {
            world.transaction_status(owner, required(params, "transaksi_id")?)
        }
        _ => keyless(world, route, params),
    }
}

fn keyless(world: &World, route: Route, params: &Params) -> ApiResult {
    match route {
        Route::Products => Ok(world::products_view()),
        Route::Banks => Ok(world::banks_view()),
        Route::Games => Ok(world::games_view()),
        Route::CheckBank => check_account(world, params, "bank_code", false),
        Route::CheckGame => check_account(world, params, "account_code", true),
        _ => Err(ApiError::UnknownRoute),
    }
}

fn countries(world: &World, params: &Params) -> ApiResult {
    let code: u32 = number(params, "service_id")?;
    if world.catalog().service(code).is_none() {
        return Err(ApiError::refused("Invalid service_id"));
    }
    Ok(world.catalog().countries_view(code))
}

fn operators(world: &World, params: &Params) -> ApiResult {
    let country = required(params, "country")?;
    world
        .catalog()
        .operators_view(country, params.get("provider_id"))
        .ok_or_else(|| ApiError::refused("Invalid country"))
}

fn create_order(world: &mut World, owner: usize, params: &Params, now: Instant) -> ApiResult {
    let request = OrderRequest {
        number_id: number(params, "number_id")?,
        provider_id: required(params, "provider_id")?,
        // An empty `operator_id=` is sent by real clients and means "any".
        operator_id: optional_number(params, "operator_id")?.unwrap_or(1),
    };
    world.create_order(owner, &request, now)
}

fn set_order_status(world: &mut World, owner: usize, params: &Params, now: Instant) -> ApiResult {
    let id = required(params, "order_id")?;
    let action = match required(params, "status")?.to_ascii_lowercase().as_str() {
        "cancel" => OrderAction::Cancel,
        "done" => OrderAction::Done,
        "resend" => OrderAction::Resend,
        _ => return Err(ApiError::refused("status must be cancel, done or resend")),
    };
    world.set_order_status(owner, id, action, now)
}

fn create_deposit(
    world: &mut World,
    owner: usize,
    params: &Params,
    shape: DepositShape,
    now: Instant,
) -> ApiResult {
    let amount = amount(params)?;
    let payment_id = required(params, "payment_id")?;
    world.create_deposit(owner, amount, payment_id, shape, now)
}

fn check_account(world: &World, params: &Params, code_param: &str, game: bool) -> ApiResult {
    let code = required(params, code_param)?;
    let account_number = required(params, "account_number")?;
    let known = if game {
        world::is_game(code)
    } else {
        world::is_bank(code)
    };
    if !known {
        return Err(ApiError::refused(format!("Invalid {code_param}")));
    }
    Ok(world::check_view(world.seed(), account_number, game))
}

/// A required, non-empty parameter.
fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .ok_or_else(|| ApiError::refused(format!("{name} is required")))
}

/// A required integer parameter (sent as a string, as every query value is).
fn number<T: std::str::FromStr>(params: &Params, name: &str) -> Result<T, ApiError> {
    optional_number(params, name)?.ok_or_else(|| ApiError::refused(format!("{name} is required")))
}

fn optional_number<T: std::str::FromStr>(
    params: &Params,
    name: &str,
) -> Result<Option<T>, ApiError> {
    params
        .get(name)
        .map(|raw| {
            raw.parse()
                .map_err(|_| ApiError::refused(format!("{name} must be a number")))
        })
        .transpose()
}

/// `amount` in whole rupiah; `50000.00` is accepted as 50000.
fn amount(params: &Params) -> Result<i64, ApiError> {
    let raw = required(params, "amount")?;
    let value: f64 = raw
        .parse()
        .map_err(|_| ApiError::refused("amount must be a number"))?;
    if !value.is_finite() || value.fract() != 0.0 {
        return Err(ApiError::refused("amount must be a whole number of rupiah"));
    }
    Ok(value as i64)
}
