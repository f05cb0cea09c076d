//! The gateway's main job end to end, against the simulator on loopback:
//! drop-in parity, one upstream call per catalog miss, safe pacing, status
//! reuse and invalidation, refusals, blocks and metrics.

mod common;

use std::time::Duration;

use common::{Stack, header, offer, start, start_with};
use serde_json::Value;

/// Same call, straight to the simulator (from 127.0.0.2, its own budget).
async fn direct_json(stack: &Stack, path: &str, key: &str) -> Value {
    let response = stack
        .direct
        .get(stack.sim_url(path))
        .header("x-apikey", key)
        .send()
        .await;
    response.unwrap().json().await.unwrap()
}

/// Sorted field names of a JSON object (or of the first element of an array).
fn field_set(value: &Value) -> Vec<String> {
    let object = match value {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let mut keys: Vec<_> = object
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test]
async fn catalog_endpoints_through_the_gateway_return_what_the_simulator_returns() {
    let stack = start().await;
    let key = stack.key_a.clone();
    for path in [
        "/v2/services",
        "/v2/operators?country=indonesia&provider_id=1",
        "/v1/h2h/product",
        "/v1/h2h/list/rekening",
        "/v1/h2h/list/username",
    ] {
        let (status, _, through) = stack.get_json(path, &key).await;
        let direct = direct_json(&stack, path, &stack.key_b).await;
        assert_eq!(status, 200, "{path}: {through}");
        assert_eq!(through, direct, "{path}");
    }
    let (_, _, countries) = stack.get_json("/v2/countries?service_id=13", &key).await;
    let direct = direct_json(&stack, "/v2/countries?service_id=13", &stack.key_b).await;
    assert_eq!(field_set(&countries["data"]), field_set(&direct["data"]));
    assert_eq!(
        countries["data"].as_array().unwrap().len(),
        direct["data"].as_array().unwrap().len()
    );
    stack.stop().await;
}

#[tokio::test]
async fn account_order_deposit_and_transaction_calls_pass_through_unchanged() {
    let stack = start().await;
    let key = stack.key_a.clone();
    let (status, _, balance) = stack.get_json("/v1/user/balance", &key).await;
    assert_eq!(
        (status, balance.clone()),
        (200, direct_json(&stack, "/v1/user/balance", &key).await)
    );

    let (number_id, provider_id) = offer(&stack, "13").await;
    let create =
        format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1");
    let (status, _, order) = stack.get_json(&create, &key).await;
    assert_eq!(status, 200, "{order}");
    assert!(order["data"]["expires_in_minute"].is_number(), "{order}");
    let order_id = order["data"]["order_id"].as_str().unwrap().to_owned();
    let status_path = format!("/v1/orders/get_status?order_id={order_id}");
    let (_, _, through) = stack.get_json(&status_path, &key).await;
    let direct = direct_json(&stack, &status_path, &key).await;
    assert_eq!(field_set(&through["data"]), field_set(&direct["data"]));
    assert_eq!(through["data"]["order_id"], direct["data"]["order_id"]);

    for path in [
        "/v1/deposit/create?amount=10000&payment_id=qris",
        "/v2/deposit/create?amount=20000&payment_id=qris",
    ] {
        let (status, _, deposit) = stack.get_json(path, &key).await;
        assert_eq!(status, 200, "{path}: {deposit}");
        let id = deposit["data"]["id"].as_str().unwrap().to_owned();
        for version in ["v1", "v2"] {
            let path = format!("/{version}/deposit/get_status?deposit_id={id}");
            let (status, _, state) = stack.get_json(&path, &key).await;
            assert_eq!(
                (status, state["data"]["status"].as_str()),
                (200, Some("pending")),
                "{path}"
            );
        }
        let (status, _, cancel) = stack
            .get_json(&format!("/v1/deposit/cancel?deposit_id={id}"), &key)
            .await;
        assert_eq!(status, 200, "{cancel}");
    }

    let (_, _, products) = stack.get_json("/v1/h2h/product", &key).await;
    let code = products["data"][0]["code"].as_str().unwrap().to_owned();
    let create = format!("/v1/h2h/transaksi/create?id={code}&target=081200001111");
    let posted = stack
        .http
        .post(stack.url(&create))
        .header("x-apikey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200, "POST works as well as GET");
    let trx: Value = posted.json().await.unwrap();
    let trx_id = trx["data"]["id"].as_str().unwrap().to_owned();
    let (status, _, state) = stack
        .get_json(
            &format!("/v1/h2h/transaksi/status?transaksi_id={trx_id}"),
            &key,
        )
        .await;
    assert_eq!(status, 200, "{state}");

    let (status, _, check) = stack
        .get_json(
            "/v1/h2h/check/rekening?bank_code=dana&account_number=081200001111",
            "",
        )
        .await;
    assert_eq!(status, 200, "key-less lookups are forwarded: {check}");
    stack.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_catalog_requests_make_one_upstream_call() {
    let stack = start().await;
    for round in 0..2 {
        let calls = (0..100).map(|_| stack.get_json("/v2/services", &stack.key_a));
        let answers = futures_util::future::join_all(calls).await;
        assert!(answers.iter().all(|(status, _, _)| *status == 200));
        assert!(
            answers.windows(2).all(|pair| pair[0].2 == pair[1].2),
            "same body for all"
        );
        assert_eq!(
            stack.upstream_calls("/v2/services").len(),
            1,
            "round {round}"
        );
    }
    stack.stop().await;
}

#[tokio::test]
async fn forty_distinct_uncached_calls_are_answered_or_refused_without_a_window_violation() {
    let stack = start().await;
    let started = std::time::Instant::now();
    let calls = (0..40).map(|i| {
        let stack = &stack;
        async move {
            let path = format!("/v2/countries?service_id={}", 100 + i);
            let response = stack.get(&path, &stack.key_a).await;
            let status = response.status().as_u16();
            let retry_after = header(&response, "retry-after");
            let body: Value = response.json().await.expect("JSON, never HTML");
            (status, retry_after, body)
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let elapsed = started.elapsed();

    let mut served = 0;
    for (status, retry_after, body) in &answers {
        match status {
            200 | 400 => served += 1,
            429 | 503 => {
                assert!(
                    !retry_after.is_empty(),
                    "refusals say when to retry: {body}"
                );
                assert_eq!(body["success"], false);
                assert!(body["message"].is_string() && body["error"]["message"].is_string());
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let stats = stack.sim.stats();
    assert_eq!(stats.window_violations, 0, "{stats:?}");
    assert_eq!(stats.blocks_total, 0, "{stats:?}");
    assert!(
        served >= 10,
        "the queue served what fits in its deadline: {served}"
    );
    let upstream = stack.sim.requests().len() as f64;
    let rate = 1.0 / 0.27;
    println!(
        "pacing: {served} served, {} refused, {upstream} upstream calls in {:.2} s; \
         efficiency {:.2} of the configured rate; max in any window {}",
        40 - served,
        elapsed.as_secs_f64(),
        upstream / (elapsed.as_secs_f64() * rate),
        stats.max_in_any_window,
    );
    stack.stop().await;
}

#[tokio::test]
async fn at_the_real_five_per_ten_seconds_a_flood_never_trips_the_limit() {
    let stack = start_with(
        |sim| sim.window = Duration::from_secs(10),
        |gateway| {
            gateway.pacing.window_seconds = 10.0;
            gateway.pacing.margin_seconds = 0.1;
        },
    )
    .await;
    let calls = (0..8).map(|i| {
        let stack = &stack;
        async move {
            let path = format!("/v2/countries?service_id={}", 200 + i);
            let response = stack
                .http
                .get(stack.url(&path))
                .header("x-apikey", &stack.key_a)
                .header("prefer", "wait=30")
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    // One call verifies the key first, then eight catalog misses.
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );
    let stats = stack.sim.stats();
    assert_eq!(stats.window_violations, 0, "{stats:?}");
    assert_eq!(stats.blocked_responses, 0, "{stats:?}");
    assert!(stats.max_in_any_window <= 4, "{stats:?}");
    stack.stop().await;
}

#[tokio::test]
async fn two_creates_make_two_orders_and_a_set_status_makes_the_next_poll_fresh() {
    let stack = start_with(
        |sim| sim.sms_delay = Duration::from_secs(60),
        |gateway| gateway.cache.status_ttl_seconds = 30.0,
    )
    .await;
    let key = stack.key_a.clone();
    let (number_id, provider_id) = offer(&stack, "13").await;
    let create =
        format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1");
    let (_, _, first) = stack.get_json(&create, &key).await;
    let (_, _, second) = stack.get_json(&create, &key).await;
    assert_ne!(first["data"]["order_id"], second["data"]["order_id"]);
    assert_eq!(stack.sim.stats().orders_created, 2);

    let order_id = first["data"]["order_id"].as_str().unwrap();
    let status_path = format!("/v1/orders/get_status?order_id={order_id}");
    let (_, cache, before) = stack.get_json(&status_path, &key).await;
    assert_eq!(
        (cache.as_str(), before["data"]["status"].as_str()),
        ("MISS", Some("waiting"))
    );
    let (_, cache, _) = stack.get_json(&status_path, &key).await;
    assert_eq!(cache, "HIT", "a poll within the status TTL is reused");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let cancel = format!("/v1/orders/set_status?order_id={order_id}&status=cancel");
    let (status, _, canceled) = stack.get_json(&cancel, &key).await;
    assert_eq!(status, 200, "{canceled}");
    let (_, cache, after) = stack.get_json(&status_path, &key).await;
    assert_eq!(
        (cache.as_str(), after["data"]["status"].as_str()),
        ("MISS", Some("canceled"))
    );
    stack.stop().await;
}

#[tokio::test]
async fn concurrent_polls_of_one_order_by_its_owner_make_one_upstream_call() {
    let stack = start_with(|_| {}, |gateway| gateway.cache.status_ttl_seconds = 5.0).await;
    let (number_id, provider_id) = offer(&stack, "13").await;
    let create =
        format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1");
    let (_, _, order) = stack.get_json(&create, &stack.key_a).await;
    let status_path = format!(
        "/v1/orders/get_status?order_id={}",
        order["data"]["order_id"].as_str().unwrap()
    );

    let polls = (0..20).map(|_| stack.get_json(&status_path, &stack.key_a));
    let answers = futures_util::future::join_all(polls).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    assert_eq!(stack.upstream_calls("/v1/orders/get_status").len(), 1);

    let (status, cache, other) = stack.get_json(&status_path, &stack.key_b).await;
    assert_eq!(
        status, 404,
        "another key never sees the owner's cached status: {other}"
    );
    assert_ne!(cache, "HIT");
    stack.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_while_queued_causes_no_upstream_call() {
    let stack = start_with(|_| {}, common::real_pacing).await;
    let (number_id, provider_id) = offer(&stack, "13").await;
    let create =
        format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1");
    let impatient = stack
        .http
        .get(stack.url(&create))
        .header("x-apikey", &stack.key_a)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(
        impatient.is_err(),
        "the first slot is 2.6 s away, so the client gives up first"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stack.upstream_calls("/v2/orders").is_empty(),
        "nothing is sent for a gone client"
    );
    assert_eq!(
        stack
            .gateway
            .gateway
            .upstream
            .egress(otpgate::upstream::EgressId(0))
            .pacer
            .queued(),
        0
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_call_that_cannot_start_before_its_deadline_gets_429_at_once() {
    let stack = start_with(|_| {}, common::real_pacing).await;
    let response = stack
        .http
        .get(stack.url("/v1/user/balance"))
        .header("x-apikey", &stack.key_a)
        .header("prefer", "wait=1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        header(&response, "retry-after"),
        "3",
        "the next slot is 2.6 s away"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "deadline");
    assert!(stack.sim.requests().is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn when_the_upstream_blocks_clients_get_json_and_the_catalog_is_served_stale() {
    let stack = start_with(|_| {}, |gateway| gateway.cache.catalog_ttl_seconds = 0.2).await;
    let (status, cache, fresh) = stack.get_json("/v2/services", &stack.key_a).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));

    stack.block_ip("127.0.0.1", 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, cache, stale) = stack.get_json("/v2/services", &stack.key_a).await;
    assert_eq!((status, cache.as_str()), (200, "STALE"));
    assert_eq!(stale, fresh);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let response = stack.get("/v2/countries?service_id=77", &stack.key_a).await;
    assert_eq!(response.status(), 503);
    assert!(!header(&response, "retry-after").is_empty());
    assert!(header(&response, "content-type").starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false, "{body}");

    let ready = stack
        .http
        .get(stack.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "readiness reports the block");
    let upstream_429s = stack
        .sim
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(
        upstream_429s, 1,
        "one blocked call stops the egress; no more are sent"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_keyed_route_without_a_key_is_refused_locally() {
    let stack = start().await;
    let response = stack
        .http
        .get(stack.url("/v2/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");
    assert!(stack.sim.requests().is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn odd_paths_and_methods_get_json_errors_without_upstream_calls() {
    let stack = start().await;
    let raw = raw_request(
        &stack,
        "GET /api/v1/../user/balance HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert!(
        raw.starts_with("HTTP/1.1 400"),
        "dot segments are refused, not resolved: {raw}"
    );
    for (method, path, status) in [
        ("GET", "/api/v1/user%2Fbalance", 400),
        ("GET", "/metrics", 404),
        ("DELETE", "/api/v2/services", 405),
        ("POST", "/api/v2/orders", 405),
    ] {
        let url = format!("http://{}{path}", stack.gateway.addr);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = stack
            .http
            .request(method, url)
            .header("x-apikey", &stack.key_a)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["success"], false);
    }
    assert!(stack.sim.requests().is_empty());
    stack.stop().await;
}

/// Sends bytes as they are (reqwest would resolve `..`) and reads the answer.
async fn raw_request(stack: &Stack, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(stack.gateway.addr)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0; 4096];
    let read = stream.read(&mut buffer).await.unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_hold_every_family() {
    let stack = start().await;
    stack.get_json("/v2/services", &stack.key_a).await;
    stack.get_json("/v2/services", &stack.key_a).await;
    let text = stack
        .http
        .get(stack.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid text format");
    let families: std::collections::BTreeSet<_> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for family in [
        "otpgate_http_requests_total",
        "otpgate_http_request_duration_seconds",
        "otpgate_cache_lookups_total",
        "otpgate_cache_entries",
        "otpgate_queue_depth",
        "otpgate_queue_wait_seconds",
        "otpgate_upstream_requests_total",
        "otpgate_upstream_request_duration_seconds",
        "otpgate_pacing_worst_case_calls",
        "otpgate_pacing_period_seconds",
    ] {
        assert!(
            families.contains(family),
            "{family} missing from {families:?}"
        );
    }
    assert!(!text.contains(&stack.key_a), "no key in metrics");
    let hits = scrape.samples.iter().find(|s| {
        s.metric == "otpgate_cache_lookups_total" && s.labels.get("result") == Some("HIT")
    });
    assert!(hits.is_some(), "the second call counted as a hit");
    stack.stop().await;
}

#[tokio::test]
async fn a_blocked_egress_sends_only_probes_until_one_passes() {
    let stack = start_with(
        |_| {},
        |gateway| gateway.pacing.block_cooldown_seconds = 0.5,
    )
    .await;
    stack.block_ip("127.0.0.1", 2).await;

    let mut statuses = Vec::new();
    for i in 0..40 {
        let path = format!("/v1/h2h/check/username?account_code=ML&account_number={i}");
        let response = stack.http.get(stack.url(&path)).send().await.unwrap();
        statuses.push(response.status().as_u16());
        let body: Value = response.json().await.expect("JSON even while blocked");
        assert!(body.is_object());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert!(
        statuses.contains(&503),
        "refused while blocked: {statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&200),
        "open again after the block: {statuses:?}"
    );
    let blocked: Vec<_> = stack
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .collect();
    let client_calls = blocked
        .iter()
        .filter(|r| r.path.contains("check/username"))
        .count();
    assert_eq!(
        client_calls, 1,
        "one client call found the block; the rest were probes"
    );
    assert!(
        blocked
            .iter()
            .skip(1)
            .all(|r| r.path.ends_with("/v1/h2h/list/rekening")),
        "{blocked:?}"
    );
    assert!(
        blocked.len() <= 6,
        "probes wait out each cool-down: {}",
        blocked.len()
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_client_over_its_request_rate_is_refused_before_anything_else() {
    let stack = start_with(
        |_| {},
        |gateway| {
            gateway.limits.client_requests_per_second = 5;
            gateway.limits.client_burst = 5;
        },
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = stack.get("/v1/h2h/list/rekening", &stack.key_a).await;
        statuses.push((response.status().as_u16(), header(&response, "retry-after")));
    }
    assert!(
        statuses[..5].iter().all(|(status, _)| *status == 200),
        "{statuses:?}"
    );
    let refused: Vec<_> = statuses
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert!(!refused.is_empty() && refused.iter().all(|(_, retry)| !retry.is_empty()));

    let other = stack.get("/v1/h2h/list/rekening", &stack.key_b).await;
    assert_eq!(other.status(), 200, "another client has its own allowance");
    assert_eq!(stack.upstream_calls("/v1/h2h/list/rekening").len(), 1);
    stack.stop().await;
}

#[tokio::test]
async fn an_oversized_query_is_refused_without_an_upstream_call() {
    let stack = start().await;
    let many = (0..100)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join("&");
    let long = format!("service_id=13&junk={}", "x".repeat(3000));
    for query in [many, long] {
        let response = stack
            .get(&format!("/v2/countries?{query}"), &stack.key_a)
            .await;
        assert_eq!(response.status(), 414);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "query_too_large");
    }
    assert!(stack.sim.requests().is_empty());
    stack.stop().await;
}
