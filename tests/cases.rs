//! The failure cases of /work/shared/CASES.md, end to end: each test provokes
//! one fault that public bug reports show in other proxies, and checks the
//! outcome against the simulator's audit, not only what the client saw.
//!
//! B03 and B16 are not here: the lead covers them with the idempotency and
//! key-pool work.

mod common;

#[path = "cases/caching.rs"]
mod caching;
#[path = "cases/pooling.rs"]
mod pooling;
#[path = "cases/raw.rs"]
mod raw;
#[path = "cases/shutdown.rs"]
mod shutdown;
#[path = "cases/wire.rs"]
mod wire;

use std::time::Duration;

use common::Stack;

/// The simulator's WhatsApp service, which every seeded country sells.
const SERVICE: &str = "13";

/// `/v2/orders?…` for an offer of `SERVICE` with at least `orders` numbers in
/// stock, read from the simulator directly so the gateway's budget is untouched.
pub async fn create_path(stack: &Stack, orders: i64) -> String {
    let (number_id, provider_id) = common::offer_with_stock(stack, SERVICE, orders).await;
    format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1")
}

/// `error.code` of a gateway answer, "" when absent.
pub fn error_code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// The value of an unlabelled metric on the admin listener's `/metrics`.
pub async fn metric(stack: &Stack, name: &str) -> f64 {
    let text = stack
        .http
        .get(stack.admin_url("/metrics"))
        .send()
        .await
        .expect("admin answers")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
}

/// Waits until `done` holds; a liveness bound, not a timing goal.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    waited
        .await
        .unwrap_or_else(|_| panic!("never happened: {what}"));
}

/// Calls `/v1/user/balance` once so that the upstream has accepted `key_a`
/// and catalog reads need no extra check.
pub async fn accept_key_a(stack: &Stack) {
    let (status, _, body) = stack.get_json("/v1/user/balance", &stack.key_a).await;
    assert_eq!(status, 200, "balance: {body}");
}
