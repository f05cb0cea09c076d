//! The route table: the one place that knows the upstream's paths.
//!
//! For each path it says the class (what the gateway may do with the call),
//! whether a key is needed, how long an answer stays fresh, which query
//! parameters matter, which parameter names an order/deposit/transaction and
//! what a successful call makes stale. Nothing else matches path strings.

/// What the gateway may do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// The same for every key: cached and shared.
    Catalog,
    /// Per key (balance): briefly reused for that key only.
    AccountRead,
    /// Status of one id: briefly reused for its owner only, polls coalesced.
    Status,
    /// Moves money: never cached, coalesced or retried.
    Mutating,
    /// Personal data lookups: forwarded, never cached.
    Lookup,
    /// A path the table does not know: forwarded as if it could move money.
    Unknown,
}

impl RouteClass {
    /// Label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Catalog => "catalog",
            RouteClass::AccountRead => "account",
            RouteClass::Status => "status",
            RouteClass::Mutating => "mutating",
            RouteClass::Lookup => "lookup",
            RouteClass::Unknown => "unknown",
        }
    }

    /// Whether a lost answer leaves the outcome unknown (nothing may be re-sent).
    pub fn may_move_money(self) -> bool {
        matches!(self, RouteClass::Mutating | RouteClass::Unknown)
    }
}

/// How long an answer stays fresh; the durations come from `[cache]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// `cache.catalog_ttl_seconds`.
    Catalog,
    /// `cache.countries_ttl_seconds`.
    Countries,
    /// `cache.static_ttl_seconds`.
    Static,
    /// `cache.status_ttl_seconds`, or the final-state time once final.
    Status,
    /// `cache.balance_ttl_seconds`.
    Balance,
    /// Not reused.
    Never,
}

impl IdKind {
    /// Name in durable records.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Order => "order",
            IdKind::Deposit => "deposit",
            IdKind::Transaction => "transaction",
        }
    }
}

/// The kind of thing an id parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `order_id`: a rented number.
    Order,
    /// `deposit_id`: a top-up.
    Deposit,
    /// `transaksi_id`: a PPOB purchase.
    Transaction,
}

/// One upstream endpoint.
#[derive(Debug)]
pub struct Route {
    /// The path without `/api`, e.g. `/v2/services`; also the metrics label.
    pub template: &'static str,
    /// What the gateway may do with it.
    pub class: RouteClass,
    /// Whether the upstream wants `x-apikey`.
    pub keyed: bool,
    /// Whether POST is accepted as well as GET.
    pub allows_post: bool,
    /// Reuse time of a successful answer.
    pub freshness: Freshness,
    /// Query parameters that matter: for a read, those that change the answer
    /// (the rest stay out of cache keys); for a write, those that make two
    /// calls the same call (for joining and holding identical calls).
    pub cache_params: &'static [&'static str],
    /// The parameter naming the id this call reads or changes.
    pub id: Option<(&'static str, IdKind)>,
    /// What a successful call makes stale.
    pub invalidates: Invalidates,
    /// The kind of id a successful call creates (read from `data.order_id`
    /// or `data.id`), recorded with its owner and account.
    pub creates: Option<IdKind>,
}

/// What a successful mutating call makes stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Invalidates {
    /// The cached status of the id the call names.
    pub status: bool,
    /// The cached balance of the key that made the call.
    pub balance: bool,
}

const NONE: Invalidates = Invalidates {
    status: false,
    balance: false,
};

const fn route(template: &'static str, class: RouteClass, keyed: bool) -> Route {
    let freshness = match class {
        RouteClass::Catalog => Freshness::Catalog,
        RouteClass::AccountRead => Freshness::Balance,
        RouteClass::Status => Freshness::Status,
        _ => Freshness::Never,
    };
    Route {
        template,
        class,
        keyed,
        allows_post: false,
        freshness,
        cache_params: &[],
        id: None,
        invalidates: NONE,
        creates: None,
    }
}

use RouteClass::*;

/// Every endpoint of the upstream that the gateway knows.
pub static ROUTES: &[Route] = &[
    route("/v2/services", Catalog, true),
    Route {
        freshness: Freshness::Countries,
        cache_params: &["service_id"],
        ..route("/v2/countries", Catalog, true)
    },
    Route {
        cache_params: &["country", "provider_id"],
        ..route("/v2/operators", Catalog, true)
    },
    route("/v1/h2h/product", Catalog, false),
    Route {
        freshness: Freshness::Static,
        ..route("/v1/h2h/list/rekening", Catalog, false)
    },
    Route {
        freshness: Freshness::Static,
        ..route("/v1/h2h/list/username", Catalog, false)
    },
    route("/v1/user/balance", AccountRead, true),
    Route {
        cache_params: &["number_id", "provider_id", "operator_id"],
        invalidates: Invalidates {
            status: false,
            balance: true,
        },
        creates: Some(IdKind::Order),
        ..route("/v2/orders", Mutating, true)
    },
    Route {
        cache_params: &["order_id"],
        id: Some(("order_id", IdKind::Order)),
        ..route("/v1/orders/get_status", Status, true)
    },
    Route {
        cache_params: &["order_id", "status"],
        id: Some(("order_id", IdKind::Order)),
        invalidates: Invalidates {
            status: true,
            balance: true,
        },
        ..route("/v1/orders/set_status", Mutating, true)
    },
    Route {
        cache_params: &["amount", "payment_id"],
        creates: Some(IdKind::Deposit),
        ..route("/v1/deposit/create", Mutating, true)
    },
    Route {
        cache_params: &["amount", "payment_id"],
        creates: Some(IdKind::Deposit),
        ..route("/v2/deposit/create", Mutating, true)
    },
    Route {
        cache_params: &["deposit_id"],
        id: Some(("deposit_id", IdKind::Deposit)),
        ..route("/v1/deposit/get_status", Status, true)
    },
    Route {
        cache_params: &["deposit_id"],
        id: Some(("deposit_id", IdKind::Deposit)),
        ..route("/v2/deposit/get_status", Status, true)
    },
    Route {
        cache_params: &["deposit_id"],
        id: Some(("deposit_id", IdKind::Deposit)),
        invalidates: Invalidates {
            status: true,
            balance: true,
        },
        ..route("/v1/deposit/cancel", Mutating, true)
    },
    route("/v1/h2h/check/rekening", Lookup, false),
    route("/v1/h2h/check/username", Lookup, false),
    Route {
        cache_params: &["id", "target"],
        allows_post: true,
        invalidates: Invalidates {
            status: false,
            balance: true,
        },
        creates: Some(IdKind::Transaction),
        ..route("/v1/h2h/transaksi/create", Mutating, true)
    },
    Route {
        cache_params: &["transaksi_id"],
        id: Some(("transaksi_id", IdKind::Transaction)),
        ..route("/v1/h2h/transaksi/status", Status, true)
    },
];

/// A path under `/v1` or `/v2` that the table does not know; forwarded as is.
/// Position of `route` in `ROUTES`; `ROUTES.len()` for `UNKNOWN` (and any
/// route not in the table). Constant time: the position is read off the
/// address, then checked.
pub fn index_of(route: &Route) -> usize {
    let offset = (route as *const Route as usize).wrapping_sub(ROUTES.as_ptr() as usize);
    let index = offset / std::mem::size_of::<Route>();
    match ROUTES.get(index) {
        Some(entry) if std::ptr::eq(entry, route) => index,
        _ => ROUTES.len(),
    }
}

pub static UNKNOWN: Route = Route {
    allows_post: true,
    ..route("/unknown", Unknown, false)
};

/// The route for a normalised path, `UNKNOWN` for other `/v1`, `/v2` paths,
/// `None` for anything else.
pub fn classify(path: &str) -> Option<&'static Route> {
    if let Some(route) = ROUTES.iter().find(|route| route.template == path) {
        return Some(route);
    }
    let versioned = path.starts_with("/v1/") || path.starts_with("/v2/");
    versioned.then_some(&UNKNOWN)
}

/// The status routes that read ids of `kind` (v1 and v2 deposits share ids).
pub fn status_routes(kind: IdKind) -> impl Iterator<Item = &'static Route> {
    ROUTES
        .iter()
        .filter(move |route| route.class == Status && route.id.is_some_and(|(_, k)| k == kind))
}

/// Why a path was refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `.` or `..` segments, encoded slashes or dots, control bytes, or bad escapes.
    #[error("the path contains a segment the API never uses")]
    Suspicious,
    /// Longer than any upstream path.
    #[error("the path is too long")]
    TooLong,
}

/// Strips the optional `/api` prefix, folds repeated slashes and drops a
/// trailing slash: `//api//v2/services/` becomes `/v2/services`.
pub fn normalise_path(raw: &str) -> Result<String, PathError> {
    if raw.len() > 256 {
        return Err(PathError::TooLong);
    }
    let mut path = String::with_capacity(raw.len());
    let mut segments = raw.split('/').filter(|s| !s.is_empty()).peekable();
    if segments.peek() == Some(&"api") {
        segments.next();
    }
    for segment in segments {
        if !is_plain_segment(segment) {
            return Err(PathError::Suspicious);
        }
        path.push('/');
        path.push_str(segment);
    }
    if path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// Letters, digits, `_` and `-` only: every upstream path is made of those,
/// so anything else (dots, escapes, control bytes) is refused.
fn is_plain_segment(segment: &str) -> bool {
    segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_knows_its_place_in_the_table() {
        for (index, route) in ROUTES.iter().enumerate() {
            assert_eq!(index_of(route), index, "{}", route.template);
        }
        assert_eq!(index_of(&UNKNOWN), ROUTES.len());
        let first = &ROUTES[0];
        let copy = route(first.template, first.class, first.keyed);
        assert_eq!(index_of(&copy), ROUTES.len(), "a copy is not in the table");
    }

    #[test]
    fn api_prefix_and_double_slashes_are_folded() {
        for raw in [
            "/api/v2/services",
            "//api//v2//services/",
            "/v2/services",
            "/v2/services/",
        ] {
            assert_eq!(normalise_path(raw).unwrap(), "/v2/services", "{raw}");
        }
        for raw in ["", "/", "/api", "//api//", "/api/api"] {
            let expected = if raw == "/api/api" { "/api" } else { "/" };
            assert_eq!(normalise_path(raw).unwrap(), expected, "{raw}");
        }
    }

    #[test]
    fn dot_segments_escapes_and_control_bytes_are_refused() {
        for raw in [
            "/v1/../admin",
            "/v1/./x",
            "/v1%2Fuser/balance",
            "/v1/user%00",
            "/v1/a.b",
        ] {
            assert_eq!(normalise_path(raw), Err(PathError::Suspicious), "{raw}");
        }
    }

    #[test]
    fn every_known_route_classifies_to_itself() {
        for route in ROUTES {
            assert_eq!(classify(route.template).unwrap().template, route.template);
        }
    }

    #[test]
    fn unknown_versioned_paths_are_forwarded_and_others_are_not() {
        assert_eq!(
            classify("/v2/new_thing").unwrap().class,
            RouteClass::Unknown
        );
        assert!(classify("/admin").is_none());
        assert!(classify("/").is_none());
    }

    #[test]
    fn deposit_status_is_read_through_v1_and_v2() {
        let templates: Vec<_> = status_routes(IdKind::Deposit).map(|r| r.template).collect();
        assert_eq!(
            templates,
            ["/v1/deposit/get_status", "/v2/deposit/get_status"]
        );
    }
}
