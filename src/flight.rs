//! One piece of work per key, shared by everyone who asks for it meanwhile.
//!
//! The first asker leads: it starts the work in a task of its own. Later
//! askers join and wait for the same result. The work can learn when nobody
//! waits any more (to withdraw a call that is still queued), and it stores its
//! result only if it is still the current flight for its key.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// One flight: its result channel and what the leader said about it.
pub struct Flight<V, T> {
    done: watch::Sender<Option<V>>,
    /// What the leader attached (e.g. the call's hash, when it started).
    pub tag: T,
}

/// Whether the asker started the flight or joined one under way.
pub enum Role<V, T> {
    /// Started it: the caller must run the work and call [`Flights::finish`].
    Lead(Arc<Flight<V, T>>, watch::Receiver<Option<V>>),
    /// Joined it: wait on the receiver.
    Join(Arc<Flight<V, T>>, watch::Receiver<Option<V>>),
}

/// A flight joined, and its result channel.
pub type Joined<V, T> = (Arc<Flight<V, T>>, watch::Receiver<Option<V>>);

/// Flights by key.
pub struct Flights<K, V, T> {
    map: Mutex<HashMap<K, Arc<Flight<V, T>>>>,
}

impl<K: Hash + Eq + Clone, V: Clone, T> Default for Flights<K, V, T> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone, T> Flights<K, V, T> {
    /// Joins the flight for `key` when `joinable` accepts it, else starts one
    /// tagged `tag` (replacing, not cancelling, a flight that was not joinable).
    pub fn join_or_lead(&self, key: &K, tag: T, joinable: impl Fn(&T) -> bool) -> Role<V, T> {
        let mut map = self.map.lock().expect("flights lock");
        if let Some(flight) = map.get(key).filter(|flight| joinable(&flight.tag)) {
            return Role::Join(Arc::clone(flight), flight.done.subscribe());
        }
        let (done, receiver) = watch::channel(None);
        let flight = Arc::new(Flight { done, tag });
        map.insert(key.clone(), Arc::clone(&flight));
        Role::Lead(flight, receiver)
    }

    /// Joins the flight under way for `key`, if any.
    pub fn join(&self, key: &K) -> Option<Joined<V, T>> {
        let map = self.map.lock().expect("flights lock");
        let flight = map.get(key)?;
        Some((Arc::clone(flight), flight.done.subscribe()))
    }

    /// Whether `flight` is still the one registered for `key`.
    pub fn is_current(&self, key: &K, flight: &Arc<Flight<V, T>>) -> bool {
        let map = self.map.lock().expect("flights lock");
        map.get(key)
            .is_some_and(|current| Arc::ptr_eq(current, flight))
    }

    /// Unregisters whatever flight `key` has, so that the next asker starts anew.
    pub fn detach(&self, key: &K) {
        self.map.lock().expect("flights lock").remove(key);
    }

    /// Resolves once nobody waits on `flight`; it is then unregistered under
    /// the lock, so that nobody can join a withdrawn flight.
    pub async fn until_unwatched(&self, key: &K, flight: &Arc<Flight<V, T>>) {
        loop {
            flight.done.closed().await;
            let mut map = self.map.lock().expect("flights lock");
            if flight.done.receiver_count() == 0 {
                if map
                    .get(key)
                    .is_some_and(|current| Arc::ptr_eq(current, flight))
                {
                    map.remove(key);
                }
                return;
            }
        }
    }

    /// Unregisters `flight` (if current) and hands `value` to everyone
    /// waiting; returns whether anyone was.
    pub fn finish(&self, key: &K, flight: &Arc<Flight<V, T>>, value: V) -> bool {
        let mut map = self.map.lock().expect("flights lock");
        if map
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, flight))
        {
            map.remove(key);
        }
        drop(map);
        let heard = flight.done.receiver_count() > 0;
        flight.done.send_replace(Some(value));
        heard
    }
}

/// Waits for a flight's value; `None` if its work ended without one (a bug).
pub async fn wait<V: Clone>(mut receiver: watch::Receiver<Option<V>>) -> Option<V> {
    let value = receiver.wait_for(Option::is_some).await.ok()?;
    value.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn later_askers_join_and_get_the_leaders_value() {
        let flights: Flights<&str, u32, ()> = Flights::default();
        let Role::Lead(flight, lead) = flights.join_or_lead(&"k", (), |_| true) else {
            panic!("first asker leads")
        };
        let Role::Join(_, joined) = flights.join_or_lead(&"k", (), |_| true) else {
            panic!("second asker joins")
        };
        flights.finish(&"k", &flight, 7);
        assert_eq!(wait(lead).await, Some(7));
        assert_eq!(wait(joined).await, Some(7));
        assert!(matches!(
            flights.join_or_lead(&"k", (), |_| true),
            Role::Lead(..)
        ));
    }

    #[tokio::test]
    async fn a_flight_nobody_waits_for_is_withdrawn_and_the_next_asker_leads() {
        let flights: Flights<&str, u32, ()> = Flights::default();
        let Role::Lead(flight, receiver) = flights.join_or_lead(&"k", (), |_| true) else {
            panic!("first asker leads")
        };
        drop(receiver);
        flights.until_unwatched(&"k", &flight).await;
        assert!(!flights.is_current(&"k", &flight));
        assert!(matches!(
            flights.join_or_lead(&"k", (), |_| true),
            Role::Lead(..)
        ));
    }
}
