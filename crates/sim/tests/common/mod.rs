//! Shared harness of the simulator's integration tests: start a simulator on 127.0.0.1:0 with
//! short durations and talk HTTP to it.

#![allow(dead_code)]

use otpgate_sim::{SimConfig, SimHandle};
use reqwest::{Client, Response};
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpListener;

/// The demo keys every test world has.
pub const KEY_A: &str = "demo-key-1";
pub const KEY_B: &str = "demo-key-2";

/// A configuration with short lifecycles and a limiter too generous to get in the way.
pub fn quick_config() -> SimConfig {
    SimConfig {
        limit: 10_000,
        window: Duration::from_secs(1),
        sms_delay: Duration::from_millis(150),
        order_lifetime: Duration::from_secs(60),
        expiring_window: Duration::from_secs(10),
        cancel_lock: Duration::ZERO,
        h2h_settle: Duration::from_millis(150),
        ..SimConfig::default()
    }
}

/// A running simulator plus an HTTP client aimed at it.
pub struct Harness {
    pub sim: SimHandle,
    pub http: Client,
}

impl Harness {
    pub async fn start(config: SimConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = otpgate_sim::spawn(listener, config).await;
        let http = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self { sim, http }
    }

    pub async fn quick() -> Self {
        Self::start(quick_config()).await
    }

    /// `http://127.0.0.1:PORT` without `/api`.
    pub fn root(&self) -> String {
        format!("http://{}", self.sim.addr())
    }

    /// GET `{base_url}{path_and_query}` with an optional key.
    pub async fn get(&self, path_and_query: &str, key: Option<&str>) -> Response {
        let url = format!("{}{}", self.sim.base_url(), path_and_query);
        let mut request = self.http.get(url);
        if let Some(key) = key {
            request = request.header("x-apikey", key);
        }
        request.send().await.unwrap()
    }

    /// GET with KEY_A, asserting a 200 success envelope; returns `data`.
    pub async fn data(&self, path_and_query: &str) -> Value {
        self.data_as(path_and_query, KEY_A).await
    }

    /// GET with `key`, asserting a 200 success envelope; returns `data`.
    pub async fn data_as(&self, path_and_query: &str, key: &str) -> Value {
        let response = self.get(path_and_query, Some(key)).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path_and_query}: {body}");
        assert_eq!(body["success"], true, "{path_and_query}: {body}");
        body["data"].clone()
    }

    /// GET with `key`, expecting a refusal; returns (status, error.message).
    pub async fn refusal(&self, path_and_query: &str, key: Option<&str>) -> (u16, String) {
        let response = self.get(path_and_query, key).await;
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        let body: Value = response.json().await.unwrap();
        assert!(content_type.starts_with("application/json"));
        assert_eq!(body["success"], false, "{path_and_query}: {body}");
        let message = body["error"]["message"].as_str().unwrap().to_string();
        (status, message)
    }

    /// A control call; returns (status, JSON body).
    pub async fn control(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/__sim/{}", self.root(), path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Buys the first available number of WhatsApp (service 13); returns the order data.
    pub async fn buy_number(&self, key: &str) -> Value {
        let (number_id, provider_id, _) = self.available_offer(13).await;
        let query =
            format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1");
        self.data_as(&query, key).await
    }

    /// (number_id, provider_id, price) of the first provider in stock for a service.
    pub async fn available_offer(&self, service: u32) -> (u64, String, i64) {
        let countries = self
            .data(&format!("/v2/countries?service_id={service}"))
            .await;
        for country in countries.as_array().unwrap() {
            for line in country["pricelist"].as_array().unwrap() {
                if line["available"] == true {
                    return (
                        country["number_id"].as_u64().unwrap(),
                        line["provider_id"].as_str().unwrap().to_string(),
                        line["price"].as_i64().unwrap(),
                    );
                }
            }
        }
        panic!("no stock for service {service}");
    }
}

/// A raw HTTP/1.1 response: status line and headers (lower-cased names), and body bytes.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `request` as is and reads one response (Content-Length framed) from the stream.
pub async fn raw_exchange(stream: &mut tokio::net::TcpStream, request: &str) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// A GET request line plus headers, keep-alive, as raw text.
pub fn raw_get(target: &str, extra_headers: &[(&str, &str)]) -> String {
    let mut request = format!("GET {target} HTTP/1.1\r\nhost: sim.invalid\r\n");
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}
