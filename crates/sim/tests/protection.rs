//! The Cloudflare-like limiter: what it counts, how a block looks and lasts, and that a client
//! paced by the documented rule is never blocked (approximated and exact windows).

mod common;

use common::{Harness, KEY_A, KEY_B, quick_config};
use otpgate_sim::SimConfig;
use serde_json::json;
use std::time::Duration;
use tokio::time::sleep;

fn limited(exact: bool) -> SimConfig {
    SimConfig {
        limit: 5,
        window: Duration::from_secs(1),
        exact_window: exact,
        block: Duration::from_secs(60),
        ..quick_config()
    }
}

async fn status_of(h: &Harness, path: &str, key: Option<&str>) -> u16 {
    h.get(path, key).await.status().as_u16()
}

#[tokio::test]
async fn the_sixth_call_in_a_window_gets_cloudflare_html_429_and_the_ip_stays_blocked() {
    let h = Harness::start(limited(false)).await;
    for _ in 0..5 {
        assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 200);
    }
    let blocked = h.get("/v1/user/balance", Some(KEY_A)).await;
    assert_eq!(blocked.status(), 429);
    let headers = blocked.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(headers["server"], "cloudflare");
    assert!(headers.contains_key("cf-ray"));
    assert!(!headers.contains_key("retry-after"));
    let page = blocked.text().await.unwrap();
    assert!(page.contains("1015") && page.contains("You are being rate limited"));

    let (code, _) = h.control("GET", "stats", None).await;
    assert_eq!(code, 200, "control calls are never blocked");
    assert_eq!(
        status_of(&h, "/v2/services", Some(KEY_B)).await,
        429,
        "the block is per IP"
    );
    assert_eq!(status_of(&h, "/v1/h2h/product", None).await, 429);

    let stats = h.sim.stats();
    assert_eq!(stats.blocks_total, 1);
    assert_eq!(stats.blocked_responses, 3);
    assert_eq!(stats.requests_total, 8);
    assert!(stats.window_violations >= 1);
    let requests = h.sim.requests();
    assert!(requests[5].blocked && requests[5].status == 429);
    assert!(!requests[4].blocked);
}

#[tokio::test]
async fn refused_and_unknown_calls_count_toward_the_limit() {
    let h = Harness::start(limited(false)).await;
    for path in [
        "/nope",
        "/v1/user/balance",
        "/v2/services",
        "/x",
        "/v1/user/balance",
    ] {
        let code = status_of(&h, path, None).await;
        assert!(code == 401 || code == 404, "{path}: {code}");
    }
    assert_eq!(status_of(&h, "/v2/services", Some(KEY_A)).await, 429);
}

#[tokio::test]
async fn control_calls_are_not_counted() {
    let h = Harness::start(limited(false)).await;
    for _ in 0..20 {
        h.control("GET", "stats", None).await;
    }
    for _ in 0..5 {
        assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 200);
    }
    assert_eq!(h.sim.stats().requests_total, 5);
}

async fn paced_client_is_never_blocked(exact: bool) {
    let h = Harness::start(limited(exact)).await;
    // window / (limit - 1) = 250 ms, plus a margin; sleeping after each answer keeps the
    // spacing at the server at least this long.
    for _ in 0..12 {
        assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 200);
        sleep(Duration::from_millis(270)).await;
    }
    let stats = h.sim.stats();
    assert_eq!(stats.blocked_responses, 0);
    assert_eq!(stats.window_violations, 0);
    assert!(stats.max_in_any_window <= 4, "{stats:?}");
}

#[tokio::test]
async fn a_client_paced_at_window_over_limit_minus_one_is_never_blocked() {
    paced_client_is_never_blocked(false).await;
}

#[tokio::test]
async fn a_paced_client_is_never_blocked_in_exact_mode_either() {
    paced_client_is_never_blocked(true).await;
}

#[tokio::test]
async fn exact_mode_blocks_the_sixth_call_and_forgets_calls_older_than_the_window() {
    let h = Harness::start(limited(true)).await;
    for _ in 0..5 {
        assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 200);
    }
    sleep(Duration::from_millis(1_050)).await;
    for _ in 0..5 {
        assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 200);
    }
    assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 429);
    assert_eq!(h.sim.stats().max_in_any_window, 6);
}

#[tokio::test]
async fn a_block_ends_after_its_duration() {
    let config = SimConfig {
        window: Duration::from_millis(400),
        block: Duration::from_millis(300),
        ..limited(false)
    };
    let h = Harness::start(config).await;
    for _ in 0..6 {
        h.get("/v1/user/balance", Some(KEY_A)).await;
    }
    assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 429);
    sleep(Duration::from_millis(900)).await;
    assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 200);
}

#[tokio::test]
async fn control_calls_block_and_unblock_an_ip() {
    let h = Harness::start(limited(false)).await;
    let body = json!({ "ip": "127.0.0.1", "seconds": 30 });
    assert_eq!(h.control("POST", "block", Some(body)).await.0, 200);
    assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 429);
    assert_eq!(h.control("DELETE", "block", None).await.0, 200);
    assert_eq!(status_of(&h, "/v1/user/balance", Some(KEY_A)).await, 200);
    let stats = h.sim.stats();
    assert_eq!((stats.blocks_total, stats.blocked_responses), (1, 1));
}
