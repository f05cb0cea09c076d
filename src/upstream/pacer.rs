//! The pacer: one queue per egress in front of a governor limiter.
//!
//! Every upstream call waits here for a slot: mutating calls first, then
//! interactive reads, then background refreshes, each in arrival order. A call
//! whose predicted start is past its deadline is refused at once; a caller
//! that goes away while queued leaves no trace. The pacer grants slots; it
//! does not send anything itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::upstream::limits::PacingPlan;

/// Which calls are served first when several wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Buying, cancelling, depositing: a user is waiting to pay.
    Mutating = 0,
    /// Cache misses, balance, status: a user is waiting to see.
    Interactive = 1,
    /// Refreshes nobody waits for.
    Background = 2,
}

impl Priority {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Mutating => "mutating",
            Priority::Interactive => "interactive",
            Priority::Background => "background",
        }
    }

    const ALL: [Priority; 3] = [
        Priority::Mutating,
        Priority::Interactive,
        Priority::Background,
    ];
}

/// Whose turn a queued call waits for: the caller's flow, and how many
/// calls in a row its turn allows (its share against other callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// The caller's flow id.
    pub flow: u64,
    /// Calls per turn, at least 1.
    pub weight: u32,
}

/// Why a call got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The queue is at its configured length.
    #[error("the upstream queue is full")]
    QueueFull {
        /// When a place is likely to be free.
        retry_after: Duration,
    },
    /// The call could not start before its deadline.
    #[error("no upstream slot before the deadline")]
    DeadlineUnreachable {
        /// When a slot is likely to be free.
        retry_after: Duration,
    },
    /// The upstream blocked this egress; nothing is sent until the cool-down ends.
    #[error("the upstream is blocking this egress")]
    Blocked {
        /// Time left in the cool-down.
        retry_after: Duration,
    },
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl Refusal {
    /// Label value for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::QueueFull { .. } => "queue_full",
            Refusal::DeadlineUnreachable { .. } => "deadline",
            Refusal::Blocked { .. } => "blocked",
            Refusal::ShuttingDown => "shutting_down",
        }
    }
}

/// A granted upstream slot: the holder may send exactly one call now.
#[derive(Debug)]
pub struct Slot {
    /// Time spent queued.
    pub waited: Duration,
}

/// governor's clock, driven by tokio's so that tests can pause time.
#[derive(Debug, Clone)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

struct Waiter {
    deadline: Instant,
    enqueued: Instant,
    grant: oneshot::Sender<Result<Slot, Refusal>>,
}

impl Waiter {
    fn is_live(&self) -> bool {
        !self.grant.is_closed()
    }
}

#[derive(Default)]
struct Queues {
    by_priority: [FairQueue<Waiter>; 3],
    blocked_until: Option<Instant>,
    closed: bool,
    /// When the limiter will next admit a call, as far as the pacer knows.
    next_free: Option<Instant>,
}

impl Queues {
    fn prune(&mut self) {
        for queue in &mut self.by_priority {
            queue.retain(Waiter::is_live);
        }
    }

    fn len(&self) -> usize {
        self.by_priority.iter().map(FairQueue::len).sum()
    }

    /// Calls served before a new one of `flow` at `priority`: every call of
    /// a more urgent priority, and the flow's turns at its own.
    fn ahead_of(&self, priority: Priority, turn: Turn) -> usize {
        let urgent: usize = self.by_priority[..priority as usize]
            .iter()
            .map(FairQueue::len)
            .sum();
        urgent + self.by_priority[priority as usize].ahead_of(turn.flow)
    }

    fn pop_next(&mut self) -> Option<Waiter> {
        self.by_priority.iter_mut().find_map(|queue| {
            while let Some(waiter) = queue.pop() {
                if waiter.is_live() {
                    return Some(waiter);
                }
            }
            None
        })
    }

    fn refuse_all(&mut self, refusal: Refusal) {
        for queue in &mut self.by_priority {
            for waiter in queue.extract(|_| true) {
                let _ = waiter.grant.send(Err(refusal));
            }
        }
    }
}

/// Buys, cancels and deposits one caller may have waiting on one egress.
/// At one call per 2.6 s, a fifth would wait over ten seconds anyway.
pub const MUTATING_PER_CALLER: usize = 4;

/// The queue and limiter of one egress.
pub struct Pacer {
    egress: String,
    plan: PacingPlan,
    max_len: usize,
    limiter: Limiter,
    clock: TokioClock,
    queues: Mutex<Queues>,
    work: Notify,
    metrics: Arc<Metrics>,
}

impl Pacer {
    /// Builds the pacer and starts its dispatcher task.
    ///
    /// The limiter starts with its burst spent: a restarted gateway cannot
    /// know what its predecessor sent in the current window.
    pub fn start(
        egress: &str,
        plan: PacingPlan,
        max_len: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let clock = TokioClock {
            start: Instant::now(),
        };
        let quota = Quota::with_period(plan.period)
            .expect("pacing period is positive")
            .allow_burst(std::num::NonZeroU32::new(plan.burst).expect("burst is at least 1"));
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
        while limiter.check().is_ok() {}

        let pacer = Arc::new(Self {
            egress: egress.to_owned(),
            plan,
            max_len,
            limiter,
            clock,
            queues: Mutex::new(Queues {
                next_free: Some(Instant::now() + plan.period),
                ..Queues::default()
            }),
            work: Notify::new(),
            metrics,
        });
        tokio::spawn(Arc::clone(&pacer).dispatch());
        pacer
    }

    /// The egress this pacer guards, as named in metrics and logs.
    pub fn egress(&self) -> &str {
        &self.egress
    }

    /// Waits for a slot; `turn` (the caller) decides whose turn it is among
    /// calls of the same priority. Dropping the returned future gives the
    /// place up.
    ///
    /// Refused at once when the queue is full, the egress is blocked, or the
    /// predicted start (slots ahead × period) is past `deadline`.
    pub async fn acquire(
        &self,
        priority: Priority,
        deadline: Instant,
        turn: Turn,
    ) -> Result<Slot, Refusal> {
        let receiver = self
            .enqueue(priority, deadline, turn)
            .inspect_err(|refusal| {
                self.metrics
                    .refusals
                    .with_label_values(&[refusal.reason()])
                    .inc();
            })?;
        // The dispatcher refuses expired waiters when it next wakes, which can
        // be up to a period late; the caller's own deadline is kept exactly.
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Refusal::ShuttingDown),
            Err(_) => {
                self.metrics.refusals.with_label_values(&["deadline"]).inc();
                Err(Refusal::DeadlineUnreachable {
                    retry_after: self.plan.period,
                })
            }
        }
    }

    fn enqueue(
        &self,
        priority: Priority,
        deadline: Instant,
        turn: Turn,
    ) -> Result<oneshot::Receiver<Result<Slot, Refusal>>, Refusal> {
        let now = Instant::now();
        let mut queues = self.queues.lock().expect("pacer lock");
        if queues.closed {
            return Err(Refusal::ShuttingDown);
        }
        if let Some(until) = queues.blocked_until {
            // Closed until the cool-down ends, then until a probe passes.
            let until = until.max(now + self.plan.period);
            return Err(Refusal::Blocked {
                retry_after: until - now,
            });
        }

        queues.prune();
        let next_free = queues.next_free.map_or(now, |at| at.max(now));
        let ahead = queues.ahead_of(priority, turn) as u32;
        let predicted = next_free + self.plan.period * ahead;
        if predicted > deadline {
            return Err(Refusal::DeadlineUnreachable {
                retry_after: predicted - now,
            });
        }
        // One caller may have only a few buys waiting: mutating calls go
        // before everyone's reads, so more would starve other callers.
        let mutating = &queues.by_priority[Priority::Mutating as usize];
        if priority == Priority::Mutating && mutating.len_of(turn.flow) >= MUTATING_PER_CALLER {
            let retry_after = self.plan.period * MUTATING_PER_CALLER as u32;
            return Err(Refusal::QueueFull { retry_after });
        }
        // Background work may fill half the queue at most, so that buys and
        // reads always find a place.
        let room = match priority {
            Priority::Background => self.max_len / 2,
            _ => self.max_len,
        };
        if queues.len() >= room.max(1) {
            let retry_after = self.plan.period * queues.len() as u32;
            return Err(Refusal::QueueFull { retry_after });
        }

        let (grant, receiver) = oneshot::channel();
        let waiter = Waiter {
            deadline,
            enqueued: now,
            grant,
        };
        queues.by_priority[priority as usize].push(turn.flow, turn.weight, waiter);
        self.publish_depth(&queues);
        drop(queues);
        self.work.notify_one();
        Ok(receiver)
    }

    /// When a call of `priority` for `turn` queued now would start, or `None`
    /// while the egress is blocked or closed.
    pub fn predicted_start(&self, priority: Priority, turn: Turn) -> Option<Instant> {
        let now = Instant::now();
        let mut queues = self.queues.lock().expect("pacer lock");
        if queues.closed || queues.blocked_until.is_some() {
            return None;
        }
        queues.prune();
        let next_free = queues.next_free.map_or(now, |at| at.max(now));
        Some(next_free + self.plan.period * queues.ahead_of(priority, turn) as u32)
    }

    /// Stops all calls on this egress until `until`; queued calls are refused.
    pub fn block_until(&self, until: Instant) {
        let mut queues = self.queues.lock().expect("pacer lock");
        let now = Instant::now();
        queues.blocked_until = Some(queues.blocked_until.map_or(until, |at| at.max(until)));
        queues.refuse_all(Refusal::Blocked {
            retry_after: until.saturating_duration_since(now),
        });
        self.publish_depth(&queues);
        self.metrics
            .egress_blocked
            .with_label_values(&[&self.egress])
            .set(1.0);
    }

    /// When the current block's cool-down ends (now, once only the probe is
    /// awaited), or `None` while the egress is open.
    pub fn blocked_until(&self) -> Option<Instant> {
        let queues = self.queues.lock().expect("pacer lock");
        queues.blocked_until.map(|until| until.max(Instant::now()))
    }

    /// Waits for the end of the cool-down, then for a limiter slot, for the
    /// probe call that decides whether the egress opens again. It bypasses the
    /// queue, which is empty while the egress is closed.
    pub async fn probe_slot(&self) {
        if let Some(until) = self.blocked_until() {
            tokio::time::sleep_until(until).await;
        }
        loop {
            match self.limiter.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let at = self.clock.start + not_until.earliest_possible();
                    tokio::time::sleep_until(at).await;
                }
            }
        }
        let mut queues = self.queues.lock().expect("pacer lock");
        queues.next_free = Some(Instant::now() + self.plan.period);
    }

    /// Opens the egress again after a probe passed.
    pub fn reopen(&self) {
        let mut queues = self.queues.lock().expect("pacer lock");
        queues.blocked_until = None;
        drop(queues);
        self.metrics
            .egress_blocked
            .with_label_values(&[&self.egress])
            .set(0.0);
        self.work.notify_one();
    }

    /// Refuses every queued call and every later one; granted slots are unaffected.
    pub fn close(&self) {
        let mut queues = self.queues.lock().expect("pacer lock");
        queues.closed = true;
        queues.refuse_all(Refusal::ShuttingDown);
        self.publish_depth(&queues);
        drop(queues);
        self.work.notify_one();
    }

    /// Calls waiting, all priorities.
    pub fn queued(&self) -> usize {
        let mut queues = self.queues.lock().expect("pacer lock");
        queues.prune();
        queues.len()
    }

    async fn dispatch(self: Arc<Self>) {
        loop {
            let Some(wait) = self.next_wait() else { return };
            match wait {
                Wait::ForWork => self.work.notified().await,
                Wait::Until(at) => tokio::time::sleep_until(at).await,
                Wait::Granted => {}
            }
        }
    }

    /// One dispatcher step: grant a slot if it can, else say what to wait for.
    fn next_wait(&self) -> Option<Wait> {
        let now = Instant::now();
        let mut queues = self.queues.lock().expect("pacer lock");
        if queues.closed {
            return None;
        }
        if let Some(until) = queues.blocked_until {
            let retry_after = until.max(now + self.plan.period) - now;
            queues.refuse_all(Refusal::Blocked { retry_after });
            self.publish_depth(&queues);
            return Some(Wait::ForWork);
        }
        self.refuse_expired(&mut queues, now);
        queues.prune();
        if queues.len() == 0 {
            self.publish_depth(&queues);
            return Some(Wait::ForWork);
        }

        if let Err(not_until) = self.limiter.check() {
            let at = self.clock.start + not_until.earliest_possible();
            queues.next_free = Some(at);
            return Some(Wait::Until(at));
        }
        queues.next_free = Some(now + self.plan.period);
        self.grant_one(&mut queues, now);
        self.publish_depth(&queues);
        Some(Wait::Granted)
    }

    /// Hands the slot to the first live waiter; a slot nobody takes is lost,
    /// which only ever errs on the safe side.
    fn grant_one(&self, queues: &mut Queues, now: Instant) {
        while let Some(waiter) = queues.pop_next() {
            let waited = now - waiter.enqueued;
            if waiter.grant.send(Ok(Slot { waited })).is_ok() {
                return;
            }
        }
    }

    fn refuse_expired(&self, queues: &mut Queues, now: Instant) {
        let ahead = queues.len() as u32;
        for queue in &mut queues.by_priority {
            for waiter in queue.extract(|waiter| waiter.deadline < now) {
                let retry_after = self.plan.period * ahead.max(1);
                self.metrics.refusals.with_label_values(&["deadline"]).inc();
                let _ = waiter
                    .grant
                    .send(Err(Refusal::DeadlineUnreachable { retry_after }));
            }
        }
    }

    fn publish_depth(&self, queues: &Queues) {
        for priority in Priority::ALL {
            let depth = queues.by_priority[priority as usize].len() as f64;
            self.metrics
                .queue_depth
                .with_label_values(&[&self.egress, priority.as_str()])
                .set(depth);
        }
    }
}

enum Wait {
    ForWork,
    Until(Instant),
    Granted,
}

mod fair;

use fair::FairQueue;

#[cfg(test)]
mod tests;
