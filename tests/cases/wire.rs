//! What crosses the wire unchanged or correctly described: the query string
//! (B10), content codings (B13) and CORS preflights (B14).

use std::io::Read;

use reqwest::Method;

use crate::common::{self, Stack};
use crate::raw::{self, RawResponse};
use crate::{accept_key_a, error_code};

#[tokio::test]
async fn the_query_string_reaches_the_upstream_byte_for_byte() {
    let stack = common::start().await;
    accept_key_a(&stack).await;
    let cases = [
        (
            "/api/v1/h2h/check/username",
            "/v1/h2h/check/username",
            "account_code=ML&account_number=12%2B34%2056&b=2&a=1&b=3&flag&sig=%E9%FF&s=1;2",
        ),
        (
            "//api//v2/orders",
            "/v2/orders",
            "number_id=1&provider_id=3&operator_id=&service_id=5",
        ),
        (
            "/v2/countries/",
            "/v2/countries",
            "service_id=13&search=a+b&search=&x=%7e%7E&&=v&k==v",
        ),
        (
            "/api/v1/orders/get_status",
            "/v1/orders/get_status",
            // Junk repeated; a repeated id is refused (tests/poll_storm.rs).
            "order_id=RO1&z=RO2;x&z&%41=%2f",
        ),
    ];

    for (path, template, query) in cases {
        let target = format!("{path}?{query}");
        let headers = [("x-apikey", stack.key_a.as_str())];
        raw::exchange_until_close(stack.gateway.addr, &target, &headers).await;

        let calls = stack.upstream_calls(template);
        let call = calls
            .last()
            .unwrap_or_else(|| panic!("{target} never reached the upstream"));
        assert_eq!(call.path, format!("/api{template}"), "{target}");
        assert_eq!(call.query.as_deref(), Some(query), "{target}");
    }
}

/// The body with its content coding undone; panics when it does not decode.
fn decoded(answer: &RawResponse, what: &str) -> Vec<u8> {
    let coding = answer.header("content-encoding").unwrap_or("identity");
    let body = &answer.body[..];
    let mut plain = Vec::new();
    let result = match coding.trim().to_ascii_lowercase().as_str() {
        "identity" => {
            plain = body.to_vec();
            Ok(0)
        }
        "gzip" => flate2::read::GzDecoder::new(body).read_to_end(&mut plain),
        "deflate" => flate2::read::ZlibDecoder::new(body).read_to_end(&mut plain),
        "br" => brotli::Decompressor::new(body, 4096).read_to_end(&mut plain),
        other => panic!("{what}: unexpected content-encoding {other}"),
    };
    result.unwrap_or_else(|e| panic!("{what}: {coding} body does not decode: {e}"));
    plain
}

/// Checks that the headers describe the bytes, and returns the decoded JSON.
fn described_truly(answer: &RawResponse, what: &str) -> serde_json::Value {
    if let Some(length) = answer.header("content-length") {
        assert!(!answer.chunked, "{what}: content-length and chunked");
        assert_eq!(
            length.parse::<usize>().ok(),
            Some(answer.wire_len),
            "{what}: content-length"
        );
    }
    let coding = answer.header("content-encoding").unwrap_or("identity");
    if coding != "identity" {
        let vary = answer
            .header("vary")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            vary.contains("accept-encoding"),
            "{what}: {coding} without Vary"
        );
    }
    let plain = decoded(answer, what);
    assert_eq!(
        plain.first(),
        Some(&b'{'),
        "{what}: {}",
        String::from_utf8_lossy(&plain)
    );
    serde_json::from_slice(&plain).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"))
}

async fn services(stack: &Stack, accept_encoding: Option<&str>) -> RawResponse {
    let mut headers = vec![("x-apikey", stack.key_a.as_str())];
    if let Some(accept) = accept_encoding {
        headers.push(("accept-encoding", accept));
    }
    raw::exchange_until_close(stack.gateway.addr, "/api/v2/services", &headers).await
}

#[tokio::test]
async fn every_answer_is_encoded_as_its_headers_say_and_only_as_the_client_accepts() {
    let stack = common::start_with(|sim| sim.gzip = true, |_| {}).await;

    let all = services(&stack, Some("gzip, deflate, br")).await;
    assert_eq!(all.header("x-cache"), Some("MISS"));
    let json = described_truly(&all, "gzip, deflate, br");
    let asked = &stack.upstream_calls("/v2/services")[0].headers;
    let gzip_asked = asked
        .iter()
        .any(|(n, v)| n == "accept-encoding" && v.contains("gzip"));
    assert!(
        gzip_asked,
        "precondition: the simulator was asked for gzip: {asked:?}"
    );

    let plain = services(&stack, None).await;
    assert_eq!(plain.header("x-cache"), Some("HIT"));
    assert_eq!(
        plain.header("content-encoding").unwrap_or("identity"),
        "identity"
    );
    assert_eq!(described_truly(&plain, "no accept-encoding"), json);
    // It skipped the CORS and compression layers, and says what would change it.
    let vary = plain
        .header("vary")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        vary.contains("origin") && vary.contains("accept-encoding"),
        "vary: {vary:?}"
    );

    let accepts = [
        ("br", &["identity", "br"][..]),
        ("gzip", &["identity", "gzip"][..]),
        ("gzip;q=0, identity", &["identity"][..]),
        ("deflate", &["identity", "deflate"][..]),
        ("identity", &["identity"][..]),
    ];
    for (accept, allowed) in accepts {
        let answer = services(&stack, Some(accept)).await;
        let coding = answer.header("content-encoding").unwrap_or("identity");
        assert!(allowed.contains(&coding), "accept {accept:?} got {coding}");
        assert_eq!(described_truly(&answer, accept), json);
    }

    let headers = [("accept-encoding", "gzip, deflate, br")];
    let refusal = raw::exchange_until_close(stack.gateway.addr, "/api/v2/services", &headers).await;
    assert_eq!(
        error_code(&described_truly(&refusal, "gateway's own answer")),
        "missing_api_key"
    );
}

#[tokio::test]
async fn cors_preflights_are_answered_without_a_key_or_an_upstream_call() {
    let stack = common::start().await;
    let base = format!("http://{}", stack.gateway.addr);
    let preflights = [
        ("/v2/services", "GET", "x-apikey"),
        ("/v2/orders", "GET", "x-apikey"),
        ("/api/v1/user/balance", "GET", "x-apikey"),
        ("/api/v2/countries", "GET", "X-ApiKey, Content-Type"),
        (
            "/api/v1/h2h/transaksi/create",
            "POST",
            "x-apikey,content-type",
        ),
    ];
    for (path, method, asked_headers) in preflights {
        let response = stack
            .http
            .request(Method::OPTIONS, format!("{base}{path}"))
            .header("origin", "https://shop.example")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", asked_headers)
            .send()
            .await
            .expect("preflight answered");
        let status = response.status().as_u16();
        assert!(status == 200 || status == 204, "{path}: {status}");
        let header = |name| common::header(&response, name).to_ascii_lowercase();
        assert!(
            !header("access-control-allow-origin").is_empty(),
            "{path}: no allow-origin"
        );
        let methods = header("access-control-allow-methods");
        assert!(
            methods.contains(&method.to_ascii_lowercase()),
            "{path}: methods {methods}"
        );
        let allowed = header("access-control-allow-headers");
        assert!(allowed.contains("x-apikey"), "{path}: headers {allowed}");
        assert!(
            !header("access-control-max-age").is_empty(),
            "{path}: no max-age"
        );
    }
    assert_eq!(
        stack.sim.stats().requests_total,
        0,
        "a preflight never goes upstream"
    );
}
