//! Who is calling: the client's `x-apikey`, seen only through its fingerprint,
//! and what the upstream last said about it.
//!
//! This is pass-through mode: the client's key is the upstream key. A key the
//! upstream rejected is refused locally for a while; a key it accepted may read
//! the shared catalog cache. Gateway keys of configured clients are in `pool`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use moka::Expiry;
use sha2::{Digest, Sha256};

/// A SHA-256 of a key: what logs, metrics and cache keys use instead of the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Fingerprint of raw key bytes.
    pub fn of(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }

    /// A fingerprint from a digest computed elsewhere (a configured hash).
    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// A queue flow id: the digest's first 8 bytes (uniform, stable).
    pub fn flow(self) -> u64 {
        let mut first = [0; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(first)
    }

    /// Full hex digest, for cache keys.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Fingerprint {
    /// The first 12 hex digits: enough to tell keys apart in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..6]))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Most keys whose fingerprints are remembered; past it they are forgotten
/// all at once (a flood of made-up keys costs one SHA-256 each, as before).
const REMEMBERED_KEYS: usize = 4096;

/// The fingerprint of `key`, remembered for the keys seen lately: every
/// request carries its key, and a hash-map lookup costs a tenth of SHA-256.
fn remembered_fingerprint(key: &[u8]) -> Fingerprint {
    static SEEN: std::sync::LazyLock<Mutex<HashMap<Box<[u8]>, Fingerprint>>> =
        std::sync::LazyLock::new(Mutex::default);
    if let Some(known) = SEEN.lock().expect("fingerprints lock").get(key) {
        return *known;
    }
    let fingerprint = Fingerprint::of(key);
    let mut seen = SEEN.lock().expect("fingerprints lock");
    if seen.len() >= REMEMBERED_KEYS {
        seen.clear();
    }
    seen.insert(key.into(), fingerprint);
    fingerprint
}

/// A client's API key. Its `Debug` and `Display` show the fingerprint only.
#[derive(Clone)]
pub struct ApiKey {
    value: HeaderValue,
    fingerprint: Fingerprint,
}

impl ApiKey {
    /// Reads `x-apikey`; an empty or blank header counts as no key.
    pub fn from_header(value: Option<&HeaderValue>) -> Option<Self> {
        let value = value?;
        let trimmed = value.as_bytes().trim_ascii();
        if trimmed.is_empty() {
            return None;
        }
        let mut value = HeaderValue::from_bytes(trimmed).ok()?;
        value.set_sensitive(true);
        Some(Self {
            fingerprint: remembered_fingerprint(trimmed),
            value,
        })
    }

    /// The header value to send upstream (marked sensitive).
    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.fingerprint)
    }
}

/// What the upstream last said about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered a call made with the key.
    Accepted,
    /// It answered 401 to the key.
    Rejected,
}

struct VerdictExpiry {
    accepted_for: Duration,
    rejected_for: Duration,
}

impl Expiry<Fingerprint, Verdict> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _: &Fingerprint,
        verdict: &Verdict,
        _: Instant,
    ) -> Option<Duration> {
        Some(match verdict {
            Verdict::Accepted => self.accepted_for,
            Verdict::Rejected => self.rejected_for,
        })
    }

    fn expire_after_update(
        &self,
        key: &Fingerprint,
        verdict: &Verdict,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, verdict, now)
    }
}

/// Recent verdicts by fingerprint.
#[derive(Clone)]
pub struct KeyVerdicts {
    verdicts: moka::sync::Cache<Fingerprint, Verdict>,
    rejected_for: Duration,
}

impl KeyVerdicts {
    /// Remembers acceptances for `accepted_for` and rejections for `rejected_for`.
    pub fn new(accepted_for: Duration, rejected_for: Duration) -> Arc<Self> {
        let verdicts = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .expire_after(VerdictExpiry {
                accepted_for,
                rejected_for,
            })
            .build();
        Arc::new(Self {
            verdicts,
            rejected_for,
        })
    }

    /// The remembered verdict, if any.
    pub fn verdict(&self, key: &ApiKey) -> Option<Verdict> {
        self.verdicts.get(&key.fingerprint)
    }

    /// Records what an upstream answer says about `key`: a 401 rejects it, a
    /// successful answer accepts it, anything else says nothing.
    pub fn learn(&self, key: &ApiKey, status: http::StatusCode, success: bool) {
        let verdict = match status {
            http::StatusCode::UNAUTHORIZED => Verdict::Rejected,
            s if s.is_success() && success => Verdict::Accepted,
            _ => return,
        };
        let previous = self.verdicts.get(&key.fingerprint);
        if previous != Some(verdict) {
            tracing::info!(key.fp = %key.fingerprint, ?verdict, "upstream verdict on key");
        }
        self.verdicts.insert(key.fingerprint, verdict);
    }

    /// How long a rejection is remembered.
    pub fn rejected_for(&self) -> Duration {
        self.rejected_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_prints_only_its_fingerprint() {
        let secret = "demo-secret-value";
        let key = ApiKey::from_header(Some(&HeaderValue::from_static(secret))).unwrap();
        let shown = format!("{key:?} {}", key.fingerprint());
        assert!(!shown.contains(secret), "{shown}");
        assert_eq!(key.fingerprint().to_string().len(), 12);
    }

    #[test]
    fn a_blank_header_is_no_key() {
        assert!(ApiKey::from_header(Some(&HeaderValue::from_static("  "))).is_none());
        assert!(ApiKey::from_header(None).is_none());
    }

    #[test]
    fn a_401_rejects_and_a_success_accepts() {
        let verdicts = KeyVerdicts::new(Duration::from_secs(60), Duration::from_secs(60));
        let key = ApiKey::from_header(Some(&HeaderValue::from_static("k1"))).unwrap();
        assert_eq!(verdicts.verdict(&key), None);
        verdicts.learn(&key, http::StatusCode::UNAUTHORIZED, false);
        assert_eq!(verdicts.verdict(&key), Some(Verdict::Rejected));
        verdicts.learn(&key, http::StatusCode::OK, true);
        assert_eq!(verdicts.verdict(&key), Some(Verdict::Accepted));
        verdicts.learn(&key, http::StatusCode::BAD_REQUEST, false);
        assert_eq!(verdicts.verdict(&key), Some(Verdict::Accepted));
    }
}
