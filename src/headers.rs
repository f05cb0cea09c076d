//! Names of the non-standard headers the gateway reads and writes, and
//! values it writes on every answer, built once: a header looked up by `&str`
//! or a value made `from_static` is parsed or checked on every request.

use http::{HeaderName, HeaderValue};

/// The RumahOTP API key, sent by clients and to the upstream.
pub static X_APIKEY: HeaderName = HeaderName::from_static("x-apikey");
/// `wait=<seconds>`: how long a client will wait for its answer.
pub static PREFER: HeaderName = HeaderName::from_static("prefer");
/// The client's key for at-most-once calls.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `HIT`, `STALE` or `MISS` on answers the cache served.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// The content type of JSON answers.
pub static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
