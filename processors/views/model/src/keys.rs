//! The Redis key layout shared by the views sink (writer) and the gateway (reader).
//!
//! Every key starts with the configured prefix (`pickple:` by default; tests use a unique one):
//!
//! | key                                   | type   | content                                      |
//! |---------------------------------------|--------|----------------------------------------------|
//! | `{p}view:{kind}:{id}`                 | hash   | `version` (u64), `json` (the view as JSON)   |
//! | `{p}view:{kind}:{id}:idx`             | set    | the index keys this view is a member of      |
//! | `{p}idx:orders`                       | zset   | every order id, score = placed at (ms)       |
//! | `{p}idx:orders:user:{username}`       | zset   | a user's orders                              |
//! | `{p}idx:orders:vendor:{vendor_id}`    | zset   | orders with a line of the vendor             |
//! | `{p}idx:products:public`              | zset   | public, not deleted products (updated at)    |
//! | `{p}idx:products:vendor:{vendor_id}`  | zset   | a vendor's products, not deleted             |
//! | `{p}idx:vendors`                      | zset   | vendors, not deleted                         |
//! | `{p}idx:vendors:manager:{username}`   | zset   | the vendors a manager owns                   |
//! | `{p}idx:users`                        | zset   | every user (score = updated at)              |
//! | `{p}idx:deliveries`                   | zset   | every delivery, score = made at (ms)         |
//! | `{p}idx:deliveries:vendor:{vendor}`   | zset   | deliveries of a vendor's orders              |
//! | `{p}idx:deliveries[:vendor:{v}]:{f}:{x}` | zset | deliveries with a shipment (of vendor `v`) whose `status`, `carrier`, `delivery_type` or `tracking_number` (`f`) is `x` |
//! | `{p}idx:notifications:user:{username}`| zset   | e-mails sent to a user, score = sent at      |
//! | `{p}meta:views`                       | hash   | sink heartbeat per partition (see `ready`)   |
//! | `{p}idem:{username}:{key}`            | string | gateway Idempotency-Key memory               |
//!
//! Change notices are PUBLISHed on `{p}changed:{kind}:{id}` with the new version as payload.

use std::fmt;

use pickple_schemas::topic;

/// The six views, one per `view-*` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Vendor,
    Product,
    Order,
    Delivery,
    Notification,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::User,
        Kind::Vendor,
        Kind::Product,
        Kind::Order,
        Kind::Delivery,
        Kind::Notification,
    ];

    /// The logical topic the view is published on.
    pub fn topic(self) -> &'static str {
        match self {
            Kind::User => topic::VIEW_USERS,
            Kind::Vendor => topic::VIEW_VENDORS,
            Kind::Product => topic::VIEW_PRODUCTS,
            Kind::Order => topic::VIEW_ORDERS,
            Kind::Delivery => topic::VIEW_DELIVERIES,
            Kind::Notification => topic::VIEW_NOTIFICATIONS,
        }
    }

    pub fn from_topic(topic: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.topic() == topic)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Vendor => "vendor",
            Kind::Product => "product",
            Kind::Order => "order",
            Kind::Delivery => "delivery",
            Kind::Notification => "notification",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds every key name from the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn view(&self, kind: Kind, id: &str) -> String {
        format!("{}view:{kind}:{id}", self.prefix)
    }

    pub fn memberships(&self, kind: Kind, id: &str) -> String {
        format!("{}view:{kind}:{id}:idx", self.prefix)
    }

    pub fn channel(&self, kind: Kind, id: &str) -> String {
        format!("{}changed:{kind}:{id}", self.prefix)
    }

    /// Pattern matching every change channel (one PSUBSCRIBE per gateway).
    pub fn channel_pattern(&self) -> String {
        format!("{}changed:*", self.prefix)
    }

    pub fn orders_all(&self) -> String {
        format!("{}idx:orders", self.prefix)
    }

    pub fn orders_of_user(&self, username: &str) -> String {
        format!("{}idx:orders:user:{username}", self.prefix)
    }

    pub fn orders_of_vendor(&self, vendor_id: &str) -> String {
        format!("{}idx:orders:vendor:{vendor_id}", self.prefix)
    }

    pub fn products_public(&self) -> String {
        format!("{}idx:products:public", self.prefix)
    }

    pub fn products_of_vendor(&self, vendor_id: &str) -> String {
        format!("{}idx:products:vendor:{vendor_id}", self.prefix)
    }

    pub fn vendors_all(&self) -> String {
        format!("{}idx:vendors", self.prefix)
    }

    pub fn vendors_of_manager(&self, username: &str) -> String {
        format!("{}idx:vendors:manager:{username}", self.prefix)
    }

    pub fn users_all(&self) -> String {
        format!("{}idx:users", self.prefix)
    }

    pub fn deliveries_of_vendor(&self, vendor_id: &str) -> String {
        format!("{}idx:deliveries:vendor:{vendor_id}", self.prefix)
    }

    pub fn deliveries_all(&self) -> String {
        format!("{}idx:deliveries", self.prefix)
    }

    /// The deliveries with a shipment (of `vendor_id`, or of any vendor) whose `field` is
    /// `value`: one index per value, so a filtered listing reads one sorted set instead of
    /// scanning. Field names are the query parameters' (`status`, `carrier`, `delivery_type`,
    /// `tracking_number`); values as spelt on the wire, a tracking number exactly as given.
    pub fn deliveries_by(&self, vendor_id: Option<&str>, field: &str, value: &str) -> String {
        match vendor_id {
            Some(v) => format!("{}idx:deliveries:vendor:{v}:{field}:{value}", self.prefix),
            None => format!("{}idx:deliveries:{field}:{value}", self.prefix),
        }
    }

    pub fn notifications_of_user(&self, username: &str) -> String {
        format!("{}idx:notifications:user:{username}", self.prefix)
    }

    /// The sink's heartbeat hash, one field per partition (see [`crate::ready`]).
    pub fn sink_status(&self) -> String {
        format!("{}meta:views", self.prefix)
    }

    pub fn idempotency(&self, username: &str, key: &str) -> String {
        format!("{}idem:{username}:{key}", self.prefix)
    }

    /// The gateway's own authentication records (signing secret, refresh tokens, revoked
    /// token ids, rate limits): `name` says which.
    pub fn auth(&self, name: &str) -> String {
        format!("{}auth:{name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_view_topic_has_one_kind() {
        let topics: Vec<&str> = Kind::ALL.iter().map(|k| k.topic()).collect();
        assert_eq!(topics, topic::VIEWS);
        for kind in Kind::ALL {
            assert_eq!(Kind::from_topic(kind.topic()), Some(kind));
        }
    }
}
