//! The one way a view enters Redis: a Lua script that keeps the highest version, replaces the
//! view's index memberships and publishes a change notice, all at once. The views sink writes
//! with it; the gateway's load generator and tests seed views with it, so they write exactly
//! what the sink would.

use pickple_schemas::{
    DeliveryView, NotificationView, OrderView, PaymentView, ProductView, SaleTakeView, UserView,
    VendorView,
};

use crate::keys::{Keys, Kind};
use crate::view::{decode, View, ViewError};

/// The upsert: version guard, index memberships, change notice. Returns 1 when written, 0 when
/// the stored version is the same or newer.
///
/// KEYS[1] view hash, KEYS[2] membership set, KEYS[3] lexicographic membership set; ARGV:
/// version, json, channel, id, the number N of scored indexes, then N pairs of (index key,
/// score), whose member is the id, then pairs of (index key, member) of lexicographic indexes
/// (score 0; [`crate::View::lex_entries`]). A lexicographic entry is remembered as
/// `index key \0 member` (index keys hold no NUL), so that, as for the scored ones, an entry the
/// new version no longer has is removed.
pub const UPSERT_LUA: &str = r#"
local stored = redis.call('HGET', KEYS[1], 'version')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'json', ARGV[2])
local id = ARGV[4]
local scored_end = 5 + 2 * tonumber(ARGV[5])
local wanted = {}
for i = 6, scored_end, 2 do
  wanted[ARGV[i]] = ARGV[i + 1]
end
for _, index in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if wanted[index] == nil then
    redis.call('ZREM', index, id)
  end
end
redis.call('DEL', KEYS[2])
for index, score in pairs(wanted) do
  redis.call('ZADD', index, score, id)
  redis.call('SADD', KEYS[2], index)
end
local lex = {}
for i = scored_end + 1, #ARGV, 2 do
  lex[ARGV[i] .. '\0' .. ARGV[i + 1]] = true
end
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if not lex[entry] then
    local cut = string.find(entry, '\0', 1, true)
    redis.call('ZREM', string.sub(entry, 1, cut - 1), string.sub(entry, cut + 1))
  end
end
redis.call('DEL', KEYS[3])
for entry in pairs(lex) do
  local cut = string.find(entry, '\0', 1, true)
  redis.call('ZADD', string.sub(entry, 1, cut - 1), 0, string.sub(entry, cut + 1))
  redis.call('SADD', KEYS[3], entry)
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"#;

/// What the sink extracts from a view: its version and the indexes it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    pub kind: Kind,
    pub id: String,
    pub version: u64,
    pub json: String,
    pub indexes: Vec<(String, i64)>,
    /// Entries of lexicographic indexes: (index key, member), score 0.
    pub lex: Vec<(String, String)>,
}

/// Decode a view of `kind` and compute its index memberships (pure).
pub fn upsert_for(keys: &Keys, kind: Kind, id: &str, value: &[u8]) -> Result<Upsert, ViewError> {
    match kind {
        Kind::User => upsert_of::<UserView>(keys, id, value),
        Kind::Vendor => upsert_of::<VendorView>(keys, id, value),
        Kind::Product => upsert_of::<ProductView>(keys, id, value),
        Kind::Order => upsert_of::<OrderView>(keys, id, value),
        Kind::Delivery => upsert_of::<DeliveryView>(keys, id, value),
        Kind::Notification => upsert_of::<NotificationView>(keys, id, value),
        Kind::Payment => upsert_of::<PaymentView>(keys, id, value),
        Kind::SaleTake => upsert_of::<SaleTakeView>(keys, id, value),
    }
}

fn upsert_of<V: View>(keys: &Keys, id: &str, value: &[u8]) -> Result<Upsert, ViewError> {
    let json = std::str::from_utf8(value)
        .map_err(|_| ViewError::NotUtf8(V::KIND))?
        .to_string();
    let view: V = decode(value)?;
    let mut indexes = view.indexes(keys);
    indexes.sort();
    indexes.dedup_by(|a, b| a.0 == b.0);
    let mut lex = view.lex_entries(keys);
    lex.sort();
    lex.dedup();
    Ok(Upsert {
        kind: V::KIND,
        id: id.to_string(),
        version: view.version(),
        json,
        indexes,
        lex,
    })
}

/// Run the upsert script on a connection. `Ok(true)` when the view was written.
pub fn apply_upsert(
    con: &mut dyn redis::ConnectionLike,
    script: &redis::Script,
    keys: &Keys,
    u: &Upsert,
) -> redis::RedisResult<bool> {
    let mut inv = script.prepare_invoke();
    inv.key(keys.view(u.kind, &u.id))
        .key(keys.memberships(u.kind, &u.id))
        .key(keys.lex_memberships(u.kind, &u.id))
        .arg(u.version.to_string())
        .arg(&u.json)
        .arg(keys.channel(u.kind, &u.id))
        .arg(&u.id)
        .arg(u.indexes.len().to_string());
    for (index, score) in &u.indexes {
        inv.arg(index).arg(score.to_string());
    }
    for (index, member) in &u.lex {
        inv.arg(index).arg(member);
    }
    let written: i64 = inv.invoke(con)?;
    Ok(written == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_indexes_follow_visibility() {
        let keys = Keys::new("t:");
        let mut p = serde_json::json!({
            "product_id": "p1", "vendor_id": "v1", "name": "n", "description": "d", "price": 5,
            "image_url": null, "public": true, "deleted": false,
            "stock": {"initial": 0, "added": 0, "available": 0, "reserved": 0, "sold": 0},
            "sale": null, "rejection": null, "updated_at": 7, "version": 3
        });
        let u = upsert_for(&keys, Kind::Product, "p1", p.to_string().as_bytes()).unwrap();
        assert_eq!(u.version, 3);
        assert_eq!(
            u.indexes,
            vec![
                ("t:idx:products:public".to_string(), 7),
                ("t:idx:products:vendor:v1".to_string(), 7)
            ]
        );
        p["public"] = false.into();
        let u = upsert_for(&keys, Kind::Product, "p1", p.to_string().as_bytes()).unwrap();
        assert_eq!(u.indexes, vec![("t:idx:products:vendor:v1".to_string(), 7)]);
        p["deleted"] = true.into();
        let u = upsert_for(&keys, Kind::Product, "p1", p.to_string().as_bytes()).unwrap();
        assert!(u.indexes.is_empty());
    }

    #[test]
    fn a_public_product_with_a_sale_not_closed_early_is_listed_by_opening_time() {
        let keys = Keys::new("t:");
        let mut p = serde_json::json!({
            "product_id": "p1", "vendor_id": "v1", "name": "n", "description": "d", "price": 5,
            "image_url": null, "public": true, "deleted": false,
            "stock": {"initial": 0, "added": 0, "available": 0, "reserved": 0, "sold": 0},
            "sale": {"terms": {"opens_at": 50, "closes_at": 90, "quantity": 3, "per_user_limit": 1},
                     "taken": 0, "epoch": 1},
            "rejection": null, "updated_at": 7, "version": 3
        });
        let u = upsert_for(&keys, Kind::Product, "p1", p.to_string().as_bytes()).unwrap();
        assert!(
            u.indexes.contains(&("t:idx:sales".to_string(), 50)),
            "{u:?}"
        );
        p["sale"]["closed_at"] = 60.into();
        let u = upsert_for(&keys, Kind::Product, "p1", p.to_string().as_bytes()).unwrap();
        assert!(u.indexes.iter().all(|(k, _)| k != "t:idx:sales"));
        p["sale"]["closed_at"] = serde_json::Value::Null;
        p["public"] = false.into();
        let u = upsert_for(&keys, Kind::Product, "p1", p.to_string().as_bytes()).unwrap();
        assert!(u.indexes.iter().all(|(k, _)| k != "t:idx:sales"));
        let take = serde_json::json!({"product_id": "p1", "username": "ann1", "epoch": 1,
            "taken": 2, "updated_at": 7, "version": 4});
        let u = upsert_for(
            &keys,
            Kind::SaleTake,
            "p1/ann1",
            take.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!((u.version, u.indexes.len()), (4, 0));
    }

    #[test]
    fn a_malformed_view_is_refused() {
        let keys = Keys::new("t:");
        assert!(matches!(
            upsert_for(&keys, Kind::Order, "o", b"{\"version\": 1}"),
            Err(ViewError::Decode {
                kind: Kind::Order,
                ..
            })
        ));
        assert!(matches!(
            upsert_for(&keys, Kind::User, "u", &[0xff, 0xfe]),
            Err(ViewError::NotUtf8(Kind::User))
        ));
    }
}
