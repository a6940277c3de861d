//! The catalog app: vendors, keyed by vendor id, from `vendor-commands` to `view-vendors`.

use pickple_domain::vendor::{Vendor, VendorState};
use pickple_runtime::{AppSpec, Context, ProcessError, Processor, Record};
use pickple_schemas::topic::{VENDOR_COMMANDS, VIEW_VENDORS};
use pickple_schemas::VendorCommand;
use pickple_topics::catalogue::app;

use crate::entity::{self, Entity};
use crate::state::checked_key;

pub const STORE: &str = "vendors";

const VENDOR: Entity = Entity {
    what: "vendor",
    store: STORE,
    view: VIEW_VENDORS,
    updated: "VendorUpdated",
    rejected: "VendorRejected",
};

pub fn spec() -> AppSpec {
    AppSpec::new(app::CATALOG.name, &[VENDOR_COMMANDS], &[STORE])
}

pub struct CatalogProcessor;

fn vendor_id(c: &VendorCommand) -> &str {
    match c {
        VendorCommand::CreateVendor { vendor_id, .. }
        | VendorCommand::UpdateVendor { vendor_id, .. }
        | VendorCommand::DeleteVendor { vendor_id } => vendor_id,
    }
}

impl Processor for CatalogProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let cmd: VendorCommand = record.decode()?;
        let key = checked_key(record, vendor_id(&cmd))?.to_string();
        entity::handle(
            ctx,
            &VENDOR,
            &key,
            &Vendor,
            &cmd,
            VendorState::to_view,
            |_, never| match *never {},
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickple_runtime::TestDriver;
    use pickple_schemas::VendorView;

    #[test]
    fn create_rename_reject_delete() {
        let mut d = TestDriver::new(CatalogProcessor, 1_000);
        d.pipe(
            VENDOR_COMMANDS,
            "v1",
            &VendorCommand::CreateVendor {
                vendor_id: "v1".into(),
                name: "Mugs".into(),
                manager: "vm01".into(),
            },
        )
        .unwrap();
        d.pipe(
            VENDOR_COMMANDS,
            "v1",
            &VendorCommand::UpdateVendor {
                vendor_id: "v1".into(),
                name: " ".into(),
            },
        )
        .unwrap();
        d.pipe(
            VENDOR_COMMANDS,
            "v1",
            &VendorCommand::DeleteVendor {
                vendor_id: "v1".into(),
            },
        )
        .unwrap();
        d.pipe(
            VENDOR_COMMANDS,
            "v2",
            &VendorCommand::DeleteVendor {
                vendor_id: "v2".into(),
            },
        )
        .unwrap();
        let views = d.take_outputs(VIEW_VENDORS);
        assert!(views.iter().all(|o| o.key_str() == "v1"));
        let views: Vec<VendorView> = views
            .iter()
            .map(|o| serde_json::from_value(o.json()).unwrap())
            .collect();
        let got: Vec<(u64, bool, bool)> = views
            .iter()
            .map(|v| (v.version, v.rejection.is_some(), v.deleted))
            .collect();
        assert_eq!(
            got,
            vec![(1, false, false), (2, true, false), (3, false, true)]
        );
        assert_eq!(d.dead_letters().len(), 1);
    }
}
