//! The order view's payment and delivery statuses are typed, yet read and written as the
//! strings clients have always seen.

use pickple_schemas::{DeliveryStatus, OrderStatus, OrderView, PaymentStatus};
use serde_json::json;

fn view(payment: Option<PaymentStatus>, delivery: Option<DeliveryStatus>) -> OrderView {
    OrderView {
        order_id: "o1".into(),
        username: "ann1".into(),
        status: OrderStatus::Paid,
        lines: vec![],
        amount: 700,
        payment_deadline: None,
        payment_status: payment,
        delivery_status: delivery,
        vendor_ids: vec![],
        shipping: None,
        history: vec![],
        cancel_requested: None,
        rejection: None,
        version: 1,
    }
}

#[test]
fn statuses_are_the_strings_of_the_wire() {
    let declined = view(
        Some(PaymentStatus::Declined {
            reason: "card declined".into(),
        }),
        None,
    );
    let json = serde_json::to_value(&declined).unwrap();
    assert_eq!(json["payment_status"], "DECLINED: card declined");
    assert_eq!(json["delivery_status"], json!(null));

    let shipping = view(
        Some(PaymentStatus::Authorized),
        Some(DeliveryStatus::InTransit),
    );
    let json = serde_json::to_value(&shipping).unwrap();
    assert_eq!(json["payment_status"], "AUTHORIZED");
    assert_eq!(json["delivery_status"], "IN_TRANSIT");
}

#[test]
fn a_view_written_with_the_strings_reads_back_typed() {
    let mut json = serde_json::to_value(view(None, None)).unwrap();
    json["payment_status"] = json!("REFUND_REQUESTED");
    json["delivery_status"] = json!("DELIVERED");
    let v: OrderView = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(v.payment_status, Some(PaymentStatus::RefundRequested));
    assert_eq!(v.delivery_status, Some(DeliveryStatus::Delivered));

    json["payment_status"] = json!("SOMETHING ELSE");
    assert!(serde_json::from_value::<OrderView>(json).is_err());
}
