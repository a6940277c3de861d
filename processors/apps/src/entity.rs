//! The one way an app handles an input for an entity that has a view (a user, a vendor, an
//! order, a delivery): load its state, let the domain decide ([`Aggregate::handle`]), store the
//! new state, send the effects and publish the view with a version that grows on every change
//! and every rejection.

use pickple_domain::{Aggregate, Rejection, ViewMeta};
use pickple_runtime::{Context, ProcessError};
use serde::{de::DeserializeOwned, Serialize};

use crate::state::{load, no_entity, store_changed, store_rejected};

/// Where a kind of entity is kept and shown.
#[derive(Debug, Clone, Copy)]
pub struct Entity {
    /// What the entity is called in a dead letter: "order o1: ...".
    pub what: &'static str,
    pub store: &'static str,
    pub view: &'static str,
    /// The view's `event-type` after a change, and after a rejection.
    pub updated: &'static str,
    pub rejected: &'static str,
}

/// What became of an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Nothing happened (a redelivery, a late reply): nothing stored, nothing sent.
    Unchanged,
    Changed,
    /// Refused: the state is unchanged, the view shows why.
    Refused(Rejection),
}

/// Handle `input` for the entity under `key`. Records go out in this order: the effects (through
/// `send`), then the view. A refusal of an input for an entity that does not exist has no view
/// to show it on: it is an error, so the runtime dead-letters the record with the reason.
pub fn handle<A, S, V>(
    ctx: &mut Context<'_>,
    entity: &Entity,
    key: &str,
    aggregate: &A,
    input: &A::Input,
    view: impl Fn(&S, &ViewMeta) -> V,
    mut send: impl FnMut(&mut Context<'_>, &A::Effect),
) -> Result<Handled, ProcessError>
where
    A: Aggregate<State = Option<S>>,
    S: Serialize + DeserializeOwned + Clone,
    V: Serialize,
{
    let (state, version) = load::<S>(ctx, entity.store, key)?;
    let out = aggregate.handle(state, input, ctx.now());
    if let Some(rejection) = out.rejection {
        let state = out
            .state
            .ok_or_else(|| no_entity(entity.what, key, &rejection))?;
        let meta = store_rejected(ctx, entity.store, key, &state, version, &rejection);
        for effect in &out.effects {
            send(ctx, effect);
        }
        ctx.send_value(entity.view, key, entity.rejected, &view(&state, &meta));
        return Ok(Handled::Refused(rejection));
    }
    if out.facts.is_empty() {
        for effect in &out.effects {
            send(ctx, effect);
        }
        return Ok(Handled::Unchanged);
    }
    let after = out
        .state
        .ok_or_else(|| ProcessError::Invalid(format!("facts without a {}", entity.what)))?;
    let meta = store_changed(ctx, entity.store, key, &after, version);
    for effect in &out.effects {
        send(ctx, effect);
    }
    ctx.send_value(entity.view, key, entity.updated, &view(&after, &meta));
    Ok(Handled::Changed)
}
