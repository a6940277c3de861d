//! Growing the shop's partitions with every application's state kept exact: the steps of
//! `pickple-grow` (docs/scaling.md, "Growing the partitions"), over the whole catalogue.

use std::time::Duration;

use pickple_runtime::grow::{check_drained, pending_inputs, rekey, GrowError, StoreMoves};
use pickple_runtime::AppSpec;
use pickple_topics::{catalogue_with, Grown};

use crate::App;

#[derive(Debug, thiserror::Error)]
pub enum GrowShopError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Grow(#[from] GrowError),
    #[error("topics: {0}")]
    Topics(#[from] pickple_topics::admin::AdminError),
}

/// What a grow did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The partition count before (the smallest of the catalogue's topics).
    pub from: i32,
    pub to: i32,
    pub grown: Vec<Grown>,
    /// Per application, what each of its stores moved.
    pub moves: Vec<(String, Vec<StoreMoves>)>,
}

/// Every application that consumes: the processors and the views sink.
pub fn specs() -> Vec<AppSpec> {
    App::ALL
        .into_iter()
        .map(App::spec)
        .chain([pickple_views::spec()])
        .collect()
}

/// Every input partition, over all applications, where records are left to process (see
/// [`pending_inputs`]): none once the shop is quiet.
pub fn pending(brokers: &str, prefix: &str) -> Result<Vec<String>, GrowError> {
    let mut all = Vec::new();
    for spec in specs() {
        all.extend(pending_inputs(brokers, prefix, &spec)?);
    }
    Ok(all)
}

/// Grow every catalogued topic (with `prefix` before its name) to `partitions` and move each
/// application's state to the new layout. Refuses, before changing anything, unless every
/// topic's count divides `partitions` and every application's group is empty (waiting up to
/// `wait` for stopped members' sessions to end) with nothing left to process. Running it again
/// after a failure finishes the job; after a success it changes nothing.
pub async fn grow(
    brokers: &str,
    prefix: &str,
    partitions: i32,
    wait: Duration,
) -> Result<Report, GrowShopError> {
    let topics = catalogue_with(prefix, partitions);
    let counts = pickple_topics::partition_counts(brokers)
        .map_err(pickple_topics::admin::AdminError::from)?;
    let mut from = partitions;
    for t in &topics {
        let Some(&n) = counts.get(&t.name) else {
            return Err(GrowShopError::Refused(format!(
                "{} does not exist (run `topics apply` first)",
                t.name
            )));
        };
        if n > partitions || partitions % n != 0 {
            return Err(GrowShopError::Refused(format!(
                "{} has {n} partitions: {partitions} must be a multiple of every topic's count",
                t.name
            )));
        }
        from = from.min(n);
    }
    let specs = specs();
    let mut refusals = Vec::new();
    for spec in &specs {
        if let Err(e) = check_drained(brokers, prefix, spec, wait) {
            refusals.push(e.to_string());
        }
    }
    if !refusals.is_empty() {
        return Err(GrowShopError::Refused(refusals.join("; ")));
    }
    let grown = pickple_topics::grow(brokers, &topics).await?;
    let mut moves = Vec::new();
    for spec in specs.iter().filter(|s| !s.stores.is_empty()) {
        moves.push((
            spec.name.clone(),
            rekey(brokers, prefix, spec, Duration::from_secs(300))?,
        ));
    }
    Ok(Report {
        from,
        to: partitions,
        grown,
        moves,
    })
}
