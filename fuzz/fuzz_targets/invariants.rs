//! What must hold for any request target, however malformed: shared by the
//! `route_and_key` fuzz target (nightly, libFuzzer) and by
//! `tests/fuzz_corpus.rs` (stable, replays the corpus in CI).
//!
//! The input is the raw bytes after the method: a path, then `?` and a query.
//! It is checked twice: split as lossy UTF-8 text, and, when `http` accepts it,
//! as the path and query the gateway's server would hand to the proxy.

use otpgate::cache::{CacheKey, Scope};
use otpgate::routes::{RouteClass, classify, normalise_path};

/// A parameter no route keys its cache on.
const JUNK: &str = "zz_fuzz_junk=1";

/// How far an input got, so that a replay can show it was not all refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// `normalise_path` refused the path.
    Refused,
    /// Normalised, but no route (not under `/v1` or `/v2`).
    Unrouted,
    /// Classified, and its cache keys checked.
    Routed,
}

/// Checks every invariant for one request target; panics naming the broken
/// one and the input. Returns how far the text reading of it got.
pub fn check_request_target(data: &[u8]) -> Reach {
    let text = String::from_utf8_lossy(data);
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text.as_ref(), None),
    };
    let reach = check(path, query, data);

    if let Ok(parsed) = http::uri::PathAndQuery::try_from(data) {
        check(parsed.path(), parsed.query(), data);
    }
    reach
}

fn check(path: &str, query: Option<&str>, data: &[u8]) -> Reach {
    let Ok(normal) = normalise_path(path) else {
        return Reach::Refused;
    };
    check_normal_form(&normal, data);

    let Some(route) = classify(&normal) else {
        return Reach::Unrouted;
    };
    let known = route.template == normal;
    let forwarded = route.class == RouteClass::Unknown
        && (normal.starts_with("/v1/") || normal.starts_with("/v2/"));
    assert!(
        known || forwarded,
        "{normal:?} classified as {:?}; input {data:?}",
        route.template
    );

    check_cache_key(route, query, data);
    Reach::Routed
}

/// A normalised path starts with `/` and has no empty, `.` or `..` segment
/// and no escape left to decode.
fn check_normal_form(normal: &str, data: &[u8]) {
    assert!(normal.starts_with('/'), "{normal:?}; input {data:?}");
    assert!(!normal.contains("//"), "{normal:?}; input {data:?}");
    assert!(!normal.contains('%'), "{normal:?}; input {data:?}");
    let dotted = normal.split('/').any(|s| s == "." || s == "..");
    assert!(!dotted, "{normal:?}; input {data:?}");
}

/// The same parameters give the same key whatever their order, whether a
/// space is `+` or `%20`, and whatever junk parameters ride along.
fn check_cache_key(route: &'static otpgate::routes::Route, query: Option<&str>, data: &[u8]) {
    let key = |query: Option<&str>| CacheKey::new(Scope::Shared, route, query);
    let original = key(query);
    let pairs: Vec<&str> = query.unwrap_or_default().split('&').collect();

    let mut reversed = pairs.clone();
    reversed.reverse();
    assert_eq!(
        original,
        key(Some(&reversed.join("&"))),
        "reversed; {data:?}"
    );

    let mut rotated = pairs.clone();
    rotated.rotate_left(data.len() % pairs.len());
    assert_eq!(original, key(Some(&rotated.join("&"))), "rotated; {data:?}");

    let spaces = query.map(|q| q.replace('+', "%20"));
    assert_eq!(original, key(spaces.as_deref()), "+ and %20; {data:?}");

    let with_junk = match query {
        Some(query) => format!("{query}&{JUNK}"),
        None => JUNK.to_owned(),
    };
    assert_eq!(original, key(Some(&with_junk)), "junk parameter; {data:?}");
}
