//! Helpers for the integration tests: the SMTP sink's maildir and the pipeline configuration.

#![allow(dead_code)]

pub mod commands;
pub mod shop;

use std::path::PathBuf;

pub use pickple_processors::harness::*;
use pickple_processors::AppConfig;
use pickple_schemas::confirmation_mail;

/// A product view's stock levels: (available, reserved, sold), -1 for one the view lacks.
pub fn stock_levels(product: &serde_json::Value) -> (i64, i64, i64) {
    let s = &product["stock"];
    let level = |k: &str| s[k].as_i64().unwrap_or(-1);
    (level("available"), level("reserved"), level("sold"))
}

/// An order view's last transition, if it has one.
pub fn last_transition(order: &serde_json::Value) -> Option<&serde_json::Value> {
    order["history"].as_array()?.last()
}

/// The reason of an order view's last transition; empty when it has none.
pub fn last_reason(order: &serde_json::Value) -> &str {
    last_transition(order)
        .and_then(|t| t["reason"].as_str())
        .unwrap_or_default()
}

pub fn smtp() -> String {
    std::env::var("PICKPLE_SMTP").unwrap_or_else(|_| "127.0.0.1:12525".into())
}

/// The sink's maildir (`scripts/services.sh` puts it under the repository's `.work/mail`).
pub fn maildir() -> PathBuf {
    std::env::var("PICKPLE_MAILDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.work/mail"))
}

/// Make sure the maildir has its `tmp`, `new` and `cur` folders: `scripts/services.sh` creates
/// the folder before aiosmtpd starts, and Python's `Maildir` only creates the sub-folders of a
/// folder that does not exist yet, so the sink would refuse every mail (451) without them.
pub fn ensure_maildir() {
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir().join(sub)).expect("create the maildir folders");
    }
}

/// The mails in the sink whose `Message-ID` header is `<id>`, as raw text.
pub fn mails_with_id(id: &str) -> Vec<String> {
    let wanted = format!("<{id}>");
    let Ok(dir) = std::fs::read_dir(maildir().join("new")) else {
        return vec![];
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|text| header(text, "Message-ID").is_some_and(|v| v.trim() == wanted))
        .collect()
}

/// The value of a header of a raw mail (first occurrence, unfolded), if present.
pub fn header(mail: &str, name: &str) -> Option<String> {
    for line in mail.lines() {
        if line.is_empty() {
            return None;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.eq_ignore_ascii_case(name) {
                return Some(v.trim().to_string());
            }
        }
    }
    None
}

/// The code of the newest confirmation mail to `email` (any case) in the sink, if one came:
/// the `Confirmation code:` line of its body. Newest: its Message-ID,
/// `{user_id}.confirm-{expires_at}@pickple.local`, expires last.
pub fn confirmation_code(email: &str) -> Option<String> {
    let dir = std::fs::read_dir(maildir().join("new")).ok()?;
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|text| header(text, "To").is_some_and(|to| to.eq_ignore_ascii_case(email)))
        .filter_map(|text| {
            let expires_at = confirmation_mail::expiry(&header(&text, "Message-ID")?)?;
            Some((expires_at, confirmation_mail::code(&body(&text))?))
        })
        .max_by_key(|(expires_at, _)| *expires_at)
        .map(|(_, code)| code)
}

/// The body of a raw mail, decoded from quoted-printable when it is so encoded (lettre picks
/// it for a body with lines over 76 characters).
pub fn body(mail: &str) -> String {
    let raw = match (mail.find("\r\n\r\n"), mail.find("\n\n")) {
        (Some(a), Some(b)) if a < b => &mail[a + 4..],
        (_, Some(b)) => &mail[b + 2..],
        (Some(a), None) => &mail[a + 4..],
        (None, None) => return String::new(),
    };
    let qp = header(mail, "Content-Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("quoted-printable"));
    if !qp {
        return raw.to_string();
    }
    let decoded = quoted_printable::decode(raw, quoted_printable::ParseMode::Robust);
    String::from_utf8_lossy(&decoded.unwrap_or_default()).into_owned()
}

pub fn config(payment_timeout_ms: i64) -> AppConfig {
    AppConfig {
        payment_timeout_ms,
        smtp: smtp(),
        provider_timeout_ms: 15_000,
        ..AppConfig::default()
    }
}
