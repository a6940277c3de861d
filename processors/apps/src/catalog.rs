//! The catalog app: vendors, keyed by vendor id, from `vendor-commands` to `view-vendors`.

use pickple_domain::vendor::{self, VendorState};
use pickple_runtime::{AppSpec, Context, ProcessError, Processor, Record};
use pickple_schemas::VendorCommand;

use crate::state::{checked_key, load, no_entity, store_changed, store_rejected};

pub const STORE: &str = "vendors";
pub const INPUT: &str = "vendor-commands";
pub const VIEW: &str = "view-vendors";

pub fn spec() -> AppSpec {
    AppSpec::new("catalog", &[INPUT], &[STORE])
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
        let (state, version) = load::<VendorState>(ctx, STORE, &key)?;
        match vendor::decide(state.as_ref(), &cmd) {
            Ok(facts) if facts.is_empty() => Ok(()),
            Ok(facts) => {
                let after = facts
                    .iter()
                    .fold(state, vendor::apply)
                    .ok_or_else(|| ProcessError::Invalid("facts without a vendor".into()))?;
                let meta = store_changed(ctx, STORE, &key, &after, version);
                ctx.send_value(VIEW, &key, "VendorUpdated", &after.to_view(&meta));
                Ok(())
            }
            Err(rejection) => match state {
                Some(s) => {
                    let meta = store_rejected(ctx, STORE, &key, &s, version, &rejection);
                    ctx.send_value(VIEW, &key, "VendorRejected", &s.to_view(&meta));
                    Ok(())
                }
                None => Err(no_entity("vendor", &key, &rejection)),
            },
        }
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
            INPUT,
            "v1",
            &VendorCommand::CreateVendor {
                vendor_id: "v1".into(),
                name: "Mugs".into(),
                manager: "vm01".into(),
            },
        )
        .unwrap();
        d.pipe(
            INPUT,
            "v1",
            &VendorCommand::UpdateVendor {
                vendor_id: "v1".into(),
                name: " ".into(),
            },
        )
        .unwrap();
        d.pipe(
            INPUT,
            "v1",
            &VendorCommand::DeleteVendor {
                vendor_id: "v1".into(),
            },
        )
        .unwrap();
        d.pipe(
            INPUT,
            "v2",
            &VendorCommand::DeleteVendor {
                vendor_id: "v2".into(),
            },
        )
        .unwrap();
        let views = d.take_outputs(VIEW);
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
