//! Test harness: a simulator and a gateway on loopback ports, with scaled
//! windows (5 calls per second instead of per 10 s) so that tests run fast.
#![allow(dead_code)]

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use otpgate::{Config, GatewayHandle};
use otpgate_sim::{AccountSeed, RecordedRequest, SimConfig, SimHandle};
use tokio::net::TcpListener;

/// A key made up for this run only; nothing key-like lives in the repo.
pub fn fresh_key(label: &str) -> String {
    let noise = RandomState::new().hash_one(label);
    format!("test-{label}-{noise:016x}")
}

/// The simulator with a 1 s window and short lifecycles.
pub fn sim_config(keys: &[&str]) -> SimConfig {
    SimConfig {
        limit: 5,
        window: Duration::from_secs(1),
        block: Duration::from_secs(3),
        sms_delay: Duration::from_millis(300),
        cancel_lock: Duration::from_millis(300),
        h2h_settle: Duration::from_millis(300),
        accounts: keys
            .iter()
            .map(|key| AccountSeed::new(*key, 1_000_000, "tester"))
            .collect(),
        ..SimConfig::default()
    }
}

/// The gateway's defaults with the window scaled to 5 calls per second.
pub fn gateway_config(upstream: &str) -> Config {
    let mut config = Config::defaults();
    config.upstream.base_url = upstream.to_owned();
    config.pacing.window_seconds = 1.0;
    config.pacing.margin_seconds = 0.02;
    config.pacing.block_cooldown_seconds = 3.0;
    config.server.shutdown_grace_seconds = 5.0;
    config.upstream.response_timeout_seconds = 5.0;
    config.log.filter = "warn".into();
    config.store.path = ":memory:".into();
    config.limits.client_requests_per_second = 0;
    config.validate().expect("test config is valid");
    config
}

/// A running simulator and gateway, and a client for both.
pub struct Stack {
    pub sim: SimHandle,
    pub gateway: GatewayHandle,
    pub http: reqwest::Client,
    /// A client for the simulator itself, from 127.0.0.2 so that its calls
    /// do not count against the gateway's IP (127.0.0.1).
    pub direct: reqwest::Client,
    pub key_a: String,
    pub key_b: String,
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

/// Gives the gateway the real 5-per-10-s pacing (one call every 2.6 s),
/// for tests that need a queue slow enough to observe.
pub fn real_pacing(config: &mut Config) {
    config.pacing.window_seconds = 10.0;
    config.pacing.margin_seconds = 0.1;
}

/// Both servers with the scaled defaults.
pub async fn start() -> Stack {
    start_with(|_| {}, |_| {}).await
}

/// Both servers, after `tune_sim` and `tune_gateway` adjust their configs.
pub async fn start_with(
    tune_sim: impl FnOnce(&mut SimConfig),
    tune_gateway: impl FnOnce(&mut Config),
) -> Stack {
    let key_a = fresh_key("a");
    let key_b = fresh_key("b");
    let mut sim_cfg = sim_config(&[&key_a, &key_b]);
    tune_sim(&mut sim_cfg);
    let sim = otpgate_sim::spawn(loopback().await, sim_cfg).await;

    let mut config = gateway_config(&sim.base_url());
    tune_gateway(&mut config);
    config.validate().expect("tuned test config is valid");
    let gateway = otpgate::spawn(config, loopback().await, loopback().await).expect("gateway");
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let direct = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    Stack {
        sim,
        gateway,
        http,
        direct,
        key_a,
        key_b,
    }
}

impl Stack {
    /// `http://127.0.0.1:PORT/api` + `path` on the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api{path}", self.gateway.addr)
    }

    /// The same path on the simulator, for side-by-side comparisons.
    pub fn sim_url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    /// The admin listener's `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.admin_addr)
    }

    /// GET through the gateway with `key`.
    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("x-apikey", key)
            .send()
            .await
            .expect("gateway answers")
    }

    /// GET through the gateway and parse JSON; returns status, x-cache and body.
    pub async fn get_json(&self, path: &str, key: &str) -> (u16, String, serde_json::Value) {
        let response = self.get(path, key).await;
        let status = response.status().as_u16();
        let cache = header(&response, "x-cache");
        let body = response.json().await.expect("JSON body");
        (status, cache, body)
    }

    /// Upstream requests the simulator received whose path ends with `suffix`.
    pub fn upstream_calls(&self, suffix: &str) -> Vec<RecordedRequest> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with(suffix))
            .collect()
    }

    /// Makes the simulator block `ip` for `seconds`, as Cloudflare would.
    pub async fn block_ip(&self, ip: &str, seconds: u64) {
        let block = serde_json::json!({"ip": ip, "seconds": seconds});
        let control = format!("http://{}/__sim/block", self.sim.addr());
        let answer = self.direct.post(control).json(&block).send().await;
        assert!(answer.expect("simulator answers").status().is_success());
    }

    /// Stops the gateway, then the simulator.
    pub async fn stop(self) {
        self.gateway.shutdown().await;
        self.sim.shutdown().await;
    }
}

/// A header's value, or "" when absent.
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A (number_id, provider_id) with stock for a service, read from the simulator directly.
pub async fn offer(stack: &Stack, service_id: &str) -> (String, String) {
    offer_with_stock(stack, service_id, 1).await
}

/// A (number_id, provider_id) of `service_id` with at least `stock` numbers,
/// read from the simulator directly (from 127.0.0.2, its own budget).
pub async fn offer_with_stock(stack: &Stack, service_id: &str, stock: i64) -> (String, String) {
    let url = stack.sim_url(&format!("/v2/countries?service_id={service_id}"));
    let request = stack.direct.get(url).header("x-apikey", &stack.key_b);
    let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
    let countries = body["data"].as_array().expect("countries");
    let plain = |v: &serde_json::Value| v.as_str().map_or(v.to_string(), str::to_owned);
    countries
        .iter()
        .find_map(|country| {
            let prices = country["pricelist"].as_array()?;
            let offer = prices
                .iter()
                .find(|p| p["available"] == true && p["stock"].as_i64() >= Some(stock))?;
            Some((plain(&country["number_id"]), plain(&offer["provider_id"])))
        })
        .expect("an offer with enough stock")
}
