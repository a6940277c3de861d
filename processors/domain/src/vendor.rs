//! Vendors, keyed by vendor id. Who may act on a vendor (its manager or a MASTER) is checked by
//! the gateway, which knows the caller; these rules keep the vendor itself consistent.
//!
//! A vendor's products are sold by the stock processor, the only writer of each product, so a
//! deleted vendor's products are deleted through it, without a lock: the stock processor tells
//! the catalog of every product it creates (`ProductListed`), the catalog keeps one entry per
//! product under the vendor (keys of their own, never one growing value), and deleting the
//! vendor sends `DeleteProduct` for each of them. A product listed once its vendor is deleted
//! (created while the deletion was on its way) is deleted at once. A command sees a
//! [`VendorSlice`]: the vendor's value and the listed products the app loaded for it
//! ([`VendorSlice::product_of`], [`VendorSlice::needs_every_product`]).

use std::collections::BTreeSet;

use pickple_schemas::{Millis, StockCommand, VendorCommand, VendorView};
use serde::{Deserialize, Serialize};

use crate::rules::{non_empty, visible_text};
use crate::user::{normalize_username, validate_username};
use crate::{is_false, Aggregate, Rejection, ViewMeta};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorState {
    pub vendor_id: String,
    pub name: String,
    /// Username of the VENDOR_MANAGER who owns the vendor.
    pub manager: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum VendorFact {
    Created {
        vendor_id: String,
        name: String,
        manager: String,
    },
    Renamed {
        name: String,
    },
    /// The vendor and, through the effects, every product listed under it.
    Deleted,
    /// A product of the vendor, to delete with it. Changes nothing of the vendor's own value.
    ProductListed {
        product_id: String,
    },
}

/// A vendor as one command sees it: its own value and the products listed under it that the app
/// loaded (each listed product is an entry of its own in the store): the one a `ProductListed`
/// names, if listed, and every one for a `DeleteVendor` of a live vendor. `decide` and `apply`
/// read and write only those, so a slice holding just them decides as the whole vendor would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorSlice {
    pub vendor: Option<VendorState>,
    /// Ids of products listed under the vendor (as loaded).
    pub products: BTreeSet<String>,
}

impl VendorSlice {
    pub fn new(vendor: Option<VendorState>) -> Self {
        VendorSlice {
            vendor,
            products: BTreeSet::new(),
        }
    }

    /// The listed product whose entry the command reads: the one a `ProductListed` names.
    pub fn product_of(cmd: &VendorCommand) -> Option<&str> {
        match cmd {
            VendorCommand::ProductListed { product_id, .. } => Some(product_id),
            _ => None,
        }
    }

    /// Whether the command needs every product listed under the vendor: the deletion of a live
    /// vendor deletes them all. (A deleted vendor keeps no listed product.)
    pub fn needs_every_product(&self, cmd: &VendorCommand) -> bool {
        matches!(cmd, VendorCommand::DeleteVendor { .. })
            && self.vendor.as_ref().is_some_and(|v| !v.deleted)
    }
}

/// The rules of vendors. A vendor's own changes call for no record but its view; its deletion
/// (and a product listed after it) sends the stock processor a `DeleteProduct` per product.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vendor;

impl Aggregate for Vendor {
    type State = VendorSlice;
    type Input = VendorCommand;
    type Fact = VendorFact;
    type Effect = StockCommand;

    fn decide(
        &self,
        slice: &VendorSlice,
        cmd: &VendorCommand,
        _now: Millis,
    ) -> Result<Vec<VendorFact>, Rejection> {
        let state = slice.vendor.as_ref();
        match cmd {
            VendorCommand::CreateVendor {
                vendor_id,
                name,
                manager,
            } => {
                let name = name.trim();
                let manager = normalize_username(manager);
                if vendor_id.trim().is_empty() {
                    return Err(Rejection::invalid("vendor id is required"));
                }
                check_name(name)?;
                validate_username(&manager)?;
                match state {
                    // A redelivered create is harmless; another vendor under the same id is not.
                    Some(v) if !v.deleted && v.name == name && v.manager == manager => Ok(vec![]),
                    Some(_) => Err(Rejection::conflict(format!(
                        "vendor {vendor_id} already exists"
                    ))),
                    None => Ok(vec![VendorFact::Created {
                        vendor_id: vendor_id.clone(),
                        name: name.to_string(),
                        manager,
                    }]),
                }
            }
            VendorCommand::UpdateVendor { name, .. } => {
                let v = live(state)?;
                let name = name.trim();
                check_name(name)?;
                Ok(if v.name == name {
                    vec![]
                } else {
                    vec![VendorFact::Renamed {
                        name: name.to_string(),
                    }]
                })
            }
            VendorCommand::DeleteVendor { .. } => match state {
                None => Err(Rejection::not_found("no such vendor")),
                Some(v) if v.deleted => Ok(vec![]),
                Some(_) => Ok(vec![VendorFact::Deleted]),
            },
            VendorCommand::ProductListed { product_id, .. } => {
                if product_id.trim().is_empty() {
                    return Err(Rejection::invalid("product id is required"));
                }
                match state {
                    // Only the stock processor sends this, for a vendor the gateway saw: an
                    // unknown vendor is a record from elsewhere (dead-lettered by the app).
                    None => Err(Rejection::not_found("no such vendor")),
                    // Deleted already: the product goes too, by the answer (nothing to keep).
                    Some(v) if v.deleted => Ok(vec![]),
                    // A redelivery.
                    Some(_) if slice.products.contains(product_id) => Ok(vec![]),
                    Some(_) => Ok(vec![VendorFact::ProductListed {
                        product_id: product_id.clone(),
                    }]),
                }
            }
        }
    }

    fn apply(mut slice: VendorSlice, fact: &VendorFact) -> VendorSlice {
        match fact {
            VendorFact::Created {
                vendor_id,
                name,
                manager,
            } => {
                slice.vendor = Some(VendorState {
                    vendor_id: vendor_id.clone(),
                    name: name.clone(),
                    manager: manager.clone(),
                    deleted: false,
                });
            }
            VendorFact::Renamed { name } => {
                if let Some(v) = slice.vendor.as_mut() {
                    v.name = name.clone();
                }
            }
            VendorFact::Deleted => {
                if let Some(v) = slice.vendor.as_mut() {
                    v.deleted = true;
                }
                // Their deletion is on its way (the effects): nothing is left to list.
                slice.products.clear();
            }
            VendorFact::ProductListed { product_id } => {
                if slice.vendor.is_some() {
                    slice.products.insert(product_id.clone());
                }
            }
        }
        slice
    }

    /// The deletion of a vendor deletes every product listed under it.
    fn effects(before: &VendorSlice, fact: &VendorFact, _after: &VendorSlice) -> Vec<StockCommand> {
        match fact {
            VendorFact::Deleted => before.products.iter().map(|p| delete_product(p)).collect(),
            _ => Vec::new(),
        }
    }

    /// A product listed under a deleted vendor is deleted at once, however often it is listed
    /// (a repeated `DeleteProduct` is a no-op for the stock processor). Nothing else is answered.
    fn answer(
        after: &VendorSlice,
        cmd: &VendorCommand,
        rejection: Option<&Rejection>,
    ) -> Option<StockCommand> {
        let VendorCommand::ProductListed { product_id, .. } = cmd else {
            return None;
        };
        let deleted = after.vendor.as_ref().is_some_and(|v| v.deleted);
        (deleted && rejection.is_none()).then(|| delete_product(product_id))
    }
}

fn delete_product(product_id: &str) -> StockCommand {
    StockCommand::DeleteProduct {
        product_id: product_id.to_string(),
    }
}

fn live(state: Option<&VendorState>) -> Result<&VendorState, Rejection> {
    match state {
        Some(v) if !v.deleted => Ok(v),
        Some(_) => Err(Rejection::not_found("the vendor was deleted")),
        None => Err(Rejection::not_found("no such vendor")),
    }
}

/// A vendor's name is not blank and is one line of visible text (no control or format
/// characters: see [`visible_text`]); the gateway checks its requests with this same rule.
pub fn check_name(name: &str) -> Result<(), Rejection> {
    non_empty("vendor name", name)?;
    visible_text("vendor name", name, false)
}

impl VendorState {
    pub fn to_view(&self, meta: &ViewMeta) -> VendorView {
        VendorView {
            vendor_id: self.vendor_id.clone(),
            name: self.name.clone(),
            manager: self.manager.clone(),
            deleted: self.deleted,
            rejection: meta.rejection.clone(),
            updated_at: meta.updated_at,
            version: meta.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, manager: &str) -> VendorCommand {
        VendorCommand::CreateVendor {
            vendor_id: "v1".into(),
            name: name.into(),
            manager: manager.into(),
        }
    }
    fn rename(name: &str) -> VendorCommand {
        VendorCommand::UpdateVendor {
            vendor_id: "v1".into(),
            name: name.into(),
        }
    }
    const DELETE: VendorCommand = VendorCommand::DeleteVendor {
        vendor_id: String::new(),
    };

    fn decide(
        state: Option<&VendorState>,
        cmd: &VendorCommand,
    ) -> Result<Vec<VendorFact>, Rejection> {
        Vendor.decide(&VendorSlice::new(state.cloned()), cmd, 0)
    }
    fn run(state: Option<VendorState>, cmd: &VendorCommand) -> Option<VendorState> {
        let out = Vendor.handle(VendorSlice::new(state), cmd, 0);
        assert_eq!(out.rejection, None, "{cmd:?}");
        assert!(out.effects.is_empty(), "{cmd:?}: {:?}", out.effects);
        out.state.vendor
    }
    fn code(state: Option<&VendorState>, cmd: &VendorCommand) -> &'static str {
        decide(state, cmd).unwrap_err().code()
    }

    #[test]
    fn create_rename_delete() {
        let v = run(None, &create(" Mugs Inc ", "Boss1")).unwrap();
        assert_eq!(
            (v.name.as_str(), v.manager.as_str(), v.deleted),
            ("Mugs Inc", "boss1", false)
        );
        assert_eq!(decide(Some(&v), &create("Mugs Inc", "boss1")), Ok(vec![]));
        assert_eq!(code(Some(&v), &create("Other", "boss1")), "CONFLICT");
        let v = run(Some(v), &rename("Cups Inc")).unwrap();
        assert_eq!(v.name, "Cups Inc");
        assert_eq!(decide(Some(&v), &rename("Cups Inc")), Ok(vec![]));
        assert_eq!(code(Some(&v), &rename(" ")), "INVALID");
        let v = run(Some(v), &DELETE).unwrap();
        assert!(v.deleted);
        assert_eq!(decide(Some(&v), &DELETE), Ok(vec![]));
        assert_eq!(code(Some(&v), &rename("x")), "NOT_FOUND");
        assert_eq!(code(Some(&v), &create("Cups Inc", "boss1")), "CONFLICT");
        let view = v.to_view(&ViewMeta::default());
        assert!(view.deleted);
        assert_eq!(view.manager, "boss1");
    }

    #[test]
    fn rejections() {
        assert_eq!(code(None, &create("", "boss1")), "INVALID");
        assert_eq!(code(None, &create("Mugs", "")), "INVALID");
        assert_eq!(code(None, &create("Mugs", "a b")), "INVALID");
        let no_id = VendorCommand::CreateVendor {
            vendor_id: " ".into(),
            name: "Mugs".into(),
            manager: "boss1".into(),
        };
        assert_eq!(code(None, &no_id), "INVALID");
        assert_eq!(code(None, &rename("x")), "NOT_FOUND");
        assert_eq!(code(None, &DELETE), "NOT_FOUND");
    }

    /// A command published around the gateway meets the same character rule.
    #[test]
    fn invisible_characters_in_a_name_are_refused() {
        assert_eq!(code(None, &create("Mugs\u{202E}cnI", "boss1")), "INVALID");
        assert_eq!(code(None, &create("Mu\u{200B}gs", "boss1")), "INVALID");
        assert_eq!(code(None, &create("Mugs\u{7}", "boss1")), "INVALID");
        let v = run(None, &create("픽플 상점", "boss1")).unwrap();
        assert_eq!(v.name, "픽플 상점");
        assert_eq!(code(Some(&v), &rename("Caf\u{2069}é")), "INVALID");
        assert_eq!(code(Some(&v), &rename("Two\nlines")), "INVALID");
        assert!(decide(Some(&v), &rename("Café Crème")).is_ok());
    }

    fn listed(product: &str) -> VendorCommand {
        VendorCommand::ProductListed {
            vendor_id: "v1".into(),
            product_id: product.into(),
        }
    }
    fn slice(vendor: &VendorState, products: &[&str]) -> VendorSlice {
        VendorSlice {
            vendor: Some(vendor.clone()),
            products: products.iter().map(|p| p.to_string()).collect(),
        }
    }
    fn deletions(effects: &[StockCommand]) -> Vec<&str> {
        effects
            .iter()
            .map(|e| match e {
                StockCommand::DeleteProduct { product_id } => product_id.as_str(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_vendor_keeps_its_products_listed_once_and_deletes_them_with_itself() {
        let v = run(None, &create("Mugs", "boss1")).unwrap();
        let out = Vendor.handle(slice(&v, &[]), &listed("p1"), 0);
        assert_eq!(
            out.facts,
            vec![VendorFact::ProductListed {
                product_id: "p1".into()
            }]
        );
        assert_eq!(
            out.state,
            slice(&v, &["p1"]),
            "listed, the vendor unchanged"
        );
        assert!(out.effects.is_empty());
        // A redelivery finds the product listed: nothing to do.
        let again = Vendor.handle(slice(&v, &["p1"]), &listed("p1"), 0);
        assert!(again.facts.is_empty() && again.effects.is_empty());
        assert_eq!(again.rejection, None);

        // The deletion deletes every product listed, and keeps none.
        let before = slice(&v, &["p1", "p2"]);
        assert!(before.needs_every_product(&DELETE));
        let out = Vendor.handle(before, &DELETE, 0);
        assert_eq!(out.facts, vec![VendorFact::Deleted]);
        assert_eq!(deletions(&out.effects), ["p1", "p2"]);
        assert!(out.state.vendor.as_ref().unwrap().deleted);
        assert!(out.state.products.is_empty());
        // A redelivered deletion deletes nothing again, and needs no product loaded.
        assert!(!out.state.needs_every_product(&DELETE));
        let again = Vendor.handle(out.state, &DELETE, 0);
        assert!(again.facts.is_empty() && again.effects.is_empty());
        assert_eq!(again.rejection, None);
    }

    #[test]
    fn a_product_listed_after_its_vendor_was_deleted_is_deleted_at_once() {
        let v = run(run(None, &create("Mugs", "boss1")), &DELETE).unwrap();
        let out = Vendor.handle(slice(&v, &[]), &listed("p3"), 0);
        assert!(out.facts.is_empty(), "the deleted vendor lists nothing");
        assert_eq!(out.rejection, None);
        assert_eq!(deletions(&out.effects), ["p3"]);
        assert_eq!(out.state, slice(&v, &[]));
        // Redelivered: the same deletion again, which the stock processor takes as a no-op.
        let again = Vendor.handle(out.state, &listed("p3"), 0);
        assert_eq!(deletions(&again.effects), ["p3"]);
        assert!(again.facts.is_empty());
    }

    #[test]
    fn a_product_listing_needs_a_known_vendor_and_a_product_id() {
        let unknown = Vendor.handle(VendorSlice::default(), &listed("p1"), 0);
        assert_eq!(
            unknown.rejection.as_ref().map(Rejection::code),
            Some("NOT_FOUND")
        );
        assert!(unknown.effects.is_empty());
        let v = run(None, &create("Mugs", "boss1")).unwrap();
        assert_eq!(code(Some(&v), &listed(" ")), "INVALID");
        let deleted = run(Some(v.clone()), &DELETE).unwrap();
        let refused = Vendor.handle(slice(&deleted, &[]), &listed(""), 0);
        assert_eq!(
            refused.rejection.as_ref().map(Rejection::code),
            Some("INVALID")
        );
        assert!(refused.effects.is_empty());
        // What the app loads: the one product a listing names; every product only to delete a
        // live vendor.
        assert_eq!(VendorSlice::product_of(&listed("p1")), Some("p1"));
        assert_eq!(VendorSlice::product_of(&DELETE), None);
        assert!(!slice(&v, &[]).needs_every_product(&listed("p1")));
        assert!(!slice(&v, &[]).needs_every_product(&rename("x")));
        assert!(!VendorSlice::default().needs_every_product(&DELETE));
    }

    #[test]
    fn round_trips() {
        let v = run(None, &create("Mugs", "boss1")).unwrap();
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("deleted"));
        assert_eq!(serde_json::from_str::<VendorState>(&json).unwrap(), v);
    }
}
