//! At most once for calls that move money: idempotency keys (B03), joining a
//! client's identical call in flight, holding identical calls after a lost
//! answer until a balance read settles it, and records that survive restarts.

mod common;

use std::time::Duration;

use common::{Stack, header, offer, start_with};
use otpgate_sim::Fault;
use serde_json::Value;

async fn create_path(stack: &Stack) -> String {
    // A first call through the gateway gets key_a accepted, so that the
    // concurrent calls below race only in the money guards.
    let (status, _, _) = send(stack, "/v1/user/balance", &[]).await;
    assert_eq!(status, 200);
    let (number_id, provider_id) = offer(stack, "13").await;
    format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1")
}

/// GET through the gateway with extra headers; status, headers, body.
async fn send(
    stack: &Stack,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = stack
        .http
        .get(stack.url(path))
        .header("x-apikey", &stack.key_a);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("gateway answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.expect("JSON"))
}

/// A GET through the gateway by a client that gives up after 700 ms.
fn impatient_send(
    stack: &Stack,
    path: &str,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    let request = stack.http.get(stack.url(path));
    let request = request.header("x-apikey", &stack.key_a);
    request.timeout(Duration::from_millis(700)).send()
}

fn slow_orders(millis: u64) -> Fault {
    Fault {
        route: Some("/v2/orders".into()),
        latency_ms: millis,
        ..Fault::default()
    }
}

#[tokio::test]
async fn the_same_idempotency_key_and_call_twice_at_once_buys_one_number() {
    let stack = start_with(|_| {}, |_| {}).await;
    let create = create_path(&stack).await;
    stack.sim.set_fault(slow_orders(1000));

    let first = send(&stack, &create, &[("idempotency-key", "idem-0001")]);
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&stack, &create, &[("idempotency-key", "idem-0001")]).await
    };
    let ((s1, _, b1), (s2, h2, b2)) = tokio::join!(first, second);
    assert_eq!((s1, s2), (200, 200), "{b1} {b2}");
    assert_eq!(b1["data"]["order_id"], b2["data"]["order_id"]);
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(stack.sim.stats().orders_created, 1);

    let (status, headers, again) = send(&stack, &create, &[("idempotency-key", "idem-0001")]).await;
    assert_eq!(
        (status, &headers["idempotent-replayed"]),
        (200, &"true".parse().unwrap())
    );
    assert_eq!(again["data"]["order_id"], b1["data"]["order_id"]);
    assert_eq!(stack.upstream_calls("/v2/orders").len(), 1);
    stack.stop().await;
}

#[tokio::test]
async fn the_same_idempotency_key_with_another_call_is_refused_without_an_upstream_call() {
    let stack = start_with(|_| {}, |_| {}).await;
    let create = create_path(&stack).await;
    stack.sim.set_fault(slow_orders(1000));

    let first = send(&stack, &create, &[("idempotency-key", "idem-0002")]);
    let other = create.replace("operator_id=1", "operator_id=2");
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&stack, &other, &[("idempotency-key", "idem-0002")]).await
    };
    let ((s1, _, _), (s2, _, b2)) = tokio::join!(first, second);
    assert_eq!((s1, s2), (200, 422), "{b2}");
    assert_eq!(b2["error"]["code"], "idempotency_key_reused");

    let (status, _, late) = send(&stack, &other, &[("idempotency-key", "idem-0002")]).await;
    assert_eq!(status, 422, "also once the first is done: {late}");
    assert_eq!(stack.upstream_calls("/v2/orders").len(), 1);
    stack.stop().await;
}

#[tokio::test]
async fn an_identical_retry_while_the_first_is_in_flight_is_joined_not_sent() {
    let stack = start_with(|_| {}, |_| {}).await;
    let create = create_path(&stack).await;
    stack.sim.set_fault(slow_orders(1500));

    let impatient = impatient_send(&stack, &create);
    let retry = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        send(&stack, &create, &[]).await
    };
    let (gave_up, (status, headers, body)) = tokio::join!(impatient, retry);
    assert!(gave_up.is_err(), "the first client timed out");
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-otpgate-joined"], "true");
    assert_eq!(
        stack.sim.stats().orders_created,
        1,
        "the retry got the first order"
    );
    assert_eq!(stack.upstream_calls("/v2/orders").len(), 1);

    let (status, _, second) = send(&stack, &create, &[]).await;
    assert_eq!(
        status, 200,
        "once the first is done, an identical call is a new purchase"
    );
    assert_ne!(second["data"]["order_id"], body["data"]["order_id"]);
    stack.stop().await;
}

#[tokio::test]
async fn an_identical_retry_after_the_answer_came_to_nobody_gets_that_answer() {
    let stack = start_with(|_| {}, |_| {}).await;
    let create = create_path(&stack).await;
    stack.sim.set_fault(slow_orders(1500));

    let impatient = impatient_send(&stack, &create).await;
    assert!(impatient.is_err(), "the client timed out before the answer");
    // The answer reaches the gateway with nobody left to hear it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, headers, body) = send(&stack, &create, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-otpgate-joined"], "true");
    assert_eq!(stack.sim.stats().orders_created, 1, "{body}");
    assert_eq!(stack.upstream_calls("/v2/orders").len(), 1);

    // Given once; the next identical call is a new purchase.
    let (status, headers, second) = send(&stack, &create, &[]).await;
    assert_eq!(status, 200, "{second}");
    assert!(headers.get("x-otpgate-joined").is_none());
    assert_ne!(second["data"]["order_id"], body["data"]["order_id"]);
    stack.stop().await;
}

#[tokio::test]
async fn the_409_quotes_only_a_balance_read_after_the_last_purchase_settled() {
    let stack = start_with(|_| {}, |_| {}).await;
    let create = create_path(&stack).await;
    let balance =
        || async { send(&stack, "/v1/user/balance", &[]).await.2["data"]["balance"].clone() };
    assert_eq!(balance().await, 1_000_000);
    let (status, _, bought) = send(&stack, &create, &[]).await;
    assert_eq!(status, 200, "{bought}");

    // The answer to `path` is lost; its identical retry is held: the 409's message.
    let lost_then_held = |path: String| {
        let stack = &stack;
        async move {
            stack.sim.set_fault(Fault {
                apply_then_drop: true,
                count: Some(1),
                ..slow_orders(0)
            });
            let (status, _, lost) = send(stack, &path, &[]).await;
            assert_eq!(status, 502, "{lost}");
            let (status, _, held) = send(stack, &path, &[]).await;
            assert_eq!(status, 409, "{held}");
            held["message"].as_str().unwrap().to_owned()
        }
    };
    let message = lost_then_held(create.clone()).await;
    assert!(
        !message.contains("1000000"),
        "the read before the first purchase is not the balance before the lost one: {message}"
    );

    // A read after the purchases settled is quoted for the next lost call.
    let known = stack
        .sim
        .balance(&stack.key_a)
        .expect("the simulator knows key A");
    let read = balance().await;
    assert_eq!(read, known, "the balance is read fresh: it moved");
    let message = lost_then_held(create.replace("operator_id=1", "operator_id=2")).await;
    assert!(
        message.contains(&format!("before it was {read}")),
        "{message}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn after_a_lost_answer_an_identical_call_is_held_while_the_balance_shows_a_purchase() {
    let stack = start_with(|_| {}, |_| {}).await;
    let create = create_path(&stack).await;
    let (status, _, _) = send(&stack, "/v1/user/balance", &[]).await;
    assert_eq!(status, 200);
    let dropped = Fault {
        apply_then_drop: true,
        count: Some(1),
        ..slow_orders(0)
    };
    stack.sim.set_fault(dropped);

    let (status, _, lost) = send(&stack, &create, &[]).await;
    assert_eq!(
        (status, lost["error"]["code"].as_str()),
        (502, Some("outcome_unknown")),
        "{lost}"
    );
    let (status, headers, held) = send(&stack, &create, &[]).await;
    assert_eq!(status, 409, "{held}");
    assert_eq!(held["error"]["code"], "previous_outcome_unknown");
    assert!(
        held["message"]
            .as_str()
            .unwrap()
            .contains("before it was 1000000"),
        "{held}"
    );
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        stack.sim.stats().orders_created,
        1,
        "the held call was not sent"
    );

    let (status, _, fresh) = send(&stack, &create, &[("idempotency-key", "new-purchase-1")]).await;
    assert_eq!(
        status, 200,
        "a new Idempotency-Key says it is another purchase: {fresh}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn after_a_lost_answer_an_identical_call_is_held_even_when_the_balance_looks_unchanged() {
    // A balance read cannot prove a lost buy was not made (refunds, paid
    // deposits and expiries move it too), so the hold stands without one.
    let stack = start_with(|_| {}, |_| {}).await;
    let create = create_path(&stack).await;
    send(&stack, "/v1/user/balance", &[]).await;
    let reset = Fault {
        reset_rate: 1.0,
        count: Some(1),
        ..slow_orders(0)
    };
    stack.sim.set_fault(reset);

    let (status, _, lost) = send(&stack, &create, &[]).await;
    assert_eq!(
        (status, lost["error"]["code"].as_str()),
        (502, Some("outcome_unknown")),
        "{lost}"
    );
    let before = stack.sim.requests().len();
    let (status, _, held) = send(&stack, &create, &[]).await;
    assert_eq!(
        (status, held["error"]["code"].as_str()),
        (409, Some("previous_outcome_unknown"))
    );
    assert_eq!(
        stack.sim.requests().len(),
        before,
        "holding costs no upstream call"
    );
    let variant = format!("{create}&_=1733");
    let (status, _, _) = send(&stack, &variant, &[]).await;
    assert_eq!(status, 409, "junk parameters do not make it a new call");
    let repeated = format!("{create}&operator_id=1");
    let (status, _, body) = send(&stack, &repeated, &[]).await;
    assert_eq!(status, 400, "a repeated identifying parameter is refused");
    assert_eq!(body["error"]["code"], "duplicate_parameter");
    assert_eq!(stack.sim.stats().orders_created, 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_key_whose_answer_was_lost_replays_outcome_unknown_and_holds_keyless_retries() {
    let stack = start_with(|_| {}, |_| {}).await;
    let create = create_path(&stack).await;
    let dropped = Fault {
        apply_then_drop: true,
        count: Some(1),
        ..slow_orders(0)
    };
    stack.sim.set_fault(dropped);

    let key = [("idempotency-key", "idem-lost-1")];
    let (_, headers, first) = send(&stack, &create, &key).await;
    assert_eq!(first["error"]["code"], "outcome_unknown");
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, replay) = send(&stack, &create, &key).await;
    assert_eq!(
        (status, replay["error"]["code"].as_str()),
        (502, Some("outcome_unknown"))
    );
    assert_eq!(
        headers["idempotent-replayed"], "true",
        "the first outcome again"
    );
    assert_eq!(stack.upstream_calls("/v2/orders").len(), 1);

    // A retry that drops the key is held too, and a new key is a new purchase.
    let (status, _, held) = send(&stack, &create, &[]).await;
    assert_eq!(status, 409, "{held}");
    assert_eq!(held["error"]["code"], "previous_outcome_unknown");
    assert_eq!(stack.upstream_calls("/v2/orders").len(), 1);
    let (status, _, fresh) = send(&stack, &create, &[("idempotency-key", "idem-lost-2")]).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(stack.upstream_calls("/v2/orders").len(), 2);
    // That keyed purchase does not lift the hold the lost one left.
    let (status, _, still) = send(&stack, &create, &[]).await;
    assert_eq!(status, 409, "{still}");
    assert_eq!(stack.upstream_calls("/v2/orders").len(), 2);
    stack.stop().await;
}

#[tokio::test]
async fn a_claim_whose_client_left_before_sending_is_released() {
    let stack = start_with(|_| {}, common::real_pacing).await;
    let create = create_path(&stack).await;
    let gone = stack
        .http
        .get(stack.url(&create))
        .header("x-apikey", &stack.key_a)
        .header("idempotency-key", "idem-left-1")
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(stack.upstream_calls("/v2/orders").is_empty());

    let (status, _, body) = send(
        &stack,
        &create,
        &[("idempotency-key", "idem-left-1"), ("prefer", "wait=10")],
    )
    .await;
    assert_eq!(status, 200, "the key is free again: {body}");
    assert_eq!(stack.sim.stats().orders_created, 1);
    stack.stop().await;
}

#[tokio::test]
async fn an_idempotency_record_survives_a_gateway_restart() {
    let path = std::env::temp_dir().join(format!("otpgate-once-{}.db", common::fresh_key("db")));
    let path = path.to_str().unwrap().to_owned();
    let store = path.clone();
    let stack = start_with(|_| {}, move |gateway| gateway.store.path = store).await;
    let create = create_path(&stack).await;
    let key = [("idempotency-key", "idem-restart-1")];
    let (_, _, first) = send(&stack, &create, &key).await;
    stack.gateway.shutdown().await;

    let mut config = common::gateway_config(&stack.sim.base_url());
    config.store.path = path.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restarted = otpgate::spawn(config, listener, admin).unwrap();
    let response = stack
        .http
        .get(format!("http://{}/api{create}", restarted.addr))
        .header("x-apikey", &stack.key_a)
        .header("idempotency-key", "idem-restart-1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "idempotent-replayed"), "true");
    let replay: Value = response.json().await.unwrap();
    assert_eq!(replay["data"]["order_id"], first["data"]["order_id"]);
    assert_eq!(stack.sim.stats().orders_created, 1);
    restarted.shutdown().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused() {
    let stack = start_with(|_| {}, |_| {}).await;
    let create = create_path(&stack).await;
    let long = "k".repeat(300);
    for bad in ["", long.as_str()] {
        let (status, _, body) = send(&stack, &create, &[("idempotency-key", bad)]).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_idempotency_key"))
        );
    }
    assert!(stack.upstream_calls("/v2/orders").is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn a_posted_form_in_another_order_is_the_same_call_after_a_lost_answer() {
    let stack = start_with(|_| {}, |_| {}).await;
    let (status, _, products) = send(&stack, "/v1/h2h/product", &[]).await;
    assert_eq!(status, 200);
    let code = products["data"][0]["code"].as_str().unwrap().to_owned();
    let lost = Fault {
        route: Some("/v1/h2h/transaksi/create".into()),
        apply_then_drop: true,
        count: Some(1),
        ..Fault::default()
    };
    stack.sim.set_fault(lost);
    let post = |body: String| {
        stack
            .http
            .post(stack.url("/v1/h2h/transaksi/create"))
            .header("x-apikey", &stack.key_a)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };

    let first = post(format!("id={code}&target=081200001234"))
        .await
        .unwrap();
    assert_eq!(first.status(), 502);
    let reordered = post(format!("target=081200001234&ts=2&id={code}"))
        .await
        .unwrap();
    assert_eq!(
        reordered.status(),
        409,
        "a reordered form with junk is the same purchase"
    );
    assert_eq!(stack.sim.stats().transactions_created, 1);
    stack.stop().await;
}
