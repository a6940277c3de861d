//! The keys of the stock app's store `products` (docs/state.md).
//!
//! A product's own value is under its id, as it always was. Every other entry starts with
//! `0xFF`, a byte no UTF-8 text contains, so no product id (record keys are UTF-8) can ever name
//! one of them. Inside an entry key the product id is followed by `0xFF` for the same reason:
//! the prefix of product `p1` ends in `p1 0xFF`, which no key of product `p10` starts with.
//!
//! | key | value |
//! |---|---|
//! | `<product id>` | the product ([`crate::state::Versioned`] of a slim `ProductState`) |
//! | `FF 'r' <product id> FF <order id>` | the order's reservation |
//! | `FF 'u' <product id> FF <sale epoch: u32 BE> <username>` | units the buyer holds in that sale |
//! | `FF 't' <due: i64 BE> <product id> FF <order id>` | expiry of a final reservation (`null`) |
//! | `FF 'c'` | the expiry sweep's cursor |
//! | `FF 'g' <product id>` | the product's counters of sales before this epoch are to be swept |
//! | `FF 'l'` | how far the listing of products made before vendors kept them has got |

use pickple_domain::Millis;

const MARK: u8 = 0xFF;
const RESERVATION: u8 = b'r';
const BUYER: u8 = b'u';
const EXPIRY: u8 = b't';
const CLOSED_SALE: u8 = b'g';

/// Where the expiry sweep has got to (one per store partition).
pub const CURSOR: [u8; 2] = [MARK, b'c'];

/// How far the listing of the products created before the catalog kept its vendors' products
/// has got (one per store partition, [`super::listing`]).
pub const LISTING: [u8; 2] = [MARK, b'l'];

/// The end of the products' own values: every product id (UTF-8) sorts below it.
pub const PRODUCTS_END: [u8; 1] = [MARK];

/// What a key of the store names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    Product(&'a str),
    Reservation {
        product_id: &'a str,
        order_id: &'a str,
    },
    Buyer {
        product_id: &'a str,
        epoch: u32,
        username: &'a str,
    },
    Expiry {
        due: Millis,
        product_id: &'a str,
        order_id: &'a str,
    },
    Cursor,
    ClosedSale(&'a str),
    Listing,
}

fn tagged(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.extend_from_slice(&[MARK, tag]);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// `<product id> FF`: ends a product id inside an entry key.
fn id(product_id: &str) -> Vec<u8> {
    let mut k = product_id.as_bytes().to_vec();
    k.push(MARK);
    k
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xFF bytes: nothing sorts after every extension of it but longer runs of 0xFF.
    vec![MARK; prefix.len() + 1]
}

pub fn reservation(product_id: &str, order_id: &str) -> Vec<u8> {
    tagged(RESERVATION, &[&id(product_id), order_id.as_bytes()])
}

/// The range of every reservation of one product.
pub fn reservations_of(product_id: &str) -> (Vec<u8>, Vec<u8>) {
    let prefix = tagged(RESERVATION, &[&id(product_id)]);
    let end = prefix_end(&prefix);
    (prefix, end)
}

pub fn buyer(product_id: &str, epoch: u32, username: &str) -> Vec<u8> {
    tagged(
        BUYER,
        &[&id(product_id), &epoch.to_be_bytes(), username.as_bytes()],
    )
}

/// The range of the counters of one sale of one product.
pub fn buyers_of(product_id: &str, epoch: u32) -> (Vec<u8>, Vec<u8>) {
    let prefix = tagged(BUYER, &[&id(product_id), &epoch.to_be_bytes()]);
    let end = prefix_end(&prefix);
    (prefix, end)
}

/// The range of the counters of every sale of one product before `epoch`.
pub fn buyers_before(product_id: &str, epoch: u32) -> (Vec<u8>, Vec<u8>) {
    let pid = id(product_id);
    (
        tagged(BUYER, &[&pid, &0u32.to_be_bytes()]),
        tagged(BUYER, &[&pid, &epoch.to_be_bytes()]),
    )
}

pub fn expiry(due: Millis, product_id: &str, order_id: &str) -> Vec<u8> {
    tagged(
        EXPIRY,
        &[
            &due.max(0).to_be_bytes(),
            &id(product_id),
            order_id.as_bytes(),
        ],
    )
}

/// The first expiry key due at `due` or later (the bound of a due-time range).
pub fn expiry_bound(due: Millis) -> Vec<u8> {
    tagged(EXPIRY, &[&due.max(0).to_be_bytes()])
}

pub fn closed_sale(product_id: &str) -> Vec<u8> {
    tagged(CLOSED_SALE, &[product_id.as_bytes()])
}

/// The range of every closed-sale marker.
pub fn closed_sales() -> (Vec<u8>, Vec<u8>) {
    (
        [MARK, CLOSED_SALE].to_vec(),
        [MARK, CLOSED_SALE + 1].to_vec(),
    )
}

/// Split `<product id> FF <rest>`.
fn split_id(k: &[u8]) -> Option<(&str, &[u8])> {
    let at = k.iter().position(|b| *b == MARK)?;
    Some((std::str::from_utf8(&k[..at]).ok()?, &k[at + 1..]))
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// What `key` names; `None` for a key this layout never writes.
pub fn parse(key: &[u8]) -> Option<Entry<'_>> {
    match key {
        [MARK, b'c'] => Some(Entry::Cursor),
        [MARK, b'l'] => Some(Entry::Listing),
        [MARK, RESERVATION, rest @ ..] => {
            let (product_id, order) = split_id(rest)?;
            Some(Entry::Reservation {
                product_id,
                order_id: text(order)?,
            })
        }
        [MARK, BUYER, rest @ ..] => {
            let (product_id, rest) = split_id(rest)?;
            let (epoch, username) = rest.split_first_chunk::<4>()?;
            Some(Entry::Buyer {
                product_id,
                epoch: u32::from_be_bytes(*epoch),
                username: text(username)?,
            })
        }
        [MARK, EXPIRY, rest @ ..] => {
            let (due, rest) = rest.split_first_chunk::<8>()?;
            let (product_id, order) = split_id(rest)?;
            Some(Entry::Expiry {
                due: Millis::from_be_bytes(*due),
                product_id,
                order_id: text(order)?,
            })
        }
        [MARK, CLOSED_SALE, rest @ ..] => Some(Entry::ClosedSale(text(rest)?)),
        [MARK, ..] => None,
        _ => Some(Entry::Product(text(key)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_collide_with_products() {
        let cases = [
            (
                reservation("p1", "o1"),
                Entry::Reservation {
                    product_id: "p1",
                    order_id: "o1",
                },
            ),
            (
                buyer("p1", 258, "ann"),
                Entry::Buyer {
                    product_id: "p1",
                    epoch: 258,
                    username: "ann",
                },
            ),
            (
                expiry(1_700_000_000_000, "p1", "o1"),
                Entry::Expiry {
                    due: 1_700_000_000_000,
                    product_id: "p1",
                    order_id: "o1",
                },
            ),
            (CURSOR.to_vec(), Entry::Cursor),
            (closed_sale("p1"), Entry::ClosedSale("p1")),
            (LISTING.to_vec(), Entry::Listing),
        ];
        for (key, entry) in cases {
            assert_eq!(parse(&key), Some(entry));
            // No text is an entry key: every entry key starts with a byte UTF-8 never uses.
            assert!(std::str::from_utf8(&key).is_err());
        }
        // Ids that look like entry keys are products, whatever they contain.
        for id in ["r/p1/o1", "u/p1/1/ann", "\u{0}r", "ÿp1", "\u{10FFFF}"] {
            assert_eq!(parse(id.as_bytes()), Some(Entry::Product(id)));
            assert!(id.as_bytes() < PRODUCTS_END.as_slice(), "{id}");
        }
    }

    #[test]
    fn a_product_prefix_catches_no_other_product() {
        let within =
            |k: &[u8], (from, to): &(Vec<u8>, Vec<u8>)| k >= from.as_slice() && k < to.as_slice();
        let p1 = reservations_of("p1");
        assert!(within(&reservation("p1", "o1"), &p1));
        assert!(within(&reservation("p1", ""), &p1));
        assert!(within(&reservation("p1", "\u{10FFFF}"), &p1));
        for other in ["p10", "p", "p1 ", "p0", "p2", "q1"] {
            assert!(!within(&reservation(other, "o1"), &p1), "{other}");
        }
        assert!(!within(&buyer("p1", 1, "o1"), &p1));

        let sale = buyers_of("p1", 2);
        assert!(within(&buyer("p1", 2, "ann"), &sale));
        assert!(!within(&buyer("p1", 1, "ann"), &sale));
        assert!(!within(&buyer("p1", 3, "ann"), &sale));
        assert!(!within(&buyer("p10", 2, "ann"), &sale));
        // Epoch 255 ends in 0xFF: its range still stops before epoch 256.
        assert!(!within(&buyer("p1", 256, ""), &buyers_of("p1", 255)));
        let old = buyers_before("p1", 3);
        for e in [0, 1, 2] {
            assert!(within(&buyer("p1", e, "ann"), &old));
        }
        assert!(!within(&buyer("p1", 3, "ann"), &old));
        assert!(!within(&buyer("p10", 1, "ann"), &old));
        assert!(!within(&buyer("p", 1, "ann"), &old));
    }

    #[test]
    fn expiry_keys_sort_by_due_time() {
        let mut keys = [
            expiry(2_000, "a", "o1"),
            expiry(1_000, "z", "o9"),
            expiry(256, "m", "o5"),
            expiry(1_000, "a", "o2"),
        ];
        keys.sort();
        let due: Vec<Millis> = keys
            .iter()
            .map(|k| match parse(k) {
                Some(Entry::Expiry { due, .. }) => due,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(due, vec![256, 1_000, 1_000, 2_000]);
        assert!(expiry_bound(1_000) <= keys[1] && keys[2] < expiry_bound(1_001));
        let (from, to) = closed_sales();
        assert!(closed_sale("p1") >= from && closed_sale("p1") < to);
        assert!(CURSOR.to_vec() < from || CURSOR.to_vec() >= to);
    }
}
