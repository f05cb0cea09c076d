//! Many clients polling many orders at the real pacing (paused clock): once
//! an order's status has been seen, its pollers get it (fresh or marked
//! STALE with its age) instead of errors, the statuses are refreshed in turn
//! within the upstream budget, and a change reaches the pollers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Stack, header, offer_with_stock, real_pacing, start_with};
use tokio::time::Instant;

/// More orders than half the queue (32), so that refreshes cannot all wait in it.
const ORDERS: usize = 40;
const CLIENTS: usize = 80;
const POLL: Duration = Duration::from_secs(2);
const STORM: Duration = Duration::from_secs(480);
/// One upstream call per 2.6 s on the one egress.
const PERIOD: f64 = 2.6;

/// What the pollers saw of one order.
#[derive(Default)]
struct Seen {
    /// When a poller first got a 200 for it.
    first_ok_at: Option<Instant>,
    /// Answers to polls sent after that: (status, x-cache, age, virtual ms taken).
    after_first: Vec<(u16, String, u64, u64)>,
    /// When a poller first saw its OTP.
    otp_seen_at: Option<Instant>,
}

/// Buys `ORDERS` numbers straight from the simulator, from 127.0.0.2 at a
/// pace its limiter allows (virtual time), and returns their ids.
async fn buy_orders(stack: &Stack) -> Vec<String> {
    let (number_id, provider_id) = offer_with_stock(stack, "13", ORDERS as i64).await;
    let mut ids = Vec::new();
    for _ in 0..ORDERS {
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let path = format!("/v2/orders?number_id={number_id}&provider_id={provider_id}");
        let request = stack.direct.get(stack.sim_url(&path));
        let answer = request.header("x-apikey", &stack.key_a).send().await;
        let body: serde_json::Value = answer.unwrap().json().await.unwrap();
        ids.push(
            body["data"]["order_id"]
                .as_str()
                .expect("order id")
                .to_owned(),
        );
    }
    // Let the simulator's window forget the set-up calls.
    tokio::time::sleep(Duration::from_secs(20)).await;
    ids
}

async fn poller(stack: Arc<Stack>, order: String, seen: Arc<Mutex<Seen>>, began: Instant) {
    let path = format!("/v1/orders/get_status?order_id={order}");
    while began.elapsed() < STORM {
        let sent_at = Instant::now();
        let response = stack.get(&path, &stack.key_a).await;
        let status = response.status().as_u16();
        let cache = header(&response, "x-cache");
        let age = header(&response, "age").parse().unwrap_or(0);
        let body: serde_json::Value = response.json().await.expect("JSON, always");
        let otp = body["data"]["otp_code"].as_str().unwrap_or("-");
        {
            let mut seen = seen.lock().unwrap();
            if seen.first_ok_at.is_some_and(|first| first <= sent_at) {
                let took = sent_at.elapsed().as_millis() as u64;
                seen.after_first.push((status, cache, age, took));
            }
            if status == 200 {
                seen.first_ok_at.get_or_insert(sent_at);
                if otp != "-" {
                    seen.otp_seen_at.get_or_insert_with(Instant::now);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Simulator and gateway at the real 5-per-10-s limit and pacing; SMS only
/// when a test delivers one.
async fn real_stack() -> Stack {
    let real_limit = |sim: &mut otpgate_sim::SimConfig| {
        sim.window = Duration::from_secs(10);
        sim.block = Duration::from_secs(60);
        sim.sms_delay = Duration::from_secs(100_000);
    };
    start_with(real_limit, real_pacing).await
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

#[tokio::test(start_paused = true)]
async fn a_poll_storm_gets_statuses_in_turn_within_the_budget_and_no_errors_once_seen() {
    let stack = real_stack().await;
    let orders = buy_orders(&stack).await;
    let stack = Arc::new(stack);
    let calls_before = stack.upstream_calls("/get_status").len();

    let began = Instant::now();
    let seen: Vec<Arc<Mutex<Seen>>> = orders.iter().map(|_| Arc::default()).collect();
    let pollers: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let order = client % ORDERS;
            let (stack, seen) = (Arc::clone(&stack), Arc::clone(&seen[order]));
            tokio::spawn(poller(stack, orders[order].clone(), seen, began))
        })
        .collect();

    // Half-way, each order's SMS arrives, one order every 2 s.
    tokio::time::sleep(STORM / 2).await;
    let mut sms_sent = Vec::new();
    for order in &orders {
        sms_sent.push(Instant::now());
        let control = format!("http://{}/__sim/orders/{order}/sms", stack.sim.addr());
        let delivered = stack.direct.post(control).send().await.unwrap();
        assert!(delivered.status().is_success());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for poller in pollers {
        poller.await.unwrap();
    }

    let elapsed = began.elapsed().as_secs_f64();
    let calls = stack.upstream_calls("/get_status").len() - calls_before;
    let stats = stack.sim.stats();
    let (mut ages, mut stale, mut otp_delays, mut took) = (Vec::new(), 0, Vec::new(), Vec::new());
    for (i, seen) in seen.iter().enumerate() {
        let seen = seen.lock().unwrap();
        let bad: Vec<_> = seen.after_first.iter().filter(|a| a.0 != 200).collect();
        assert!(
            bad.is_empty(),
            "order {i}: errors after its first status: {bad:?}"
        );
        ages.extend(seen.after_first.iter().map(|a| a.2));
        stale += seen.after_first.iter().filter(|a| a.1 == "STALE").count();
        took.extend(seen.after_first.iter().map(|a| a.3));
        let otp_at = seen
            .otp_seen_at
            .expect("every order's OTP reached its pollers");
        otp_delays.push((otp_at - sms_sent[i]).as_secs());
    }
    println!(
        "{ORDERS} orders, {CLIENTS} pollers every {POLL:?} for {elapsed:.0} s: {calls} upstream status calls \
         (budget {:.0}), max {} per window, {} violations; {} answers after first sight, {stale} STALE, \
         median age {} s, max age {} s, median poll {} ms (virtual); OTP seen after at most {} s",
        elapsed / PERIOD,
        stats.max_in_any_window,
        stats.window_violations,
        ages.len(),
        median(ages.clone()),
        ages.iter().max().unwrap(),
        median(took.clone()),
        otp_delays.iter().max().unwrap(),
    );

    assert_eq!(stats.window_violations, 0);
    assert!(stats.max_in_any_window <= 4);
    assert!(
        calls as f64 <= elapsed / PERIOD + 1.0,
        "{calls} calls in {elapsed} s"
    );
    // Refreshed in turn, oldest first: each order once per ORDERS slots.
    let turn = ORDERS as f64 * PERIOD;
    let slack = 2.0 * PERIOD + POLL.as_secs_f64();
    let max_age = *ages.iter().max().unwrap() as f64;
    assert!((median(ages) as f64) <= turn / 2.0 + slack, "median age");
    assert!(max_age <= turn + slack, "max age {max_age} s");
    assert!(
        stale > 0,
        "the storm outran the budget: some answers were stale"
    );
    // Each order's pollers saw its SMS by its next refresh, within a turn.
    let late = otp_delays
        .iter()
        .filter(|d| **d as f64 > turn + slack)
        .count();
    assert_eq!(late, 0, "OTP delays {otp_delays:?}");
    Arc::into_inner(stack).expect("pollers done").stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lone_poller_gets_fresh_statuses_not_stale_ones() {
    let stack = real_stack().await;
    let (number_id, provider_id) = offer_with_stock(&stack, "13", 1).await;
    let path = format!("/v2/orders?number_id={number_id}&provider_id={provider_id}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (status, _, body) = stack.get_json(&path, &stack.key_a).await;
    assert_eq!(status, 200, "{body}");
    let order = body["data"]["order_id"].as_str().unwrap().to_owned();

    let poll = format!("/v1/orders/get_status?order_id={order}");
    let mut caches = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (status, cache, _) = stack.get_json(&poll, &stack.key_a).await;
        assert_eq!(status, 200);
        caches.push(cache);
    }
    // Every poll came after the 2 s reuse time, and the queue was free.
    assert!(caches.iter().all(|c| c == "MISS"), "{caches:?}");
    stack.stop().await;
}

/// An order bought through the gateway, scaled pacing.
async fn one_order(stack: &Stack) -> String {
    let (number_id, provider_id) = offer_with_stock(stack, "13", 1).await;
    let path = format!("/v2/orders?number_id={number_id}&provider_id={provider_id}");
    let (status, _, body) = stack.get_json(&path, &stack.key_a).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["order_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_upstream_5xx_on_a_refresh_serves_the_earlier_status_not_the_error() {
    let stack = common::start().await;
    let order = one_order(&stack).await;
    let poll = format!("/v1/orders/get_status?order_id={order}");
    let (status, _, first) = stack.get_json(&poll, &stack.key_a).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    stack.sim.set_fault(otpgate_sim::Fault {
        route: Some("/v1/orders/get_status".into()),
        error_rate: 1.0,
        count: Some(1),
        ..otpgate_sim::Fault::default()
    });
    let (status, cache, again) = stack.get_json(&poll, &stack.key_a).await;
    assert_eq!((status, cache.as_str()), (200, "STALE"), "{again}");
    assert_eq!(again, first);
    stack.stop().await;
}

#[tokio::test]
async fn an_id_given_twice_is_refused_and_a_spaced_id_is_the_same_order() {
    let stack = common::start().await;
    let order = one_order(&stack).await;
    let calls = stack.upstream_calls("/get_status").len();
    let twice = format!("/v1/orders/get_status?order_id={order}&order_id=RO1");
    let (status, _, body) = stack.get_json(&twice, &stack.key_a).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "duplicate_parameter");
    assert_eq!(
        stack.upstream_calls("/get_status").len(),
        calls,
        "nothing sent"
    );

    // A trailing space names the same order: a cancel makes its status stale.
    let spaced = format!("/v1/orders/get_status?order_id={order}+");
    let (status, _, waiting) = stack.get_json(&spaced, &stack.key_a).await;
    assert_eq!(
        (status, waiting["data"]["status"].as_str()),
        (200, Some("waiting"))
    );
    let done = format!("/v1/orders/set_status?order_id={order}&status=done");
    let (status, _, body) = stack.get_json(&done, &stack.key_a).await;
    assert_eq!(status, 200, "{body}");
    let (_, cache, after) = stack.get_json(&spaced, &stack.key_a).await;
    assert_ne!(after["data"]["status"], "waiting", "{cache}: {after}");
    stack.stop().await;
}
