//! The typed views: which `pickple-schemas` view each [`Kind`] carries, and what the sink and
//! the gateway read from one (version, index memberships, status, refusal).
//!
//! Both sides decode a view with [`decode`], so a view the sink accepted is a view the gateway
//! can read, and a view either cannot read is the same typed [`ViewError`] on both.

use pickple_schemas::{
    DeliveryStatus, DeliveryView, NotificationView, OrderView, PaymentView, PaymentViewStatus,
    ProductView, SaleTakeView, UserStatus, UserView, VendorView,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::keys::{Keys, Kind};

/// Why a stored or published view cannot be read as its type.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("the {0} view is not UTF-8")]
    NotUtf8(Kind),
    #[error("the {kind} view cannot be decoded: {source}")]
    Decode {
        kind: Kind,
        #[source]
        source: pickple_schemas::DecodeError,
    },
}

/// A view type: the value of one `view-*` topic, as stored in Redis.
pub trait View: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: Kind;

    /// Grows on every change and every refusal; the sink's upsert keeps the highest.
    fn version(&self) -> u64;

    /// The indexes (sorted sets) the view belongs to, each with its score.
    fn indexes(&self, keys: &Keys) -> Vec<(String, i64)>;

    /// Its entries in lexicographic indexes (sorted sets whose scores are all 0, read by
    /// prefix with `ZRANGEBYLEX`): (index key, member). Unlike [`View::indexes`], whose member
    /// is the view's id, a member here carries the searched term before the id, so one view
    /// may have several in one index. None by default.
    fn lex_entries(&self, _keys: &Keys) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The status as it is spelt on the wire (e.g. `AWAITING_PAYMENT`), for views that have one.
    fn status(&self) -> Option<String> {
        None
    }

    /// The status can no longer change: a long-poll for another status will not be answered.
    fn is_final(&self) -> bool {
        false
    }

    /// Why the last command on the entity was refused by its processor, if it was.
    fn rejection(&self) -> Option<&str> {
        None
    }
}

/// Decode a view of type `V` from its JSON.
pub fn decode<V: View>(json: &[u8]) -> Result<V, ViewError> {
    pickple_schemas::decode(Some(json)).map_err(|source| ViewError::Decode {
        kind: V::KIND,
        source,
    })
}

/// A unit enum's name as serde writes it (the views' statuses are SCREAMING_SNAKE_CASE).
fn wire_name<T: Serialize>(value: &T) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

impl View for UserView {
    const KIND: Kind = Kind::User;

    fn version(&self) -> u64 {
        self.version
    }

    fn indexes(&self, keys: &Keys) -> Vec<(String, i64)> {
        vec![(keys.users_all(), self.updated_at)]
    }

    /// The admin search (`GET /users?q=`): `username\0username` for every account, as
    /// `idx:users` lists every account, and `email\0username` for an ACTIVE one only, the
    /// holder the e-mail registry granted the address to (a pending or rejected sign-up's
    /// address may be someone else's, a deleted account's was given back).
    fn lex_entries(&self, keys: &Keys) -> Vec<(String, String)> {
        let index = keys.users_search();
        let mut entries = vec![(index.clone(), search_entry(&self.username, &self.username))];
        if self.status == UserStatus::Active && !self.email.is_empty() {
            entries.push((index, search_entry(&self.email, &self.username)));
        }
        entries
    }

    fn status(&self) -> Option<String> {
        wire_name(&self.status)
    }

    fn is_final(&self) -> bool {
        matches!(self.status, UserStatus::Rejected | UserStatus::Deleted)
    }

    fn rejection(&self) -> Option<&str> {
        self.rejection.as_deref()
    }
}

impl View for VendorView {
    const KIND: Kind = Kind::Vendor;

    fn version(&self) -> u64 {
        self.version
    }

    fn indexes(&self, keys: &Keys) -> Vec<(String, i64)> {
        if self.deleted {
            return Vec::new();
        }
        vec![
            (keys.vendors_all(), self.updated_at),
            (keys.vendors_of_manager(&self.manager), self.updated_at),
        ]
    }

    fn rejection(&self) -> Option<&str> {
        self.rejection.as_deref()
    }
}

impl View for ProductView {
    const KIND: Kind = Kind::Product;

    fn version(&self) -> u64 {
        self.version
    }

    fn indexes(&self, keys: &Keys) -> Vec<(String, i64)> {
        if self.deleted {
            return Vec::new();
        }
        let mut indexes = vec![(keys.products_of_vendor(&self.vendor_id), self.updated_at)];
        if self.public {
            indexes.push((keys.products_public(), self.updated_at));
            // Open and upcoming sales; one closed early leaves at once, one past its
            // `closes_at` when the product next changes (the gateway filters it before).
            if let Some(sale) = self.sale.as_ref().filter(|s| s.closed_at.is_none()) {
                indexes.push((keys.sales(), sale.terms.opens_at));
            }
        }
        indexes
    }

    fn rejection(&self) -> Option<&str> {
        self.rejection.as_deref()
    }
}

impl View for OrderView {
    const KIND: Kind = Kind::Order;

    fn version(&self) -> u64 {
        self.version
    }

    fn indexes(&self, keys: &Keys) -> Vec<(String, i64)> {
        let placed = self.history.first().map(|t| t.at).unwrap_or(0);
        let status = self.status;
        let mut indexes = vec![
            (keys.orders_all(), placed),
            (keys.orders_of_user(&self.username), placed),
            (keys.orders_in_status(status), placed),
            (
                keys.orders_of_user_in_status(&self.username, status),
                placed,
            ),
        ];
        for vendor in &self.vendor_ids {
            indexes.push((keys.orders_of_vendor(vendor), placed));
            indexes.push((keys.orders_of_vendor_in_status(vendor, status), placed));
        }
        indexes
    }

    fn status(&self) -> Option<String> {
        wire_name(&self.status)
    }

    fn is_final(&self) -> bool {
        self.status.is_final()
    }

    fn rejection(&self) -> Option<&str> {
        self.rejection.as_deref()
    }
}

impl View for DeliveryView {
    const KIND: Kind = Kind::Delivery;

    fn version(&self) -> u64 {
        self.version
    }

    /// Every delivery, each vendor's, and one index per filter value a shipment has, for the
    /// vendor's listing and for MASTER's (a delivery is listed under a value when any of its
    /// shipments has it).
    fn indexes(&self, keys: &Keys) -> Vec<(String, i64)> {
        let at = self.created_at;
        let mut indexes = vec![(keys.deliveries_all(), at)];
        for vendor in &self.vendor_ids {
            indexes.push((keys.deliveries_of_vendor(vendor), at));
        }
        for s in &self.shipments {
            let mut filters = vec![("status", s.status.as_str().to_string())];
            filters.extend(s.carrier.map(|c| ("carrier", c.as_str().to_string())));
            filters.extend(
                s.delivery_type
                    .map(|t| ("delivery_type", t.as_str().to_string())),
            );
            filters.extend(s.tracking_number.clone().map(|t| ("tracking_number", t)));
            for (field, value) in filters {
                for vendor in [Some(s.vendor_id.as_str()), None] {
                    let key = keys.deliveries_by(vendor, field, &value);
                    if !indexes.iter().any(|(k, _)| *k == key) {
                        indexes.push((key, at));
                    }
                }
            }
        }
        indexes
    }

    fn status(&self) -> Option<String> {
        wire_name(&self.status)
    }

    fn is_final(&self) -> bool {
        matches!(
            self.status,
            DeliveryStatus::Delivered | DeliveryStatus::Cancelled
        )
    }

    fn rejection(&self) -> Option<&str> {
        self.rejection.as_deref()
    }
}

impl View for NotificationView {
    const KIND: Kind = Kind::Notification;

    fn version(&self) -> u64 {
        self.version
    }

    fn indexes(&self, keys: &Keys) -> Vec<(String, i64)> {
        if self.deleted {
            return Vec::new();
        }
        vec![(keys.notifications_of_user(&self.username), self.sent_at)]
    }
}

impl View for PaymentView {
    const KIND: Kind = Kind::Payment;

    fn version(&self) -> u64 {
        self.version
    }

    fn indexes(&self, keys: &Keys) -> Vec<(String, i64)> {
        let at = self.created_at;
        let mut indexes = vec![
            (keys.payments_all(), at),
            (keys.payments_in_status(self.status.as_str()), at),
        ];
        // A payment from before the view existed has no buyer on record until its next attempt.
        if !self.username.is_empty() {
            indexes.push((keys.payments_of_user(&self.username), at));
        }
        indexes
    }

    fn status(&self) -> Option<String> {
        Some(self.status.as_str().to_string())
    }

    fn is_final(&self) -> bool {
        self.status == PaymentViewStatus::Refunded
    }

    fn rejection(&self) -> Option<&str> {
        self.rejection.as_deref()
    }
}

impl View for SaleTakeView {
    const KIND: Kind = Kind::SaleTake;

    fn version(&self) -> u64 {
        self.version
    }

    /// Read by id only (`<product id>/<username>`): a buyer asks about one sale.
    fn indexes(&self, _keys: &Keys) -> Vec<(String, i64)> {
        Vec::new()
    }
}

/// A member of the users' search index: the lower-cased term, NUL, the username. NUL sorts
/// below every other byte, so the entries of one term stay together, and it never occurs in a
/// username (a-z, 0-9) or an e-mail address the gateway accepts.
pub fn search_entry(term: &str, username: &str) -> String {
    format!("{}\0{username}", term.trim().to_lowercase())
}

/// The username of a search index member ([`search_entry`]).
pub fn search_entry_username(member: &str) -> &str {
    member.rsplit('\0').next().unwrap_or(member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickple_schemas::OrderStatus;

    fn order(status: &str) -> OrderView {
        let json = serde_json::json!({
            "order_id": "o1", "username": "ann", "status": status, "lines": [], "amount": 0,
            "payment_deadline": null, "payment_status": null, "delivery_status": null,
            "vendor_ids": ["v1", "v2"], "history": [{"status": "PENDING", "at": 1000, "reason": ""}],
            "rejection": null, "version": 4
        });
        decode(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_status_is_spelt_as_on_the_wire() {
        let o = order("AWAITING_PAYMENT");
        assert_eq!(o.status, OrderStatus::AwaitingPayment);
        assert_eq!(o.status().as_deref(), Some("AWAITING_PAYMENT"));
        assert!(!o.is_final());
        assert!(order("CANCELLED").is_final() && order("COMPLETED").is_final());
    }

    #[test]
    fn an_order_is_indexed_for_everyone_who_lists_it() {
        let keys = Keys::new("t:");
        let mut indexes = order("PAID").indexes(&keys);
        indexes.sort();
        assert_eq!(
            indexes,
            vec![
                ("t:idx:orders".to_string(), 1000),
                ("t:idx:orders:status:PAID".to_string(), 1000),
                ("t:idx:orders:user:ann".to_string(), 1000),
                ("t:idx:orders:user:ann:status:PAID".to_string(), 1000),
                ("t:idx:orders:vendor:v1".to_string(), 1000),
                ("t:idx:orders:vendor:v1:status:PAID".to_string(), 1000),
                ("t:idx:orders:vendor:v2".to_string(), 1000),
                ("t:idx:orders:vendor:v2:status:PAID".to_string(), 1000),
            ]
        );
        // A new status moves the order to that status's indexes only (the sink's upsert drops
        // the memberships a view no longer lists).
        let cancelled: Vec<String> = order("CANCELLED")
            .indexes(&keys)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.contains(":status:"))
            .collect();
        assert_eq!(
            cancelled,
            vec![
                "t:idx:orders:status:CANCELLED",
                "t:idx:orders:user:ann:status:CANCELLED",
                "t:idx:orders:vendor:v1:status:CANCELLED",
                "t:idx:orders:vendor:v2:status:CANCELLED",
            ]
        );
    }

    #[test]
    fn a_payment_is_indexed_by_buyer_and_status() {
        let keys = Keys::new("t:");
        let json = serde_json::json!({
            "order_id": "o1", "username": "ann", "status": "AUTHORIZED", "amount": 700,
            "payment_id": "pay-1", "decline_reason": null, "refunded_amount": null,
            "refund_reason": null, "created_at": 5, "authorized_at": 5, "refunded_at": null,
            "updated_at": 5, "history": [], "rejection": null, "version": 2
        });
        let p: PaymentView = decode(json.to_string().as_bytes()).unwrap();
        let mut indexes = p.indexes(&keys);
        indexes.sort();
        assert_eq!(
            indexes,
            vec![
                ("t:idx:payments".to_string(), 5),
                ("t:idx:payments:status:AUTHORIZED".to_string(), 5),
                ("t:idx:payments:user:ann".to_string(), 5),
            ]
        );
        assert_eq!(p.status().as_deref(), Some("AUTHORIZED"));
        assert!(!p.is_final());
    }

    #[test]
    fn a_user_is_found_by_name_and_by_the_address_it_holds() {
        let keys = Keys::new("t:");
        let json = |status: &str| {
            serde_json::json!({
                "username": "ann1", "nickname": "Ann", "email": "Ann@X.io", "password_hash": "",
                "role": "USER", "status": status, "rejection": null, "updated_at": 5,
                "version": 2
            })
        };
        let active: UserView = decode(json("ACTIVE").to_string().as_bytes()).unwrap();
        assert_eq!(
            active.lex_entries(&keys),
            vec![
                ("t:idx:users:search".to_string(), "ann1\0ann1".to_string()),
                (
                    "t:idx:users:search".to_string(),
                    "ann@x.io\0ann1".to_string()
                ),
            ]
        );
        let deleted: UserView = decode(json("DELETED").to_string().as_bytes()).unwrap();
        assert_eq!(deleted.lex_entries(&keys).len(), 1, "its address went back");
        assert_eq!(search_entry_username("ann@x.io\0ann1"), "ann1");
    }

    #[test]
    fn a_deleted_notification_leaves_every_listing() {
        let keys = Keys::new("t:");
        let mut n = serde_json::json!({
            "message_id": "o1.order-confirmed@pickple.local", "username": "ann1",
            "email": "a@x.io", "order_id": "o1", "kind": "ORDER_CONFIRMED", "subject": "s",
            "sent_at": 9, "version": 1
        });
        let view: NotificationView = decode(n.to_string().as_bytes()).unwrap();
        assert!(!view.deleted, "an older view reads as not deleted");
        assert_eq!(
            view.indexes(&keys),
            vec![("t:idx:notifications:user:ann1".to_string(), 9)]
        );
        n["deleted"] = true.into();
        let view: NotificationView = decode(n.to_string().as_bytes()).unwrap();
        assert!(view.indexes(&keys).is_empty());
    }

    /// Each shipment's status, carrier, type and tracking number are index keys, per vendor and
    /// over all vendors (once per value); a view from before shipments still decodes.
    #[test]
    fn a_delivery_is_indexed_by_its_shipments_values() {
        let json = serde_json::json!({
            "order_id": "o1", "username": "ann", "vendor_ids": ["v1", "v2"],
            "status": "IN_TRANSIT", "created_at": 1000, "shipments": [
                {"vendor_id": "v1", "status": "IN_TRANSIT", "carrier": "HANJIN",
                 "delivery_type": "EXPRESS", "tracking_number": "T 1"},
                {"vendor_id": "v2", "status": "PENDING"}
            ], "rejection": null, "version": 3
        });
        let d: DeliveryView = decode(json.to_string().as_bytes()).unwrap();
        let keys = Keys::new("t:");
        let mut got: Vec<String> = d.indexes(&keys).into_iter().map(|(k, _)| k).collect();
        got.sort();
        let want = [
            "t:idx:deliveries",
            "t:idx:deliveries:carrier:HANJIN",
            "t:idx:deliveries:delivery_type:EXPRESS",
            "t:idx:deliveries:status:IN_TRANSIT",
            "t:idx:deliveries:status:PENDING",
            "t:idx:deliveries:tracking_number:T 1",
            "t:idx:deliveries:vendor:v1",
            "t:idx:deliveries:vendor:v1:carrier:HANJIN",
            "t:idx:deliveries:vendor:v1:delivery_type:EXPRESS",
            "t:idx:deliveries:vendor:v1:status:IN_TRANSIT",
            "t:idx:deliveries:vendor:v1:tracking_number:T 1",
            "t:idx:deliveries:vendor:v2",
            "t:idx:deliveries:vendor:v2:status:PENDING",
        ];
        assert_eq!(got, want);
        let old = serde_json::json!({
            "order_id": "o1", "username": "ann", "vendor_ids": ["v1"], "status": "PENDING",
            "carrier": null, "delivery_type": null, "tracking_number": null, "details": [],
            "started_at": null, "delivered_at": null, "rejection": null, "version": 1
        });
        let d: DeliveryView = decode(old.to_string().as_bytes()).unwrap();
        assert!(d.shipments.is_empty());
    }

    #[test]
    fn a_view_of_the_wrong_shape_is_a_decode_error_of_its_kind() {
        let err = decode::<OrderView>(b"{\"version\": 1}").unwrap_err();
        assert!(
            matches!(
                err,
                ViewError::Decode {
                    kind: Kind::Order,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            decode::<UserView>(b"{").unwrap_err(),
            ViewError::Decode {
                kind: Kind::User,
                source: pickple_schemas::DecodeError::Syntax(_)
            }
        ));
    }
}
