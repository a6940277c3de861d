//! What the driver did, to compare with what the shop says at the end: every Idempotency-Key
//! used and the order ids it got, every order with its planned action and delivery steps, every
//! product with the stock the driver set and added, and the flash sale's terms.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::cli::Action;

/// One logical order (one Idempotency-Key).
#[derive(Debug, Clone, Default)]
pub struct KeyUse {
    pub username: String,
    pub key: String,
    /// Every distinct order id the gateway answered for this key (should be exactly one).
    pub order_ids: Vec<String>,
    /// Answers with `replayed: true` (a retry that reached an already published placement).
    pub replays: u32,
}

#[derive(Debug, Clone, Default)]
pub struct OrderRec {
    pub order_id: String,
    pub username: String,
    pub lines: Vec<(String, u64)>,
    pub flash: bool,
    pub action: Option<Action>,
    /// The vendor manager's delivery start was accepted (202).
    pub start_sent: bool,
    /// ... and its end.
    pub end_sent: bool,
    /// A cancel of this order was accepted.
    pub cancel_sent: bool,
    /// The placement was answered 202 but the order never showed (already reported).
    pub unseen: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ProductRec {
    pub product_id: String,
    /// Index of the vendor manager (into the setup's managers).
    pub manager: usize,
    /// Set with PUT .../stock at setup.
    pub initial: u64,
    /// Added with POST .../stock (202).
    pub added: u64,
    /// Additions whose answer never came (may or may not have happened).
    pub added_unsure: u64,
    pub sale: Option<SaleRec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaleRec {
    pub opens_at: i64,
    pub closes_at: i64,
    pub quantity: u64,
    pub per_user_limit: u64,
}

/// One sign-up the driver made, and how its confirmation went.
#[derive(Debug, Clone, Default)]
pub struct SignUpRec {
    pub username: String,
    /// As the driver gave it (the shop lower-cases it).
    pub email: String,
    /// When the driver sent it (ms since the epoch).
    pub sent_at_ms: i64,
    /// Answered 202 (or 409 after a retry: an earlier attempt got through).
    pub accepted: bool,
    /// The status the sign-up's status link showed once the mail was there, before the driver
    /// confirmed (read only when the link is the first attempt's).
    pub status_before_confirm: Option<String>,
    /// The driver sent the mailed code back (whether or not an answer came).
    pub code_sent: bool,
}

#[derive(Default)]
pub struct Ledger {
    pub keys: Mutex<Vec<KeyUse>>,
    pub orders: Mutex<BTreeMap<String, OrderRec>>,
    pub products: Mutex<Vec<ProductRec>>,
    /// Every user whose orders are checked (buyers and flash buyers).
    pub users: Mutex<Vec<String>>,
    /// Every sign-up (vendor managers, buyers, churn), in the order they were sent.
    pub sign_ups: Mutex<Vec<SignUpRec>>,
}

impl Ledger {
    /// Remember a key before its first attempt; its index.
    pub fn key(&self, username: &str, key: &str) -> usize {
        let mut k = self.keys.lock().unwrap();
        k.push(KeyUse {
            username: username.into(),
            key: key.into(),
            ..Default::default()
        });
        k.len() - 1
    }

    pub fn key_answered(&self, idx: usize, order_id: &str, replayed: bool) {
        let mut k = self.keys.lock().unwrap();
        let e = &mut k[idx];
        if !e.order_ids.iter().any(|o| o == order_id) {
            e.order_ids.push(order_id.into());
        }
        if replayed {
            e.replays += 1;
        }
    }

    pub fn add_order(&self, rec: OrderRec) {
        self.orders
            .lock()
            .unwrap()
            .insert(rec.order_id.clone(), rec);
    }

    pub fn update(&self, order_id: &str, f: impl FnOnce(&mut OrderRec)) {
        if let Some(o) = self.orders.lock().unwrap().get_mut(order_id) {
            f(o);
        }
    }

    pub fn order(&self, order_id: &str) -> Option<OrderRec> {
        self.orders.lock().unwrap().get(order_id).cloned()
    }

    /// Remember a sign-up before its first attempt; its index.
    pub fn sign_up(&self, username: &str, email: &str, sent_at_ms: i64) -> usize {
        let mut s = self.sign_ups.lock().unwrap();
        s.push(SignUpRec {
            username: username.into(),
            email: email.into(),
            sent_at_ms,
            ..Default::default()
        });
        s.len() - 1
    }

    pub fn update_sign_up(&self, idx: usize, f: impl FnOnce(&mut SignUpRec)) {
        if let Some(s) = self.sign_ups.lock().unwrap().get_mut(idx) {
            f(s);
        }
    }

    pub fn add_stock(&self, product_id: &str, quantity: u64, sure: bool) {
        let mut p = self.products.lock().unwrap();
        if let Some(p) = p.iter_mut().find(|p| p.product_id == product_id) {
            if sure {
                p.added += quantity;
            } else {
                p.added_unsure += quantity;
            }
        }
    }
}
