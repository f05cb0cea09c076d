//! The shared catalog cache: fills that outlive their first client (B04),
//! junk parameters (B08) and keys the upstream never accepted (B09).

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use otpgate_sim::Fault;

use crate::common::{self, Stack, header};
use crate::{accept_key_a, error_code, metric};

/// Slows every `/v2/services` answer so that clients pile up on one fill.
fn slow_services(stack: &Stack) {
    stack.sim.set_fault(Fault {
        route: Some("/v2/services".into()),
        latency_ms: 1500,
        ..Fault::default()
    });
}

/// `GET /v2/services` with key A that gives up after `patience`:
/// the status and body, or `None` when it gave up.
fn services_call(
    stack: &Stack,
    patience: Duration,
) -> tokio::task::JoinHandle<Option<(u16, bytes::Bytes)>> {
    let request = stack
        .http
        .get(stack.url("/v2/services"))
        .header("x-apikey", &stack.key_a)
        .timeout(patience);
    tokio::spawn(async move {
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.bytes().await.ok()?))
    })
}

#[tokio::test]
async fn a_catalog_fill_outlives_the_client_that_started_it() {
    let stack = common::start().await;
    accept_key_a(&stack).await;
    slow_services(&stack);

    let leader = services_call(&stack, Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let followers: Vec<_> = (0..5)
        .map(|_| services_call(&stack, Duration::from_secs(10)))
        .collect();

    assert!(
        leader.await.unwrap().is_none(),
        "precondition: the leader gave up first"
    );
    let mut bodies = Vec::new();
    for follower in followers {
        let (status, body) = follower
            .await
            .unwrap()
            .expect("a patient client is answered");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "followers got different bodies"
    );
    assert_eq!(stack.upstream_calls("/v2/services").len(), 1);

    let (status, cache, _) = stack.get_json("/v2/services", &stack.key_a).await;
    assert_eq!((status, cache.as_str()), (200, "HIT"));
}

#[tokio::test]
async fn a_storm_of_impatient_clients_neither_repeats_a_fill_nor_breaks_the_gateway() {
    let stack = common::start().await;
    accept_key_a(&stack).await;
    slow_services(&stack);

    let mut impatient = Vec::new();
    let mut patient = None;
    for i in 0..100 {
        impatient.push(services_call(&stack, Duration::from_millis(50)));
        if i == 5 {
            patient = Some(services_call(&stack, Duration::from_secs(10)));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for call in impatient {
        call.await.expect("an impatient client's task ends cleanly");
    }
    let (status, _) = patient
        .unwrap()
        .await
        .unwrap()
        .expect("the patient client is answered");
    assert_eq!(status, 200);
    assert_eq!(stack.upstream_calls("/v2/services").len(), 1);

    let (status, cache, _) = stack.get_json("/v2/services", &stack.key_a).await;
    assert_eq!(
        (status, cache.as_str()),
        (200, "HIT"),
        "the gateway still serves"
    );
}

#[tokio::test]
async fn junk_query_parameters_neither_reach_the_upstream_nor_fill_the_cache() {
    let stack = common::start().await;
    let noise = RandomState::new();
    let routes = [
        "/v2/services?",
        "/v2/countries?service_id=13&",
        "/v1/h2h/list/rekening?",
    ];
    for route in routes {
        for i in 0..30u64 {
            let path = format!("{route}x={i}{}&cb={i}", noise.hash_one(i) % 100_000);
            let response = stack.get(&path, &stack.key_a).await;
            let cache = header(&response, "x-cache");
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(cache, if i == 0 { "MISS" } else { "HIT" }, "{path}");
        }
        let template = route.split('?').next().unwrap();
        let calls = stack.upstream_calls(template).len();
        assert!(calls <= 1, "{template} reached the upstream {calls} times");
    }

    // services, countries, the bank list and key A's balance check.
    let entries = metric(&stack, "otpgate_cache_entries").await;
    assert!(entries <= 4.0, "otpgate_cache_entries = {entries}");
}

#[tokio::test]
async fn a_key_check_answered_by_a_reused_balance_still_serves_the_catalog() {
    // The verdict on key A is forgotten long before its balance is.
    let stack = common::start_with(
        |_| {},
        |g| {
            g.auth.verified_key_ttl_seconds = 0.2;
            g.cache.balance_ttl_seconds = 60.0;
        },
    )
    .await;
    let (status, cache, first) = stack.get_json("/v2/services", &stack.key_a).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"), "{first}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;

    // The key is checked again, against the balance read a moment ago.
    let (status, cache, again) = stack.get_json("/v2/services", &stack.key_a).await;
    assert_eq!((status, cache.as_str()), (200, "HIT"), "{again}");
    assert_eq!(again, first, "the catalog, not the key's balance");
    let balance_calls = stack.upstream_calls("/v1/user/balance").len();
    assert_eq!(balance_calls, 1, "the reused balance cost no call");
}

#[tokio::test]
async fn a_parameter_the_upstream_could_read_as_another_is_refused() {
    let stack = common::start().await;
    for path in [
        "/v2/countries?service_id=13&service.id=16",
        "/v2/countries?service.id=16",
        "/v2/countries?service%2Eid=16",
        "/v2/countries?service_id[]=16",
        "/v2/countries?service%20id=16&service_id=13",
        "/v2/countries?+service_id=16",
    ] {
        let (status, _, body) = stack.get_json(path, &stack.key_a).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(error_code(&body), "aliased_parameter", "{path}");
    }
    assert!(
        stack.upstream_calls("/v2/countries").is_empty(),
        "nothing sent"
    );

    // Look-alikes that are other names pass, and `%5F` is `_`.
    for path in [
        "/v2/countries?service_id=13&serviceid=16",
        "/v2/countries?service%5Fid=13",
    ] {
        let (status, _, body) = stack.get_json(path, &stack.key_a).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

/// Asserts a JSON 401 that the cache did not serve.
async fn assert_refused(response: reqwest::Response, what: &str) -> serde_json::Value {
    let status = response.status().as_u16();
    let cache = header(&response, "x-cache");
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(status, 401, "{what}: {body}");
    assert_ne!(cache, "HIT", "{what}");
    assert_eq!(body["success"], false, "{what}: {body}");
    assert!(body["error"]["message"].is_string(), "{what}: {body}");
    body
}

#[tokio::test]
async fn an_unknown_or_missing_key_never_reads_the_warm_catalog() {
    let stack = common::start().await;
    for (n, route) in ["/v2/services", "/v2/countries?service_id=13"]
        .into_iter()
        .enumerate()
    {
        let (status, _, body) = stack.get_json(route, &stack.key_a).await;
        assert_eq!(status, 200, "warming {route}: {body}");

        let bogus = common::fresh_key(&format!("bogus{n}"));
        assert_refused(stack.get(route, &bogus).await, "unknown key").await;
        let keyless = stack.http.get(stack.url(route)).send().await.unwrap();
        let body = assert_refused(keyless, "no key").await;
        assert_eq!(error_code(&body), "missing_api_key");
        assert_refused(stack.get(route, "   ").await, "blank key").await;

        assert_refused(stack.get(route, &bogus).await, "unknown key, again").await;
        let tries = stack
            .sim
            .requests()
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(&*bogus));
        assert_eq!(
            tries.count(),
            1,
            "a rejected key is remembered, not re-tried upstream"
        );
    }
    let keyless = stack
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.key.is_none())
        .count();
    assert_eq!(
        keyless, 0,
        "a missing key is refused without an upstream call"
    );
}
