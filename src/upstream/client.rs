//! The HTTP client that talks to RumahOTP: one warm keep-alive pool, connect
//! and answer timeouts, decompression, and the reading of Cloudflare pages.
//!
//! It sends exactly once and never retries on its own, except what hyper does
//! for a pooled connection found closed before anything was written.

use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::auth::ApiKey;
use crate::config::{UpstreamConfig, secs};
use crate::headers::X_APIKEY;

/// One call to send upstream, as the client asked for it.
#[derive(Debug, Clone)]
pub struct OutboundCall {
    /// GET, or POST for h2h/transaksi/create.
    pub method: Method,
    /// Normalised path without `/api`, e.g. `/v2/services`.
    pub path: String,
    /// The client's query string, byte for byte.
    pub query: Option<String>,
    /// The key the call carries, if any (with its fingerprint).
    pub api_key: Option<ApiKey>,
    /// The client's `accept`, if any.
    pub accept: Option<HeaderValue>,
    /// The client's `content-type`, if any (POST only).
    pub content_type: Option<HeaderValue>,
    /// The client's body (POST only).
    pub body: Bytes,
}

/// An upstream answer, decompressed.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The upstream's status.
    pub status: StatusCode,
    /// The upstream's content type.
    pub content_type: Option<HeaderValue>,
    /// The body, identity-encoded.
    pub body: Bytes,
    /// Time the call waited for its upstream slot.
    pub queue_wait: Duration,
}

impl Answer {
    /// Whether the body is the API's JSON with `"success": true`.
    pub fn is_success(&self) -> bool {
        /// Only the flag is read; the rest of the body is skipped, not built.
        #[derive(serde::Deserialize)]
        struct Envelope {
            success: bool,
        }
        self.status.is_success()
            && serde_json::from_slice::<Envelope>(&self.body).is_ok_and(|e| e.success)
    }
}

/// How an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be made: nothing reached the upstream.
    #[error("could not connect to the upstream")]
    NotSent(#[source] hyper_util::client::legacy::Error),
    /// The call was sent, or may have been, and the connection failed before an answer.
    #[error("the connection failed before an answer")]
    Lost(#[source] hyper_util::client::legacy::Error),
    /// The answer's body could not be read or decoded.
    #[error("the upstream's body could not be read")]
    BadBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No complete answer within `upstream.response_timeout_seconds`.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// Cloudflare (or the API) is refusing this egress.
    #[error("the upstream is blocking this egress (HTTP {status})")]
    Blocked {
        /// The upstream's status.
        status: StatusCode,
        /// The upstream's Retry-After, else the configured cool-down.
        retry_after: Duration,
    },
    /// An HTML error page instead of JSON.
    #[error("the upstream answered an HTML page (HTTP {status})")]
    HtmlPage {
        /// The upstream's status.
        status: StatusCode,
    },
}

impl UpstreamError {
    /// Whether a safe read may be sent again: it failed before any answer.
    pub fn is_resendable_read(&self) -> bool {
        matches!(self, UpstreamError::Lost(_))
    }
}

/// How an egress reaches the upstream: directly, or through a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A direct connection (from `bind`, if set).
    Direct,
    /// Through an HTTP proxy's `CONNECT` tunnel at this URI.
    HttpConnect(Uri),
    /// Through a SOCKS5 proxy at this URI (names resolved by the proxy).
    Socks5(Uri),
}

impl Outbound {
    /// Reads `http://host:port` (CONNECT) or `socks5://host:port`; `None` is direct.
    pub fn parse(proxy: Option<&str>) -> Result<Self, String> {
        let Some(proxy) = proxy else {
            return Ok(Outbound::Direct);
        };
        let uri: Uri = proxy.parse().map_err(|e| format!("proxy {proxy:?}: {e}"))?;
        if uri.host().is_none() || uri.port_u16().is_none() {
            return Err(format!("proxy {proxy:?}: expected scheme://host:port"));
        }
        match uri.scheme_str() {
            Some("http") => Ok(Outbound::HttpConnect(uri)),
            Some("socks5" | "socks5h") => Ok(Outbound::Socks5(uri)),
            _ => Err(format!(
                "proxy {proxy:?}: the scheme must be http (CONNECT) or socks5"
            )),
        }
    }
}

/// The connection pool, whatever the outbound path.
enum Pool {
    Direct(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
    Connect(Client<HttpsConnector<Tunnel<HttpConnector>>, Full<Bytes>>),
    Socks(Client<HttpsConnector<SocksV5<HttpConnector>>, Full<Bytes>>),
}

impl Pool {
    async fn request(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        match self {
            Pool::Direct(client) => client.request(request).await,
            Pool::Connect(client) => client.request(request).await,
            Pool::Socks(client) => client.request(request).await,
        }
    }
}

/// A keep-alive pool over `connector`, TLS by rustls with the bundled roots.
macro_rules! pool_over {
    ($connector:expr, $config:expr) => {{
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector($connector);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(secs($config.pool_idle_timeout_seconds))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector)
    }};
}

/// The pooled client for one egress.
pub struct UpstreamClient {
    http: Pool,
    base: String,
    response_timeout: Duration,
    max_body_bytes: usize,
    block_cooldown: Duration,
}

impl UpstreamClient {
    /// Builds the pool, connecting from `bind` when given (to the upstream,
    /// or to the proxy), directly or through `outbound`'s proxy.
    pub fn new(
        config: &UpstreamConfig,
        bind: Option<IpAddr>,
        outbound: &Outbound,
        block_cooldown: Duration,
    ) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_local_address(bind);
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(secs(config.connect_timeout_seconds)));
        let http = match outbound {
            Outbound::Direct => Pool::Direct(pool_over!(tcp, config)),
            Outbound::HttpConnect(proxy) => {
                Pool::Connect(pool_over!(Tunnel::new(proxy.clone(), tcp), config))
            }
            Outbound::Socks5(proxy) => {
                let socks = SocksV5::new(proxy.clone(), tcp).local_dns(false);
                Pool::Socks(pool_over!(socks, config))
            }
        };
        Self {
            http,
            base: base_url(config.base_url.trim_end_matches('/')),
            response_timeout: secs(config.response_timeout_seconds),
            max_body_bytes: config.max_body_bytes,
            block_cooldown,
        }
    }

    /// Sends `call` once and reads the whole answer.
    pub async fn send(&self, call: &OutboundCall) -> Result<Answer, UpstreamError> {
        let request = self.build(call);
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                if e.is_connect() {
                    UpstreamError::NotSent(e)
                } else {
                    UpstreamError::Lost(e)
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_body_bytes)
                .collect()
                .await
                .map_err(UpstreamError::BadBody)?
                .to_bytes();
            Ok::<_, UpstreamError>((parts, body))
        };
        let (parts, raw) = tokio::time::timeout(self.response_timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout)??;

        let body = decode(
            parts.headers.get(header::CONTENT_ENCODING),
            raw,
            self.max_body_bytes,
        )?;
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        self.check_block(parts.status, &parts.headers, content_type.as_ref(), &body)?;
        Ok(Answer {
            status: parts.status,
            content_type,
            body,
            queue_wait: Duration::ZERO,
        })
    }

    fn build(&self, call: &OutboundCall) -> Request<Full<Bytes>> {
        let mut uri = format!("{}{}", self.base, call.path);
        if let Some(query) = &call.query {
            uri.push('?');
            uri.push_str(query);
        }
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(uri)
            .header(
                header::USER_AGENT,
                concat!("otpgate/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT_ENCODING, "gzip, br")
            .header(
                header::ACCEPT,
                call.accept
                    .clone()
                    .unwrap_or(HeaderValue::from_static("application/json")),
            );
        if let Some(key) = &call.api_key {
            builder = builder.header(&X_APIKEY, key.header_value().clone());
        }
        if let Some(content_type) = &call.content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type.clone());
        }
        builder
            .body(Full::new(call.body.clone()))
            .expect("path and query come from a valid URI")
    }

    /// Turns Cloudflare's answers into errors: a block for 429 (or 403/503
    /// with Cloudflare's marks), an HTML page for any other HTML answer.
    fn check_block(
        &self,
        status: StatusCode,
        headers: &http::HeaderMap,
        content_type: Option<&HeaderValue>,
        body: &Bytes,
    ) -> Result<(), UpstreamError> {
        let html = content_type
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("html"))
            || body.trim_ascii_start().starts_with(b"<");
        let cloudflare = headers.contains_key("cf-ray") || headers.contains_key("cf-mitigated");
        let blocking = status == StatusCode::TOO_MANY_REQUESTS
            || (matches!(status.as_u16(), 403 | 503) && (html || cloudflare));
        if blocking {
            let retry_after = retry_after(headers).unwrap_or(self.block_cooldown);
            return Err(UpstreamError::Blocked {
                status,
                retry_after,
            });
        }
        if html {
            return Err(UpstreamError::HtmlPage { status });
        }
        Ok(())
    }
}

/// The base URL without `user:password@`: credentials are never sent, and
/// the connection pool (which logs its keys at debug) never sees them.
fn base_url(url: &str) -> String {
    let (bare, had_credentials) = crate::config::strip_userinfo(url);
    if had_credentials {
        tracing::warn!("credentials in upstream.base_url are ignored");
    }
    bare
}

fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Undoes `content-encoding` (gzip, deflate, br), bounded by `limit` bytes.
fn decode(
    encoding: Option<&HeaderValue>,
    raw: Bytes,
    limit: usize,
) -> Result<Bytes, UpstreamError> {
    let encoding = encoding.and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let reader: Box<dyn Read> = match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => return Ok(raw),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(&raw[..])),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(&raw[..])),
        "br" => Box::new(brotli::Decompressor::new(&raw[..], 8192)),
        other => {
            let error = format!("unsupported content-encoding {other:?}");
            return Err(UpstreamError::BadBody(error.into()));
        }
    };
    let mut decoded = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut decoded)
        .map_err(|e| UpstreamError::BadBody(Box::new(e)))?;
    if decoded.len() > limit {
        return Err(UpstreamError::BadBody(
            "decoded body over upstream.max_body_bytes".into(),
        ));
    }
    Ok(Bytes::from(decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_bodies_are_decoded_and_identity_passes_through() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(br#"{"success":true}"#).unwrap();
        let gz = Bytes::from(encoder.finish().unwrap());
        let decoded = decode(Some(&HeaderValue::from_static("gzip")), gz, 1024).unwrap();
        assert_eq!(&decoded[..], br#"{"success":true}"#);

        let plain = Bytes::from_static(b"{}");
        assert_eq!(decode(None, plain.clone(), 1024).unwrap(), plain);
    }

    #[test]
    fn a_body_that_decodes_past_the_limit_is_refused() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![b'a'; 100_000]).unwrap();
        let gz = Bytes::from(encoder.finish().unwrap());
        assert!(decode(Some(&HeaderValue::from_static("gzip")), gz, 1024).is_err());
    }
}
