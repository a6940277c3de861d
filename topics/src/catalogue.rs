//! Every topic Pickple uses, as data.
//!
//! All topics have the same partition count ([`PARTITIONS`] unless the deployment grew it, see
//! [`catalogue_with`]) so every topic an application reads together is co-partitioned (same
//! count, same murmur2 partitioner): one task owns an entity's whole history.

/// Partition count of every topic of a new deployment: the most instances any processor can
/// usefully run. `pickple-grow` raises it (to a multiple) with the state kept exact.
pub const PARTITIONS: i32 = 6;

use pickple_schemas::topic;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    Delete,
    Compact,
}

impl Cleanup {
    pub fn as_str(self) -> &'static str {
        match self {
            Cleanup::Delete => "delete",
            Cleanup::Compact => "compact",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    /// What the record key is, e.g. "order id".
    pub key: &'static str,
    pub partitions: i32,
    pub cleanup: Cleanup,
    /// `retention.ms` for delete topics; `None` keeps the broker default (compacted topics).
    pub retention_ms: Option<i64>,
    pub description: &'static str,
}

/// A processor application: its consumer group, its state stores (each with a changelog) and its
/// dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App {
    pub name: &'static str,
    pub stores: &'static [&'static str],
}

/// Every application, one constant each: the one place an application's name and stores are
/// spelt. `pickple-processor --app <name>` takes these names; the processors crate's `App` enum
/// and the views sink refer to these constants.
pub mod app {
    use super::App;

    pub const USERS: App = App {
        name: "users",
        stores: &["users", "emails"],
    };
    pub const CATALOG: App = App {
        name: "catalog",
        stores: &["vendors"],
    };
    pub const STOCK: App = App {
        name: "stock",
        stores: &["products"],
    };
    pub const ORDER: App = App {
        name: "order",
        stores: &["orders", "deadlines"],
    };
    pub const PAYMENT: App = App {
        name: "payment",
        stores: &["payments"],
    };
    pub const DELIVERY: App = App {
        name: "delivery",
        stores: &["deliveries"],
    };
    pub const NOTIFICATION: App = App {
        name: "notification",
        stores: &["sent"],
    };
    /// The views sink (crate `pickple-views`): no stores, Redis holds what it writes.
    pub const VIEWS: App = App {
        name: "views",
        stores: &[],
    };
}

/// The applications. Changelog topics are `<app>-<store>-changelog`.
pub const APPS: &[App] = &[
    app::USERS,
    app::CATALOG,
    app::STOCK,
    app::ORDER,
    app::PAYMENT,
    app::DELIVERY,
    app::NOTIFICATION,
    app::VIEWS,
];

fn stream(name: &str, key: &'static str, days: i64, description: &'static str) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        key,
        partitions: PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: Some(days * DAY_MS),
        description,
    }
}

fn compacted(name: String, key: &'static str, description: &'static str) -> TopicSpec {
    TopicSpec {
        name,
        key,
        partitions: PARTITIONS,
        cleanup: Cleanup::Compact,
        retention_ms: None,
        description,
    }
}

/// The whole catalogue, every name prefixed with `prefix` (empty in production; tests use a
/// unique prefix to get a private set of topics on a shared broker), with [`PARTITIONS`]
/// partitions per topic.
pub fn catalogue(prefix: &str) -> Vec<TopicSpec> {
    catalogue_with(prefix, PARTITIONS)
}

/// The whole catalogue with `partitions` partitions per topic: a deployment grown by
/// `pickple-grow` (`PICKPLE_PARTITIONS`).
pub fn catalogue_with(prefix: &str, partitions: i32) -> Vec<TopicSpec> {
    let mut topics = catalogue_of(prefix);
    for t in &mut topics {
        t.partitions = partitions;
    }
    topics
}

fn catalogue_of(prefix: &str) -> Vec<TopicSpec> {
    let p = |n: &str| format!("{prefix}{n}");
    let mut topics = vec![
        stream(
            &p(topic::USER_COMMANDS),
            "username",
            7,
            "sign-up, profile, role and delete commands; e-mail registry replies",
        ),
        stream(
            &p(topic::EMAIL_CLAIMS),
            "e-mail",
            7,
            "claims and releases of e-mail addresses (uniqueness without a lock)",
        ),
        // One day: its records carry confirmation codes, which expire after a day anyway.
        stream(
            &p(topic::USER_EVENTS),
            "username",
            1,
            "confirmation codes to mail (sign-ups, e-mail changes)",
        ),
        stream(
            &p(topic::VENDOR_COMMANDS),
            "vendor id",
            7,
            "vendor create/update/delete; products listed under their vendor (from stock)",
        ),
        stream(
            &p(topic::STOCK_COMMANDS),
            "product id",
            7,
            "product, stock, sale and reservation commands; deletions of a deleted vendor's products",
        ),
        stream(
            &p(topic::ORDER_COMMANDS),
            "order id",
            7,
            "place, pay and cancel requests from users",
        ),
        stream(
            &p(topic::ORDER_REPLIES),
            "order id",
            7,
            "stock, payment and delivery answers to the order saga",
        ),
        stream(
            &p(topic::ORDER_EVENTS),
            "order id",
            30,
            "order confirmed, cancel requested, cancelled, completed",
        ),
        stream(
            &p(topic::PAYMENT_COMMANDS),
            "order id",
            7,
            "authorize and refund requests from the saga",
        ),
        stream(
            &p(topic::DELIVERY_COMMANDS),
            "order id",
            7,
            "start, detail and end of a vendor's shipment",
        ),
        stream(
            &p(topic::DELIVERY_EVENTS),
            "order id",
            30,
            "a shipment started or delivered, an order delivered",
        ),
        // Keyed by the mail's order id, like the events that sent it: the notification task
        // that sent a mail and published its view is the one that deletes its entry.
        stream(
            &p(topic::NOTIFICATION_COMMANDS),
            "order id",
            7,
            "removal of a sent mail from the notification history (MASTER)",
        ),
        compacted(p(topic::VIEW_USERS), "username", "latest user view"),
        compacted(p(topic::VIEW_VENDORS), "vendor id", "latest vendor view"),
        compacted(
            p(topic::VIEW_PRODUCTS),
            "product id",
            "latest product view with stock and sale",
        ),
        compacted(
            p(topic::VIEW_ORDERS),
            "order id",
            "latest order view with lines and history",
        ),
        compacted(
            p(topic::VIEW_DELIVERIES),
            "order id",
            "latest delivery view",
        ),
        compacted(p(topic::VIEW_NOTIFICATIONS), "message id", "e-mails sent"),
        compacted(
            p(topic::VIEW_PAYMENTS),
            "order id",
            "latest payment view with its attempts and outcomes",
        ),
        compacted(
            p(topic::VIEW_SALE_TAKES),
            "product id/username",
            "units each buyer holds in a product's current sale",
        ),
    ];
    for app in APPS {
        for store in app.stores {
            topics.push(compacted(
                p(&topic::changelog(app.name, store)),
                "store key",
                "state store changelog (restores the store)",
            ));
        }
        topics.push(stream(
            &p(&topic::dead_letter(app.name)),
            "original key",
            30,
            "records the application could not decode or validate, with the reason in headers",
        ));
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_changelogs_compacted() {
        let all = catalogue("");
        let mut names: Vec<_> = all.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for t in &all {
            assert!(t.partitions >= 6, "{}", t.name);
            if t.name.ends_with("-changelog") || t.name.starts_with("view-") {
                assert_eq!(t.cleanup, Cleanup::Compact, "{}", t.name);
            }
        }
        assert!(catalogue("x.").iter().all(|t| t.name.starts_with("x.")));
    }

    #[test]
    fn apps_have_unique_names() {
        let mut names: Vec<_> = APPS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), APPS.len());
    }
}
