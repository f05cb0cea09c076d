//! Stale statuses waiting for a refresh, oldest answer first.
//!
//! Under a poll storm there are more stale statuses than upstream slots. A
//! poll of a stale status leaves a wish here and is answered at once; only a
//! few refreshes per egress wait in the pacer's queue at a time, and each one
//! that ends lets the wish with the oldest answer go next. So every status
//! polled is refreshed once per round (active statuses × pacing period per
//! egress), and the queue keeps its room for interactive calls.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{CacheKey, Policy};
use crate::upstream::{CallMeta, OutboundCall};

/// Refreshes of one egress waiting in its pacer queue at a time: two, so
/// that the next is queued while the previous one's answer travels.
const QUEUED_PER_EGRESS: usize = 2;

/// A wish nobody renewed for this long is dropped: its pollers have stopped.
const FORGOTTEN_AFTER: Duration = Duration::from_secs(60);

/// What a refresh needs to be started later.
pub(super) struct Wish {
    pub(super) call: OutboundCall,
    pub(super) meta: CallMeta,
    pub(super) policy: Policy,
    /// When the entry to refresh was fetched: the order of the queue.
    fetched_at: Instant,
    seq: u64,
    /// When a poll last asked for it.
    asked_at: Instant,
}

#[derive(Default)]
struct Wishes {
    by_key: HashMap<CacheKey, Wish>,
    /// (fetched_at, seq) of every wish, oldest first.
    order: BTreeSet<(Instant, u64, CacheKey)>,
    next_seq: u64,
}

/// The wishes, and how many refreshes each egress may have queued.
pub(super) struct Refreshes {
    wishes: Mutex<Wishes>,
    slots: Vec<Arc<Semaphore>>,
    max_wishes: usize,
}

impl Refreshes {
    pub(super) fn new(egresses: usize, max_wishes: usize) -> Self {
        Self {
            wishes: Mutex::default(),
            slots: (0..egresses.max(1))
                .map(|_| Arc::new(Semaphore::new(QUEUED_PER_EGRESS)))
                .collect(),
            max_wishes,
        }
    }

    /// Records that `key`, fetched at `fetched_at`, is wanted again.
    pub(super) fn want(
        &self,
        key: &CacheKey,
        fetched_at: Instant,
        call: OutboundCall,
        meta: CallMeta,
        policy: Policy,
    ) {
        let mut wishes = self.wishes.lock().expect("refresh lock");
        let now = Instant::now();
        if let Some(wish) = wishes.by_key.get_mut(key) {
            wish.asked_at = now;
            return;
        }
        if wishes.by_key.len() >= self.max_wishes {
            return;
        }
        let seq = wishes.next_seq;
        wishes.next_seq += 1;
        wishes.order.insert((fetched_at, seq, key.clone()));
        let wish = Wish {
            call,
            meta,
            policy,
            fetched_at,
            seq,
            asked_at: now,
        };
        wishes.by_key.insert(key.clone(), wish);
    }

    /// The oldest wish whose egress may queue another refresh, with the
    /// place it takes; forgotten wishes are dropped on the way.
    pub(super) fn next(&self) -> Option<(CacheKey, Wish, OwnedSemaphorePermit)> {
        let mut wishes = self.wishes.lock().expect("refresh lock");
        let mut forgotten = Vec::new();
        let mut chosen = None;
        for (_, _, key) in &wishes.order {
            let wish = &wishes.by_key[key];
            if wish.asked_at.elapsed() > FORGOTTEN_AFTER {
                forgotten.push(key.clone());
                continue;
            }
            let slots = &self.slots[wish.meta.egress.0.min(self.slots.len() - 1)];
            if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
                chosen = Some((key.clone(), permit));
                break;
            }
        }
        for key in forgotten {
            remove(&mut wishes, &key);
        }
        let (key, permit) = chosen?;
        let wish = remove(&mut wishes, &key)?;
        Some((key, wish, permit))
    }
}

fn remove(wishes: &mut Wishes, key: &CacheKey) -> Option<Wish> {
    let wish = wishes.by_key.remove(key)?;
    wishes
        .order
        .remove(&(wish.fetched_at, wish.seq, key.clone()));
    Some(wish)
}
