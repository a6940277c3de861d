//! The typed views: which `pickple-schemas` view each [`Kind`] carries, and what the sink and
//! the gateway read from one (version, index memberships, status, refusal).
//!
//! Both sides decode a view with [`decode`], so a view the sink accepted is a view the gateway
//! can read, and a view either cannot read is the same typed [`ViewError`] on both.

use pickple_schemas::{
    DeliveryStatus, DeliveryView, NotificationView, OrderView, ProductView, UserStatus, UserView,
    VendorView,
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
        let mut indexes = vec![
            (keys.orders_all(), placed),
            (keys.orders_of_user(&self.username), placed),
        ];
        for vendor in &self.vendor_ids {
            indexes.push((keys.orders_of_vendor(vendor), placed));
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
        vec![(keys.notifications_of_user(&self.username), self.sent_at)]
    }
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
                ("t:idx:orders:user:ann".to_string(), 1000),
                ("t:idx:orders:vendor:v1".to_string(), 1000),
                ("t:idx:orders:vendor:v2".to_string(), 1000),
            ]
        );
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
