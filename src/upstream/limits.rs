//! The pacing plan: the spacing between upstream calls derived from the
//! upstream's limit, and the worst case that spacing allows.
//!
//! This is arithmetic only; the pacer enforces the plan with governor.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the upstream's protection counts calls per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum CounterKind {
    /// Cloudflare's sliding estimate: `previous × (1 − elapsed fraction) + current`.
    Approximated,
    /// An exact count of the calls in any window.
    Exact,
}

impl TryFrom<String> for CounterKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "approximated" => Ok(CounterKind::Approximated),
            "exact" => Ok(CounterKind::Exact),
            other => Err(format!(
                "counter {other:?}: expected \"approximated\" or \"exact\""
            )),
        }
    }
}

/// Spacing between calls on one egress and the worst case it allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingPlan {
    /// The upstream's limit per window.
    pub limit: u32,
    /// The upstream's window.
    pub window: Duration,
    /// Calls the limiter sends back to back after a quiet period.
    pub burst: u32,
    /// Minimum spacing between calls: `window / (limit − 1) + margin`.
    pub period: Duration,
    /// How the upstream counts.
    pub counter: CounterKind,
    /// Most calls the limiter admits in any closed window: `burst + ⌊window / period⌋`.
    pub worst_closed_window: u32,
    /// Highest approximated estimate the limiter's schedule can reach.
    pub worst_estimate: f64,
}

impl PacingPlan {
    /// Derives the plan; `limit` must be at least 2 and `burst` at least 1.
    pub fn new(
        limit: u32,
        window: Duration,
        margin: Duration,
        burst: u32,
        counter: CounterKind,
    ) -> Self {
        let period = window / (limit - 1) + margin;
        let worst_closed_window = burst + calls_in(window, period);
        let worst_estimate = worst_estimate(window, period, burst);
        Self {
            limit,
            window,
            burst,
            period,
            counter,
            worst_closed_window,
            worst_estimate,
        }
    }

    /// True when some schedule the limiter admits goes over the upstream's limit.
    pub fn can_exceed_limit(&self) -> bool {
        let closed = self.worst_closed_window > self.limit;
        let estimate = self.worst_estimate > f64::from(self.limit) + 1e-9;
        closed || (self.counter == CounterKind::Approximated && estimate)
    }

    /// Upstream calls per second this plan allows on one egress, in the long run.
    pub fn calls_per_second(&self) -> f64 {
        1.0 / self.period.as_secs_f64()
    }
}

impl fmt::Display for PacingPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "one call every {:.3} s (burst {}): worst case {} calls in any closed {:.1} s \
             window and an approximated estimate of {:.2}, against a limit of {}",
            self.period.as_secs_f64(),
            self.burst,
            self.worst_closed_window,
            self.window.as_secs_f64(),
            self.worst_estimate,
            self.limit,
        )
    }
}

/// Whole periods that fit in `span`.
fn calls_in(span: Duration, period: Duration) -> u32 {
    (span.as_nanos() / period.as_nanos().max(1)) as u32
}

/// Upper bound of `previous × (1 − e / window) + current` over every schedule
/// a GCRA limiter (spacing `period`, burst `burst`) admits.
///
/// At `e` into the current window, the current window holds at most
/// `burst + ⌊e / period⌋` calls, the previous at most `burst + ⌊window / period⌋`,
/// and both together at most `burst + ⌊(window + e) / period⌋`. The current
/// window weighs more, so it is filled first. The bound is a step function
/// times a falling line, so its maximum is at a step: `e = k·period` or
/// `e = k·period − window`.
fn worst_estimate(window: Duration, period: Duration, burst: u32) -> f64 {
    let mut steps = Vec::new();
    let mut at = Duration::ZERO;
    while at < window * 2 {
        steps.push(at);
        if at >= window {
            steps.push(at - window);
        }
        at += period;
    }
    steps
        .into_iter()
        .filter(|e| *e < window)
        .map(|e| estimate_bound(window, period, burst, e))
        .fold(0.0, f64::max)
}

fn estimate_bound(window: Duration, period: Duration, burst: u32, elapsed: Duration) -> f64 {
    let total = burst + calls_in(window + elapsed, period);
    let current = (burst + calls_in(elapsed, period)).min(total);
    let previous = (burst + calls_in(window, period)).min(total - current);
    let weight = 1.0 - elapsed.as_secs_f64() / window.as_secs_f64();
    f64::from(previous) * weight + f64::from(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(limit: u32, window_ms: u64, margin_ms: u64, burst: u32) -> PacingPlan {
        let window = Duration::from_millis(window_ms);
        let margin = Duration::from_millis(margin_ms);
        PacingPlan::new(limit, window, margin, burst, CounterKind::Approximated)
    }

    #[test]
    fn default_plan_spaces_calls_two_point_six_seconds_apart_within_the_limit() {
        let plan = plan(5, 10_000, 100, 1);
        assert_eq!(plan.period, Duration::from_millis(2600));
        assert_eq!(plan.worst_closed_window, 4);
        assert!(plan.worst_estimate <= 5.0, "{plan}");
        assert!(!plan.can_exceed_limit());
    }

    #[test]
    fn even_spacing_at_window_over_limit_minus_one_reaches_the_limit_exactly() {
        let plan = plan(5, 10_000, 0, 1);
        assert_eq!(plan.period, Duration::from_millis(2500));
        assert!((plan.worst_estimate - 5.0).abs() < 1e-9, "{plan}");
        assert!(!plan.can_exceed_limit());
    }

    #[test]
    fn one_call_every_two_seconds_can_exceed_the_approximated_counter() {
        let window = Duration::from_secs(10);
        let plan = PacingPlan::new(5, window, Duration::ZERO, 1, CounterKind::Approximated);
        let two_seconds = PacingPlan {
            period: Duration::from_secs(2),
            ..plan
        };
        let estimate = worst_estimate(window, two_seconds.period, 1);
        assert!(estimate > 5.0, "estimate {estimate}");
    }

    #[test]
    fn burst_five_is_refused_because_it_admits_more_than_the_limit() {
        let plan = plan(5, 10_000, 100, 5);
        assert_eq!(plan.worst_closed_window, 8);
        assert!(plan.can_exceed_limit(), "{plan}");
    }
}
