//! Graceful shutdown (B15): idle connections do not hold it up, kept-alive
//! connections slip no new call in, and calls already sent finish.

use std::time::Duration;

use otpgate_sim::Fault;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{self, Stack};
use crate::raw;
use crate::{create_path, error_code, eventually};

/// Generous bound for a shutdown with nothing in flight: a liveness check,
/// far below the grace and header timeouts that a hang would run into.
const PROMPT: Duration = Duration::from_secs(5);

fn slow_orders(stack: &Stack, latency_ms: u64) {
    stack.sim.set_fault(Fault {
        route: Some("/v2/orders".into()),
        latency_ms,
        ..Fault::default()
    });
}

/// Opens a connection, makes one keyless catalog call on it and keeps it.
async fn kept_alive_connection(stack: &Stack) -> TcpStream {
    let mut stream = TcpStream::connect(stack.gateway.addr)
        .await
        .expect("connect");
    let request = raw::get("/api/v1/h2h/list/rekening", &[]);
    stream.write_all(request.as_bytes()).await.expect("write");
    let answer = raw::read_response(&mut stream)
        .await
        .expect("read")
        .expect("an answer");
    assert_eq!(answer.status, 200);
    assert_ne!(answer.header("connection"), Some("close"));
    stream
}

#[tokio::test]
async fn idle_client_connections_do_not_hold_up_shutdown() {
    let stack = common::start_with(
        |_| {},
        |g| {
            g.server.shutdown_grace_seconds = 30.0;
            g.server.header_read_timeout_seconds = 30.0;
        },
    )
    .await;
    let silent = TcpStream::connect(stack.gateway.addr)
        .await
        .expect("connect");
    let mut kept = kept_alive_connection(&stack).await;

    let Stack { mut gateway, .. } = stack;
    gateway.begin_shutdown();
    let finished = tokio::time::timeout(PROMPT, gateway.finished()).await;
    assert!(finished.is_ok(), "shutdown waited on idle connections");

    let after = raw::read_response(&mut kept).await;
    assert!(
        !matches!(after, Ok(Some(_))),
        "the kept connection was closed: {after:?}"
    );
    drop(silent);
}

#[tokio::test]
async fn a_kept_alive_connection_cannot_slip_an_order_in_after_shutdown_begins() {
    let stack = common::start().await;
    slow_orders(&stack, 1000);
    let create = create_path(&stack, 2).await;
    let mut kept = kept_alive_connection(&stack).await;

    // An order in flight keeps the gateway draining while the late one comes.
    let in_flight = stack
        .http
        .get(stack.url(&create))
        .header("x-apikey", &stack.key_a)
        .send();
    let in_flight = tokio::spawn(in_flight);
    eventually("the first order reached the upstream", || {
        stack.upstream_calls("/v2/orders").len() == 1
    })
    .await;

    let Stack {
        sim,
        mut gateway,
        key_a,
        ..
    } = stack;
    gateway.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = raw::get(&format!("/api{create}&late=1"), &[("x-apikey", &key_a)]);
    let late = match kept.write_all(late.as_bytes()).await {
        Ok(()) => raw::read_response(&mut kept).await,
        Err(error) => Err(error),
    };
    if let Ok(Some(answer)) = &late {
        assert_eq!(answer.status, 503, "{:?}", answer.json());
        assert_eq!(error_code(&answer.json()), "shutting_down");
        let connection = answer
            .header("connection")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert_eq!(connection, "close");
    }

    let first = in_flight
        .await
        .unwrap()
        .expect("the first order is answered");
    assert_eq!(first.status(), 200);
    tokio::time::timeout(PROMPT, gateway.finished())
        .await
        .expect("shutdown ends");
    let orders: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/v2/orders"))
        .collect();
    assert_eq!(
        orders.len(),
        1,
        "only the order sent before shutdown: {orders:#?}"
    );
    assert_eq!(sim.stats().orders_created, 1);
}

#[tokio::test]
async fn an_order_in_flight_when_shutdown_begins_completes_and_reaches_its_client() {
    let stack = common::start().await;
    slow_orders(&stack, 1500);
    let create = create_path(&stack, 1).await;

    let in_flight = stack
        .http
        .get(stack.url(&create))
        .header("x-apikey", &stack.key_a)
        .send();
    let in_flight = tokio::spawn(in_flight);
    eventually("the order reached the upstream", || {
        stack.upstream_calls("/v2/orders").len() == 1
    })
    .await;
    let Stack {
        sim, mut gateway, ..
    } = stack;
    gateway.begin_shutdown();

    let response = in_flight.await.unwrap().expect("the client gets an answer");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(body["success"], true, "{body}");
    assert!(body["data"]["order_id"].is_string(), "{body}");
    tokio::time::timeout(PROMPT, gateway.finished())
        .await
        .expect("shutdown ends");
    assert_eq!(sim.stats().orders_created, 1);
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.path.ends_with("/v2/orders"))
            .count(),
        1
    );
}
