//! Criterion benches of the hot path: route classification, cache-key
//! building, building a cache hit's response, the queue's admission decision,
//! and a whole cache hit over loopback HTTP (client → gateway → cache →
//! client), the answer most bot traffic gets.
//!
//! `cargo bench --bench hot_path` measures; `cargo test --benches` runs each
//! once so that CI keeps them compiling and working.

use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use otpgate::cache::{CacheKey, CacheResult, Scope, Stored};
use otpgate::routes::{classify, normalise_path};
use otpgate::upstream::Answer;
use otpgate::upstream::limits::{CounterKind, PacingPlan};
use otpgate::upstream::pacer::{Pacer, Priority, Turn};
use tokio::net::TcpListener;

fn routing(c: &mut Criterion) {
    c.bench_function("normalise_and_classify", |b| {
        b.iter(|| {
            let path = normalise_path(std::hint::black_box("//api/v1/orders/get_status")).unwrap();
            classify(&path).unwrap().class
        })
    });
    let route = classify("/v2/countries").unwrap();
    c.bench_function("cache_key_with_junk_parameters", |b| {
        b.iter(|| {
            let query = std::hint::black_box("cb=123&service_id=13&x=y+z");
            CacheKey::new(Scope::Shared, route, Some(query))
        })
    });
}

fn response_and_admission(c: &mut Criterion) {
    let stored = Stored {
        answer: Answer {
            status: http::StatusCode::OK,
            content_type: Some(http::HeaderValue::from_static("application/json")),
            body: Bytes::from(vec![b' '; 2790]),
            queue_wait: Duration::ZERO,
        },
        fetched_at: tokio::time::Instant::now(),
        fresh_for: Duration::from_secs(300),
        fetched_with: None,
    };
    c.bench_function("cache_hit_response_building", |b| {
        b.iter(|| {
            otpgate::proxy::answer_response(&stored.answer, Some((CacheResult::Hit, &stored)))
        })
    });

    // The decision a call meets at the queue's door with 32 calls of other
    // callers waiting: refused here because its deadline is now, after the
    // whole check (blocked, predicted start, per-caller cap, room).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let plan = PacingPlan::new(
        5,
        Duration::from_secs(10),
        Duration::from_millis(100),
        1,
        CounterKind::Approximated,
    );
    let pacer = runtime.block_on(async {
        let pacer = Pacer::start(
            "bench",
            plan,
            64,
            std::sync::Arc::new(otpgate::metrics::Metrics::new()),
        );
        for flow in 0..32 {
            let pacer = std::sync::Arc::clone(&pacer);
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::spawn(async move {
                pacer
                    .acquire(Priority::Background, far, Turn { flow, weight: 1 })
                    .await
            });
        }
        tokio::task::yield_now().await;
        pacer
    });
    let me = Turn {
        flow: 1000,
        weight: 1,
    };
    c.bench_function("queue_admission_with_32_waiting", |b| {
        b.to_async(&runtime).iter(|| async {
            let refused = pacer
                .acquire(Priority::Interactive, tokio::time::Instant::now(), me)
                .await;
            assert!(refused.is_err());
        })
    });
}

fn cache_hit(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = "bench-key";
    let url = runtime.block_on(async {
        let sim_config = otpgate_sim::SimConfig {
            accounts: vec![otpgate_sim::AccountSeed::new(key, 1_000_000, "bench")],
            ..Default::default()
        };
        let sim = otpgate_sim::spawn(TcpListener::bind("127.0.0.1:0").await.unwrap(), sim_config);
        let sim = sim.await;
        let mut config = otpgate::Config::defaults();
        config.upstream.base_url = sim.base_url();
        config.log.filter = "error".into();
        config.store.path = ":memory:".into();
        // Measures the cache, not the per-client limit (50/s by default).
        config.limits.client_requests_per_second = 0;
        let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = otpgate::spawn(config, client, admin).unwrap();
        let url = format!("http://{}/api/v2/services", gateway.addr);
        std::mem::forget((sim, gateway));
        url
    });
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let fetch = |http: Client<_, Empty<Bytes>>, url: String| async move {
        let request = http::Request::get(url)
            .header("x-apikey", key)
            .header("prefer", "wait=30")
            .body(Empty::new())
            .unwrap();
        let response = http.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .len()
    };
    runtime.block_on(fetch(http.clone(), url.clone()));

    let mut group = c.benchmark_group("gateway");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("catalog_cache_hit_over_loopback", |b| {
        b.to_async(&runtime)
            .iter(|| fetch(http.clone(), url.clone()))
    });
    group.finish();
}

criterion_group!(benches, routing, response_and_admission, cache_hit);
criterion_main!(benches);
