//! Injected faults: JSON 500s, Cloudflare 502 pages, resets, apply-then-drop, latency and hold,
//! aimed at one route or all, counted, accumulated and cleared, and still seen by the limiter.

mod common;

use common::{Harness, KEY_A, quick_config};
use otpgate_sim::{Fault, SimConfig};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ORDER_ROUTE: &str = "/v2/orders";

fn on_orders(fault: Fault) -> Fault {
    Fault {
        route: Some(ORDER_ROUTE.to_string()),
        ..fault
    }
}

async fn order_query(h: &Harness) -> String {
    let (number_id, provider_id, _) = h.available_offer(13).await;
    format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1")
}

#[tokio::test]
async fn error_rate_answers_a_json_500_without_applying_the_call() {
    let h = Harness::quick().await;
    let query = order_query(&h).await;
    h.sim.set_fault(on_orders(Fault {
        error_rate: 1.0,
        ..Fault::default()
    }));

    let response = h.get(&query, Some(KEY_A)).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert!(body["error"]["message"].is_string());
    assert_eq!(
        h.data("/v1/user/balance").await["balance"],
        500_000,
        "other routes unaffected"
    );

    let stats = h.sim.stats();
    assert_eq!((stats.orders_created, stats.faulted_responses), (0, 1));
    let last_order_call = h
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with(ORDER_ROUTE));
    assert_eq!(last_order_call.unwrap().status, 500);
}

#[tokio::test]
async fn html_error_rate_answers_cloudflare_502_pages() {
    let h = Harness::quick().await;
    h.sim.set_fault(Fault {
        html_error_rate: 1.0,
        ..Fault::default()
    });
    let response = h.get("/v2/services", Some(KEY_A)).await;
    assert_eq!(response.status(), 502);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(response.headers()["server"], "cloudflare");
    assert!(response.text().await.unwrap().contains("Bad gateway"));
}

#[tokio::test]
async fn reset_rate_drops_the_connection_without_applying() {
    let h = Harness::quick().await;
    let query = order_query(&h).await;
    h.sim.set_fault(on_orders(Fault {
        reset_rate: 1.0,
        ..Fault::default()
    }));
    let url = format!("{}{}", h.sim.base_url(), query);
    let outcome = h.http.get(url).header("x-apikey", KEY_A).send().await;
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(h.sim.stats().orders_created, 0);
    assert_eq!(h.sim.balance(KEY_A), Some(500_000));
}

#[tokio::test]
async fn apply_then_drop_creates_the_order_while_the_client_sees_a_dropped_connection() {
    let h = Harness::quick().await;
    let query = order_query(&h).await;
    h.sim.set_fault(on_orders(Fault {
        apply_then_drop: true,
        ..Fault::default()
    }));
    let url = format!("{}{}", h.sim.base_url(), query);
    let outcome = h.http.get(url).header("x-apikey", KEY_A).send().await;
    assert!(outcome.is_err(), "{outcome:?}");

    let stats = h.sim.stats();
    assert_eq!((stats.orders_created, stats.faulted_responses), (1, 1));
    assert!(h.sim.balance(KEY_A).unwrap() < 500_000);
    let order_calls: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(ORDER_ROUTE))
        .collect();
    assert_eq!(order_calls.len(), 1);
    assert_eq!(order_calls[0].status, 0);
}

#[tokio::test]
async fn hold_applies_the_call_before_a_late_answer() {
    let h = Harness::quick().await;
    let query = order_query(&h).await;
    h.sim.set_fault(on_orders(Fault {
        hold_ms: 600,
        ..Fault::default()
    }));
    let url = format!("{}{}", h.sim.base_url(), query);

    let impatient = h
        .http
        .get(&url)
        .header("x-apikey", KEY_A)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(impatient.unwrap_err().is_timeout());
    assert_eq!(h.sim.stats().orders_created, 1, "applied before the answer");

    let started = Instant::now();
    let patient = h.get(&query, Some(KEY_A)).await;
    assert_eq!(patient.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn latency_delays_processing_and_count_limits_the_fault_to_the_next_calls() {
    let h = Harness::quick().await;
    h.sim.set_fault(Fault {
        route: Some("/api/v2/services".to_string()),
        latency_ms: 300,
        count: Some(1),
        ..Fault::default()
    });
    let started = Instant::now();
    h.data("/v2/services").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    h.data("/v2/services").await;
    assert!(started.elapsed() < Duration::from_millis(250));
}

#[tokio::test]
async fn faults_accumulate_over_http_and_delete_clears_them() {
    let h = Harness::quick().await;
    let first = json!({ "route": "/v2/services", "error_rate": 1.0 });
    let second = json!({ "route": null, "latency_ms": 10, "count": 3 });
    assert_eq!(h.control("POST", "faults", Some(first)).await.0, 200);
    let (code, listed) = h.control("POST", "faults", Some(second)).await;
    assert_eq!(code, 200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert_eq!(h.get("/v2/services", Some(KEY_A)).await.status(), 500);

    assert_eq!(h.control("DELETE", "faults", None).await.0, 200);
    assert_eq!(h.get("/v2/services", Some(KEY_A)).await.status(), 200);
    let (code, _) = h
        .control("POST", "faults", Some(json!("not a fault")))
        .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn faulted_calls_still_count_for_the_limiter() {
    let config = SimConfig {
        limit: 5,
        window: Duration::from_secs(1),
        ..quick_config()
    };
    let h = Harness::start(config).await;
    h.sim.set_fault(Fault {
        error_rate: 1.0,
        ..Fault::default()
    });
    for _ in 0..5 {
        assert_eq!(h.get("/v2/services", Some(KEY_A)).await.status(), 500);
    }
    assert_eq!(h.get("/v2/services", Some(KEY_A)).await.status(), 429);
}
