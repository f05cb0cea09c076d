//! Injected faults: what can go wrong between a client and the upstream, aimed at one route or
//! all, for every call or only the next few.
//!
//! Faults accumulate until cleared. The pipeline asks this module once per API call (after the
//! limiter counted it) for a [`FaultPlan`] and carries it out.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::query::normalise_route;

/// One fault, as `POST /__sim/faults` accepts it. Every field is optional in JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fault {
    /// Route without `/api` (`"/v2/orders"`); `None` aims at every API route.
    pub route: Option<String>,
    /// Delay before the call is processed, in milliseconds.
    pub latency_ms: u64,
    /// Delay after the call was applied and before it is answered, in milliseconds.
    pub hold_ms: u64,
    /// Share of calls (0.0–1.0) answered with HTTP 500 and the JSON error envelope, not applied.
    pub error_rate: f64,
    /// Share of calls answered with Cloudflare's HTML 502 page, not applied.
    pub html_error_rate: f64,
    /// Share of calls whose connection is dropped without an answer, not applied.
    pub reset_rate: f64,
    /// Apply the call, then drop the connection without answering.
    pub apply_then_drop: bool,
    /// Only the next `count` matching calls; `None` means every one.
    pub count: Option<u32>,
}

/// What to do with one API call, merged from every matching fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FaultPlan {
    /// Sleep this long before processing (ms).
    pub(crate) latency_ms: u64,
    /// Sleep this long after applying, before answering (ms).
    pub(crate) hold_ms: u64,
    /// How the call ends.
    pub(crate) outcome: FaultOutcome,
}

/// How a faulted call ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum FaultOutcome {
    /// Apply and answer normally.
    #[default]
    Normal,
    /// Drop the connection without applying.
    Reset,
    /// Answer Cloudflare's HTML 502 without applying.
    HtmlError,
    /// Answer a JSON 500 without applying.
    ServerError,
    /// Apply, then drop the connection.
    ApplyThenDrop,
}

/// The active faults and the random source that decides the rates.
#[derive(Debug)]
pub(crate) struct FaultSet {
    faults: Vec<Fault>,
    rng: StdRng,
}

impl FaultSet {
    /// No faults; rates are rolled from a generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            faults: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ 0xFA01_7000),
        }
    }

    /// Adds a fault (routes normalised like request paths).
    pub(crate) fn add(&mut self, mut fault: Fault) {
        fault.route = fault.route.as_deref().map(normalise_route);
        self.faults.push(fault);
    }

    /// Removes every fault.
    pub(crate) fn clear(&mut self) {
        self.faults.clear();
    }

    /// The active faults.
    pub(crate) fn list(&self) -> Vec<Fault> {
        self.faults.clone()
    }

    /// Decides the plan for one call to `route`, using up one of each matching counted fault.
    pub(crate) fn plan(&mut self, route: &str) -> FaultPlan {
        let mut plan = FaultPlan::default();
        for fault in self.faults.iter_mut().filter(|f| matches_route(f, route)) {
            plan.latency_ms += fault.latency_ms;
            plan.hold_ms += fault.hold_ms;
            if plan.outcome == FaultOutcome::Normal {
                plan.outcome = roll(&mut self.rng, fault);
            }
            if let Some(count) = fault.count.as_mut() {
                *count = count.saturating_sub(1);
            }
        }
        self.faults.retain(|f| f.count != Some(0));
        plan
    }
}

fn matches_route(fault: &Fault, route: &str) -> bool {
    fault.count != Some(0) && fault.route.as_deref().is_none_or(|r| r == route)
}

fn roll(rng: &mut StdRng, fault: &Fault) -> FaultOutcome {
    let mut hit = |rate: f64| rate > 0.0 && rng.random::<f64>() < rate;
    if hit(fault.reset_rate) {
        FaultOutcome::Reset
    } else if hit(fault.html_error_rate) {
        FaultOutcome::HtmlError
    } else if hit(fault.error_rate) {
        FaultOutcome::ServerError
    } else if fault.apply_then_drop {
        FaultOutcome::ApplyThenDrop
    } else {
        FaultOutcome::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_fault_applies_to_the_next_matching_calls_only() {
        let mut faults = FaultSet::new(1);
        faults.add(Fault {
            route: Some("/api/v2/orders".into()),
            error_rate: 1.0,
            count: Some(2),
            ..Fault::default()
        });
        assert_eq!(faults.plan("/v2/services").outcome, FaultOutcome::Normal);
        assert_eq!(faults.plan("/v2/orders").outcome, FaultOutcome::ServerError);
        assert_eq!(faults.plan("/v2/orders").outcome, FaultOutcome::ServerError);
        assert_eq!(faults.plan("/v2/orders").outcome, FaultOutcome::Normal);
        assert!(faults.list().is_empty());
    }

    #[test]
    fn faults_accumulate_delays_across_matches() {
        let mut faults = FaultSet::new(1);
        faults.add(Fault {
            latency_ms: 100,
            ..Fault::default()
        });
        faults.add(Fault {
            route: Some("/v2/orders".into()),
            hold_ms: 50,
            apply_then_drop: true,
            ..Fault::default()
        });
        let plan = faults.plan("/v2/orders");
        assert_eq!((plan.latency_ms, plan.hold_ms), (100, 50));
        assert_eq!(plan.outcome, FaultOutcome::ApplyThenDrop);
    }
}
