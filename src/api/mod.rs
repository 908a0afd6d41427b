//! The admin API's pure parts: routes and their parameters ([`routes`]), the typed protocol
//! between the Worker and a date's Durable Object ([`protocol`]), authentication, and the one
//! error type with its one mapping to an HTTP status.
//!
//! Not routing or I/O: the shell maps requests onto these and onto the engine.

pub mod protocol;
pub mod routes;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::core::machine::{Refusal, RefusalKind};

/// What went wrong with a request. The name is the `error` field of the body; each kind has
/// exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorKind {
    MissingDate,
    BadDate,
    FutureDate,
    BadParameter,
    QueryTooLong,
    Unauthorized,
    AdminTokenMissing,
    MethodNotAllowed,
    NotFound,
    NoArchive,
    InsideRetention,
    Conflict,
    Unavailable,
    CorruptState,
    BadConfig,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::MissingDate | ErrorKind::BadDate | ErrorKind::FutureDate | ErrorKind::BadParameter => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::NotFound | ErrorKind::NoArchive => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::InsideRetention | ErrorKind::Conflict => 409,
            ErrorKind::QueryTooLong => 414,
            ErrorKind::CorruptState | ErrorKind::BadConfig => 500,
            ErrorKind::AdminTokenMissing | ErrorKind::Unavailable => 503,
        }
    }

    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// An API error: what kind, and a message that says what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub error: ErrorKind,
    pub message: String,
    /// For `method_not_allowed`: the methods the route answers (the `Allow` header).
    #[serde(skip)]
    pub allow: Option<String>,
}

impl ApiError {
    pub fn new(error: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            error,
            message: message.into(),
            allow: None,
        }
    }

    /// The same error, naming the methods the route answers.
    pub fn allow(self, methods: &[&str]) -> ApiError {
        ApiError {
            allow: Some(methods.join(", ")),
            ..self
        }
    }

    pub fn status(&self) -> u16 {
        self.error.status()
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"error\":\"unavailable\"}".into())
    }

    /// A platform failure: retrying may help.
    pub fn unavailable(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorKind::Unavailable, format!("{what}; retry"))
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let kind = match r.kind {
            RefusalKind::Conflict => ErrorKind::Conflict,
            RefusalKind::NoArchive => ErrorKind::NoArchive,
        };
        ApiError::new(kind, r.reason)
    }
}

impl From<crate::engine::EngineError> for ApiError {
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError as E;
        match e {
            E::Refused(r) => r.into(),
            E::Corrupt { .. } => ApiError::new(ErrorKind::CorruptState, e.to_string()),
            E::Storage { .. } | E::Busy { .. } => ApiError::new(ErrorKind::Unavailable, e.to_string()),
        }
    }
}

impl From<crate::core::config::ConfigError> for ApiError {
    fn from(e: crate::core::config::ConfigError) -> Self {
        ApiError::new(ErrorKind::BadConfig, e.to_string())
    }
}

/// Checks `Authorization: Bearer <token>` against the configured token in constant time.
pub fn authorize(configured: Option<&str>, header: Option<&str>) -> Result<(), ApiError> {
    // A secret stored with a trailing newline (`echo … | wrangler secret put`) is the token
    // without it; auth schemes are case-insensitive (RFC 9110). Found by a review: both locked
    // every client out.
    let Some(expected) = configured.map(str::trim).filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            ErrorKind::AdminTokenMissing,
            "ADMIN_TOKEN is not configured, so the admin API is closed. Set it with `wrangler secret put ADMIN_TOKEN` (production) or in .dev.vars (local), then retry.",
        ));
    };
    let presented = header
        .and_then(|h| h.trim_start().split_once(' '))
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()))
        .unwrap_or("");
    // ct_eq on slices of different length returns false without leaking where they differ.
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(ApiError::new(
            ErrorKind::Unauthorized,
            "missing or wrong token; send the header `Authorization: Bearer <ADMIN_TOKEN>`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_rules() {
        let status = |c: Option<&str>, h: Option<&str>| authorize(c, h).unwrap_err().status();
        assert_eq!(status(None, Some("Bearer x")), 503);
        assert_eq!(status(Some(""), Some("Bearer x")), 503);
        assert_eq!(status(Some("secret"), None), 401);
        assert_eq!(status(Some("secret"), Some("Bearer secre")), 401);
        assert_eq!(status(Some("secret"), Some("Bearer secrets")), 401);
        assert_eq!(status(Some("secret"), Some("secret")), 401);
        assert!(authorize(Some("secret"), Some("Bearer secret")).is_ok());
        assert_eq!(status(Some("secret"), Some("Basic secret")), 401);
        assert_eq!(status(Some("secret"), Some("Bearer ")), 401);
        assert_eq!(status(Some(" \n"), Some("Bearer x")), 503);
        for header in ["BEARER secret", "bearer  secret ", "Bearer secret\n"] {
            assert!(authorize(Some("secret\n"), Some(header)).is_ok(), "{header:?}");
        }
    }

    #[test]
    fn errors_serialize_with_their_name() {
        let e = ApiError::new(ErrorKind::InsideRetention, "x");
        assert_eq!(e.body(), "{\"error\":\"inside_retention\",\"message\":\"x\"}");
        assert_eq!(e.status(), 409);
    }
}
