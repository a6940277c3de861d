//! The commands the pipeline tests send, as the gateway would publish them.

use pickple_processors::harness::Pipeline;
use pickple_schemas::{OrderCommand, OrderLine, StockCommand};

/// A public product of `vendor` at `price` with `stock` units.
pub fn stocked_product(p: &Pipeline, id: &str, vendor: &str, price: i64, stock: u64) {
    p.send(
        "stock-commands",
        id,
        &StockCommand::CreateProduct {
            product_id: id.into(),
            vendor_id: vendor.into(),
            name: format!("Product {id}"),
            description: "test".into(),
            price,
            image_url: None,
            public: true,
        },
        None,
    );
    p.send(
        "stock-commands",
        id,
        &StockCommand::SetStock {
            product_id: id.into(),
            quantity: stock,
        },
        None,
    );
}

/// `user` (mailed at `user@mail_domain`) orders `lines` (product, quantity), without an address.
pub fn place_order(
    p: &Pipeline,
    order: &str,
    user: &str,
    mail_domain: &str,
    lines: &[(&str, u64)],
    trace: Option<&str>,
) {
    p.send(
        "order-commands",
        order,
        &OrderCommand::PlaceOrder {
            order_id: order.into(),
            username: user.into(),
            email: format!("{user}@{mail_domain}"),
            lines: lines.iter().map(|&l| OrderLine::from(l)).collect(),
            shipping: None,
        },
        trace,
    );
}

/// `user` pays `order` with the fake provider's `token`.
pub fn pay_order(p: &Pipeline, order: &str, user: &str, token: &str, trace: Option<&str>) {
    p.send(
        "order-commands",
        order,
        &OrderCommand::PayOrder {
            order_id: order.into(),
            username: user.into(),
            payment_token: token.into(),
        },
        trace,
    );
}
