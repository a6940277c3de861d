//! Lexicographic index entries for views stored before their kind had any
//! ([`crate::View::lex_entries`]; today the users' search index).
//!
//! The upsert keeps those entries for every view it writes, but a view written before them has
//! none until its next change, and the version guard makes a replayed view a no-op. So the sink
//! gives each stored view of the kind its entries once: [`backfill_lex`] over the ids of an
//! index that lists every view of the kind, a batch at a time, then a marker
//! ([`Keys::backfilled`]) so later starts do nothing.

use pickple_schemas::UserView;

use crate::keys::Keys;
use crate::view::{decode, View};

/// Adds a view's lexicographic entries unless the view changed since it was read (the upsert
/// then wrote them) or already has them (its set of entries exists: every view of a kind with
/// such an index has at least one). KEYS[1] view hash, KEYS[2] its lexicographic membership set;
/// ARGV: the version read, then pairs of (index key, member).
pub const BACKFILL_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
for i = 2, #ARGV, 2 do
  redis.call('ZADD', ARGV[i], 0, ARGV[i + 1])
  redis.call('SADD', KEYS[2], ARGV[i] .. '\0' .. ARGV[i + 1])
end
return 1
"#;

/// Give the stored views of `ids` (of kind `V`) their lexicographic entries if they have none.
/// Returns how many views got them. A view that is gone or cannot be read is left as it is.
pub fn backfill_lex<V: View>(
    con: &mut dyn redis::ConnectionLike,
    script: &redis::Script,
    keys: &Keys,
    ids: &[String],
) -> redis::RedisResult<usize> {
    if ids.is_empty() {
        // An empty pipeline is an error to Redis ("empty command"), not an empty answer.
        return Ok(0);
    }
    let mut read = redis::pipe();
    for id in ids {
        read.cmd("HMGET")
            .arg(keys.view(V::KIND, id))
            .arg("version")
            .arg("json");
    }
    let stored: Vec<(Option<String>, Option<String>)> = read.query(con)?;
    let mut indexed = 0;
    for (id, (version, json)) in ids.iter().zip(stored) {
        let (Some(version), Some(json)) = (version, json) else {
            continue;
        };
        let Ok(view) = decode::<V>(json.as_bytes()) else {
            continue;
        };
        let entries = view.lex_entries(keys);
        if entries.is_empty() {
            continue;
        }
        let mut inv = script.prepare_invoke();
        inv.key(keys.view(V::KIND, id))
            .key(keys.lex_memberships(V::KIND, id))
            .arg(version);
        for (index, member) in &entries {
            inv.arg(index).arg(member);
        }
        let added: i64 = inv.invoke(con)?;
        indexed += added as usize;
    }
    Ok(indexed)
}

/// [`backfill_lex`] of user views: the search index (`GET /users?q=`), whose ids come from
/// `idx:users` (every user).
pub fn backfill_user_search(
    con: &mut dyn redis::ConnectionLike,
    script: &redis::Script,
    keys: &Keys,
    ids: &[String],
) -> redis::RedisResult<usize> {
    backfill_lex::<UserView>(con, script, keys, ids)
}
