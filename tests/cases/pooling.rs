//! The upstream connection: stale pooled connections (B01), answers lost
//! after the call was sent (B02) and hop-by-hop headers (B12).

use std::time::Duration;

use otpgate_sim::Fault;

use crate::common::{self, Stack};
use crate::raw;
use crate::{accept_key_a, create_path, error_code};

/// The simulator closes keep-alive connections idle this long (CASES says
/// 2.0 s; scaled down, the race is the same).
const IDLE_CLOSE: Duration = Duration::from_millis(500);

/// Rounds of "idle about `IDLE_CLOSE`, then one call".
const ROUNDS: u64 = 15;

/// A pause that sweeps the simulator's idle close in 1 ms steps (493 to
/// 507 ms), so that some calls cross the close on a reused connection.
fn idle_pause(round: u64) -> Duration {
    Duration::from_millis(493 + round)
}

async fn idle_closing_stack(pool_idle_seconds: f64) -> Stack {
    common::start_with(
        |sim| sim.idle_close = Some(IDLE_CLOSE),
        |gateway| {
            gateway.upstream.pool_idle_timeout_seconds = pool_idle_seconds;
            gateway.cache.status_ttl_seconds = 0.001;
        },
    )
    .await
}

/// Polls one order's status after idle pauses; every poll must reach the
/// upstream and come back 200.
async fn poll_after_idle_pauses(stack: &Stack) {
    let create = create_path(stack, 1).await;
    let (status, _, body) = stack.get_json(&create, &stack.key_a).await;
    assert_eq!(status, 200, "create: {body}");
    let order_id = body["data"]["order_id"].as_str().expect("order_id");
    let poll = format!("/v1/orders/get_status?order_id={order_id}");

    for round in 0..ROUNDS {
        tokio::time::sleep(idle_pause(round)).await;
        let (status, cache, body) = stack.get_json(&poll, &stack.key_a).await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_eq!(cache, "MISS", "round {round}: the poll must go upstream");
    }

    let stats = stack.sim.stats();
    assert!(
        stats.connections_total > ROUNDS / 2,
        "precondition: the simulator closed idle connections ({stats:?})"
    );
    assert_eq!(
        stats.window_violations, 0,
        "a re-send also waits for a slot"
    );
}

/// What the clients of a series of creates were told.
#[derive(Debug, Default)]
struct CreateTally {
    created: u64,
    unknown: u64,
}

/// Creates one order per round after idle pauses, each marked with its
/// round so that a second send of the same create shows in the audit.
async fn create_after_idle_pauses(stack: &Stack) -> CreateTally {
    let create = create_path(stack, ROUNDS as i64 + 1).await;
    let mut tally = CreateTally::default();
    for round in 0..ROUNDS {
        tokio::time::sleep(idle_pause(round)).await;
        // Each round is its own purchase: its own Idempotency-Key (the
        // `round` parameter only marks it in the audit; it does not make
        // an identical create a different call).
        let path = format!("{create}&round={round}");
        let response = stack
            .http
            .get(stack.url(&path))
            .header("x-apikey", &stack.key_a)
            .header("idempotency-key", format!("b01-round-{round}"))
            .send()
            .await
            .expect("gateway answers");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.expect("JSON");
        if body["success"] == true {
            tally.created += 1;
        } else if error_code(&body) == "outcome_unknown" {
            tally.unknown += 1;
        } else {
            panic!("round {round}: a create answered {status} {body}");
        }
    }

    let sent = stack.upstream_calls("/v2/orders");
    for round in 0..ROUNDS {
        let marker = format!("&round={round}&");
        let copies = sent
            .iter()
            .filter(|r| format!("{}&", r.query.as_deref().unwrap_or("")).contains(&marker))
            .count();
        assert!(
            copies <= 1,
            "round {round}'s create was sent {copies} times"
        );
    }
    let stats = stack.sim.stats();
    let created = stats.orders_created;
    assert_eq!(
        sent.len() as u64,
        created,
        "each create received made one order"
    );
    assert_eq!(stats.window_violations, 0, "{stats:?}");
    // A create written just as the simulator closed the connection is
    // honestly unknown to the gateway, though never read upstream: unknowns
    // bound the orders made from above, successes from below.
    assert!(
        tally.created <= created && created <= tally.created + tally.unknown,
        "orders made upstream ({created}) against what clients were told ({tally:?})"
    );
    tally
}

#[tokio::test]
async fn safe_reads_survive_an_upstream_that_closes_idle_connections_before_the_pool_does() {
    let stack = idle_closing_stack(0.3).await;
    poll_after_idle_pauses(&stack).await;
}

#[tokio::test]
async fn safe_reads_are_resent_once_when_a_stale_pooled_connection_fails() {
    let stack = idle_closing_stack(10.0).await;
    poll_after_idle_pauses(&stack).await;
}

#[tokio::test]
async fn creates_on_a_pool_that_expires_before_the_upstream_are_all_answered() {
    let stack = idle_closing_stack(0.3).await;
    let tally = create_after_idle_pauses(&stack).await;
    assert_eq!(tally.unknown, 0, "no create should meet a stale connection");
    assert_eq!(stack.sim.stats().orders_created, tally.created);
}

#[tokio::test]
async fn creates_on_stale_pooled_connections_are_never_sent_twice() {
    let stack = idle_closing_stack(10.0).await;
    create_after_idle_pauses(&stack).await;
}

fn orders_fault(fault: Fault) -> Fault {
    Fault {
        route: Some("/v2/orders".into()),
        ..fault
    }
}

/// Sends one create and checks it was sent once, made one order, and that
/// the client was told the outcome is unknown.
async fn assert_lost_create_is_unknown(stack: &Stack) {
    let create = create_path(stack, 1).await;
    let (status, _, body) = stack.get_json(&create, &stack.key_a).await;
    assert_eq!(error_code(&body), "outcome_unknown", "{status} {body}");
    assert_ne!(
        status, 504,
        "a plain gateway timeout says nothing about the order"
    );
    assert!(body["message"].is_string(), "{body}");

    assert_eq!(stack.upstream_calls("/v2/orders").len(), 1, "sent once");
    assert_eq!(stack.sim.stats().orders_created, 1);
}

#[tokio::test]
async fn a_create_answered_after_the_response_timeout_is_reported_unknown_not_resent() {
    let stack = common::start_with(|_| {}, |g| g.upstream.response_timeout_seconds = 1.0).await;
    stack.sim.set_fault(orders_fault(Fault {
        hold_ms: 3000,
        ..Fault::default()
    }));
    assert_lost_create_is_unknown(&stack).await;
}

#[tokio::test]
async fn a_create_whose_connection_drops_after_it_applied_is_reported_unknown_not_resent() {
    let stack = common::start().await;
    stack.sim.set_fault(orders_fault(Fault {
        apply_then_drop: true,
        count: Some(1),
        ..Fault::default()
    }));
    assert_lost_create_is_unknown(&stack).await;
}

#[tokio::test]
async fn a_create_to_an_upstream_that_refuses_connections_is_reported_not_sent() {
    let stack = common::start().await;
    let create = create_path(&stack, 1).await;
    let Stack {
        sim,
        gateway,
        http,
        key_a,
        ..
    } = stack;
    sim.shutdown().await;

    let url = format!("http://{}/api{create}", gateway.addr);
    let response = http
        .get(url)
        .header("x-apikey", &key_a)
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(error_code(&body), "upstream_unreachable", "{status} {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("nothing was sent"), "{message}");
}

/// Headers a proxy must not pass on (RFC 9110 §7.6.1, plus the ones named in
/// `Connection` and the old `Proxy-Connection`).
const HOP_BY_HOP: &[(&str, &str)] = &[
    ("Connection", "close, X-Trace"),
    ("X-Trace", "1"),
    ("Keep-Alive", "timeout=1"),
    ("TE", "trailers"),
    ("Trailer", "X-Checksum"),
    ("Upgrade", "h2c"),
    ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
    ("Proxy-Connection", "keep-alive"),
];

#[tokio::test]
async fn hop_by_hop_headers_stay_off_the_upstream_connection() {
    let stack = common::start_with(|_| {}, |g| g.cache.balance_ttl_seconds = 0.001).await;
    accept_key_a(&stack).await;

    let mut headers = HOP_BY_HOP.to_vec();
    headers.push(("x-apikey", &stack.key_a));
    let targets = ["/api/v1/user/balance", "/api/v2/countries?service_id=13"];
    // Each balance call outlasts the 1 ms reuse time of the one before, so
    // every one of them reaches the upstream (a loopback round trip can be
    // quicker than 1 ms).
    let past_reuse = || tokio::time::sleep(std::time::Duration::from_millis(20));
    for target in targets {
        past_reuse().await;
        let answer = raw::exchange_until_close(stack.gateway.addr, target, &headers).await;
        assert_eq!(answer.status, 200, "{target}: {:?}", answer.json());
    }
    past_reuse().await;
    accept_key_a(&stack).await;

    let calls = stack.sim.requests();
    assert_eq!(
        calls.len(),
        4,
        "balance, two hop-by-hop calls, balance: {calls:#?}"
    );
    for call in &calls[1..3] {
        for (name, value) in &call.headers {
            let dropped = HOP_BY_HOP
                .iter()
                .any(|(hop, _)| hop.eq_ignore_ascii_case(name));
            assert!(!dropped, "{} carried {name}: {value}", call.path);
        }
        assert_eq!(call.key.as_deref(), Some(stack.key_a.as_str()));
    }
    let connections: Vec<u64> = calls.iter().map(|c| c.conn_id).collect();
    assert!(
        connections.iter().all(|&c| c == connections[0]),
        "{connections:?}"
    );
    assert_eq!(stack.sim.stats().connections_total, 1);
}
