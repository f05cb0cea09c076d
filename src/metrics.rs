//! Prometheus metrics: every decision on the request path is counted here.
//!
//! Names carry the `otpgate_` prefix and base units; labels are bounded
//! (route templates, classes, reasons), never raw paths, ids or keys.

use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::cache::CacheResult;
use crate::pool::CallerTag;
use crate::routes::{self, Route};

/// All metric families of one gateway, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    /// Client requests by route template, class and status.
    pub requests: IntCounterVec,
    /// Client request duration by route template and class.
    pub request_duration: HistogramVec,
    /// Cache lookups by route template and result (hit, stale, miss).
    pub cache_lookups: IntCounterVec,
    /// Entries in the response cache.
    pub cache_entries: IntGauge,
    /// Calls waiting for an upstream slot, by egress and priority.
    pub queue_depth: GaugeVec,
    /// Time spent waiting for an upstream slot, by priority.
    pub queue_wait: HistogramVec,
    /// Calls refused without an upstream call, by reason.
    pub refusals: IntCounterVec,
    /// Upstream calls by route template and outcome (HTTP status or error kind).
    pub upstream_calls: IntCounterVec,
    /// Upstream call latency by route template.
    pub upstream_duration: HistogramVec,
    /// 1 while the upstream blocks the egress.
    pub egress_blocked: GaugeVec,
    /// The pacing plan's worst case, by measure (closed_window, approximated_estimate).
    pub pacing_worst_case: GaugeVec,
    /// The pacing period in seconds.
    pub pacing_period: GaugeVec,
    /// Mutating calls whose outcome is unknown, by route template.
    pub unknown_outcomes: IntCounterVec,
    /// Client requests by client name (`pass_through`, `anonymous` for the rest) and status.
    pub client_requests: IntCounterVec,
    /// Upstream calls made for each client: its share of the upstream budget.
    pub client_upstream_calls: IntCounterVec,
    /// Upstream answers by account name and HTTP status.
    pub account_answers: IntCounterVec,
    /// Last balance learnt per account, in rupiah.
    pub account_balance: GaugeVec,
    /// 1 once the upstream rejected the account's key.
    pub account_rejected: GaugeVec,
    /// Per-request series of each route (by `routes::index_of`), kept once
    /// resolved.
    route_series: Vec<RouteSeries>,
    /// `client_requests` of key-less and pass-through callers answered 200.
    anonymous_ok: OnceLock<IntCounter>,
    pass_through_ok: OnceLock<IntCounter>,
}

/// The series every request of one route touches, each resolved on first
/// use and kept: a labelled lookup hashes its label strings on every call.
/// (Resolved lazily so that `/metrics` shows only series that happened.)
#[derive(Default)]
struct RouteSeries {
    duration: OnceLock<Histogram>,
    /// By cache result: hit, stale, miss.
    lookups: [OnceLock<IntCounter>; 3],
    /// Requests answered 200.
    ok: OnceLock<IntCounter>,
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = vec![0.0005, 0.002, 0.01, 0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0];
        let metrics = Self {
            requests: counter(
                "otpgate_http_requests_total",
                "Client requests.",
                &["route", "class", "status"],
            ),
            request_duration: histogram(
                "otpgate_http_request_duration_seconds",
                "Client request duration.",
                &["route", "class"],
                latency.clone(),
            ),
            cache_lookups: counter(
                "otpgate_cache_lookups_total",
                "Cache lookups.",
                &["route", "result"],
            ),
            cache_entries: IntGauge::new("otpgate_cache_entries", "Entries in the cache.")
                .expect("valid metric"),
            queue_depth: gauge(
                "otpgate_queue_depth",
                "Calls waiting for an upstream slot.",
                &["egress", "priority"],
            ),
            queue_wait: histogram(
                "otpgate_queue_wait_seconds",
                "Time waited for an upstream slot.",
                &["priority"],
                vec![0.001, 0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0, 30.0],
            ),
            refusals: counter(
                "otpgate_refusals_total",
                "Calls refused without an upstream call.",
                &["reason"],
            ),
            upstream_calls: counter(
                "otpgate_upstream_requests_total",
                "Upstream calls.",
                &["route", "outcome"],
            ),
            upstream_duration: histogram(
                "otpgate_upstream_request_duration_seconds",
                "Upstream call latency.",
                &["route"],
                latency,
            ),
            egress_blocked: gauge(
                "otpgate_egress_blocked",
                "1 while the upstream blocks the egress.",
                &["egress"],
            ),
            pacing_worst_case: gauge(
                "otpgate_pacing_worst_case_calls",
                "Worst case of the pacing plan per upstream window.",
                &["egress", "measure"],
            ),
            pacing_period: gauge(
                "otpgate_pacing_period_seconds",
                "Spacing between upstream calls.",
                &["egress"],
            ),
            unknown_outcomes: counter(
                "otpgate_unknown_outcomes_total",
                "Mutating calls whose answer was lost after sending.",
                &["route"],
            ),
            client_requests: counter(
                "otpgate_client_requests_total",
                "Client requests by client.",
                &["client", "status"],
            ),
            client_upstream_calls: counter(
                "otpgate_client_upstream_calls_total",
                "Upstream calls made for each client.",
                &["client"],
            ),
            account_answers: counter(
                "otpgate_account_answers_total",
                "Upstream answers by account.",
                &["account", "status"],
            ),
            account_balance: gauge(
                "otpgate_account_balance_rupiah",
                "Last balance learnt per account.",
                &["account"],
            ),
            account_rejected: gauge(
                "otpgate_account_rejected",
                "1 once the upstream rejected the account's key.",
                &["account"],
            ),
            route_series: (0..=routes::ROUTES.len())
                .map(|_| RouteSeries::default())
                .collect(),
            anonymous_ok: OnceLock::new(),
            pass_through_ok: OnceLock::new(),
            registry,
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.cache_lookups.clone()),
            Box::new(self.cache_entries.clone()),
            Box::new(self.queue_depth.clone()),
            Box::new(self.queue_wait.clone()),
            Box::new(self.refusals.clone()),
            Box::new(self.upstream_calls.clone()),
            Box::new(self.upstream_duration.clone()),
            Box::new(self.egress_blocked.clone()),
            Box::new(self.pacing_worst_case.clone()),
            Box::new(self.pacing_period.clone()),
            Box::new(self.unknown_outcomes.clone()),
            Box::new(self.client_requests.clone()),
            Box::new(self.client_upstream_calls.clone()),
            Box::new(self.account_answers.clone()),
            Box::new(self.account_balance.clone()),
            Box::new(self.account_rejected.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique");
        }
    }

    /// Counts one answered client request: by route, class and status, its
    /// duration, and by client.
    pub fn count_request(
        &self,
        route: &Route,
        caller: Option<&CallerTag>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let (template, class) = (route.template, route.class.as_str());
        let series = &self.route_series[routes::index_of(route)];
        let by_route = || {
            self.requests
                .with_label_values(&[template, class, status.as_str()])
        };
        if status == StatusCode::OK {
            series.ok.get_or_init(by_route).inc();
        } else {
            by_route().inc();
        }
        let duration = || self.request_duration.with_label_values(&[template, class]);
        series
            .duration
            .get_or_init(duration)
            .observe(elapsed.as_secs_f64());

        let label = caller.map_or("anonymous", CallerTag::metrics_label);
        let by_client = || {
            self.client_requests
                .with_label_values(&[label, status.as_str()])
        };
        let remembered = match caller {
            _ if status != StatusCode::OK => None,
            None | Some(CallerTag::Anonymous) => Some(&self.anonymous_ok),
            Some(CallerTag::Key(_)) => Some(&self.pass_through_ok),
            Some(CallerTag::Client(_)) => None,
        };
        match remembered {
            Some(handle) => handle.get_or_init(by_client).inc(),
            None => by_client().inc(),
        }
    }

    /// Counts one cache lookup of `route`.
    pub fn count_lookup(&self, route: &Route, result: CacheResult) {
        let slot = match result {
            CacheResult::Hit => 0,
            CacheResult::Stale => 1,
            CacheResult::Miss => 2,
        };
        self.route_series[routes::index_of(route)].lookups[slot]
            .get_or_init(|| {
                self.cache_lookups
                    .with_label_values(&[route.template, result.as_str()])
            })
            .inc();
    }

    /// The text exposition format, for `/metrics`.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric")
}
