//! Topic names, one constant each. Every crate links this one, so a name is spelt once; the
//! topic catalogue (`pickple-topics`) adds partitions and retention, and tests prefix the names
//! to get a private set on a shared broker.

pub const USER_COMMANDS: &str = "user-commands";
pub const EMAIL_CLAIMS: &str = "email-claims";
pub const USER_EVENTS: &str = "user-events";
pub const VENDOR_COMMANDS: &str = "vendor-commands";
pub const STOCK_COMMANDS: &str = "stock-commands";
pub const ORDER_COMMANDS: &str = "order-commands";
pub const ORDER_REPLIES: &str = "order-replies";
pub const ORDER_EVENTS: &str = "order-events";
pub const PAYMENT_COMMANDS: &str = "payment-commands";
pub const DELIVERY_COMMANDS: &str = "delivery-commands";
pub const DELIVERY_EVENTS: &str = "delivery-events";
pub const NOTIFICATION_COMMANDS: &str = "notification-commands";

pub const VIEW_USERS: &str = "view-users";
pub const VIEW_VENDORS: &str = "view-vendors";
pub const VIEW_PRODUCTS: &str = "view-products";
pub const VIEW_ORDERS: &str = "view-orders";
pub const VIEW_DELIVERIES: &str = "view-deliveries";
pub const VIEW_NOTIFICATIONS: &str = "view-notifications";
pub const VIEW_PAYMENTS: &str = "view-payments";
pub const VIEW_SALE_TAKES: &str = "view-sale-takes";

/// Every view topic, in the order the views sink lists them.
pub const VIEWS: [&str; 8] = [
    VIEW_USERS,
    VIEW_VENDORS,
    VIEW_PRODUCTS,
    VIEW_ORDERS,
    VIEW_DELIVERIES,
    VIEW_NOTIFICATIONS,
    VIEW_PAYMENTS,
    VIEW_SALE_TAKES,
];

/// The changelog of an application's store: `<app>-<store>-changelog`.
pub fn changelog(app: &str, store: &str) -> String {
    format!("{app}-{store}-changelog")
}

/// An application's dead-letter topic: `<app>-dlq`.
pub fn dead_letter(app: &str) -> String {
    format!("{app}-dlq")
}
