//! The users' search entries of user views stored before the search index existed, against the
//! real local Redis with a key prefix of its own: the sink's partition-0 task gives them their
//! entries once, skipping views the upsert already indexed, and marks it done.

use pickple_runtime::TestDriver;
use pickple_view_model::backfill::{backfill_user_search, BACKFILL_LUA};
use pickple_view_model::{apply_upsert, upsert_for, Keys, Kind, RedisConfig, UPSERT_LUA};
use redis::Commands;

fn user_json(name: &str, email: &str, status: &str, version: u64) -> String {
    serde_json::json!({
        "username": name, "nickname": name, "email": email, "password_hash": "",
        "role": "USER", "status": status, "rejection": null, "updated_at": 3, "version": version
    })
    .to_string()
}

/// A view as a sink without the search index wrote it: the hash and `idx:users`.
fn write_old(con: &mut redis::Connection, keys: &Keys, name: &str, json: &str) {
    let _: () = con
        .hset_multiple(
            keys.view(Kind::User, name),
            &[("version", "1"), ("json", json)],
        )
        .unwrap();
    let _: () = con.zadd(keys.users_all(), name, 3).unwrap();
}

fn search(con: &mut redis::Connection, keys: &Keys) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(keys.users_search())
        .arg(0)
        .arg(-1)
        .query(con)
        .unwrap()
}

#[test]
fn views_stored_before_the_search_index_are_given_their_entries_once() {
    let prefix = format!("bf{}:", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let redis = RedisConfig::local(prefix.clone());
    let keys = redis.keys();
    let mut con = redis.client().unwrap().get_connection().unwrap();
    write_old(
        &mut con,
        &keys,
        "ann1",
        &user_json("ann1", "Ann@X.io", "ACTIVE", 1),
    );
    write_old(
        &mut con,
        &keys,
        "bob1",
        &user_json("bob1", "bob@x.io", "DELETED", 1),
    );
    // Written by the upsert of today: indexed already.
    let u = upsert_for(
        &keys,
        Kind::User,
        "cat1",
        user_json("cat1", "cat@x.io", "ACTIVE", 1).as_bytes(),
    )
    .unwrap();
    assert!(apply_upsert(&mut con, &redis::Script::new(UPSERT_LUA), &keys, &u).unwrap());
    assert_eq!(search(&mut con, &keys), ["cat1\0cat1", "cat@x.io\0cat1"]);

    let ids: Vec<String> = ["ann1", "bob1", "cat1", "gone1"].map(String::from).to_vec();
    let script = redis::Script::new(BACKFILL_LUA);
    assert_eq!(
        backfill_user_search(&mut con, &script, &keys, &ids).unwrap(),
        2,
        "ann1 and bob1; cat1 has its entries, gone1 no view"
    );
    let expected = [
        "ann1\0ann1",
        "ann@x.io\0ann1",
        "bob1\0bob1",
        "cat1\0cat1",
        "cat@x.io\0cat1",
    ];
    assert_eq!(search(&mut con, &keys), expected);
    assert_eq!(
        backfill_user_search(&mut con, &script, &keys, &ids).unwrap(),
        0
    );

    // The next upsert of a backfilled view replaces its entries as for any other.
    let u = upsert_for(
        &keys,
        Kind::User,
        "ann1",
        user_json("ann1", "new@x.io", "ACTIVE", 2).as_bytes(),
    )
    .unwrap();
    assert!(apply_upsert(&mut con, &redis::Script::new(UPSERT_LUA), &keys, &u).unwrap());
    assert!(search(&mut con, &keys).contains(&"new@x.io\0ann1".to_string()));
    assert!(!search(&mut con, &keys).contains(&"ann@x.io\0ann1".to_string()));

    // The sink's partition-0 task does it on its punctuations, then marks it done.
    write_old(
        &mut con,
        &keys,
        "dan1",
        &user_json("dan1", "dan@x.io", "ACTIVE", 1),
    );
    let sink = pickple_views::ViewsSink::new(redis.clone(), 0);
    let mut d = TestDriver::new(sink, pickple_runtime::now_millis() + 60_000);
    d.advance(1).unwrap();
    assert!(search(&mut con, &keys).contains(&"dan@x.io\0dan1".to_string()));
    let marked: bool = con.exists(keys.backfilled("user-search")).unwrap();
    assert!(marked);

    let all: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut con)
        .unwrap();
    let _: () = con.del(all).unwrap();
}

/// A shop whose Redis holds no user yet (a fresh start): nothing to backfill, and the sink marks
/// it done on its first punctuation instead of failing on an empty Redis pipeline each second.
#[test]
fn a_sink_with_no_user_views_marks_the_backfill_done_at_once() {
    let prefix = format!("bf{}:", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let redis = RedisConfig::local(prefix.clone());
    let keys = redis.keys();
    let mut con = redis.client().unwrap().get_connection().unwrap();
    let script = redis::Script::new(BACKFILL_LUA);
    assert_eq!(
        backfill_user_search(&mut con, &script, &keys, &[]).unwrap(),
        0
    );
    let sink = pickple_views::ViewsSink::new(redis.clone(), 0);
    let mut d = TestDriver::new(sink, pickple_runtime::now_millis() + 60_000);
    d.advance(1).unwrap();
    let marked: bool = con.exists(keys.backfilled("user-search")).unwrap();
    assert!(marked, "no user to index: the backfill is done");
    let _: () = con.del(keys.backfilled("user-search")).unwrap();
}
