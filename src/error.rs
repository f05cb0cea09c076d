//! Errors a client can see, and the one place they become HTTP answers.
//!
//! Every answer the gateway makes itself is JSON in the upstream's envelope,
//! `{"success":false,"error":{"message":…,"code":…},"message":…}`, with
//! `Retry-After` where waiting helps. Messages say what happened and what to do.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::routes::PathError;
use crate::upstream::UpstreamError;
use crate::upstream::pacer::Refusal;

/// Why the gateway answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A keyed route called without `x-apikey`.
    #[error("missing x-apikey")]
    MissingKey,
    /// Pass-through is off and the key is no client's gateway key.
    #[error("unknown gateway key")]
    UnknownGatewayKey,
    /// No account of the client's pool can take the call.
    #[error("no usable account")]
    NoUsableAccount,
    /// The upstream rejected the key of the account that served the call.
    #[error("account key rejected")]
    AccountRejected,
    /// An order/deposit/transaction id this client did not create.
    #[error("id not found")]
    IdNotFound,
    /// The upstream rejected this key recently.
    #[error("key rejected by the upstream")]
    RejectedKey {
        /// How long the rejection is remembered.
        remembered_for: Duration,
    },
    /// A path the API never uses.
    #[error("bad path")]
    BadPath(#[source] PathError),
    /// Not an upstream endpoint.
    #[error("unknown endpoint")]
    NotFound,
    /// A method the endpoint does not take.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A query string over `limits.max_query_bytes` or `limits.max_query_params`.
    #[error("query too large")]
    QueryTooLarge,
    /// A parameter that says what the call is about was given more than once.
    #[error("duplicate parameter")]
    DuplicateParameter(&'static str),
    /// A parameter spelt so that a PHP-style server reads it as one that
    /// says what the call is about (`service.id`, `service_id[]`).
    #[error("aliased parameter")]
    AliasedParameter(&'static str),
    /// The client is over `limits.client_requests_per_second`.
    #[error("client rate limited")]
    ClientRateLimited {
        /// When the next request will be accepted.
        retry_after: Duration,
    },
    /// A request body over `server.max_body_bytes`, or a body where none belongs.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request body did not arrive within `server.header_read_timeout_seconds`.
    #[error("request body too slow")]
    SlowBody,
    /// The request could not be read.
    #[error("request body could not be read")]
    BadBody(#[source] hyper::Error),
    /// No upstream slot: queue full, deadline, block or shutdown.
    #[error("refused")]
    Refused(#[source] Refusal),
    /// The upstream failed; how depends on what failed.
    #[error("upstream failure")]
    Upstream(#[source] UpstreamError),
    /// A call that may move money was sent, and its answer was lost (or, for
    /// a replayed idempotency key, was lost the first time).
    #[error("outcome unknown")]
    OutcomeUnknown {
        /// What failed, when this request saw it happen; `None` when it is
        /// the record of an earlier call with the same Idempotency-Key.
        #[source]
        source: Option<UpstreamError>,
    },
    /// An identical earlier call lost its answer and may have been carried out.
    #[error("an identical call's outcome is unknown")]
    PreviousOutcomeUnknown {
        /// How long ago the earlier call was sent.
        ago: Duration,
        /// The key's balance read within a minute before it, if any.
        balance_before: Option<i64>,
        /// How much longer identical calls are held.
        hold_left: Duration,
    },
    /// The `Idempotency-Key` was first used with a different call.
    #[error("idempotency key reused for another call")]
    IdempotencyConflict,
    /// The `Idempotency-Key` header is empty, too long or not visible ASCII.
    #[error("bad idempotency key")]
    BadIdempotencyKey,
    /// The durable store failed, so a call that moves money is not risked.
    #[error("store unavailable")]
    StoreUnavailable,
    /// Everyone waiting for a call went away before it was sent.
    #[error("abandoned before sending")]
    Abandoned,
    /// The gateway is shutting down and takes no new calls.
    #[error("shutting down")]
    ShuttingDown,
    /// A bug: a background task ended without an answer.
    #[error("internal error")]
    Internal,
}

impl ProxyError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::MissingKey
            | ProxyError::RejectedKey { .. }
            | ProxyError::UnknownGatewayKey => StatusCode::UNAUTHORIZED,
            ProxyError::NoUsableAccount => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::AccountRejected => StatusCode::BAD_GATEWAY,
            ProxyError::IdNotFound => StatusCode::NOT_FOUND,
            ProxyError::BadPath(_) | ProxyError::BadBody(_) | ProxyError::BadIdempotencyKey => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            ProxyError::QueryTooLarge => StatusCode::URI_TOO_LONG,
            ProxyError::DuplicateParameter(_) | ProxyError::AliasedParameter(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::SlowBody => StatusCode::REQUEST_TIMEOUT,
            ProxyError::ClientRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::PreviousOutcomeUnknown { .. } => StatusCode::CONFLICT,
            ProxyError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Abandoned => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Refused(Refusal::DeadlineUnreachable { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProxyError::Refused(_) | ProxyError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(UpstreamError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::Blocked { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(_) | ProxyError::OutcomeUnknown { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code, also the `reason` label in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::MissingKey => "missing_api_key",
            ProxyError::RejectedKey { .. } => "invalid_api_key",
            ProxyError::UnknownGatewayKey => "unknown_api_key",
            ProxyError::NoUsableAccount => "no_usable_account",
            ProxyError::AccountRejected => "account_rejected",
            ProxyError::IdNotFound => "not_found",
            ProxyError::BadPath(_) => "bad_path",
            ProxyError::NotFound => "unknown_endpoint",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::BadBody(_) => "bad_body",
            ProxyError::Refused(refusal) => refusal.reason(),
            ProxyError::Upstream(UpstreamError::NotSent(_)) => "upstream_unreachable",
            ProxyError::Upstream(UpstreamError::Timeout) => "upstream_timeout",
            ProxyError::Upstream(UpstreamError::Blocked { .. }) => "upstream_blocked",
            ProxyError::Upstream(UpstreamError::HtmlPage { .. }) => "upstream_html",
            ProxyError::Upstream(_) => "upstream_failed",
            ProxyError::OutcomeUnknown { .. } => "outcome_unknown",
            ProxyError::PreviousOutcomeUnknown { .. } => "previous_outcome_unknown",
            ProxyError::IdempotencyConflict => "idempotency_key_reused",
            ProxyError::QueryTooLarge => "query_too_large",
            ProxyError::DuplicateParameter(_) => "duplicate_parameter",
            ProxyError::AliasedParameter(_) => "aliased_parameter",
            ProxyError::SlowBody => "body_timeout",
            ProxyError::ClientRateLimited { .. } => "client_rate_limited",
            ProxyError::BadIdempotencyKey => "bad_idempotency_key",
            ProxyError::StoreUnavailable => "store_unavailable",
            ProxyError::Abandoned => "abandoned",
            ProxyError::ShuttingDown => "shutting_down",
            ProxyError::Internal => "internal",
        }
    }

    /// What the client should read and do.
    pub fn message(&self) -> String {
        match self {
            ProxyError::MissingKey => {
                "x-apikey header is missing: send your API key in x-apikey (your gateway key \
                 from otpgate keygen, or your RumahOTP key where the gateway passes keys through)"
                    .into()
            }
            ProxyError::RejectedKey { remembered_for } => format!(
                "Invalid API key: the upstream rejected this key within the last {} s; \
                 check the key in your RumahOTP account",
                remembered_for.as_secs()
            ),
            ProxyError::UnknownGatewayKey => "Invalid API key: this x-apikey is not a key this \
                 gateway knows; ask its operator for your gateway key"
                .into(),
            ProxyError::NoUsableAccount => "No upstream account in your pool can take this \
                 call now (rejected keys or no balance); the operator has been told"
                .into(),
            ProxyError::AccountRejected => "RumahOTP rejected the key of the account that \
                 served this call; it is taken out of the pool. Try again"
                .into(),
            ProxyError::IdNotFound => "Not found: no such order, deposit or transaction for \
                 this key"
                .into(),
            ProxyError::BadPath(e) => format!("Bad request path: {e}"),
            ProxyError::NotFound => "Unknown endpoint: otpgate serves the RumahOTP API paths \
                                     under /v1 and /v2, with or without the /api prefix"
                .into(),
            ProxyError::MethodNotAllowed => {
                "Method not allowed: this endpoint takes GET (h2h/transaksi/create also POST)"
                    .into()
            }
            ProxyError::BodyTooLarge => "Request body too large: the API takes its \
                                         parameters in the query string"
                .into(),
            ProxyError::BadBody(_) => "The request body could not be read".into(),
            ProxyError::Refused(refusal) => refusal_message(refusal),
            ProxyError::Upstream(e) => upstream_message(e),
            ProxyError::OutcomeUnknown { .. } => "Outcome unknown: the call was sent to RumahOTP \
                 and its answer was lost, so it may or may not have been carried out. Do not \
                 repeat it blindly: check your balance (and, for a cancel or deposit, the \
                 id's status) first"
                .into(),
            ProxyError::PreviousOutcomeUnknown {
                ago,
                balance_before,
                ..
            } => {
                // Only a reading taken after the lost call could show a
                // debit, and only the client can take it in time.
                let evidence = balance_before.map_or_else(String::new, |before| {
                    format!(
                        "; your balance read within a minute before it was {before}: \
                         read it again to see whether it moved"
                    )
                });
                format!(
                    "An identical call {} s ago was sent to RumahOTP and its answer was lost, so it \
                     may have been carried out{evidence}. Check your orders or balance before \
                     trying again; if this is a different purchase, send it with a new \
                     Idempotency-Key header",
                    ago.as_secs()
                )
            }
            ProxyError::SlowBody => "The request body arrived too slowly".into(),
            ProxyError::QueryTooLarge => "The query string is longer or has more parameters \
                 than any RumahOTP call needs"
                .into(),
            ProxyError::DuplicateParameter(name) => format!(
                "The parameter {name} is given more than once; send it once. Nothing was sent"
            ),
            ProxyError::AliasedParameter(name) => format!(
                "A parameter is spelt so that the upstream may read it as {name} (with `.`, a \
                 space or `[`); send it as {name}, once. Nothing was sent"
            ),
            ProxyError::ClientRateLimited { retry_after } => format!(
                "Too many requests from this client to the gateway; slow down and try again \
                 in {} s. Nothing was sent",
                whole_seconds(*retry_after)
            ),
            ProxyError::IdempotencyConflict => "This Idempotency-Key was already used for a \
                 different call; use a new key for a new purchase"
                .into(),
            ProxyError::BadIdempotencyKey => "Idempotency-Key must be 1 to 255 visible ASCII \
                 characters"
                .into(),
            ProxyError::StoreUnavailable => "The gateway cannot record this purchase right now, \
                 so it was not sent; try again shortly"
                .into(),
            ProxyError::Abandoned => "The request was abandoned before it was sent".into(),
            ProxyError::ShuttingDown => {
                "The gateway is shutting down or restarting; nothing was sent. Try again in a \
                 few seconds"
                    .into()
            }
            ProxyError::Internal => "Internal gateway error; nothing is known to have been \
                                     sent. Check the status before repeating a purchase"
                .into(),
        }
    }

    /// Seconds after which a retry can succeed, when waiting helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::Refused(
                Refusal::QueueFull { retry_after }
                | Refusal::DeadlineUnreachable { retry_after }
                | Refusal::Blocked { retry_after },
            ) => Some(*retry_after),
            ProxyError::Refused(Refusal::ShuttingDown) | ProxyError::ShuttingDown => {
                Some(Duration::from_secs(5))
            }
            ProxyError::Upstream(UpstreamError::Blocked { retry_after, .. }) => Some(*retry_after),
            ProxyError::PreviousOutcomeUnknown { hold_left, .. } => Some(*hold_left),
            ProxyError::ClientRateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The JSON answer for the client.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let mut response = error_response(self.status(), self.code(), &self.message());
        // An unknown outcome this request did not see happen is the record of
        // an earlier call with the same Idempotency-Key, given again.
        if matches!(self, ProxyError::OutcomeUnknown { source: None }) {
            let replayed = HeaderValue::from_static("true");
            response
                .headers_mut()
                .insert("idempotent-replayed", replayed);
        }
        if let Some(wait) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, whole_seconds(wait).into());
        }
        response
    }
}

fn refusal_message(refusal: &Refusal) -> String {
    let (what, wait) = match refusal {
        Refusal::QueueFull { retry_after } => ("The gateway's upstream queue is full", retry_after),
        Refusal::DeadlineUnreachable { retry_after } => (
            "The upstream allows 5 calls per 10 s and the queue ahead of this call \
              would take longer than its deadline (a client that can wait longer says so \
              with the header Prefer: wait=<seconds>)",
            retry_after,
        ),
        Refusal::Blocked { retry_after } => (
            "The upstream is rate-limiting this gateway's IP; all calls are paused",
            retry_after,
        ),
        Refusal::ShuttingDown => {
            return "The gateway is shutting down or restarting; nothing was sent. Try again in a \
                 few seconds"
                .into();
        }
    };
    format!(
        "{what}. Nothing was sent; try again in {} s",
        whole_seconds(*wait)
    )
}

fn upstream_message(error: &UpstreamError) -> String {
    match error {
        UpstreamError::NotSent(_) => {
            "RumahOTP could not be reached; nothing was sent, it is safe to try again".into()
        }
        UpstreamError::Timeout => "RumahOTP did not answer in time; try again".into(),
        UpstreamError::Blocked { retry_after, .. } => format!(
            "RumahOTP is rate-limiting this gateway's IP; all calls are paused for {} s",
            whole_seconds(*retry_after)
        ),
        UpstreamError::HtmlPage { status } => format!(
            "RumahOTP answered with an HTML error page (HTTP {status}) instead of JSON; \
             try again later"
        ),
        _ => "The connection to RumahOTP failed before an answer; try again".into(),
    }
}

/// Seconds rounded up, at least 1: what `Retry-After` and messages say.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// An error in the upstream's envelope, the message in both places:
/// `{"success":false,"error":{"message":…,"code":…},"message":…}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "success": false,
        "error": { "message": message, "code": code },
        "message": message,
    });
    json_response(status, body.to_string())
}

/// A JSON answer with the given status.
pub fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn every_gateway_error_is_json_with_both_messages() {
        let error = ProxyError::Refused(Refusal::DeadlineUnreachable {
            retry_after: Duration::from_millis(5200),
        });
        let response = error.to_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "6");

        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["success"], false);
        assert_eq!(json["error"]["message"], json["message"]);
        assert_eq!(json["error"]["code"], "deadline");
    }
}
