//! The state one simulator instance shares between its connections and its handle.
//!
//! Locks are short and never nested: the gate (limiter plus audit, taken once per arrival), the
//! world, and the fault set. Runtime settings travel through a watch channel so open connections
//! see a change of idle-close time at once.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::audit::{Audit, RecordedRequest, Stats};
use crate::clock::Clock;
use crate::config::SimConfig;
use crate::faults::FaultSet;
use crate::protection::{LimitRule, Protection, Verdict};
use crate::world::World;

/// Settings that can change while the simulator runs (`POST /__sim/settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuntimeSettings {
    pub(crate) idle_close: Option<Duration>,
    pub(crate) gzip: bool,
}

/// Limiter and audit, updated together for each arrival so arrival order is one order.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) protection: Protection,
    pub(crate) audit: Audit,
}

/// Everything one simulator instance shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) clock: Clock,
    pub(crate) gate: Mutex<Gate>,
    pub(crate) world: Mutex<World>,
    pub(crate) faults: Mutex<FaultSet>,
    pub(crate) settings: watch::Sender<RuntimeSettings>,
    pub(crate) connections: AtomicU64,
    rays: AtomicU64,
}

impl Shared {
    /// Fresh state for `config`, with time starting now.
    pub(crate) fn new(config: SimConfig) -> Self {
        let clock = Clock::start_now();
        let now = Instant::now();
        let world = World::new(&config, clock, now);
        Self {
            gate: Mutex::new(new_gate(&config, now)),
            world: Mutex::new(world),
            faults: Mutex::new(FaultSet::new(config.seed)),
            settings: watch::Sender::new(initial_settings(&config)),
            connections: AtomicU64::new(0),
            rays: AtomicU64::new(config.seed),
            config,
            clock,
        }
    }

    /// Records an API arrival, counts it against the limiter, and returns its sequence number
    /// and the limiter's verdict.
    pub(crate) fn arrive(&self, request: RecordedRequest, ip: IpAddr) -> (u64, Verdict) {
        let mut gate = lock(&self.gate);
        let now = Instant::now();
        let mut request = request;
        request.at_ms = self.clock.since_start(now).as_millis() as u64;
        let seq = gate.audit.record(request, ip, now);
        let verdict = gate.protection.arrive(ip, now);

        let stats = gate.audit.stats_mut();
        match verdict {
            Verdict::Pass => {}
            Verdict::BlockStarted => {
                stats.blocks_total += 1;
                stats.blocked_responses += 1;
            }
            Verdict::StillBlocked => stats.blocked_responses += 1,
        }
        if verdict != Verdict::Pass {
            gate.audit.finish(seq, 429, true);
        }
        (seq, verdict)
    }

    /// Sets the status of a recorded request; `faulted` bumps `faulted_responses`.
    pub(crate) fn finish(&self, seq: u64, status: u16, faulted: bool) {
        let mut gate = lock(&self.gate);
        gate.audit.finish(seq, status, false);
        if faulted {
            gate.audit.stats_mut().faulted_responses += 1;
        }
    }

    /// The counters, merged from audit, world and connection count.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = lock(&self.gate).audit.stats();
        let created = lock(&self.world).created();
        stats.orders_created = created.orders;
        stats.deposits_created = created.deposits;
        stats.transactions_created = created.transactions;
        stats.connections_total = self.connections.load(Ordering::Relaxed);
        stats
    }

    /// The request log.
    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.gate).audit.requests()
    }

    /// Blocks an IP now, as the limiter would.
    pub(crate) fn block(&self, ip: IpAddr, duration: Duration) {
        let mut gate = lock(&self.gate);
        gate.protection.block(ip, Instant::now(), duration);
        gate.audit.stats_mut().blocks_total += 1;
    }

    /// World back to the seed; stats, requests, blocks, faults and settings cleared.
    pub(crate) fn reset(&self) {
        let now = Instant::now();
        *lock(&self.gate) = new_gate(&self.config, now);
        *lock(&self.world) = World::new(&self.config, self.clock, now);
        lock(&self.faults).clear();
        self.settings.send_replace(initial_settings(&self.config));
        self.connections.store(0, Ordering::Relaxed);
    }

    /// The world, advanced to now.
    pub(crate) fn world_now(&self) -> (MutexGuard<'_, World>, Instant) {
        let mut world = lock(&self.world);
        let now = Instant::now();
        world.advance(now);
        (world, now)
    }

    /// A Cloudflare-style ray id (`8f3a…-CGK`).
    pub(crate) fn next_ray(&self) -> String {
        let n = self.rays.fetch_add(1, Ordering::Relaxed);
        let mixed = (n ^ 0x5DEE_CE66_D1CE_4E5B).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!("{mixed:016x}-CGK")
    }
}

/// Locks a mutex, carrying on with the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn new_gate(config: &SimConfig, now: Instant) -> Gate {
    let rule = LimitRule {
        limit: config.limit,
        window: config.window,
        exact: config.exact_window,
        block: config.block,
    };
    Gate {
        protection: Protection::new(rule, now),
        audit: Audit::new(config.window, config.limit),
    }
}

fn initial_settings(config: &SimConfig) -> RuntimeSettings {
    RuntimeSettings {
        idle_close: config.idle_close,
        gzip: config.gzip,
    }
}
