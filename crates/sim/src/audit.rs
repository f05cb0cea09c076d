//! What the simulator saw: every emulated API request as received, and the counters a test
//! reads afterwards (`/__sim/stats`).
//!
//! Window statistics are measured from arrival times, independently of how the limiter counts,
//! so a test can check a client's pacing against the exact rule whatever mode the limiter runs in.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// Counters of one simulator run, as `GET /__sim/stats` returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Emulated API requests received (control calls excluded), blocked ones included.
    pub requests_total: u64,
    /// Most arrivals from one IP within any interval of length `window`.
    pub max_in_any_window: u64,
    /// Arrivals at which the exact trailing-window count for their IP exceeded `limit`.
    pub window_violations: u64,
    /// Calls answered with the Cloudflare 429 page.
    pub blocked_responses: u64,
    /// Blocks started (by the limiter or by `/__sim/block`).
    pub blocks_total: u64,
    /// Orders created (also those whose answer was then dropped by a fault).
    pub orders_created: u64,
    /// Deposits created, v1 and v2.
    pub deposits_created: u64,
    /// h2h transactions created.
    pub transactions_created: u64,
    /// TCP connections accepted, API and control.
    pub connections_total: u64,
    /// Calls answered by an injected fault instead of the API (500, 502, reset, drop).
    pub faulted_responses: u64,
}

/// One emulated API request as the simulator received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Milliseconds since the simulator started.
    pub at_ms: u64,
    /// Client IP address.
    pub ip: String,
    /// Client TCP port: equal ports (with equal `conn_id`) mean a reused connection.
    pub peer_port: u16,
    /// Id of the TCP connection the request came on, from 1.
    pub conn_id: u64,
    /// HTTP method.
    pub method: String,
    /// Path exactly as received.
    pub path: String,
    /// Raw query string byte for byte as received; `None` when the target had no `?`.
    pub query: Option<String>,
    /// Headers in arrival order, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The `x-apikey` header, if any.
    pub key: Option<String>,
    /// HTTP status answered; 0 while in flight or when the connection was dropped unanswered.
    pub status: u16,
    /// `true` when the Cloudflare-like block answered the call.
    pub blocked: bool,
}

/// The request log and counters.
#[derive(Debug)]
pub(crate) struct Audit {
    window: Duration,
    limit: u32,
    stats: Stats,
    requests: Vec<RecordedRequest>,
    arrivals: HashMap<IpAddr, Vec<Instant>>,
}

impl Audit {
    /// An empty audit measuring windows of `window` against `limit`.
    pub(crate) fn new(window: Duration, limit: u32) -> Self {
        Self {
            window,
            limit,
            stats: Stats::default(),
            requests: Vec::new(),
            arrivals: HashMap::new(),
        }
    }

    /// Records an arrival and returns its sequence number.
    pub(crate) fn record(&mut self, mut request: RecordedRequest, ip: IpAddr, at: Instant) -> u64 {
        self.stats.requests_total += 1;
        request.seq = self.stats.requests_total;
        self.requests.push(request);
        self.measure_window(ip, at);
        self.stats.requests_total
    }

    /// Sets the answer of a recorded request.
    pub(crate) fn finish(&mut self, seq: u64, status: u16, blocked: bool) {
        if let Some(request) = self.requests.iter_mut().rev().find(|r| r.seq == seq) {
            request.status = status;
            request.blocked = blocked;
        }
    }

    /// Mutable counters, for the pipeline and the world to bump.
    pub(crate) fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    /// A copy of the counters.
    pub(crate) fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// A copy of the request log.
    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.clone()
    }

    /// Updates `max_in_any_window` and `window_violations` with one arrival. Arrivals come in
    /// time order, so the trailing window `(at − window, at]` is a suffix of the list.
    fn measure_window(&mut self, ip: IpAddr, at: Instant) {
        let window = self.window;
        let times = self.arrivals.entry(ip).or_default();
        times.push(at);
        let first_inside = times.partition_point(|&t| at.saturating_duration_since(t) >= window);
        let in_window = (times.len() - first_inside) as u64;

        self.stats.max_in_any_window = self.stats.max_in_any_window.max(in_window);
        if in_window > u64::from(self.limit) {
            self.stats.window_violations += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn request() -> RecordedRequest {
        RecordedRequest {
            seq: 0,
            at_ms: 0,
            ip: "127.0.0.1".into(),
            peer_port: 1,
            conn_id: 1,
            method: "GET".into(),
            path: "/".into(),
            query: None,
            headers: vec![],
            key: None,
            status: 0,
            blocked: false,
        }
    }

    #[test]
    fn window_statistics_follow_arrival_times() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let origin = Instant::now();
        let mut audit = Audit::new(Duration::from_secs(10), 2);
        for ms in [0, 1_000, 2_000, 12_500, 13_000] {
            audit.record(request(), ip, origin + Duration::from_millis(ms));
        }
        let stats = audit.stats();
        assert_eq!(stats.requests_total, 5);
        assert_eq!(stats.max_in_any_window, 3);
        assert_eq!(stats.window_violations, 1);
    }
}
