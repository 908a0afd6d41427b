//! The admin API's pure parts: authentication, parameter checks, and error bodies.
//!
//! Not routing or I/O: the shell maps requests onto these and onto the engine.

use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::core::date::{DateError, Day};

/// An API error: HTTP status and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub error: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            message: message.into(),
        }
    }

    pub fn body(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{\"error\":\"internal\"}".into())
    }
}

/// Checks `Authorization: Bearer <token>` against the configured token in constant time.
pub fn authorize(configured: Option<&str>, header: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = configured.filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            503,
            "admin_token_missing",
            "ADMIN_TOKEN is not configured, so the admin API is closed. Set it with `wrangler secret put ADMIN_TOKEN` (production) or in .dev.vars (local), then retry.",
        ));
    };
    let presented = header
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .unwrap_or("");
    // ct_eq on slices of different length returns false without leaking where they differ.
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(ApiError::new(
            401,
            "unauthorized",
            "missing or wrong token; send the header `Authorization: Bearer <ADMIN_TOKEN>`",
        ));
    }
    Ok(())
}

/// The longest query string accepted; longer ones are refused before parsing.
pub const MAX_QUERY_LEN: usize = 512;

/// Validates the `date` parameter: present, a real calendar day, not in the future.
pub fn date_param(value: Option<&str>, today: Day) -> Result<Day, ApiError> {
    let value = value.ok_or_else(|| {
        ApiError::new(
            400,
            "missing_date",
            "query parameter `date` is required, e.g. ?date=2026-11-20",
        )
    })?;
    Day::parse(value, today).map_err(|e| {
        let code = match e {
            DateError::Malformed(_) => "bad_date",
            DateError::Future { .. } => "future_date",
            DateError::TooOld(_) => "bad_date",
        };
        ApiError::new(400, code, e.to_string())
    })
}

/// Validates an optional whole-number parameter such as `generation`.
pub fn number_param(name: &'static str, value: Option<&str>) -> Result<Option<u32>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => v.parse::<u32>().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| {
            ApiError::new(
                400,
                "bad_parameter",
                format!("`{name}` must be a positive whole number, got {:?}", truncate(v)),
            )
        }),
    }
}

/// A flag such as `force=1`.
pub fn flag_param(value: Option<&str>) -> bool {
    matches!(value, Some("1" | "true" | "yes"))
}

fn truncate(v: &str) -> String {
    v.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_rules() {
        assert_eq!(authorize(None, Some("Bearer x")).unwrap_err().status, 503);
        assert_eq!(authorize(Some(""), Some("Bearer x")).unwrap_err().status, 503);
        assert_eq!(authorize(Some("secret"), None).unwrap_err().status, 401);
        assert_eq!(authorize(Some("secret"), Some("Bearer secre")).unwrap_err().status, 401);
        assert_eq!(
            authorize(Some("secret"), Some("Bearer secrets")).unwrap_err().status,
            401
        );
        assert_eq!(authorize(Some("secret"), Some("secret")).unwrap_err().status, 401);
        assert!(authorize(Some("secret"), Some("Bearer secret")).is_ok());
    }

    #[test]
    fn date_rules() {
        let today = Day::parse_any("2026-11-26").unwrap();
        assert_eq!(date_param(None, today).unwrap_err().error, "missing_date");
        assert_eq!(date_param(Some("2025-02-30"), today).unwrap_err().status, 400);
        assert_eq!(date_param(Some("2026-12-01"), today).unwrap_err().error, "future_date");
        assert!(date_param(Some("2026-11-20"), today).is_ok());
        assert_eq!(number_param("generation", Some("0")).unwrap_err().status, 400);
        assert_eq!(number_param("generation", Some("2")).unwrap(), Some(2));
    }
}
