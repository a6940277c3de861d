use serde::{Deserialize, Serialize};

/// Why a command was refused. The order (or product, user...) is left unchanged; the app layer
/// shows `to_string()` to the user and keys metrics and clients on [`Rejection::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not allowed now: {0}")]
    InvalidTransition(String),
    #[error("out of stock: {requested} requested, {available} available")]
    OutOfStock { requested: u64, available: i64 },
    #[error("the sale has not opened yet (opens at {opens_at})")]
    SaleNotOpen { opens_at: i64 },
    #[error("the sale is closed (closed at {closes_at})")]
    SaleClosed { closes_at: i64 },
    #[error("the sale is sold out: {requested} requested, {remaining} left")]
    SaleSoldOut { requested: u64, remaining: u64 },
    #[error("per-user limit of {limit} exceeded: {already} already taken, {requested} requested")]
    UserLimit {
        limit: u64,
        already: u64,
        requested: u64,
    },
}

impl Rejection {
    /// A stable machine code: clients and dashboards may match on it, so never rename one.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::NotFound(_) => "NOT_FOUND",
            Rejection::Invalid(_) => "INVALID",
            Rejection::Forbidden(_) => "FORBIDDEN",
            Rejection::Conflict(_) => "CONFLICT",
            Rejection::InvalidTransition(_) => "INVALID_TRANSITION",
            Rejection::OutOfStock { .. } => "OUT_OF_STOCK",
            Rejection::SaleNotOpen { .. } => "SALE_NOT_OPEN",
            Rejection::SaleClosed { .. } => "SALE_CLOSED",
            Rejection::SaleSoldOut { .. } => "SALE_SOLD_OUT",
            Rejection::UserLimit { .. } => "USER_LIMIT",
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Rejection::NotFound(what.into())
    }
    pub fn invalid(what: impl Into<String>) -> Self {
        Rejection::Invalid(what.into())
    }
    pub fn forbidden(what: impl Into<String>) -> Self {
        Rejection::Forbidden(what.into())
    }
    pub fn conflict(what: impl Into<String>) -> Self {
        Rejection::Conflict(what.into())
    }
    pub fn transition(what: impl Into<String>) -> Self {
        Rejection::InvalidTransition(what.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_reasons_readable() {
        let all = [
            (Rejection::not_found("order o1"), "NOT_FOUND"),
            (Rejection::invalid("x"), "INVALID"),
            (Rejection::forbidden("x"), "FORBIDDEN"),
            (Rejection::conflict("x"), "CONFLICT"),
            (Rejection::transition("x"), "INVALID_TRANSITION"),
            (
                Rejection::OutOfStock {
                    requested: 3,
                    available: 2,
                },
                "OUT_OF_STOCK",
            ),
            (Rejection::SaleNotOpen { opens_at: 5 }, "SALE_NOT_OPEN"),
            (Rejection::SaleClosed { closes_at: 5 }, "SALE_CLOSED"),
            (
                Rejection::SaleSoldOut {
                    requested: 1,
                    remaining: 0,
                },
                "SALE_SOLD_OUT",
            ),
            (
                Rejection::UserLimit {
                    limit: 1,
                    already: 1,
                    requested: 1,
                },
                "USER_LIMIT",
            ),
        ];
        for (r, code) in all {
            assert_eq!(r.code(), code);
            assert!(!r.to_string().is_empty());
        }
        assert_eq!(
            Rejection::OutOfStock {
                requested: 3,
                available: 2
            }
            .to_string(),
            "out of stock: 3 requested, 2 available"
        );
    }

    #[test]
    fn round_trips_as_json() {
        let r = Rejection::UserLimit {
            limit: 2,
            already: 1,
            requested: 2,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rejection>(&json).unwrap(), r);
    }
}
