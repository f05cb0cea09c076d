//! Start-up configuration of the simulator: limits, lifecycle durations and seeded accounts.
//!
//! Every duration the simulator uses lives here so tests can shrink them; nothing here is read
//! from the environment. Runtime-changeable settings (idle close, gzip) start from these values.

use std::time::Duration;

/// One account the simulated upstream accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSeed {
    /// The value clients send in `x-apikey`.
    pub key: String,
    /// Starting balance in whole rupiah.
    pub balance: i64,
    /// The `username` shown by `/v1/user/balance`.
    pub username: String,
}

impl AccountSeed {
    /// An account seed with the given key, balance (rupiah) and username.
    pub fn new(key: impl Into<String>, balance: i64, username: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            balance,
            username: username.into(),
        }
    }
}

/// Everything the simulator needs to start; `Default` gives realistic values.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Calls allowed per client IP per `window` before the Cloudflare-like block (default 5).
    pub limit: u32,
    /// Length of the counting window (default 10 s).
    pub window: Duration,
    /// `true` counts arrivals in the exact trailing window; `false` (default) uses
    /// Cloudflare's approximated sliding counter over aligned windows.
    pub exact_window: bool,
    /// How long an IP stays blocked once over the limit (default 60 s).
    pub block: Duration,
    /// Time from order creation (or `resend`) to SMS delivery (default 8 s).
    pub sms_delay: Duration,
    /// Lifetime of an order (default 20 min); `expires_in_minute` is this rounded up, min 1.
    pub order_lifetime: Duration,
    /// Last part of the lifetime during which an order without OTP reports `expiring`
    /// (default 2 min).
    pub expiring_window: Duration,
    /// Cancels are refused before an order is this old (default 3 min).
    pub cancel_lock: Duration,
    /// Time an h2h transaction stays `processing` before it settles (default 5 s).
    pub h2h_settle: Duration,
    /// Time a pending deposit waits for payment before it becomes `expired` (default 30 min).
    pub deposit_lifetime: Duration,
    /// Close keep-alive connections with no request in flight for this long
    /// (`None`, the default, keeps them open as hyper does).
    pub idle_close: Option<Duration>,
    /// Gzip JSON bodies for requests whose `Accept-Encoding` names gzip (default off).
    pub gzip: bool,
    /// The accounts the simulator accepts (default `demo-key-1` and `demo-key-2`).
    pub accounts: Vec<AccountSeed>,
    /// Seed of the generated world (catalog, ids, fake names); same seed, same world.
    pub seed: u64,
}

impl SimConfig {
    /// The two demo accounts used when none are configured.
    pub fn demo_accounts() -> Vec<AccountSeed> {
        vec![
            AccountSeed::new("demo-key-1", 500_000, "demo1"),
            AccountSeed::new("demo-key-2", 250_000, "demo2"),
        ]
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            limit: 5,
            window: Duration::from_secs(10),
            exact_window: false,
            block: Duration::from_secs(60),
            sms_delay: Duration::from_secs(8),
            order_lifetime: Duration::from_secs(20 * 60),
            expiring_window: Duration::from_secs(2 * 60),
            cancel_lock: Duration::from_secs(3 * 60),
            h2h_settle: Duration::from_secs(5),
            deposit_lifetime: Duration::from_secs(30 * 60),
            idle_close: None,
            gzip: false,
            accounts: Self::demo_accounts(),
            seed: 7,
        }
    }
}
