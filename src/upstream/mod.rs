//! Everything between a decided call and the upstream: the pacer that keeps
//! the egress under the limit, and the client that sends.
//!
//! `Upstream::call` is the only way a call leaves the gateway. Once a slot is
//! granted the send runs as its own task, so a client that hangs up cannot
//! cut a purchase in half; before that, giving up costs nothing.

pub mod client;
pub mod limits;
pub mod pacer;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::Instant;

pub use client::{Answer, OutboundCall, UpstreamClient, UpstreamError};
use limits::PacingPlan;
use pacer::{Pacer, Priority, Turn};

use crate::config::{Config, secs};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::routes::{self, Route};

/// Which egress a call leaves by: an index into the gateway's egresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EgressId(pub usize);

/// One outbound path (one source IP, as the upstream sees it): its pacer,
/// its connection pool, and whether a probe is waiting out a block.
pub struct Egress {
    /// Name from config (`default` when none is configured).
    pub name: String,
    /// The queue and limiter of this egress.
    pub pacer: Arc<Pacer>,
    client: UpstreamClient,
    probing: AtomicBool,
}

/// Where and when a call is to be sent.
#[derive(Debug, Clone, Copy)]
pub struct CallMeta {
    /// The route, for metrics and for what a failure means.
    pub route: &'static Route,
    /// Queue priority.
    pub priority: Priority,
    /// Latest time the call may start.
    pub deadline: Instant,
    /// The egress it leaves by.
    pub egress: EgressId,
    /// The caller's turn in the queue (see `pacer`).
    pub turn: Turn,
}

/// The upstream as the rest of the gateway sees it.
pub struct Upstream {
    egresses: Vec<Egress>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// Builds every egress from config (one `default` when none is listed)
    /// and starts their pacers.
    pub fn new(config: &Config, plan: PacingPlan, metrics: Arc<Metrics>) -> Arc<Self> {
        let cooldown = secs(config.pacing.block_cooldown_seconds);
        let egresses = config
            .egress_list()
            .into_iter()
            .map(|egress| {
                let name = egress.name.as_str();
                let pacer = Pacer::start(name, plan, config.queue.max_len, Arc::clone(&metrics));
                let outbound =
                    client::Outbound::parse(egress.proxy.as_deref()).expect("validated proxy");
                let client =
                    UpstreamClient::new(&config.upstream, egress.bind, &outbound, cooldown);
                publish_plan(&metrics, name, &plan);
                tracing::info!(
                    egress = name,
                    calls_per_second = plan.calls_per_second(),
                    "egress paced"
                );
                Egress {
                    name: name.to_owned(),
                    pacer,
                    client,
                    probing: AtomicBool::new(false),
                }
            })
            .collect();
        Arc::new(Self { egresses, metrics })
    }

    /// The egress with this id.
    pub fn egress(&self, id: EgressId) -> &Egress {
        &self.egresses[id.0]
    }

    /// Every egress, in config order.
    pub fn egresses(&self) -> &[Egress] {
        &self.egresses
    }

    /// The id of the egress named `name`.
    pub fn egress_id(&self, name: &str) -> Option<EgressId> {
        self.egresses
            .iter()
            .position(|e| e.name == name)
            .map(EgressId)
    }

    /// Of `candidates`, the open egress whose next slot for `priority` comes first.
    pub fn soonest(
        &self,
        candidates: impl IntoIterator<Item = EgressId>,
        priority: Priority,
        turn: Turn,
    ) -> Option<EgressId> {
        candidates
            .into_iter()
            .filter_map(|id| Some((self.egress(id).pacer.predicted_start(priority, turn)?, id)))
            .min_by_key(|(start, _)| *start)
            .map(|(_, id)| id)
    }

    /// When a call described by `meta` queued now would start, or `None`
    /// while its egress is blocked or closed.
    pub fn predicted_start(&self, meta: &CallMeta) -> Option<Instant> {
        let pacer = &self.egress(meta.egress).pacer;
        pacer.predicted_start(meta.priority, meta.turn)
    }

    /// Refuses every queued call on every egress (shutdown).
    pub fn close(&self) {
        for egress in &self.egresses {
            egress.pacer.close();
        }
    }

    /// Waits for a slot, then sends `call` once.
    ///
    /// `give_up` resolving while the call is still queued withdraws it; it has
    /// no effect once sent. A safe read that failed before any answer is sent
    /// once more, through the pacer again. A call that may move money is never
    /// sent twice: a lost answer becomes `ProxyError::OutcomeUnknown`.
    pub async fn call(
        self: &Arc<Self>,
        call: OutboundCall,
        meta: CallMeta,
        give_up: impl Future<Output = ()>,
    ) -> Result<Answer, ProxyError> {
        tokio::pin!(give_up);
        let money = meta.route.class.may_move_money();
        let attempts = if money { 1 } else { 2 };
        let mut last_error = None;
        for _ in 0..attempts {
            let slot = tokio::select! {
                slot = self.egress(meta.egress).pacer.acquire(meta.priority, meta.deadline, meta.turn) => slot,
                () = &mut give_up => return Err(ProxyError::Abandoned),
            };
            let slot = slot.map_err(ProxyError::Refused)?;
            self.metrics
                .queue_wait
                .with_label_values(&[meta.priority.as_str()])
                .observe(slot.waited.as_secs_f64());

            match self.send_detached(call.clone(), meta).await {
                Ok(answer) => {
                    return Ok(Answer {
                        queue_wait: slot.waited,
                        ..answer
                    });
                }
                Err(error) if error.is_resendable_read() && !money => last_error = Some(error),
                Err(error) => return Err(classify_failure(error, money)),
            }
        }
        Err(classify_failure(
            last_error.expect("at least one attempt failed"),
            money,
        ))
    }

    /// Sends in a task of its own and waits for it; the task outlives the caller.
    async fn send_detached(
        self: &Arc<Self>,
        call: OutboundCall,
        meta: CallMeta,
    ) -> Result<Answer, UpstreamError> {
        let upstream = Arc::clone(self);
        let task = tokio::spawn(async move { upstream.send_now(&call, meta).await });
        task.await.unwrap_or_else(|_| Err(UpstreamError::Timeout))
    }

    async fn send_now(
        self: &Arc<Self>,
        call: &OutboundCall,
        meta: CallMeta,
    ) -> Result<Answer, UpstreamError> {
        let egress = self.egress(meta.egress);
        let started = Instant::now();
        let result = egress.client.send(call).await;
        let elapsed = started.elapsed();

        let template = meta.route.template;
        let outcome = match &result {
            Ok(answer) => answer.status.as_str().to_owned(),
            Err(error) => failure_label(error).to_owned(),
        };
        self.metrics
            .upstream_calls
            .with_label_values(&[template, &outcome])
            .inc();
        self.metrics
            .upstream_duration
            .with_label_values(&[template])
            .observe(elapsed.as_secs_f64());
        tracing::debug!(
            route = template,
            egress = egress.name,
            outcome,
            elapsed_ms = elapsed.as_millis() as u64,
            "upstream call"
        );

        if let Err(UpstreamError::Blocked {
            status,
            retry_after,
        }) = &result
        {
            egress.pacer.block_until(Instant::now() + *retry_after);
            tracing::warn!(
                egress = egress.name,
                status = status.as_u16(),
                cooldown_s = retry_after.as_secs(),
                "upstream is blocking the egress; all calls paused"
            );
            self.start_probe(meta.egress);
        }
        if money_lost(&result, meta) {
            self.metrics
                .unknown_outcomes
                .with_label_values(&[template])
                .inc();
            tracing::warn!(
                route = template,
                "answer to a mutating call lost; outcome unknown"
            );
        }
        result
    }
}

impl Upstream {
    /// Starts the task that reopens a blocked egress, unless one runs already.
    fn start_probe(self: &Arc<Self>, id: EgressId) {
        if self.egress(id).probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let upstream = Arc::clone(self);
        tokio::spawn(async move {
            upstream.probe_until_open(id).await;
            upstream.egress(id).probing.store(false, Ordering::SeqCst);
        });
    }

    /// After each cool-down, one cheap key-less read; the egress opens again
    /// only when it is not blocked. Every probe takes a limiter slot.
    async fn probe_until_open(&self, id: EgressId) {
        let egress = self.egress(id);
        let pacer = &egress.pacer;
        let route = routes::classify(PROBE_PATH).expect("the probe route is in the table");
        while pacer.blocked_until().is_some() {
            pacer.probe_slot().await;
            let probe = OutboundCall {
                method: http::Method::GET,
                path: PROBE_PATH.to_owned(),
                query: None,
                api_key: None,
                accept: None,
                content_type: None,
                body: bytes::Bytes::new(),
            };
            let result = egress.client.send(&probe).await;
            let outcome = result.as_ref().map_or_else(
                |e| failure_label(e).to_owned(),
                |a| a.status.as_str().to_owned(),
            );
            self.metrics
                .upstream_calls
                .with_label_values(&[route.template, &outcome])
                .inc();
            match result {
                Err(UpstreamError::Blocked { retry_after, .. }) => {
                    tracing::warn!(
                        egress = pacer.egress(),
                        cooldown_s = retry_after.as_secs(),
                        "probe still blocked"
                    );
                    pacer.block_until(Instant::now() + retry_after);
                }
                _ => {
                    tracing::info!(
                        egress = pacer.egress(),
                        outcome,
                        "probe passed; egress open again"
                    );
                    pacer.reopen();
                }
            }
        }
    }
}

fn publish_plan(metrics: &Metrics, egress: &str, plan: &PacingPlan) {
    metrics.egress_blocked.with_label_values(&[egress]).set(0.0);
    metrics
        .pacing_period
        .with_label_values(&[egress])
        .set(plan.period.as_secs_f64());
    let worst = &metrics.pacing_worst_case;
    worst
        .with_label_values(&[egress, "closed_window"])
        .set(plan.worst_closed_window.into());
    worst
        .with_label_values(&[egress, "approximated_estimate"])
        .set(plan.worst_estimate);
}

/// The probe: key-less, static, cheap for the upstream.
const PROBE_PATH: &str = "/v1/h2h/list/rekening";

fn money_lost(result: &Result<Answer, UpstreamError>, meta: CallMeta) -> bool {
    let lost = matches!(
        result,
        Err(UpstreamError::Lost(_) | UpstreamError::Timeout | UpstreamError::BadBody(_))
    );
    lost && meta.route.class.may_move_money()
}

fn classify_failure(error: UpstreamError, money: bool) -> ProxyError {
    match error {
        // An HTML 5xx after sending (Cloudflare 502/504/524) can come after the
        // origin did the work: for money that is an unknown outcome.
        UpstreamError::HtmlPage { status } if money && status.is_server_error() => {
            ProxyError::OutcomeUnknown {
                source: Some(error),
            }
        }
        UpstreamError::Lost(_) | UpstreamError::Timeout | UpstreamError::BadBody(_) if money => {
            ProxyError::OutcomeUnknown {
                source: Some(error),
            }
        }
        other => ProxyError::Upstream(other),
    }
}

fn failure_label(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::NotSent(_) => "connect_error",
        UpstreamError::Lost(_) => "connection_lost",
        UpstreamError::BadBody(_) => "bad_body",
        UpstreamError::Timeout => "timeout",
        UpstreamError::Blocked { .. } => "blocked",
        UpstreamError::HtmlPage { .. } => "html_page",
    }
}
