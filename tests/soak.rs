//! Soak: ten simulated minutes at the real 5 calls per 10 s, many bots with
//! mixed traffic and impatient retries, random faults from the simulator.
//! Tokio's paused clock runs simulator, gateway and bots in virtual time, so
//! the ten minutes pass in seconds. Figures are printed (`--nocapture`).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otpgate_sim::{AccountSeed, Fault, SimConfig};
use serde_json::Value;
use tokio::net::TcpListener;

const BOTS: usize = 12;
const SOAK: Duration = Duration::from_secs(600);

/// A small deterministic generator, so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the bots saw, for the final accounting.
#[derive(Default)]
struct Ledger {
    orders_seen: HashSet<String>,
    unknown_outcomes: usize,
    owned_status_not_found: usize,
    statuses: HashMap<u16, usize>,
    html_answers: usize,
}

struct Bot {
    http: reqwest::Client,
    base: String,
    key: String,
    orders: Vec<String>,
    rng: Rng,
    ledger: Arc<Mutex<Ledger>>,
    offer: String,
}

impl Bot {
    /// One GET as a careless client makes it: a timeout of 5 to 30 s and one
    /// blind retry on timeout, whatever the call.
    async fn get(&mut self, path: &str, extra: Option<(&str, String)>) -> Option<Value> {
        let timeout = Duration::from_secs(5 + self.rng.below(26));
        for _attempt in 0..2 {
            let mut request = self
                .http
                .get(format!("{}{path}", self.base))
                .timeout(timeout);
            request = request.header("x-apikey", &self.key);
            if let Some((name, value)) = &extra {
                request = request.header(*name, value);
            }
            let Ok(response) = request.send().await else {
                continue;
            };
            let status = response.status().as_u16();
            let html = response
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or("").contains("html"));
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let mut ledger = self.ledger.lock().unwrap();
            *ledger.statuses.entry(status).or_default() += 1;
            ledger.html_answers += usize::from(html);
            if body["error"]["code"] == "outcome_unknown" {
                ledger.unknown_outcomes += 1;
            }
            return Some(body);
        }
        None
    }

    async fn act(&mut self) {
        match self.rng.below(10) {
            0..=2 => {
                self.get("/v2/services", None).await;
            }
            3 => {
                let service = 10 + self.rng.below(8);
                self.get(&format!("/v2/countries?service_id={service}"), None)
                    .await;
            }
            4 => {
                self.get("/v1/user/balance", None).await;
            }
            5 | 6 => self.buy().await,
            _ => self.poll().await,
        }
    }

    async fn buy(&mut self) {
        let with_key = self.rng.below(2) == 0;
        let extra = with_key.then(|| {
            (
                "idempotency-key",
                format!("soak-{}", self.rng.below(1 << 40)),
            )
        });
        let offer = self.offer.clone();
        let Some(body) = self.get(&offer, extra).await else {
            return;
        };
        if let Some(id) = body["data"]["order_id"].as_str() {
            self.orders.push(id.to_owned());
            self.ledger
                .lock()
                .unwrap()
                .orders_seen
                .insert(id.to_owned());
        }
    }

    async fn poll(&mut self) {
        let Some(order) = self.orders.last().cloned() else {
            return;
        };
        let path = format!("/v1/orders/get_status?order_id={order}");
        let Some(body) = self.get(&path, None).await else {
            return;
        };
        if body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found"))
        {
            self.ledger.lock().unwrap().owned_status_not_found += 1;
        }
        if body["data"]["status"] == "received" {
            self.orders.pop();
            let done = format!("/v1/orders/set_status?order_id={order}&status=done");
            self.get(&done, None).await;
        }
    }
}

/// A fault for each simulated minute, cleared at the next.
fn fault_of_minute(minute: u64) -> Option<Fault> {
    let orders = Some("/v2/orders".to_owned());
    match minute % 6 {
        1 => Some(Fault {
            error_rate: 0.1,
            ..Fault::default()
        }),
        2 => Some(Fault {
            route: orders,
            reset_rate: 0.3,
            ..Fault::default()
        }),
        3 => Some(Fault {
            route: orders,
            apply_then_drop: true,
            count: Some(2),
            ..Fault::default()
        }),
        4 => Some(Fault {
            html_error_rate: 0.1,
            latency_ms: 300,
            ..Fault::default()
        }),
        5 => Some(Fault {
            route: orders,
            hold_ms: 8_000,
            count: Some(2),
            ..Fault::default()
        }),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn ten_simulated_minutes_of_mixed_traffic_with_faults_break_no_promise() {
    let keys: Vec<String> = (0..BOTS)
        .map(|i| common::fresh_key(&format!("soak{i}")))
        .collect();
    let sim_config = SimConfig {
        sms_delay: Duration::from_secs(20),
        accounts: keys
            .iter()
            .map(|k| AccountSeed::new(k.clone(), 50_000_000, "soak"))
            .collect(),
        ..SimConfig::default()
    };
    let sim = otpgate_sim::spawn(TcpListener::bind("127.0.0.1:0").await.unwrap(), sim_config).await;
    let mut config = otpgate::Config::defaults();
    config.upstream.base_url = sim.base_url();
    config.upstream.response_timeout_seconds = 5.0;
    config.store.path = ":memory:".into();
    config.limits.client_requests_per_second = 0;
    config.log.filter = "error".into();
    let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = otpgate::spawn(config, client, admin).unwrap();
    let base = format!("http://{}/api", gateway.addr);

    let direct = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let countries: Value = direct
        .get(format!("{}/v2/countries?service_id=13", sim.base_url()))
        .header("x-apikey", &keys[0])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let country = &countries["data"][0];
    let provider = &country["pricelist"][0]["provider_id"];
    let offer = format!(
        "/v2/orders?number_id={}&provider_id={}&operator_id=1",
        country["number_id"],
        provider.as_str().unwrap()
    );

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = tokio::time::Instant::now();
    let mut bots = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut bot = Bot {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: base.clone(),
            key: key.clone(),
            orders: Vec::new(),
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1)),
            ledger: Arc::clone(&ledger),
            offer: offer.clone(),
        };
        bots.push(tokio::spawn(async move {
            while started.elapsed() < SOAK {
                bot.act().await;
                tokio::time::sleep(Duration::from_millis(1000 + bot.rng.below(7000))).await;
            }
        }));
    }
    for minute in 0..SOAK.as_secs() / 60 {
        sim.clear_faults();
        if let Some(fault) = fault_of_minute(minute) {
            sim.set_fault(fault);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    for bot in bots {
        bot.await.unwrap();
    }
    let busy = started.elapsed();
    sim.clear_faults();
    tokio::time::sleep(Duration::from_secs(30)).await;

    let stats = sim.stats();
    let slots = busy.as_secs_f64() / 2.6;
    println!(
        "pacing efficiency: {:.3} of the configured rate",
        stats.requests_total as f64 / slots
    );
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let answered: usize = ledger.statuses.values().sum();
    println!(
        "soak: {answered} client answers {:?}; upstream {} calls, most in any 10 s window {}, \
         violations {}, blocks {}; orders created {}, distinct orders clients saw {}, \
         outcome-unknown answers {}",
        ledger.statuses,
        stats.requests_total,
        stats.max_in_any_window,
        stats.window_violations,
        stats.blocks_total,
        stats.orders_created,
        ledger.orders_seen.len(),
        ledger.unknown_outcomes,
    );
    assert_eq!(stats.window_violations, 0, "{stats:?}");
    assert_eq!(stats.blocks_total, 0, "{stats:?}");
    assert!(stats.max_in_any_window <= 4, "{stats:?}");
    assert_eq!(ledger.html_answers, 0, "clients never see HTML");
    assert_eq!(ledger.owned_status_not_found, 0, "no lost affinity");
    let created = stats.orders_created as usize;
    assert!(
        ledger.orders_seen.len() <= created,
        "every order a client saw exists"
    );
    assert!(
        created <= ledger.orders_seen.len() + ledger.unknown_outcomes,
        "no order nobody was told about: {created} created"
    );
    assert!(
        ledger.orders_seen.len() >= 20,
        "the soak bought numbers: {}",
        ledger.orders_seen.len()
    );
    assert!(
        stats.requests_total >= 150,
        "the egress was kept busy: {stats:?}"
    );
    gateway.shutdown().await;
    sim.shutdown().await;
}
