//! What every app stores per entity: the domain state plus what its view needs (the version,
//! the time of the last change and the last rejection).

use pickple_domain::{Millis, Rejection, ViewMeta};
use pickple_runtime::{Context, ProcessError, Record};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The stored value of an entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned<S> {
    pub state: S,
    pub version: u64,
    pub updated_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<String>,
}

impl<S> Versioned<S> {
    pub fn meta(&self) -> ViewMeta {
        ViewMeta {
            version: self.version,
            updated_at: self.updated_at,
            rejection: self.rejection.clone(),
        }
    }
}

/// Load an entity: its state and its view version (0 when none was ever published).
pub fn load<S: DeserializeOwned>(
    ctx: &Context<'_>,
    store: &str,
    key: &str,
) -> Result<(Option<S>, u64), ProcessError> {
    Ok(match ctx.get::<Versioned<S>>(store, key)? {
        Some(v) => (Some(v.state), v.version),
        None => (None, 0),
    })
}

/// Store a changed entity (a new version, no rejection) and return what its view needs.
pub fn store_changed<S: Serialize + Clone>(
    ctx: &mut Context<'_>,
    store: &str,
    key: &str,
    state: &S,
    version: u64,
) -> ViewMeta {
    save(ctx, store, key, state, version + 1, None)
}

/// Store a rejection against an existing entity: the state is unchanged, the version grows and
/// the view carries the reason.
pub fn store_rejected<S: Serialize + Clone>(
    ctx: &mut Context<'_>,
    store: &str,
    key: &str,
    state: &S,
    version: u64,
    rejection: &Rejection,
) -> ViewMeta {
    save(
        ctx,
        store,
        key,
        state,
        version + 1,
        Some(rejection.to_string()),
    )
}

fn save<S: Serialize + Clone>(
    ctx: &mut Context<'_>,
    store: &str,
    key: &str,
    state: &S,
    version: u64,
    rejection: Option<String>,
) -> ViewMeta {
    let v = Versioned {
        state: state.clone(),
        version,
        updated_at: ctx.now(),
        rejection,
    };
    let meta = v.meta();
    ctx.put(store, key, &v);
    meta
}

/// A rejected command for an entity that does not exist has no view to carry the reason: it
/// goes to the dead-letter topic with the reason, so it is never silently dropped.
pub fn no_entity(what: &str, key: &str, rejection: &Rejection) -> ProcessError {
    ProcessError::Invalid(format!(
        "{what} {key}: {rejection} (no entity to record the rejection on)"
    ))
}

/// The record key, checked against the id inside the message (a mis-keyed record would be
/// processed by a task that does not own the entity).
pub fn checked_key<'r>(record: &'r Record<'_>, id: &str) -> Result<&'r str, ProcessError> {
    let key = record.key_str()?;
    if key != id {
        return Err(ProcessError::Invalid(format!(
            "record key '{key}' does not match the message's id '{id}'"
        )));
    }
    Ok(key)
}
