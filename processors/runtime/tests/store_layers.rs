//! The test driver's store layers: a processor reads through the open transaction's writes, the
//! committed writes the applier still holds, and sled, as in the runtime.

use pickple_runtime::{Context, ProcessError, Processor, Record, TestDriver};
use pickple_schemas::RecordHeaders;

/// `set k v` writes `v` under `k`; `del k` deletes `k`; `read` sends every key it sees, one
/// output per key read with `get` and one listing of `range`.
struct Kv;

impl Processor for Kv {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let command: String = record.decode()?;
        let words: Vec<&str> = command.split(' ').collect();
        match words.as_slice() {
            ["set", k, v] => ctx.put("kv", k, &v.to_string()),
            ["del", k] => ctx.delete("kv", k),
            ["read"] => {
                for k in ["a", "b", "c", "d"] {
                    let v: Option<String> = ctx.get("kv", k)?;
                    ctx.send_value("got", k, "Got", &v);
                }
                let all: Vec<String> = ctx
                    .range::<String>("kv", "", "\u{10ffff}")?
                    .into_iter()
                    .map(|(k, v)| format!("{}={v}", String::from_utf8_lossy(&k)))
                    .collect();
                ctx.send_value("listed", "all", "Listed", &all);
            }
            _ => return Err(ProcessError::Invalid(format!("unknown command {command}"))),
        }
        Ok(())
    }
}

fn pipe(d: &mut TestDriver<Kv>, command: &str) {
    let value = serde_json::to_vec(command).unwrap();
    d.pipe_raw(
        "commands",
        Some(b"x"),
        Some(&value),
        RecordHeaders::new("Command", "cmd"),
    )
    .unwrap();
}

#[test]
fn a_step_reads_through_the_open_transaction_the_applier_and_sled() {
    let mut d = TestDriver::with_store_layers(Kv, 1_000);

    // Layer 3, sled: committed and applied.
    pipe(&mut d, "set a sled");
    pipe(&mut d, "set b sled");
    pipe(&mut d, "set d sled");
    d.commit();
    d.settle();
    assert_eq!(d.get_applied::<String>("kv", "a").as_deref(), Some("sled"));

    // Layer 2, the applier: committed, not applied yet.
    pipe(&mut d, "set b applier");
    pipe(&mut d, "set c applier");
    d.commit();
    assert_eq!(
        d.get_applied::<String>("kv", "b").as_deref(),
        Some("sled"),
        "committed writes reach sled only when applied"
    );
    assert_eq!(d.get::<String>("kv", "b").as_deref(), Some("applier"));

    // Layer 1, the open transaction.
    pipe(&mut d, "set c txn");
    pipe(&mut d, "del d");
    assert_eq!(d.get::<String>("kv", "c").as_deref(), Some("txn"));
    assert_eq!(
        d.get::<String>("kv", "d"),
        None,
        "deleted in the open transaction"
    );
    assert_eq!(d.get_applied::<String>("kv", "d").as_deref(), Some("sled"));

    pipe(&mut d, "read");
    assert!(
        d.take_outputs("got").is_empty(),
        "outputs of the open transaction are not visible before it commits"
    );
    d.commit();
    let got: Vec<Option<String>> = d.take("got");
    assert_eq!(
        got,
        [
            Some("sled".to_string()),
            Some("applier".to_string()),
            Some("txn".to_string()),
            None
        ],
        "a from sled, b from the applier over sled, c from the transaction over the applier, d deleted"
    );
    let listed: Vec<Vec<String>> = d.take("listed");
    assert_eq!(listed, [["a=sled", "b=applier", "c=txn"]]);

    // The first commit after the applier's is applied before the next is held.
    assert_eq!(
        d.get_applied::<String>("kv", "b").as_deref(),
        Some("applier")
    );
    assert_eq!(
        d.get_applied::<String>("kv", "c").as_deref(),
        Some("applier")
    );
    d.settle();
    assert_eq!(d.get_applied::<String>("kv", "c").as_deref(), Some("txn"));
    assert_eq!(d.get_applied::<String>("kv", "d"), None);
}

#[test]
fn the_default_driver_commits_and_applies_every_step_at_once() {
    let mut d = TestDriver::new(Kv, 1_000);
    pipe(&mut d, "set a one");
    assert_eq!(d.get_applied::<String>("kv", "a").as_deref(), Some("one"));
    pipe(&mut d, "read");
    let got: Vec<Option<String>> = d.take("got");
    assert_eq!(got[0].as_deref(), Some("one"));
}

#[test]
fn a_dead_letter_of_the_open_transaction_appears_when_it_commits() {
    let mut d = TestDriver::with_store_layers(Kv, 1_000);
    pipe(&mut d, "set a kept");
    pipe(&mut d, "bogus");
    assert!(d.dead_letters().is_empty());
    d.commit();
    assert_eq!(d.dead_letters().len(), 1);
    assert!(d.dead_letters()[0].reason.contains("unknown command bogus"));
    assert_eq!(d.get::<String>("kv", "a").as_deref(), Some("kept"));
}
