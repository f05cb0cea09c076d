//! `otpgate demo`: the simulator and the gateway in one process on loopback,
//! a bot's purchase walked through the gateway, then both left running.
//!
//! The tour runs at the real 5-calls-per-10-s pacing, so it takes about a
//! minute: that is what the gateway is for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::cli::{bind, shutdown_signal};
use crate::config::{Config, Overrides};
use crate::telemetry;

/// `otpgate demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Gateway client listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Gateway admin listener.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Simulator listener.
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub sim_listen: SocketAddr,
    /// Exit after the tour instead of serving until ctrl-c.
    #[arg(long)]
    pub exit: bool,
}

const DEMO_KEY: &str = "demo-key-1";

/// Starts both servers, runs the tour, then serves until ctrl-c (or exits with `--exit`).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: Some(args.listen),
        admin_listen: Some(args.admin_listen),
        upstream: None,
    };
    let sim_listener = bind(args.sim_listen, "--sim-listen").await?;
    let sim_config = otpgate_sim::SimConfig {
        sms_delay: Duration::from_secs(6),
        ..otpgate_sim::SimConfig::default()
    };
    let sim = otpgate_sim::spawn(sim_listener, sim_config).await;
    let overrides = Overrides {
        upstream: Some(sim.base_url()),
        ..overrides
    };
    let mut config = Config::load(None, &overrides)?;
    config.store.path = ":memory:".into();
    let mut log = config.log.clone();
    log.filter = "warn".into();
    telemetry::init(&log);

    let client = bind(args.listen, "--listen").await?;
    let admin = bind(args.admin_listen, "--admin-listen").await?;
    let plan = config.pacing_plan()?;
    let gateway = crate::spawn(config, client, admin)?;
    let base = format!("http://{}/api", gateway.addr);
    println!("otpgate demo");
    println!("  simulator (the upstream): {}", sim.base_url());
    println!("  gateway (your bots' base URL): {base}");
    println!("  metrics: http://{}/metrics", gateway.admin_addr);
    println!("  pacing: {plan}\n");

    let tour = Tour {
        base: base.clone(),
        http: Client::builder(TokioExecutor::new()).build_http(),
    };
    tour.run().await.context("demo tour")?;
    let stats = sim.stats();
    println!("\nWhat the simulated RumahOTP saw:");
    println!("  calls received:          {}", stats.requests_total);
    println!(
        "  most in any 10 s window: {} (limit 5)",
        stats.max_in_any_window
    );
    println!("  window violations:       {}", stats.window_violations);
    println!("  blocked answers:         {}", stats.blocked_responses);
    println!("  orders created:          {}", stats.orders_created);

    if args.exit {
        gateway.shutdown().await;
        sim.shutdown().await;
        return Ok(());
    }
    println!("\nBoth keep running. Try, with the demo key {DEMO_KEY}:");
    println!("  curl -s {base}/v2/services -H 'x-apikey: {DEMO_KEY}' -D - -o /dev/null");
    println!("  curl -s {base}/v1/user/balance -H 'x-apikey: {DEMO_KEY}'");
    println!(
        "  curl -s http://{}/metrics | grep otpgate_",
        gateway.admin_addr
    );
    println!("Ctrl-C stops both.");
    shutdown_signal().await;
    gateway.shutdown().await;
    sim.shutdown().await;
    Ok(())
}

struct Tour {
    base: String,
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl Tour {
    async fn run(&self) -> anyhow::Result<()> {
        println!("1. 50 bots ask for the service list at the same moment");
        let services = self.concurrent_catalog(50).await?;

        println!("2. A bot checks its balance");
        let balance = self.get("/v1/user/balance").await?;
        println!("   balance: {}", balance["data"]["formated"]);

        let service = services["data"][0].clone();
        println!("3. It looks up countries for {}", service["service_name"]);
        let path = format!(
            "/v2/countries?service_id={}",
            plain(&service["service_code"])
        );
        let countries = self.get(&path).await?;
        let (number_id, provider_id) = pick_offer(&countries)?;
        let offered = countries["data"].as_array().map_or(0, Vec::len);
        println!("   {offered} countries offered; taking the first with stock");

        println!("4. It buys a number (number_id {number_id}, provider {provider_id})");
        let path =
            format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1");
        let order = self.get(&path).await?;
        let order_id = order["data"]["order_id"]
            .as_str()
            .context("order_id")?
            .to_owned();
        println!(
            "   order {order_id}: {} ({})",
            order["data"]["phone_number"], order["data"]["price_formated"]
        );

        println!("5. It polls the order every 2 s, as bots do, until the OTP arrives");
        let status_path = format!("/v1/orders/get_status?order_id={order_id}");
        self.poll_for_otp(&status_path).await?;

        println!("6. It confirms the code");
        self.get(&format!(
            "/v1/orders/set_status?order_id={order_id}&status=done"
        ))
        .await?;
        let status = self.get(&status_path).await?;
        println!("   status now: {}", status["data"]["status"]);
        Ok(())
    }

    async fn concurrent_catalog(self: &Tour, bots: usize) -> anyhow::Result<Value> {
        let tour = Arc::new(Tour {
            base: self.base.clone(),
            http: self.http.clone(),
        });
        // Collected, so that all are spawned before the first is awaited.
        let calls: Vec<_> = (0..bots)
            .map(|_| {
                let tour = Arc::clone(&tour);
                tokio::spawn(async move { tour.fetch("/v2/services").await })
            })
            .collect();
        let mut cache_results = std::collections::BTreeMap::<String, usize>::new();
        let mut body = Value::Null;
        for call in calls {
            let (status, cache, json) = call.await??;
            if status != StatusCode::OK {
                bail!("services answered {status}: {json}");
            }
            *cache_results.entry(cache).or_default() += 1;
            body = json;
        }
        println!(
            "   {bots} answers, x-cache: {cache_results:?} (MISS: answered by the one fetch \
             they joined; the simulator's call count is at the end)"
        );
        let again = self.fetch("/v2/services").await?;
        println!("   one more ask: x-cache {} (no upstream call)", again.1);
        Ok(body)
    }

    async fn poll_for_otp(&self, path: &str) -> anyhow::Result<()> {
        for _ in 0..30 {
            let (_, cache, status) = self.fetch(path).await?;
            let state = status["data"]["status"].as_str().unwrap_or("?").to_owned();
            println!(
                "   status {state:<9} otp {} (x-cache {cache})",
                status["data"]["otp_code"]
            );
            if state == "received" {
                println!("   SMS: {}", status["data"]["otp_msg"]);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        bail!("no OTP within a minute")
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, _, json) = self.fetch(path).await?;
        if json["success"] != Value::Bool(true) {
            bail!("{path} answered {status}: {json}");
        }
        Ok(json)
    }

    async fn fetch(&self, path: &str) -> anyhow::Result<(StatusCode, String, Value)> {
        let request = Request::get(format!("{}{path}", self.base))
            .header("x-apikey", DEMO_KEY)
            .header("prefer", "wait=30")
            .body(Empty::new())?;
        let response = self.http.request(request).await?;
        let status = response.status();
        let cache = response
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, cache, serde_json::from_slice(&body)?))
    }
}

/// The first country and provider with stock.
fn pick_offer(countries: &Value) -> anyhow::Result<(String, String)> {
    let offers = countries["data"].as_array().context("countries data")?;
    offers
        .iter()
        .find_map(|country| {
            let prices = country["pricelist"].as_array()?;
            let offer = prices
                .iter()
                .find(|p| p["available"] == Value::Bool(true))?;
            Some((plain(&country["number_id"]), plain(&offer["provider_id"])))
        })
        .context("no country with stock")
}

/// A JSON string or number as it goes in a query string.
fn plain(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}
