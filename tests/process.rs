//! The real `otpgate` binary as a child process, in front of the simulator
//! (in this process, on loopback): what only a process shows. Records that
//! survive SIGKILL, a clean exit on SIGTERM, keys and credentials that never
//! reach any output, and bad configuration refused before a socket opens.

mod common;
#[path = "process/harness.rs"]
mod harness;

use std::path::Path;

use otpgate::auth::Fingerprint;
use otpgate_sim::{Fault, SimHandle};
use serde_json::Value;

use common::fresh_key;
use harness::{GatewayProcess, Launch, Scratch, client, direct_client, eventually, listening};

/// The simulator's WhatsApp service, sold in every seeded country.
const SERVICE: &str = "13";

/// The simulator on a loopback port, with two accounts made for this run.
struct Upstream {
    sim: SimHandle,
    base_url: String,
    key: String,
    other_key: String,
}

impl Upstream {
    async fn start() -> Self {
        let key = fresh_key("proc");
        let other_key = fresh_key("other");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let sim = otpgate_sim::spawn(listener, common::sim_config(&[&key, &other_key])).await;
        let base_url = sim.base_url();
        Self {
            sim,
            base_url,
            key,
            other_key,
        }
    }

    /// Scaled settings, the store at `store`, then `env`.
    fn launch<'a>(&'a self, store: &'a Path, env: &'a [(&'a str, &'a str)]) -> Launch<'a> {
        Launch {
            upstream: &self.base_url,
            store,
            env,
        }
    }

    /// `/v2/orders?…` for an offer in stock, read from the simulator directly
    /// (from 127.0.0.2) so that the gateway's budget is untouched.
    async fn buy_path(&self) -> String {
        let url = format!("{}/v2/countries?service_id={SERVICE}", self.base_url);
        let countries: Value = direct_client()
            .get(url)
            .header("x-apikey", &self.other_key)
            .send()
            .await
            .expect("simulator answers")
            .json()
            .await
            .expect("countries JSON");
        let plain = |v: &Value| v.as_str().map_or(v.to_string(), str::to_owned);
        let (number_id, provider_id) = countries["data"]
            .as_array()
            .expect("countries")
            .iter()
            .find_map(|country| {
                let prices = country["pricelist"].as_array()?;
                let offer = prices.iter().find(|p| p["available"] == true)?;
                Some((plain(&country["number_id"]), plain(&offer["provider_id"])))
            })
            .expect("an offer with stock");
        format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1")
    }

    /// Whether the simulator has received a call to `route`.
    fn has_seen(&self, route: &str) -> bool {
        self.sim.requests().iter().any(|r| r.path.ends_with(route))
    }
}

/// One answer as a client saw it: status, headers, body text.
struct Seen {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Seen {
    async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("answer body");
        Self {
            status,
            headers,
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("JSON: {}", self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Status line, every header and the body, for grepping.
    fn transcript(&self) -> String {
        let mut text = format!("{}\n", self.status);
        for (name, value) in &self.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            text.push_str(&format!("{name}: {value}\n"));
        }
        text + &self.body + "\n"
    }
}

/// GET `path` through `gateway` with optional key and `Idempotency-Key`.
async fn get(
    gateway: &GatewayProcess,
    path: &str,
    key: Option<&str>,
    idempotency_key: Option<&str>,
) -> Seen {
    let mut request = client().get(gateway.url(path));
    if let Some(key) = key {
        request = request.header("x-apikey", key);
    }
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    Seen::of(request.send().await.expect("gateway answers")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_buy_answered_before_sigkill_is_replayed_by_the_next_process() {
    let upstream = Upstream::start().await;
    let scratch = Scratch::new("sigkill");
    let store = scratch.file("store.db");
    let buy = upstream.buy_path().await;
    let key = Some(upstream.key.as_str());
    let idem = Some("idem-sigkill-1");

    let mut first = GatewayProcess::start(&scratch, "first", upstream.launch(&store, &[])).await;
    let bought = get(&first, &buy, key, idem).await;
    assert_eq!(bought.status, 200, "{}", bought.body);
    first.kill().await;

    let second = GatewayProcess::start(&scratch, "second", upstream.launch(&store, &[])).await;
    let replayed = get(&second, &buy, key, idem).await;
    assert_eq!(replayed.status, 200, "{}", replayed.body);
    assert_eq!(replayed.header("idempotent-replayed"), "true");
    let order_id = &bought.json()["data"]["order_id"];
    assert!(!order_id.is_null(), "{}", bought.body);
    assert_eq!(&replayed.json()["data"]["order_id"], order_id);
    assert_eq!(upstream.sim.stats().orders_created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_order_answered_before_sigkill_still_reaches_its_account_after_restart() {
    let upstream = Upstream::start().await;
    let scratch = Scratch::new("sigkill-pool");
    let store = scratch.file("store.db");
    let account_key = scratch.write("main.key", &upstream.key);
    let other_key = scratch.write("other.key", &upstream.other_key);
    let bot_key = fresh_key("bot");
    let rival_key = fresh_key("rival");
    let digest = |key: &str| otpgate::auth::Fingerprint::of(key.as_bytes()).to_hex();
    let config = scratch.write(
        "pools.toml",
        &format!(
            "[auth]\npass_through = false\n\n\
             [[accounts]]\nname = \"main\"\nkey_file = {:?}\n\n\
             [[accounts]]\nname = \"other\"\nkey_file = {:?}\n\n\
             [[clients]]\nname = \"bot\"\nkey_sha256 = \"{}\"\npool = [\"main\"]\n\n\
             [[clients]]\nname = \"rival\"\nkey_sha256 = \"{}\"\npool = [\"other\"]\n",
            account_key.to_str().unwrap(),
            other_key.to_str().unwrap(),
            digest(&bot_key),
            digest(&rival_key),
        ),
    );
    let config = config.to_str().unwrap().to_owned();
    let env = [("OTPGATE_CONFIG", config.as_str())];
    let buy = upstream.buy_path().await;

    let mut first = GatewayProcess::start(&scratch, "first", upstream.launch(&store, &env)).await;
    let bought = get(&first, &buy, Some(&bot_key), None).await;
    assert_eq!(bought.status, 200, "{}", bought.body);
    first.kill().await;

    let second = GatewayProcess::start(&scratch, "second", upstream.launch(&store, &env)).await;
    let order = bought.json()["data"]["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = get(
        &second,
        &format!("/v1/orders/get_status?order_id={order}"),
        Some(&bot_key),
        None,
    )
    .await;
    assert_eq!(status.status, 200, "{}", status.body);
    let done = format!("/v1/orders/set_status?order_id={order}&status=done");
    let rival = get(&second, &done, Some(&rival_key), None).await;
    assert_eq!(
        rival.status, 404,
        "another client cannot touch it: {}",
        rival.body
    );

    let about_order: Vec<_> = upstream
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.query.as_deref().is_some_and(|q| q.contains(&order)))
        .collect();
    assert!(!about_order.is_empty());
    assert!(
        about_order
            .iter()
            .all(|r| r.key.as_deref() == Some(upstream.key.as_str())),
        "every call about the order used the account that made it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_order_in_flight_reach_its_client_then_exits_zero() {
    let upstream = Upstream::start().await;
    upstream.sim.set_fault(Fault {
        route: Some("/v2/orders".into()),
        latency_ms: 1500,
        ..Fault::default()
    });
    let scratch = Scratch::new("sigterm");
    let store = scratch.file("store.db");
    let buy = upstream.buy_path().await;
    let mut gateway = GatewayProcess::start(&scratch, "gw", upstream.launch(&store, &[])).await;

    let in_flight = {
        let (url, key) = (gateway.url(&buy), upstream.key.clone());
        tokio::spawn(async move {
            let response = client().get(url).header("x-apikey", key).send().await;
            Seen::of(response.expect("gateway answers")).await
        })
    };
    let sent = eventually(|| async { upstream.has_seen("/v2/orders") }).await;
    assert!(sent, "the order never reached the simulator");
    gateway.terminate().await;

    let answer = in_flight.await.expect("client task");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        !answer.json()["data"]["order_id"].is_null(),
        "{}",
        answer.body
    );
    let status = gateway.exit_status().await;
    assert_eq!(status.code(), Some(0), "{}", gateway.output());
    assert_eq!(upstream.sim.stats().orders_created, 1);
}

/// Everything a gateway run produced that anyone but the gateway can read.
struct Produced {
    /// The keys used, valid and bogus.
    keys: Vec<String>,
    /// The fingerprint of the valid key, which the logs should carry instead.
    fingerprint: String,
    /// Every answer: status, headers, body; `/readyz` included.
    answers: String,
    /// `/metrics` at the end of the run.
    metrics: String,
    /// stdout and stderr.
    logs: String,
}

impl Produced {
    /// The keys and their random tails (a truncated key would show those).
    fn secrets(&self) -> Vec<String> {
        let tails = self.keys.iter().map(|k| k[k.len() - 16..].to_owned());
        self.keys.iter().cloned().chain(tails).collect()
    }

    fn assert_no_secret_in_any_output(&self) {
        let secrets = self.secrets();
        let places = [
            ("the answers", &self.answers),
            ("/metrics", &self.metrics),
            ("the logs", &self.logs),
        ];
        for (place, text) in places {
            assert_no_secret_in(&secrets, place, text);
        }
        assert!(
            self.logs.contains(&self.fingerprint),
            "the logs never name the key by its fingerprint"
        );
    }
}

/// Panics naming the place and showing the line with the secret masked.
fn assert_no_secret_in(secrets: &[String], place: &str, text: &str) {
    for secret in secrets {
        if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
            let masked = line.replace(secret.as_str(), "<SECRET>");
            panic!("a secret appears in {place}: {masked}");
        }
    }
}

/// Drives every kind of traffic that handles a key through a gateway logging
/// at debug in `format`: a valid, a bogus and no key, a buy, a buy whose
/// answer is lost, and calls while the simulator blocks the gateway.
async fn traffic_with_keys(format: &str) -> Produced {
    let upstream = Upstream::start().await;
    let scratch = Scratch::new(&format!("secrets-{format}"));
    let store = scratch.file("store.db");
    let buy = upstream.buy_path().await;
    let env = [("OTPGATE__LOG__FORMAT", format)];
    let mut gateway = GatewayProcess::start(&scratch, "gw", upstream.launch(&store, &env)).await;
    let key = Some(upstream.key.as_str());
    let bogus = fresh_key("bogus");

    let mut seen = vec![
        get(&gateway, "/v2/services", key, None).await,
        get(&gateway, "/v2/services", Some(&bogus), None).await,
        get(&gateway, "/v2/services", None, None).await,
        get(&gateway, "/v1/user/balance", key, None).await,
        get(&gateway, &buy, key, Some("idem-secrets-1")).await,
    ];
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [200, 401, 401, 200, 200]);

    upstream.sim.set_fault(Fault {
        route: Some("/v2/orders".into()),
        apply_then_drop: true,
        count: Some(1),
        ..Fault::default()
    });
    let lost = get(&gateway, &buy, key, None).await;
    assert_eq!(lost.status, 502, "{}", lost.body);
    seen.push(lost);

    block_the_gateway(&upstream).await;
    let countries = format!("/v2/countries?service_id={SERVICE}");
    let blocked = get(&gateway, &countries, key, None).await;
    assert_eq!(blocked.status, 503, "{}", blocked.body);
    seen.push(blocked);
    seen.push(
        get(
            &gateway,
            "/v1/user/balance",
            Some(&upstream.other_key),
            None,
        )
        .await,
    );

    let admin = |path: &str| client().get(gateway.admin_url(path)).send();
    let metrics = admin("/metrics").await.expect("metrics").text().await;
    seen.push(Seen::of(admin("/readyz").await.expect("readyz")).await);
    gateway.terminate().await;
    let status = gateway.exit_status().await;
    assert!(status.success(), "{}", gateway.output());

    Produced {
        keys: vec![upstream.key.clone(), upstream.other_key.clone(), bogus],
        fingerprint: Fingerprint::of(upstream.key.as_bytes()).to_string(),
        answers: seen.iter().map(Seen::transcript).collect(),
        metrics: metrics.expect("metrics body"),
        logs: gateway.output(),
    }
}

/// Blocks 127.0.0.1, the gateway's egress, at the simulator as Cloudflare
/// would; asked from 127.0.0.2 so that the gateway's IP is not counted.
async fn block_the_gateway(upstream: &Upstream) {
    let url = format!("http://{}/__sim/block", upstream.sim.addr());
    let body = serde_json::json!({ "ip": "127.0.0.1", "seconds": 3 });
    let answer = direct_client().post(url).json(&body).send().await;
    assert!(answer.expect("simulator answers").status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_text_logs_metrics_or_answers() {
    let produced = traffic_with_keys("text").await;

    produced.assert_no_secret_in_any_output();
    assert!(produced.logs.contains("DEBUG"), "the logs are not at debug");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_json_logs_metrics_or_answers() {
    let produced = traffic_with_keys("json").await;

    produced.assert_no_secret_in_any_output();
    for line in produced.logs.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok_and(|v| v.is_object()), "not JSON: {line}");
    }
}

/// A password made at run time, so that none is written in the repository.
fn fresh_password() -> String {
    fresh_key("pass").replace('-', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_masks_credentials_in_the_upstream_url() {
    let scratch = Scratch::new("check-config");
    let password = fresh_password();
    let upstream = format!("http://user:{password}@127.0.0.1:1/api");
    let config = scratch.write(
        "otpgate.toml",
        &format!("[upstream]\nbase_url = \"{upstream}\"\n"),
    );
    let config_arg = format!("--config={}", config.display());

    let command = harness::otpgate(&scratch, &["check-config", &config_arg]);
    let checked = harness::run_to_end(command).await;
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let stderr = String::from_utf8_lossy(&checked.stderr);

    assert!(checked.status.success(), "{stderr}");
    assert!(
        stdout.contains("\"http://***@127.0.0.1:1/api\""),
        "{stdout}"
    );
    let secrets = [password];
    assert_no_secret_in(&secrets, "stdout", &stdout);
    assert_no_secret_in(&secrets, "stderr", &stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_upstream_url_stay_out_of_debug_logs_and_answers() {
    let upstream = Upstream::start().await;
    let scratch = Scratch::new("credentials");
    let password = fresh_password();
    let with_credentials = upstream
        .base_url
        .replace("://", &format!("://user:{password}@"));
    let store = scratch.file("store.db");
    let launch = Launch {
        upstream: &with_credentials,
        store: &store,
        env: &[],
    };

    let mut gateway = GatewayProcess::start(&scratch, "gw", launch).await;
    let answer = get(&gateway, "/v1/h2h/list/rekening", None, None).await;
    gateway.terminate().await;
    let _ = gateway.exit_status().await;

    let secrets = [password];
    assert_no_secret_in(&secrets, "the answer", &answer.transcript());
    assert_no_secret_in(&secrets, "the logs", &gateway.output());
}

/// `otpgate serve` on fresh ports with `args` and `env`, which must refuse
/// to start: its stderr, after checking the exit and that nothing listens.
async fn refused_start(scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> String {
    let (listen, admin) = (harness::free_port(), harness::free_port());
    let listen_arg = format!("--listen={listen}");
    let admin_arg = format!("--admin-listen={admin}");
    let mut all_args = vec![
        "serve",
        &listen_arg,
        &admin_arg,
        "--upstream=http://127.0.0.1:1/api",
    ];
    all_args.extend_from_slice(args);
    let mut command = harness::otpgate(scratch, &all_args);
    command
        .env("OTPGATE__STORE__PATH", scratch.file("store.db"))
        .envs(env.iter().copied());

    let output = harness::run_to_end(command).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "started anyway: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {stderr}");
    assert!(!listening(listen) && !listening(admin), "something listens");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_in_the_config_file_stops_start_up_naming_it() {
    let scratch = Scratch::new("unknown-key");
    let config = scratch.write("otpgate.toml", "[pacing]\nwindow_secs = 10\n");
    let config_arg = format!("--config={}", config.display());

    let stderr = refused_start(&scratch, &[&config_arg], &[]).await;
    assert!(stderr.contains("window_secs"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_can_exceed_the_limit_stops_start_up_naming_pacing() {
    let scratch = Scratch::new("burst");

    let stderr = refused_start(&scratch, &[], &[("OTPGATE__PACING__BURST", "5")]).await;
    assert!(stderr.contains("pacing"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_a_key_stops_start_up_and_check_config_naming_it() {
    let scratch = Scratch::new("no-account-key");
    let config = scratch.write("otpgate.toml", "[[accounts]]\nname = \"main\"\n");
    let config_arg = format!("--config={}", config.display());

    let stderr = refused_start(&scratch, &[&config_arg], &[]).await;
    assert!(stderr.contains("OTPGATE_ACCOUNT_MAIN_KEY"), "{stderr}");
    assert!(!stderr.contains("store"), "not a store failure: {stderr}");

    let command = harness::otpgate(&scratch, &["check-config", &config_arg]);
    let checked = harness::run_to_end(command).await;
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(!checked.status.success(), "check-config reads the keys too");
    assert!(stderr.contains("\"main\""), "{stderr}");
}
