//! The delivery address of an order: given when it is placed (`PlaceOrder`), kept on the order,
//! carried by `OrderConfirmed` to the delivery and by the shipment events to the e-mails. The
//! gateway checks a request's address with these functions, field by field, so an address it
//! accepts is never refused by the order processor.

use pickple_schemas::ShippingAddress;

use crate::rules::{non_empty, visible_text};
use crate::Rejection;

/// Most characters of the recipient's name.
pub const MAX_RECIPIENT: usize = 50;
/// Most characters of the address.
pub const MAX_ADDRESS: usize = 200;
/// Characters of the contact number, at least and at most (with its separators).
pub const CONTACT_CHARS: (usize, usize) = (7, 20);
/// Digits of the contact number, at least and at most (E.164 allows 15).
pub const CONTACT_DIGITS: (usize, usize) = (7, 15);
/// [`check_contact`] as a regular expression (with the length bounds of [`CONTACT_CHARS`]), for
/// the OpenAPI document.
pub const CONTACT_PATTERN: &str = r"^\+?[ ()-]*([0-9][ ()-]*){7,15}$";
/// Most characters of the courier's note.
pub const MAX_REQUEST: usize = 200;

/// Not blank, one visible line, at most `max` characters in all (as a JSON Schema `maxLength`
/// counts them, so the OpenAPI document states this very rule).
fn line(what: &str, value: &str, max: usize) -> Result<(), Rejection> {
    non_empty(what, value)?;
    visible_text(what, value, false)?;
    let n = value.chars().count();
    if n > max {
        return Err(Rejection::invalid(format!(
            "{what} has {n} characters, at most {max}"
        )));
    }
    Ok(())
}

/// Who receives the parcels: 1 to [`MAX_RECIPIENT`] characters on one line.
pub fn check_recipient(recipient: &str) -> Result<(), Rejection> {
    line("recipient", recipient, MAX_RECIPIENT)
}

/// 1 to [`MAX_ADDRESS`] characters on one line.
pub fn check_address(address: &str) -> Result<(), Rejection> {
    line("address", address, MAX_ADDRESS)
}

/// A phone number as people write it: digits, spaces, `+`, `-`, `(` and `)`, a `+` only first;
/// 7 to 20 characters holding 7 to 15 digits (`010-1234-5678`, `+82 10 1234 5678`). Checked
/// as given, untrimmed, so that [`CONTACT_PATTERN`] says exactly the same.
pub fn check_contact(contact: &str) -> Result<(), Rejection> {
    non_empty("contact", contact)?;
    let chars = contact.chars().count();
    let digits = contact.chars().filter(char::is_ascii_digit).count();
    let shaped = contact.chars().enumerate().all(|(i, ch)| {
        ch.is_ascii_digit() || matches!(ch, ' ' | '-' | '(' | ')') || (ch == '+' && i == 0)
    });
    if !shaped
        || !(CONTACT_CHARS.0..=CONTACT_CHARS.1).contains(&chars)
        || !(CONTACT_DIGITS.0..=CONTACT_DIGITS.1).contains(&digits)
    {
        return Err(Rejection::invalid(
            "contact must be a phone number: 7 to 20 characters of digits, spaces, '-', '(', ')' \
             and a leading '+', with 7 to 15 digits",
        ));
    }
    Ok(())
}

/// A note for the courier: up to [`MAX_REQUEST`] characters on one line (blank is none).
pub fn check_request(request: Option<&str>) -> Result<(), Rejection> {
    match request {
        Some(r) if !r.trim().is_empty() => line("request", r, MAX_REQUEST),
        _ => Ok(()),
    }
}

/// Every rule of an address.
pub fn check_shipping(s: &ShippingAddress) -> Result<(), Rejection> {
    check_recipient(&s.recipient)?;
    check_address(&s.address)?;
    check_contact(&s.contact)?;
    check_request(s.request.as_deref())
}

/// The address as stored: each field trimmed, a blank request dropped.
pub fn normalized(s: &ShippingAddress) -> ShippingAddress {
    ShippingAddress {
        recipient: s.recipient.trim().to_string(),
        address: s.address.trim().to_string(),
        contact: s.contact.trim().to_string(),
        request: s
            .request
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> ShippingAddress {
        ShippingAddress {
            recipient: "김민지".into(),
            address: "서울특별시 강남구 테헤란로 123, 4층".into(),
            contact: "010-1234-5678".into(),
            request: Some("문 앞에 놓아 주세요".into()),
        }
    }

    #[test]
    fn a_good_address_passes_and_is_trimmed() {
        assert_eq!(check_shipping(&address()), Ok(()));
        let mut a = address();
        a.recipient = "  Ann  ".into();
        a.request = Some("  ".into());
        assert_eq!(check_shipping(&a), Ok(()));
        let n = normalized(&a);
        assert_eq!((n.recipient.as_str(), n.request), ("Ann", None));
    }

    #[test]
    fn each_field_is_checked() {
        let refused = |f: fn(&mut ShippingAddress)| {
            let mut a = address();
            f(&mut a);
            check_shipping(&a).unwrap_err().to_string()
        };
        assert!(refused(|a| a.recipient = " ".into()).contains("recipient must not be empty"));
        assert!(refused(|a| a.recipient = "x".repeat(51)).contains("recipient has 51"));
        assert!(refused(|a| a.recipient = "A\u{202E}nn".into()).contains("recipient must not"));
        assert!(refused(|a| a.address = "a\nb".into()).contains("address must not"));
        assert!(refused(|a| a.address = "y".repeat(201)).contains("at most 200"));
        assert!(refused(|a| a.request = Some("z".repeat(201))).contains("request has 201"));
        assert!(refused(|a| a.request = Some("\u{200B}".into())).contains("request must not"));
        for bad in [
            "",
            "12345",
            "call me",
            "010+1234-5678",
            "0101234567890123",
            "1234567890123456789012",
        ] {
            let mut a = address();
            a.contact = bad.into();
            let e = check_shipping(&a).unwrap_err().to_string();
            assert!(e.contains("contact"), "{bad}: {e}");
        }
        for good in ["+82 10 1234 5678", "(02) 555-0101", "01012345678"] {
            assert_eq!(check_contact(good), Ok(()), "{good}");
        }
    }
}
