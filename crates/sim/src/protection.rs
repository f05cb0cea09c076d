//! The Cloudflare-like rate limiter in front of the emulated API, per client IP.
//!
//! Every API call is counted before the API sees it, whatever its path, key or outcome, and
//! calls made while blocked count too. Over the limit the IP is blocked for a fixed time and
//! every call from it gets the HTML 429 page. Control calls never reach this module.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// How the limiter counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitRule {
    pub(crate) limit: u32,
    pub(crate) window: Duration,
    pub(crate) exact: bool,
    pub(crate) block: Duration,
}

/// What the limiter decided for one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let the call through to the API.
    Pass,
    /// This arrival pushed the IP over the limit: a new block starts now.
    BlockStarted,
    /// The IP was already blocked.
    StillBlocked,
}

/// Per-IP counters and blocks.
#[derive(Debug)]
pub(crate) struct Protection {
    rule: LimitRule,
    origin: Instant,
    clients: HashMap<IpAddr, ClientCounter>,
}

#[derive(Debug, Default)]
struct ClientCounter {
    window_index: u64,
    current: u32,
    previous: u32,
    recent: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

impl Protection {
    /// A limiter whose windows are aligned to multiples of `rule.window` since `origin`.
    pub(crate) fn new(rule: LimitRule, origin: Instant) -> Self {
        Self {
            rule,
            origin,
            clients: HashMap::new(),
        }
    }

    /// Counts one arrival from `ip` at `now` and decides whether it may pass.
    pub(crate) fn arrive(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        let rule = self.rule;
        let index = self.window_index(now);
        let fraction = self.elapsed_fraction(now);
        let client = self.clients.entry(ip).or_default();
        let over = if rule.exact {
            client.count_exact(now, rule.window) > f64::from(rule.limit)
        } else {
            client.count_approximate(index, fraction) > f64::from(rule.limit)
        };

        if client.blocked_until.is_some_and(|until| now < until) {
            return Verdict::StillBlocked;
        }
        if over {
            client.blocked_until = Some(now + rule.block);
            return Verdict::BlockStarted;
        }
        Verdict::Pass
    }

    /// Blocks `ip` for `duration` from `now`, as the `/__sim/block` control call asks.
    pub(crate) fn block(&mut self, ip: IpAddr, now: Instant, duration: Duration) {
        self.clients.entry(ip).or_default().blocked_until = Some(now + duration);
    }

    /// Lifts every block; counters stay.
    pub(crate) fn unblock_all(&mut self) {
        for client in self.clients.values_mut() {
            client.blocked_until = None;
        }
    }

    fn window_index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        (since / self.rule.window.as_nanos().max(1)) as u64
    }

    fn elapsed_fraction(&self, now: Instant) -> f64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let window = self.rule.window.as_nanos().max(1);
        (since % window) as f64 / window as f64
    }
}

impl ClientCounter {
    /// Cloudflare's estimate, this arrival included:
    /// `previous × (1 − elapsed_fraction) + current`.
    fn count_approximate(&mut self, index: u64, fraction: f64) -> f64 {
        if index == self.window_index + 1 {
            self.previous = self.current;
            self.current = 0;
        } else if index != self.window_index {
            self.previous = 0;
            self.current = 0;
        }
        self.window_index = index;
        self.current += 1;
        f64::from(self.previous) * (1.0 - fraction) + f64::from(self.current)
    }

    /// Arrivals in the trailing window `(now − window, now]`, this one included.
    fn count_exact(&mut self, now: Instant, window: Duration) -> f64 {
        self.recent.push_back(now);
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn rule(exact: bool) -> LimitRule {
        LimitRule {
            limit: 5,
            window: Duration::from_secs(10),
            exact,
            block: Duration::from_secs(60),
        }
    }

    #[test]
    fn sixth_call_in_one_window_starts_a_block_that_holds() {
        let origin = Instant::now();
        let mut protection = Protection::new(rule(false), origin);
        for i in 0..5 {
            let at = origin + Duration::from_millis(100 * i);
            assert_eq!(protection.arrive(IP, at), Verdict::Pass);
        }
        let sixth = origin + Duration::from_millis(600);
        assert_eq!(protection.arrive(IP, sixth), Verdict::BlockStarted);
        let later = origin + Duration::from_secs(59);
        assert_eq!(protection.arrive(IP, later), Verdict::StillBlocked);
    }

    #[test]
    fn approximate_counter_weighs_the_previous_window() {
        let origin = Instant::now();
        let mut protection = Protection::new(rule(false), origin);
        for i in 0..5 {
            protection.arrive(IP, origin + Duration::from_millis(9_000 + 100 * i));
        }
        // 1 s into the next window: 5 × 0.9 + 1 = 5.5 > 5.
        let next = origin + Duration::from_secs(11);
        assert_eq!(protection.arrive(IP, next), Verdict::BlockStarted);
    }

    #[test]
    fn calls_spaced_a_quarter_window_apart_never_block() {
        let origin = Instant::now();
        for exact in [false, true] {
            let mut protection = Protection::new(rule(exact), origin);
            for i in 0..200u64 {
                let at = origin + Duration::from_millis(37 + 2_510 * i);
                assert_eq!(protection.arrive(IP, at), Verdict::Pass, "call {i}");
            }
        }
    }

    #[test]
    fn exact_window_counts_only_the_trailing_interval() {
        let origin = Instant::now();
        let mut protection = Protection::new(rule(true), origin);
        for i in 0..5 {
            protection.arrive(IP, origin + Duration::from_millis(9_000 + 100 * i));
        }
        let after = origin + Duration::from_millis(19_001);
        assert_eq!(protection.arrive(IP, after), Verdict::Pass);
    }
}
