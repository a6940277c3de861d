//! The Redis key layout shared by the views sink (writer) and the gateway (reader).
//!
//! Every key starts with the configured prefix (`pickple:` by default; tests use a unique one):
//!
//! | key                                   | type   | content                                      |
//! |---------------------------------------|--------|----------------------------------------------|
//! | `{p}view:{kind}:{id}`                 | hash   | `version` (u64), `json` (the view as JSON)   |
//! | `{p}view:{kind}:{id}:idx`             | set    | the index keys this view is a member of      |
//! | `{p}view:{kind}:{id}:lex`             | set    | its lexicographic entries, `index\0member`   |
//! | `{p}idx:orders`                       | zset   | every order id, score = placed at (ms)       |
//! | `{p}idx:orders:user:{username}`       | zset   | a user's orders                              |
//! | `{p}idx:orders:vendor:{vendor_id}`    | zset   | orders with a line of the vendor             |
//! | `{p}idx:orders:status:{status}`       | zset   | every order now in the status (`PAID`...)    |
//! | `{p}idx:orders:user:{u}:status:{s}`   | zset   | a user's orders now in the status            |
//! | `{p}idx:orders:vendor:{v}:status:{s}` | zset   | a vendor's orders now in the status          |
//! | `{p}idx:products:public`              | zset   | public, not deleted products (updated at)    |
//! | `{p}idx:products:vendor:{vendor_id}`  | zset   | a vendor's products, not deleted             |
//! | `{p}idx:vendors`                      | zset   | vendors, not deleted                         |
//! | `{p}idx:vendors:manager:{username}`   | zset   | the vendors a manager owns                   |
//! | `{p}idx:users`                        | zset   | every user (score = updated at)              |
//! | `{p}idx:users:search`                 | zset   | lexicographic (scores 0): `term\0username`,  |
//! |                                       |        | term = lower-cased username, or e-mail of an |
//! |                                       |        | ACTIVE account (`ZRANGEBYLEX` by prefix)     |
//! | `{p}idx:deliveries`                   | zset   | every delivery, score = made at (ms)         |
//! | `{p}idx:deliveries:vendor:{vendor}`   | zset   | deliveries of a vendor's orders              |
//! | `{p}idx:deliveries[:vendor:{v}]:{f}:{x}` | zset | deliveries with a shipment (of vendor `v`) whose `status`, `carrier`, `delivery_type` or `tracking_number` (`f`) is `x` |
//! | `{p}idx:notifications:user:{username}`| zset   | e-mails sent to a user, score = sent at      |
//! | `{p}idx:payments`                     | zset   | every payment, score = first attempt at      |
//! | `{p}idx:payments:user:{username}`     | zset   | a buyer's payments                           |
//! | `{p}idx:payments:status:{STATUS}`     | zset   | payments in a status (`AUTHORIZED`, ...)     |
//! | `{p}idx:sales`                        | zset   | public products with a sale not closed early, score = opens at |
//! | `{p}meta:views`                       | hash   | sink heartbeat per partition (see `ready`)   |
//! | `{p}meta:backfilled:{what}`           | string | set once `what` was backfilled (`backfill`)  |
//! | `{p}idem:{username}:{key}`            | string | gateway Idempotency-Key memory               |
//!
//! Every `idx:orders*` score is the time the order was placed. The `:status:` indexes let a
//! listing filtered by status page by score like the others: the sink's upsert moves an order
//! from one status index to the next as its view changes. (Usernames hold no `:`, and vendor
//! ids are made by the gateway, so no user's or vendor's index reads as a status index.)
//!
//! Change notices are PUBLISHed on `{p}changed:{kind}:{id}` with the new version as payload.

use std::fmt;

use pickple_schemas::{topic, OrderStatus};

/// The views, one per `view-*` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Vendor,
    Product,
    Order,
    Delivery,
    Notification,
    Payment,
    /// A buyer's units in a product's sale (`view-sale-takes`, id `<product id>/<username>`).
    SaleTake,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::User,
        Kind::Vendor,
        Kind::Product,
        Kind::Order,
        Kind::Delivery,
        Kind::Notification,
        Kind::Payment,
        Kind::SaleTake,
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
            Kind::Payment => topic::VIEW_PAYMENTS,
            Kind::SaleTake => topic::VIEW_SALE_TAKES,
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
            Kind::Payment => "payment",
            Kind::SaleTake => "sale_take",
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

    /// The view's entries in lexicographic indexes ([`crate::View::lex_entries`]), each
    /// `index key \0 member`, so the next upsert can take back those it no longer wants.
    pub fn lex_memberships(&self, kind: Kind, id: &str) -> String {
        format!("{}view:{kind}:{id}:lex", self.prefix)
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

    pub fn orders_in_status(&self, status: OrderStatus) -> String {
        format!("{}idx:orders:status:{}", self.prefix, status.as_str())
    }

    pub fn orders_of_user_in_status(&self, username: &str, status: OrderStatus) -> String {
        format!(
            "{}idx:orders:user:{username}:status:{}",
            self.prefix,
            status.as_str()
        )
    }

    pub fn orders_of_vendor_in_status(&self, vendor_id: &str, status: OrderStatus) -> String {
        format!(
            "{}idx:orders:vendor:{vendor_id}:status:{}",
            self.prefix,
            status.as_str()
        )
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

    /// The users' search index: a lexicographic zset (every score 0) of `term\0username`,
    /// read by prefix with `ZRANGEBYLEX` (see `UserView::lex_entries`).
    pub fn users_search(&self) -> String {
        format!("{}idx:users:search", self.prefix)
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

    pub fn payments_all(&self) -> String {
        format!("{}idx:payments", self.prefix)
    }

    pub fn payments_of_user(&self, username: &str) -> String {
        format!("{}idx:payments:user:{username}", self.prefix)
    }

    /// `status` as spelt on the wire (`AUTHORIZED`, `DECLINED`, `REFUNDED`).
    pub fn payments_in_status(&self, status: &str) -> String {
        format!("{}idx:payments:status:{status}", self.prefix)
    }

    /// Products with a sale that is not closed early (public, not deleted), score = opens at.
    /// A sale past its `closes_at` stays until its product's next view: readers filter it.
    pub fn sales(&self) -> String {
        format!("{}idx:sales", self.prefix)
    }

    /// The sink's heartbeat hash, one field per partition (see [`crate::ready`]).
    pub fn sink_status(&self) -> String {
        format!("{}meta:views", self.prefix)
    }

    /// Set once the sink gave every stored view what `what` names (see [`crate::backfill`]).
    pub fn backfilled(&self, what: &str) -> String {
        format!("{}meta:backfilled:{what}", self.prefix)
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
