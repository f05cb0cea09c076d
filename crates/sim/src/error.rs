//! The refusals the emulated API answers with, and the HTTP status each one carries.
//!
//! This is the one place that maps a refusal to a status code; `respond` turns it into the
//! upstream's JSON error envelope. Faults and Cloudflare blocks are not errors: they are
//! answered before the API sees the call.

use http::StatusCode;

/// Why the emulated API refused a call.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// No `x-apikey` header on a route that needs one.
    #[error("API key is required")]
    MissingKey,
    /// An `x-apikey` the simulator does not know.
    #[error("Invalid API key")]
    InvalidKey,
    /// An order, deposit or transaction id that does not exist or belongs to another key.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A business refusal or a missing/bad parameter.
    #[error("{0}")]
    Refused(String),
    /// A path the upstream does not serve.
    #[error("Endpoint not found")]
    UnknownRoute,
    /// A known path called with a method it does not answer.
    #[error("Method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// A business refusal with the given message.
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self::Refused(message.into())
    }

    /// The HTTP status the upstream answers this refusal with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) | Self::UnknownRoute => StatusCode::NOT_FOUND,
            Self::Refused(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// Result of an emulated API handler: the `data` of a success envelope, or a refusal.
pub(crate) type ApiResult = Result<serde_json::Value, ApiError>;
