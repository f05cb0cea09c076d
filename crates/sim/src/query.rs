//! Reading a request line the way the upstream's web framework does: the path with or without
//! `/api` and with doubled slashes, and a query string with `+`/`%20` spaces, any order,
//! repeats and empty values.
//!
//! The raw query is never rewritten here; the audit log keeps it byte for byte.

/// Where a request is aimed once the path is normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A simulator control call under `/__sim/`, with the segments after it.
    Control(Vec<String>),
    /// An emulated API call; the route is the path without `/api` and with single slashes
    /// (`/v2/orders`).
    Api(String),
}

/// Classifies a raw request path.
pub(crate) fn target(raw_path: &str) -> Target {
    let segments: Vec<&str> = raw_path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.first() {
        Some(&"__sim") => Target::Control(segments[1..].iter().map(|s| s.to_string()).collect()),
        _ => Target::Api(api_route(&segments)),
    }
}

/// Normalises a route given in a fault (`/api/v2/orders`, `v2/orders/`) the same way.
pub(crate) fn normalise_route(route: &str) -> String {
    let segments: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
    api_route(&segments)
}

fn api_route(segments: &[&str]) -> String {
    let rest = match segments.first() {
        Some(first) if first.eq_ignore_ascii_case("api") => &segments[1..],
        _ => segments,
    };
    format!("/{}", rest.join("/"))
}

/// Decoded query (and form body) parameters, first occurrence wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `a=1&b=x+y&flag&c=%20` leniently: a bare name has an empty value, invalid escapes
    /// stay as written.
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|part| !part.is_empty())
            .map(|part| {
                let (name, value) = part.split_once('=').unwrap_or((part, ""));
                (decode(name), decode(value))
            })
            .collect();
        Self { pairs }
    }

    /// Adds pairs from another source (a form body) after the existing ones.
    pub(crate) fn extend(&mut self, other: Params) {
        self.pairs.extend(other.pairs);
    }

    /// The trimmed value of the first parameter with this name, if present and non-empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// Percent-decodes one component, `+` meaning space; bytes that are not valid UTF-8 after
/// decoding are replaced.
fn decode(component: &str) -> String {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && hex_pair(bytes[i + 1], bytes[i + 2]).is_some() => {
                out.extend(hex_pair(bytes[i + 1], bytes[i + 2]));
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_prefix_and_double_slashes_are_normalised_away() {
        assert_eq!(target("/api/v2/orders"), Target::Api("/v2/orders".into()));
        assert_eq!(
            target("//api//v2/orders/"),
            Target::Api("/v2/orders".into())
        );
        assert_eq!(target("/v2/orders"), Target::Api("/v2/orders".into()));
        assert_eq!(target("/"), Target::Api("/".into()));
        assert_eq!(normalise_route("api/v2/orders"), "/v2/orders");
    }

    #[test]
    fn control_paths_are_recognised_with_their_segments() {
        assert_eq!(
            target("/__sim/orders/RO1/sms"),
            Target::Control(vec!["orders".into(), "RO1".into(), "sms".into()])
        );
    }

    #[test]
    fn query_values_decode_plus_and_percent_and_keep_first_repeat() {
        let params = Params::parse(Some("a=1&b=x+y&b=z&c=%20q%2B&flag&bad=%E9%FF&e=&f=%zz"));
        assert_eq!(params.get("a"), Some("1"));
        assert_eq!(params.get("b"), Some("x y"));
        assert_eq!(params.get("c"), Some("q+"));
        assert_eq!(params.get("flag"), None);
        assert_eq!(params.get("e"), None);
        assert_eq!(params.get("f"), Some("%zz"));
        assert!(params.get("bad").is_some());
    }
}
