//! Connection-level behaviour (exact idle close, gzip, shutdown) and the audit calls: the
//! request list byte for byte, stats, accounts and reset.

mod common;

use common::{Harness, KEY_A, quick_config, raw_exchange, raw_get};
use flate2::read::GzDecoder;
use otpgate_sim::{Fault, SimConfig, Stats};
use serde_json::{Value, json};
use std::io::Read;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Waits for the server to close the connection; returns how long that took.
async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut byte = [0u8; 1];
    match timeout(limit, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        Ok(Ok(_)) => panic!("unexpected bytes on an idle connection"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_exactly_idle_close() {
    let h = Harness::quick().await;
    let (code, _) = h
        .control("POST", "settings", Some(json!({ "idle_close_ms": 300 })))
        .await;
    assert_eq!(code, 200);

    let mut stream = TcpStream::connect(h.sim.addr()).await.unwrap();
    let request = raw_get("/api/v2/services", &[("x-apikey", KEY_A)]);
    assert_eq!(raw_exchange(&mut stream, &request).await.status, 200);
    let closed_after = time_until_closed(&mut stream, Duration::from_secs(3)).await;
    let closed_after = closed_after.expect("idle connection was not closed");
    assert!(
        closed_after >= Duration::from_millis(250),
        "{closed_after:?}"
    );
    assert!(
        closed_after < Duration::from_millis(700),
        "{closed_after:?}"
    );
}

#[tokio::test]
async fn a_request_in_flight_keeps_its_connection_open_past_idle_close() {
    let config = SimConfig {
        idle_close: Some(Duration::from_millis(200)),
        ..quick_config()
    };
    let h = Harness::start(config).await;
    h.sim.set_fault(Fault {
        hold_ms: 500,
        ..Fault::default()
    });
    let mut stream = TcpStream::connect(h.sim.addr()).await.unwrap();
    let request = raw_get("/v1/user/balance", &[("x-apikey", KEY_A)]);
    assert_eq!(raw_exchange(&mut stream, &request).await.status, 200);
    assert!(
        time_until_closed(&mut stream, Duration::from_secs(2))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn without_idle_close_connections_stay_open() {
    let h = Harness::quick().await;
    let mut stream = TcpStream::connect(h.sim.addr()).await.unwrap();
    let request = raw_get("/v1/h2h/product", &[]);
    assert_eq!(raw_exchange(&mut stream, &request).await.status, 200);
    assert!(
        time_until_closed(&mut stream, Duration::from_millis(500))
            .await
            .is_none()
    );
    assert_eq!(
        raw_exchange(&mut stream, &request).await.status,
        200,
        "reused"
    );
}

#[tokio::test]
async fn gzip_is_used_only_when_enabled_and_asked_for_with_a_true_length() {
    let h = Harness::quick().await;
    let mut stream = TcpStream::connect(h.sim.addr()).await.unwrap();
    let asks_gzip = raw_get(
        "/v2/services",
        &[
            ("x-apikey", KEY_A),
            ("accept-encoding", "gzip, deflate, br"),
        ],
    );
    let plain = raw_exchange(&mut stream, &asks_gzip).await;
    assert_eq!(
        plain.header("content-encoding"),
        None,
        "gzip is off by default"
    );

    h.control("POST", "settings", Some(json!({ "gzip": true })))
        .await;
    let compressed = raw_exchange(&mut stream, &asks_gzip).await;
    assert_eq!(compressed.header("content-encoding"), Some("gzip"));
    let length: usize = compressed
        .header("content-length")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, compressed.body.len());
    let mut json = String::new();
    GzDecoder::new(&compressed.body[..])
        .read_to_string(&mut json)
        .unwrap();
    assert_eq!(json.as_bytes(), &plain.body[..]);

    let identity = raw_get("/v2/services", &[("x-apikey", KEY_A)]);
    let unasked = raw_exchange(&mut stream, &identity).await;
    assert_eq!(unasked.header("content-encoding"), None);
    assert_eq!(unasked.body[0], b'{');
}

#[tokio::test]
async fn the_request_list_keeps_the_raw_query_byte_for_byte() {
    let h = Harness::quick().await;
    let query = "account_code=ML&account_number=12%2B34%2056&b=2&a=1&b=3&flag&sig=%E9%FF&s=1;2";
    let mut stream = TcpStream::connect(h.sim.addr()).await.unwrap();
    let local_port = stream.local_addr().unwrap().port();
    let target = format!("//api//v1/h2h/check/username?{query}");
    let request = raw_get(&target, &[("x-apikey", KEY_A), ("x-trace", "t-1")]);
    assert_eq!(raw_exchange(&mut stream, &request).await.status, 200);
    let second = raw_get(
        "/v2/orders?number_id=1&provider_id=3&operator_id=&service_id=5",
        &[],
    );
    assert_eq!(raw_exchange(&mut stream, &second).await.status, 401);

    let (code, body) = h.control("GET", "requests", None).await;
    assert_eq!(code, 200);
    let list = body["requests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let first = &list[0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "//api//v1/h2h/check/username");
    assert_eq!(first["query"], query);
    assert_eq!(first["key"], KEY_A);
    assert_eq!(first["ip"], "127.0.0.1");
    assert_eq!(first["peer_port"], local_port);
    assert_eq!(first["status"], 200);
    assert_eq!(first["blocked"], false);
    let headers = first["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["x-trace", "t-1"])));
    assert_eq!(
        list[1]["query"],
        "number_id=1&provider_id=3&operator_id=&service_id=5"
    );
    assert_eq!(list[1]["key"], Value::Null);
    assert_eq!(list[1]["conn_id"], first["conn_id"], "same connection");
    assert!(list[1]["at_ms"].as_u64() >= first["at_ms"].as_u64());
    assert_eq!(h.sim.requests().len(), 2);

    let bare = raw_get("/v1/h2h/product", &[]);
    raw_exchange(&mut stream, &bare).await;
    assert_eq!(h.sim.requests()[2].query, None);
}

#[tokio::test]
async fn stats_over_http_match_the_handle_and_count_connections() {
    let h = Harness::quick().await;
    h.buy_number(KEY_A).await;
    h.data("/v2/deposit/create?amount=10000&payment_id=qris")
        .await;
    h.data("/v1/h2h/transaksi/create?id=D1&target=0811").await;
    let (code, body) = h.control("GET", "stats", None).await;
    assert_eq!(code, 200);
    let over_http: Stats = serde_json::from_value(body).unwrap();
    assert_eq!(over_http.orders_created, 1);
    assert_eq!(over_http.deposits_created, 1);
    assert_eq!(over_http.transactions_created, 1);
    assert_eq!(over_http.requests_total, 4);
    assert!(over_http.connections_total >= 1);
    assert_eq!(over_http, h.sim.stats());

    let _a = TcpStream::connect(h.sim.addr()).await.unwrap();
    let _b = TcpStream::connect(h.sim.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(h.sim.stats().connections_total >= over_http.connections_total + 2);
}

#[tokio::test]
async fn reset_brings_the_world_back_to_its_seed() {
    let h = Harness::quick().await;
    let services = h.data("/v2/countries?service_id=13").await;
    let order = h.buy_number(KEY_A).await;
    h.sim.set_fault(Fault {
        route: Some("/v9".into()),
        error_rate: 1.0,
        ..Fault::default()
    });
    h.control(
        "POST",
        "block",
        Some(json!({ "ip": "127.0.0.2", "seconds": 60 })),
    )
    .await;

    assert_eq!(h.control("POST", "reset", None).await.0, 200);
    assert_eq!(h.sim.stats(), Stats::default());
    assert!(h.sim.requests().is_empty());
    assert_eq!(h.sim.balance(KEY_A), Some(500_000));
    let (_, faults) = h.control("GET", "faults", None).await;
    assert_eq!(faults["data"], json!([]));
    let id = order["order_id"].as_str().unwrap();
    let path = format!("/v1/orders/get_status?order_id={id}");
    assert_eq!(h.refusal(&path, Some(KEY_A)).await.0, 404);
    assert_eq!(h.data("/v2/countries?service_id=13").await, services);
}

#[tokio::test]
async fn the_accounts_call_lists_keys_usernames_and_balances() {
    let h = Harness::quick().await;
    let (code, body) = h.control("GET", "accounts", None).await;
    assert_eq!(code, 200);
    assert_eq!(
        body,
        json!({ "accounts": [
            { "key": "demo-key-1", "username": "demo1", "balance": 500000 },
            { "key": "demo-key-2", "username": "demo2", "balance": 250000 },
        ]})
    );
    assert_eq!(h.control("GET", "nothing-here", None).await.0, 404);
}

#[tokio::test]
async fn shutdown_returns_promptly_with_idle_connections_open_and_stops_serving() {
    let h = Harness::quick().await;
    let addr = h.sim.addr();
    let _silent = TcpStream::connect(addr).await.unwrap();
    let mut used = TcpStream::connect(addr).await.unwrap();
    raw_exchange(&mut used, &raw_get("/v1/h2h/product", &[])).await;

    let started = Instant::now();
    h.sim.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        time_until_closed(&mut used, Duration::from_secs(1))
            .await
            .is_some()
    );
    assert!(TcpStream::connect(addr).await.is_err());
}
