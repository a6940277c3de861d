//! The listing of the products created before the catalog kept its vendors' products.
//!
//! Since the catalog app deletes a deleted vendor's products, the stock app lists every product
//! it creates under its vendor (`ProductListed` on `vendor-commands`). A product created before
//! that was never listed, so its vendor's deletion would not reach it; a vendor deleted before
//! it left its products on sale. The punctuator therefore lists, once per store partition, every
//! product that is not deleted, [`LISTING_BATCH`] per punctuation: a listing under a live vendor
//! is kept, one under a deleted vendor is answered with the product's deletion, and a product
//! listed twice (one created since) is a no-op for the catalog.
//!
//! Progress is kept under [`keys::LISTING`]: the last product listed, then `done`. It is written
//! in the transaction of the records sent, so a lost transaction lists its batch again. The
//! products still to list are read once per task (one range over the products' own values) and
//! kept in memory while the stored progress follows them; when it does not (the last batch's
//! transaction was lost, or another instance had the partition) they are read again from the
//! stored progress.

use std::collections::VecDeque;

use pickple_runtime::{Context, ProcessError};
use pickple_schemas::topic::VENDOR_COMMANDS;
use pickple_schemas::VendorCommand;
use serde::{Deserialize, Serialize};

use super::keys;
use super::STORE;

/// The most products one punctuation lists (each one record on `vendor-commands`).
pub const LISTING_BATCH: usize = 500;

/// How far the listing has got, under [`keys::LISTING`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// Every product up to this id (in key order) is listed.
    After(String),
    /// Every product made before the listing existed is listed.
    Done,
}

/// What the listing needs of a product's stored value.
#[derive(Deserialize)]
struct Stored {
    state: Head,
}

#[derive(Deserialize)]
struct Head {
    vendor_id: String,
    #[serde(default)]
    deleted: bool,
}

/// Products to list: (product id, vendor id), in key order.
type Unlisted = VecDeque<(String, String)>;

/// The products still to list, and the stored progress they follow (`None`: from the first).
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    pending: Option<(Option<String>, Unlisted)>,
}

impl Backlog {
    /// List at most `batch` products not listed yet; returns how many were listed.
    pub fn list(&mut self, ctx: &mut Context<'_>, batch: usize) -> Result<usize, ProcessError> {
        let after = match ctx.get::<Progress>(STORE, keys::LISTING)? {
            Some(Progress::Done) => {
                self.pending = None;
                return Ok(0);
            }
            Some(Progress::After(id)) => Some(id),
            None => None,
        };
        let mut queue = match self.pending.take() {
            Some((from, queue)) if from == after => queue,
            _ => unlisted(ctx, after.as_deref())?,
        };
        let mut last = after;
        let mut listed = 0;
        while listed < batch {
            let Some((product_id, vendor_id)) = queue.pop_front() else {
                break;
            };
            ctx.send(
                VENDOR_COMMANDS,
                &vendor_id,
                &VendorCommand::ProductListed {
                    vendor_id: vendor_id.clone(),
                    product_id: product_id.clone(),
                },
            );
            listed += 1;
            last = Some(product_id);
        }
        if queue.is_empty() {
            ctx.put(STORE, keys::LISTING, &Progress::Done);
            tracing::info!(
                partition = ctx.partition(),
                "every earlier product is listed under its vendor"
            );
        } else {
            if listed > 0 {
                if let Some(last) = &last {
                    ctx.put(STORE, keys::LISTING, &Progress::After(last.clone()));
                }
            }
            self.pending = Some((last, queue));
        }
        Ok(listed)
    }
}

/// The products after `after` (all of them for `None`) that are not deleted.
fn unlisted(ctx: &Context<'_>, after: Option<&str>) -> Result<Unlisted, ProcessError> {
    // The first key after `after`: the same bytes followed by the smallest byte.
    let from = after.map_or_else(Vec::new, |id| [id.as_bytes(), &[0]].concat());
    Ok(ctx
        .range::<Stored>(STORE, from, keys::PRODUCTS_END)?
        .into_iter()
        .filter(|(_, p)| !p.state.deleted)
        .filter_map(|(key, p)| Some((String::from_utf8(key).ok()?, p.state.vendor_id)))
        .collect())
}
