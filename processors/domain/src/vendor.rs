//! Vendors, keyed by vendor id. Who may act on a vendor (its manager or a MASTER) is checked by
//! the gateway, which knows the caller; these rules keep the vendor itself consistent.

use std::convert::Infallible;

use pickple_schemas::{Millis, VendorCommand, VendorView};
use serde::{Deserialize, Serialize};

use crate::rules::non_empty;
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
    Deleted,
}

/// The rules of vendors. A vendor's changes call for no record but its view, so it has no
/// effects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vendor;

impl Aggregate for Vendor {
    type State = Option<VendorState>;
    type Input = VendorCommand;
    type Fact = VendorFact;
    type Effect = Infallible;

    fn decide(
        &self,
        state: &Option<VendorState>,
        cmd: &VendorCommand,
        _now: Millis,
    ) -> Result<Vec<VendorFact>, Rejection> {
        let state = state.as_ref();
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
        }
    }

    fn apply(state: Option<VendorState>, fact: &VendorFact) -> Option<VendorState> {
        match fact {
            VendorFact::Created {
                vendor_id,
                name,
                manager,
            } => Some(VendorState {
                vendor_id: vendor_id.clone(),
                name: name.clone(),
                manager: manager.clone(),
                deleted: false,
            }),
            VendorFact::Renamed { name } => state.map(|v| VendorState {
                name: name.clone(),
                ..v
            }),
            VendorFact::Deleted => state.map(|v| VendorState { deleted: true, ..v }),
        }
    }

    fn effects(
        _before: &Option<VendorState>,
        _fact: &VendorFact,
        _after: &Option<VendorState>,
    ) -> Vec<Infallible> {
        Vec::new()
    }
}

fn live(state: Option<&VendorState>) -> Result<&VendorState, Rejection> {
    match state {
        Some(v) if !v.deleted => Ok(v),
        Some(_) => Err(Rejection::not_found("the vendor was deleted")),
        None => Err(Rejection::not_found("no such vendor")),
    }
}

/// A vendor's name is not blank; the gateway checks its requests with this same rule.
pub fn check_name(name: &str) -> Result<(), Rejection> {
    non_empty("vendor name", name)
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
        Vendor.decide(&state.cloned(), cmd, 0)
    }
    fn run(state: Option<VendorState>, cmd: &VendorCommand) -> Option<VendorState> {
        let out = Vendor.handle(state, cmd, 0);
        assert_eq!(out.rejection, None, "{cmd:?}");
        out.state
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

    #[test]
    fn round_trips() {
        let v = run(None, &create("Mugs", "boss1")).unwrap();
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("deleted"));
        assert_eq!(serde_json::from_str::<VendorState>(&json).unwrap(), v);
    }
}
