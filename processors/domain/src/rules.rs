//! Shape rules more than one entity uses. The entities' own rules are built on these, and the
//! gateway checks its requests with those same rules, so a command it accepts is never refused
//! by a processor for its shape.

use crate::Rejection;

/// A field is not blank.
pub fn non_empty(what: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::invalid(format!("{what} must not be empty")));
    }
    Ok(())
}

/// A price, an amount or a quantity is above zero.
pub fn positive<T: PartialOrd + Default>(what: &str, value: T) -> Result<(), Rejection> {
    if value <= T::default() {
        return Err(Rejection::invalid(format!("{what} must be positive")));
    }
    Ok(())
}

/// A payment needs a token for the provider.
pub fn check_payment_token(payment_token: &str) -> Result<(), Rejection> {
    if payment_token.trim().is_empty() {
        return Err(Rejection::invalid("a payment token is required"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_non_positive_values_are_invalid() {
        assert_eq!(
            non_empty("carrier", " \t"),
            Err(Rejection::invalid("carrier must not be empty"))
        );
        assert_eq!(non_empty("carrier", " CJ "), Ok(()));
        assert_eq!(
            positive("price", 0i64),
            Err(Rejection::invalid("price must be positive"))
        );
        assert!(positive("price", -1i64).is_err());
        assert!(positive("quantity", 0u64).is_err());
        assert_eq!(positive("quantity", 1u64), Ok(()));
        assert!(check_payment_token(" ").is_err());
        assert_eq!(check_payment_token("tok"), Ok(()));
    }
}
