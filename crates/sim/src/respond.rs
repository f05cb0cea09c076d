//! Builds the bytes the simulator answers with: the upstream's JSON envelopes, Cloudflare's HTML
//! pages, and gzip encoding when the client asked for it.
//!
//! Nothing here decides *what* to answer; the pipeline and the handlers do that.

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use serde_json::json;
use std::io::Write;

use crate::error::{ApiError, ApiResult};

/// The response type every simulator route produces.
pub(crate) type SimResponse = Response<Full<Bytes>>;

/// The upstream's envelope for a handler result: `{"success":true,"data":…}` or the error shape.
pub(crate) fn api_result(result: ApiResult) -> SimResponse {
    match result {
        Ok(data) => json_response(StatusCode::OK, &json!({ "success": true, "data": data })),
        Err(err) => api_error(&err),
    }
}

/// The upstream's error envelope for a refusal, with its status code.
pub(crate) fn api_error(err: &ApiError) -> SimResponse {
    error_envelope(err.status(), &err.to_string())
}

/// `{"success":false,"error":{"message":…}}` with the given status.
pub(crate) fn error_envelope(status: StatusCode, message: &str) -> SimResponse {
    let body = json!({ "success": false, "error": { "message": message } });
    json_response(status, &body)
}

/// Serialises a value as an `application/json` response.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> SimResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Cloudflare's rate-limit page: HTTP 429, HTML, `server: cloudflare`, a `cf-ray`, no
/// `Retry-After` (the real one sends none either).
pub(crate) fn cloudflare_block(ray: &str) -> SimResponse {
    let page = cloudflare_page(
        "1015",
        "You are being rate limited",
        "The owner of this website (www.rumahotp.io) has banned you temporarily from \
         accessing this website.",
        ray,
    );
    html_response(StatusCode::TOO_MANY_REQUESTS, page, ray)
}

/// Cloudflare's bad-gateway page: HTTP 502, HTML.
pub(crate) fn cloudflare_bad_gateway(ray: &str) -> SimResponse {
    let page = cloudflare_page(
        "502",
        "Bad gateway",
        "The web server reported a bad gateway error.",
        ray,
    );
    html_response(StatusCode::BAD_GATEWAY, page, ray)
}

fn html_response(status: StatusCode, page: String, ray: &str) -> SimResponse {
    let mut response = Response::new(Full::new(Bytes::from(page)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    headers.insert(header::SERVER, HeaderValue::from_static("cloudflare"));
    if let Ok(value) = HeaderValue::from_str(ray) {
        headers.insert("cf-ray", value);
    }
    response
}

fn cloudflare_page(code: &str, title: &str, detail: &str, ray: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head>\n<title>{title} | www.rumahotp.io | \
         Cloudflare</title>\n<meta charset=\"UTF-8\" />\n</head>\n<body>\n\
         <div id=\"cf-wrapper\">\n<div id=\"cf-error-details\">\n\
         <h1><span class=\"cf-error-type\">Error</span> <span class=\"cf-error-code\">{code}\
         </span></h1>\n<h2 class=\"cf-subheadline\">{title}</h2>\n<p>{detail}</p>\n\
         <p>Cloudflare Ray ID: <strong>{ray}</strong></p>\n</div>\n</div>\n</body>\n</html>\n"
    )
}

/// Gzips a JSON response body when `gzip` is on and the client's `Accept-Encoding` names gzip;
/// sets `content-encoding`, `vary` and the compressed `content-length`.
pub(crate) fn maybe_gzip(response: SimResponse, accept_encoding: Option<&str>) -> SimResponse {
    let wants_gzip = accept_encoding.is_some_and(names_gzip);
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !wants_gzip || !is_json {
        return response;
    }

    let (mut parts, body) = response.into_parts();
    let plain = body.into_inner().unwrap_or_default();
    let compressed = gzip_bytes(&plain);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts
        .headers
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(compressed.len()));
    Response::from_parts(parts, Full::new(Bytes::from(compressed)))
}

fn names_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut fields = item.split(';');
        let coding = fields.next().unwrap_or("").trim();
        let refused = fields.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
        coding.eq_ignore_ascii_case("gzip") && !refused
    })
}

fn gzip_bytes(plain: &Bytes) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(plain);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_recognised_among_other_codings_unless_refused() {
        assert!(names_gzip("gzip, deflate, br"));
        assert!(names_gzip("br;q=1.0, GZIP;q=0.5"));
        assert!(!names_gzip("br"));
        assert!(!names_gzip("gzip;q=0"));
        assert!(!names_gzip("x-gzip-like"));
    }
}
