//! Key pools: clients with gateway keys, accounts whose keys the gateway
//! holds, egresses with their own pacers, and ids that stay with the
//! account and client that created them.

mod common;

use std::time::Duration;

use common::{Stack, fresh_key};
use otpgate::Config;
use otpgate::config::{AccountConfig, ClientConfig, EgressConfig};
use otpgate_sim::{AccountSeed, SimConfig};
use serde_json::Value;
use tokio::net::TcpListener;

/// Three clients, two pools, four accounts on two egresses (as the
/// simulator sees them: 127.0.0.3 and 127.0.0.4).
struct Pools {
    stack: Stack,
    accounts: Vec<String>,
    clients: Vec<String>,
    dir: std::path::PathBuf,
}

const POOLS: [(&str, &[&str]); 3] = [
    ("c1", &["a1", "a2"]),
    ("c2", &["a1", "a2"]),
    ("c3", &["a3", "a4"]),
];
const EGRESS_OF: [(&str, &str); 4] = [("a1", "e1"), ("a2", "e2"), ("a3", "e1"), ("a4", "e2")];

fn keys_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(fresh_key("pools"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Adds egresses, accounts (keys in files under `dir`) and clients to `config`.
fn configure(config: &mut Config, dir: &std::path::Path, accounts: &[String], clients: &[String]) {
    config.auth.pass_through = false;
    config.egresses = ["e1", "e2"]
        .iter()
        .zip([[127, 0, 0, 3], [127, 0, 0, 4]])
        .map(|(name, ip)| EgressConfig {
            name: (*name).into(),
            bind: Some(ip.into()),
            proxy: None,
        })
        .collect();
    config.accounts = EGRESS_OF
        .iter()
        .zip(accounts)
        .map(|((name, egress), key)| {
            let file = dir.join(name);
            std::fs::write(&file, key).unwrap();
            AccountConfig {
                name: (*name).into(),
                egress: Some((*egress).into()),
                key_file: Some(file.to_str().unwrap().into()),
            }
        })
        .collect();
    config.clients = POOLS
        .iter()
        .zip(clients)
        .map(|((name, pool), key)| ClientConfig {
            name: (*name).into(),
            key_sha256: otpgate::auth::Fingerprint::of(key.as_bytes()).to_hex(),
            pool: pool.iter().map(|a| (*a).to_string()).collect(),
            requests_per_second: None,
            queue_weight: None,
        })
        .collect();
}

async fn start_pools(tune: impl FnOnce(&mut Config)) -> Pools {
    let accounts: Vec<String> = (1..=4).map(|i| fresh_key(&format!("acct{i}"))).collect();
    let clients: Vec<String> = (1..=3).map(|i| fresh_key(&format!("gw{i}"))).collect();
    let dir = keys_dir();
    let seeds: Vec<AccountSeed> = accounts
        .iter()
        .enumerate()
        .map(|(i, key)| AccountSeed::new(key.clone(), 100_000 * (i as i64 + 1), "acct"))
        .collect();
    let (accounts_for_config, clients_for_config, dir_for_config) =
        (accounts.clone(), clients.clone(), dir.clone());
    let stack = common::start_with(
        move |sim| sim.accounts = seeds,
        move |config| {
            configure(
                config,
                &dir_for_config,
                &accounts_for_config,
                &clients_for_config,
            );
            tune(config);
        },
    )
    .await;
    Pools {
        stack,
        accounts,
        clients,
        dir,
    }
}

impl Pools {
    async fn get(&self, client: usize, path: &str) -> (u16, Value) {
        let response = self.stack.get(path, &self.clients[client]).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    fn key_index(&self, key: &str) -> Option<usize> {
        self.accounts.iter().position(|k| k == key)
    }

    async fn stop(self) {
        self.stack.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn create_path(pools: &Pools) -> String {
    let url = pools.stack.sim_url("/v2/countries?service_id=13");
    let request = pools
        .stack
        .direct
        .get(url)
        .header("x-apikey", &pools.accounts[3]);
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    let country = &body["data"][0];
    let provider = country["pricelist"][0]["provider_id"].as_str().unwrap();
    format!(
        "/v2/orders?number_id={}&provider_id={provider}&operator_id=1",
        country["number_id"]
    )
}

#[tokio::test]
async fn orders_land_in_the_right_pool_and_stay_with_their_account_and_client() {
    let pools = start_pools(|_| {}).await;
    let create = create_path(&pools).await;
    let mut orders = Vec::new();
    for client in [0, 0, 2] {
        let (status, body) = pools.get(client, &create).await;
        assert_eq!(status, 200, "{body}");
        orders.push((
            client,
            body["data"]["order_id"].as_str().unwrap().to_owned(),
        ));
    }

    let creates = pools.stack.upstream_calls("/v2/orders");
    let used: Vec<_> = creates
        .iter()
        .map(|r| pools.key_index(r.key.as_deref().unwrap()).unwrap())
        .collect();
    assert!(
        used[..2].iter().all(|a| *a <= 1),
        "c1 buys on a1/a2: {used:?}"
    );
    assert!(used[2] >= 2, "c3 buys on a3/a4: {used:?}");

    tokio::time::sleep(Duration::from_millis(400)).await;
    for (client, order) in &orders {
        let (status, body) = pools
            .get(*client, &format!("/v1/orders/get_status?order_id={order}"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (client, order) = &orders[0];
    let cancel = format!("/v1/orders/set_status?order_id={order}&status=done");
    let (status, body) = pools.get(*client, &cancel).await;
    assert_eq!(status, 200, "{body}");

    let by_order = |path: &str| {
        pools
            .stack
            .upstream_calls(path)
            .into_iter()
            .filter(|r| {
                r.query
                    .as_deref()
                    .is_some_and(|q| q.contains(order.as_str()))
            })
            .map(|r| r.key.unwrap())
            .collect::<Vec<_>>()
    };
    let creator = &creates[0].key.clone().unwrap();
    assert!(
        by_order("/v1/orders/get_status")
            .iter()
            .all(|k| k == creator)
    );
    assert_eq!(
        by_order("/v1/orders/set_status"),
        std::slice::from_ref(creator)
    );

    let before = pools.stack.sim.requests().len();
    for other in [1, 2] {
        let (status, body) = pools
            .get(other, &format!("/v1/orders/get_status?order_id={order}"))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{body}"
        );
        let (status, _) = pools.get(other, &cancel).await;
        assert_eq!(
            status, 404,
            "another client cannot cancel it, even in the same pool"
        );
    }
    assert_eq!(
        pools.stack.sim.requests().len(),
        before,
        "refused without an upstream call"
    );

    let gateway_keys: Vec<_> = pools
        .stack
        .sim
        .requests()
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    assert!(
        gateway_keys.iter().all(|k| pools.key_index(k).is_some()),
        "only account keys go upstream"
    );
    pools.stop().await;
}

#[tokio::test]
async fn a_pooled_balance_is_the_sum_over_the_pool() {
    let pools = start_pools(|_| {}).await;
    let (status, body) = pools.get(0, "/v1/user/balance").await;
    assert_eq!(status, 200, "{body}");
    let sim = &pools.stack.sim;
    let expected =
        sim.balance(&pools.accounts[0]).unwrap() + sim.balance(&pools.accounts[1]).unwrap();
    assert_eq!(body["data"]["balance"], expected);
    assert_eq!(
        body["data"]["formated"],
        format!("Rp{}.000", expected / 1000)
    );
    let (_, other) = pools.get(2, "/v1/user/balance").await;
    let expected =
        sim.balance(&pools.accounts[2]).unwrap() + sim.balance(&pools.accounts[3]).unwrap();
    assert_eq!(other["data"]["balance"], expected);

    let again = pools.stack.get("/v1/user/balance", &pools.clients[0]).await;
    let headers = again.headers();
    assert_eq!(headers["x-cache"], "HIT", "{headers:?}");
    let age: u64 = headers["age"].to_str().unwrap().parse().unwrap();
    assert!(age <= 5, "within the balance reuse time: {age}");
    pools.stop().await;
}

#[tokio::test]
async fn an_unknown_key_gets_401_without_an_upstream_call_when_pass_through_is_off() {
    let pools = start_pools(|_| {}).await;
    let response = pools.stack.get("/v2/services", "not-a-gateway-key").await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_api_key");
    let (status, _) = pools.get(0, "/v2/services").await;
    assert_eq!(status, 200);
    assert_eq!(
        pools.stack.sim.requests().len(),
        1,
        "only the client's own call went upstream"
    );
    pools.stop().await;
}

#[tokio::test]
async fn ids_keep_their_account_and_owner_across_a_restart() {
    let store = std::env::temp_dir().join(format!("{}.db", fresh_key("pool-store")));
    let store = store.to_str().unwrap().to_owned();
    let path_for_config = store.clone();
    let pools = start_pools(move |config| config.store.path = path_for_config).await;
    let create = create_path(&pools).await;
    let (_, order) = pools.get(0, &create).await;
    let order = order["data"]["order_id"].as_str().unwrap().to_owned();
    let creator = pools.stack.upstream_calls("/v2/orders")[0].key.clone();

    let Pools {
        stack,
        accounts,
        clients,
        dir,
    } = pools;
    stack.gateway.shutdown().await;
    let mut config = common::gateway_config(&stack.sim.base_url());
    configure(&mut config, &dir, &accounts, &clients);
    config.store.path = store.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restarted = otpgate::spawn(config, listener, admin).unwrap();

    let url = format!(
        "http://{}/api/v1/orders/get_status?order_id={order}",
        restarted.addr
    );
    let response = stack
        .http
        .get(&url)
        .header("x-apikey", &clients[0])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let polls: Vec<_> = stack
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/v1/orders/get_status"))
        .collect();
    assert_eq!(
        polls.last().unwrap().key,
        creator,
        "the restarted gateway used the creating key"
    );
    let other = stack
        .http
        .get(&url)
        .header("x-apikey", &clients[2])
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    restarted.shutdown().await;
    stack.sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{store}{suffix}"));
    }
}

/// Pools whose accounts all leave by e1: c3's pool, a3 (e1) and a4 (e2)
/// otherwise, then shares one egress.
async fn start_pools_on_e1(tune: impl FnOnce(&mut Config)) -> Pools {
    start_pools(|config| {
        for account in &mut config.accounts {
            account.egress = Some("e1".into());
        }
        tune(config);
    })
    .await
}

#[tokio::test]
async fn a_block_on_one_egress_never_moves_the_call_to_another_key_on_that_egress() {
    let pools = start_pools_on_e1(|_| {}).await;
    pools.stack.block_ip("127.0.0.3", 30).await;

    let (status, body) = pools.get(2, "/v2/countries?service_id=9").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].is_string());
    let calls = pools.stack.sim.requests();
    assert_eq!(calls.len(), 1, "exactly one upstream call: {calls:?}");
    let (status, _) = pools.get(2, "/v2/countries?service_id=10").await;
    assert_eq!(status, 503);
    assert_eq!(
        pools.stack.sim.requests().len(),
        1,
        "no other key tried on the blocked egress"
    );

    let metrics = pools
        .stack
        .http
        .get(pools.stack.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("otpgate_egress_blocked{egress=\"e1\"} 1"),
        "{text}"
    );
    pools.stop().await;
}

#[tokio::test]
async fn a_cached_catalog_answer_is_served_while_every_account_of_the_pool_is_blocked() {
    let pools = start_pools_on_e1(|config| config.cache.countries_ttl_seconds = 0.5).await;
    let (status, cached) = pools.get(2, "/v2/countries?service_id=9").await;
    assert_eq!(status, 200, "{cached}");
    pools.stack.block_ip("127.0.0.3", 30).await;
    let (status, body) = pools.get(2, "/v2/countries?service_id=10").await;
    assert_eq!(status, 503, "the gateway learns of the block: {body}");
    let calls = pools.stack.sim.requests().len();

    // No account can take a call now; the cache needs none, fresh or stale.
    for expected in ["HIT", "STALE"] {
        if expected == "STALE" {
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        }
        let response = pools
            .stack
            .get("/v2/countries?service_id=9", &pools.clients[2])
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-cache"], expected);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, cached);
    }
    assert_eq!(pools.stack.sim.requests().len(), calls, "no upstream call");
    pools.stop().await;
}

#[tokio::test]
async fn a_block_on_one_egress_leaves_the_pool_served_by_the_other() {
    let pools = start_pools(|_| {}).await;
    pools.stack.block_ip("127.0.0.3", 30).await;

    let mut statuses = Vec::new();
    for i in 0..4 {
        let (status, _) = pools
            .get(0, &format!("/v2/countries?service_id={}", 20 + i))
            .await;
        statuses.push(status);
    }
    assert!(
        statuses[1..].iter().all(|s| *s == 200),
        "e2 serves once e1 is known blocked: {statuses:?}"
    );
    let blocked: Vec<_> = pools
        .stack
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .collect();
    assert!(blocked.len() <= 1, "{blocked:?}");
    pools.stop().await;
}

/// Pools at the real 5-per-10-s pacing for paused-clock tests: the
/// simulator, a gateway configured by `tune`, and the client keys.
struct RealPools {
    sim: otpgate_sim::SimHandle,
    gateway: otpgate::GatewayHandle,
    clients: Vec<String>,
    dir: std::path::PathBuf,
}

async fn real_pools(label: &str, tune: impl FnOnce(&mut Config)) -> RealPools {
    let accounts: Vec<String> = (1..=4).map(|i| fresh_key(&format!("{label}{i}"))).collect();
    let clients: Vec<String> = (1..=3)
        .map(|i| fresh_key(&format!("{label}c{i}")))
        .collect();
    let dir = keys_dir();
    let seeds = accounts
        .iter()
        .map(|k| AccountSeed::new(k.clone(), 1_000_000, "f"))
        .collect();
    let sim_config = SimConfig {
        accounts: seeds,
        ..SimConfig::default()
    };
    let sim = otpgate_sim::spawn(TcpListener::bind("127.0.0.1:0").await.unwrap(), sim_config).await;
    let mut config = Config::defaults();
    config.upstream.base_url = sim.base_url();
    config.store.path = ":memory:".into();
    config.limits.client_requests_per_second = 0;
    config.log.filter = "error".into();
    configure(&mut config, &dir, &accounts, &clients);
    tune(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = otpgate::spawn(config, listener, admin).unwrap();
    RealPools {
        sim,
        gateway,
        clients,
        dir,
    }
}

fn all_on_one_egress(config: &mut Config) {
    for account in &mut config.accounts {
        account.egress = Some("e1".into());
    }
}

/// Paced throughput over `seconds` of virtual time for a client whose pool
/// spans `egresses` egresses; returns (upstream calls, max in any window, violations).
async fn flood(egresses: usize, seconds: u64) -> (usize, u64, u64) {
    let RealPools {
        sim,
        gateway,
        clients,
        dir,
    } = real_pools("flood", |config| {
        if egresses == 1 {
            all_on_one_egress(config);
        }
    })
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let started = tokio::time::Instant::now();
    let mut service = 0;
    let mut inflight = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..4 {
            service += 1;
            let url = format!(
                "http://{}/api/v2/countries?service_id={service}",
                gateway.addr
            );
            let request = http.get(url).header("x-apikey", &clients[0]).send();
            inflight.push(tokio::spawn(request));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for call in inflight {
        let _ = call.await;
    }
    let stats = sim.stats();
    let calls = sim.requests().len();
    gateway.shutdown().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    (calls, stats.max_in_any_window, stats.window_violations)
}

#[tokio::test(start_paused = true)]
async fn two_egresses_give_twice_the_paced_throughput_of_one() {
    let (one, one_max, one_violations) = flood(1, 60).await;
    let (two, two_max, two_violations) = flood(2, 60).await;
    println!(
        "60 s of flood: one egress {one} calls (max {one_max}/window), two egresses {two} calls (max {two_max}/window per IP)"
    );
    assert_eq!((one_violations, two_violations), (0, 0));
    assert!(one_max <= 4 && two_max <= 4, "per IP");
    assert!(
        two as f64 >= 1.8 * one as f64,
        "one egress {one}, two egresses {two}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flooding_client_does_not_raise_another_clients_wait_beyond_its_turn() {
    let RealPools {
        sim,
        gateway,
        clients,
        dir,
    } = real_pools("fair", |config| {
        config.queue.max_deadline_seconds = 120.0;
        all_on_one_egress(config);
    })
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}/api", gateway.addr);

    let timed = |key: String, service: u32| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let started = tokio::time::Instant::now();
            let url = format!("{base}/v2/countries?service_id={service}");
            let request = http
                .get(url)
                .header("x-apikey", key)
                .header("prefer", "wait=60");
            let status = request.send().await.unwrap().status();
            (status.as_u16(), started.elapsed())
        }
    };
    let flood: Vec<_> = (0..12)
        .map(|i| tokio::spawn(timed(clients[0].clone(), 100 + i)))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut quiet = Vec::new();
    for i in 0..3 {
        quiet.push(timed(clients[2].clone(), 200 + i).await);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut flooded = Vec::new();
    for call in flood {
        flooded.push(call.await.unwrap());
    }

    let longest = |waits: &[(u16, Duration)]| waits.iter().map(|(_, d)| *d).max().unwrap();
    println!(
        "fairness: the flooding client's longest wait {:.1} s over 12 calls; the quiet \
         client's longest {:.1} s over 3 (pacing period 2.6 s)",
        longest(&flooded).as_secs_f64(),
        longest(&quiet).as_secs_f64()
    );
    let answered = |(status, _): &(u16, Duration)| *status == 200 || *status == 400;
    assert!(
        flooded.iter().chain(&quiet).all(answered),
        "upstream answers, no refusals"
    );
    assert!(
        longest(&quiet) <= Duration::from_millis(2 * 2600 + 500),
        "{quiet:?}"
    );
    assert!(
        longest(&flooded) >= Duration::from_secs(12 * 2),
        "the flood waits its own turns"
    );
    assert_eq!(sim.stats().window_violations, 0);
    gateway.shutdown().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A minimal HTTP CONNECT (or SOCKS5) proxy on loopback whose outbound
/// connections leave from `source`; counts the tunnels it opened.
async fn proxy(
    socks: bool,
    source: [u8; 4],
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&tunnels);
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let counted = std::sync::Arc::clone(&counted);
            tokio::spawn(async move {
                let target = if socks {
                    let mut greeting = [0u8; 2];
                    inbound.read_exact(&mut greeting).await.ok()?;
                    let mut methods = vec![0u8; greeting[1] as usize];
                    inbound.read_exact(&mut methods).await.ok()?;
                    inbound.write_all(&[5, 0]).await.ok()?;
                    let mut head = [0u8; 4];
                    inbound.read_exact(&mut head).await.ok()?;
                    let host = match head[3] {
                        1 => {
                            let mut ip = [0u8; 4];
                            inbound.read_exact(&mut ip).await.ok()?;
                            std::net::Ipv4Addr::from(ip).to_string()
                        }
                        3 => {
                            let len = inbound.read_u8().await.ok()? as usize;
                            let mut name = vec![0u8; len];
                            inbound.read_exact(&mut name).await.ok()?;
                            String::from_utf8(name).ok()?
                        }
                        _ => return None,
                    };
                    let port = inbound.read_u16().await.ok()?;
                    format!("{host}:{port}")
                } else {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        head.push(inbound.read_u8().await.ok()?);
                    }
                    let line = String::from_utf8_lossy(&head).lines().next()?.to_owned();
                    line.strip_prefix("CONNECT ")?.split(' ').next()?.to_owned()
                };
                let socket = tokio::net::TcpSocket::new_v4().ok()?;
                socket
                    .bind((std::net::Ipv4Addr::from(source), 0).into())
                    .ok()?;
                let mut outbound = socket.connect(target.parse().ok()?).await.ok()?;
                let reply: &[u8] = if socks {
                    &[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]
                } else {
                    b"HTTP/1.1 200 Connection Established\r\n\r\n"
                };
                inbound.write_all(reply).await.ok()?;
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                    .await
                    .ok()
            });
        }
    });
    let scheme = if socks { "socks5" } else { "http" };
    (format!("{scheme}://{addr}"), tunnels)
}

#[tokio::test]
async fn an_egress_can_leave_through_an_http_connect_or_socks5_proxy() {
    let (connect, connect_tunnels) = proxy(false, [127, 0, 0, 5]).await;
    let (socks, socks_tunnels) = proxy(true, [127, 0, 0, 6]).await;
    let pools = start_pools(move |config| {
        config.egresses[0].bind = None;
        config.egresses[0].proxy = Some(connect);
        config.egresses[1].bind = None;
        config.egresses[1].proxy = Some(socks);
    })
    .await;
    // c3's pool: a3 on e1 (CONNECT), a4 on e2 (SOCKS5). Two misses use both.
    for service in [31, 32, 33] {
        let (status, body) = pools
            .get(2, &format!("/v2/countries?service_id={service}"))
            .await;
        assert!(status == 200 || status == 400, "{status} {body}");
    }
    let sources: std::collections::BTreeSet<_> = pools
        .stack
        .sim
        .requests()
        .into_iter()
        .map(|r| r.ip)
        .collect();
    assert!(
        sources.contains("127.0.0.5"),
        "calls left through the CONNECT proxy: {sources:?}"
    );
    assert!(
        sources.contains("127.0.0.6"),
        "calls left through the SOCKS5 proxy: {sources:?}"
    );
    assert!(connect_tunnels.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(socks_tunnels.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    pools.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_of_weight_two_gets_two_calls_per_turn_in_the_upstream_queue() {
    let RealPools {
        sim,
        gateway,
        clients,
        dir,
    } = real_pools("weight", |config| {
        config.queue.max_deadline_seconds = 120.0;
        config.clients[0].queue_weight = Some(2);
        all_on_one_egress(config);
    })
    .await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}/api", gateway.addr);
    let mut calls = Vec::new();
    for (client, offset) in [(0, 300), (2, 400)] {
        for i in 0..6 {
            let url = format!("{base}/v2/countries?service_id={}", offset + i);
            let request = http
                .get(url)
                .header("x-apikey", &clients[client])
                .header("prefer", "wait=60");
            calls.push(tokio::spawn(request.send()));
        }
        tokio::task::yield_now().await;
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }

    let first_six: Vec<_> = sim
        .requests()
        .into_iter()
        .take(6)
        .map(|r| r.query.unwrap())
        .collect();
    let heavy = first_six
        .iter()
        .filter(|q| q.contains("service_id=3"))
        .count();
    assert_eq!(
        heavy, 4,
        "two turns for the weight-2 client per turn of the other: {first_six:?}"
    );
    gateway.shutdown().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_client_with_its_own_rate_is_limited_and_the_others_are_not() {
    let pools = start_pools(|config| config.clients[0].requests_per_second = Some(2)).await;
    let mut own = Vec::new();
    for _ in 0..5 {
        own.push(pools.get(0, "/v1/h2h/list/rekening").await.0);
    }
    assert!(own.contains(&429), "{own:?}");
    for _ in 0..5 {
        assert_eq!(pools.get(1, "/v1/h2h/list/rekening").await.0, 200);
    }
    pools.stop().await;
}

#[tokio::test]
async fn a_pooled_client_cannot_use_endpoints_the_gateway_does_not_know() {
    let pools = start_pools(|_| {}).await;
    let (status, body) = pools.get(1, "/v1/orders/get_status2?order_id=RO1").await;
    assert_eq!(status, 404, "{body}");
    let anonymous = pools
        .stack
        .http
        .get(pools.stack.url("/v1/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "no key, no pass-through: refused");
    assert!(pools.stack.sim.requests().is_empty());
    pools.stop().await;
}

#[tokio::test]
async fn one_client_can_queue_only_a_few_buys_so_others_are_not_starved() {
    let pools = start_pools(|config| {
        common::real_pacing(config);
        config.queue.max_deadline_seconds = 60.0;
    })
    .await;
    let buys = (0..7).map(|i| {
        let url = pools.stack.url(&format!(
            "/v2/orders?number_id={}&provider_id=1&operator_id=1",
            900 + i
        ));
        let request = pools
            .stack
            .http
            .get(url)
            .header("x-apikey", &pools.clients[0]);
        request.header("prefer", "wait=60").send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(buys)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(
        refused >= 2,
        "beyond a few queued buys per client, refused at once: {statuses:?}"
    );
    pools.stop().await;
}

#[tokio::test]
async fn an_account_whose_key_was_rejected_is_tried_again_after_the_rejected_key_time() {
    let bogus = fresh_key("revoked");
    let bogus_for_config = bogus.clone();
    let pools = start_pools(move |config| {
        config.auth.rejected_key_ttl_seconds = 2.0;
        let a1 = config.accounts[0].key_file.as_ref().unwrap();
        std::fs::write(a1, &bogus_for_config).unwrap();
    })
    .await;
    let sent_with_bogus = |pools: &Pools| {
        let calls = pools.stack.sim.requests();
        calls
            .iter()
            .filter(|r| r.key.as_deref() == Some(&bogus))
            .count()
    };
    let mut service = 100;
    let mut ask = async |pools: &Pools| {
        service += 1;
        pools
            .get(0, &format!("/v2/countries?service_id={service}"))
            .await
    };

    // Until the pool tries a1 and the upstream rejects its key.
    for _ in 0..10 {
        ask(&pools).await;
        if sent_with_bogus(&pools) > 0 {
            break;
        }
    }
    assert_eq!(sent_with_bogus(&pools), 1, "a1 was tried once");
    for _ in 0..6 {
        let (status, body) = ask(&pools).await;
        assert_ne!(status, 401, "a2 (accepted) serves the pool: {body}");
    }
    assert_eq!(sent_with_bogus(&pools), 1, "a1 is out while rejected");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..10 {
        ask(&pools).await;
        if sent_with_bogus(&pools) > 1 {
            break;
        }
    }
    assert_eq!(
        sent_with_bogus(&pools),
        2,
        "a1 is tried again, not out until restart"
    );
    pools.stop().await;
}
