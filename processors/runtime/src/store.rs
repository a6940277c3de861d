//! Local state on sled: one tree per (store, partition), each holding its data and its
//! checkpoint, the changelog position it reflects (the offset of the next record to read), so
//! data and checkpoint move together in one atomic batch.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;

/// Data keys are prefixed so they never collide with the checkpoint keys.
const DATA: u8 = b'd';
/// The checkpoint as a consumer position: the offset of the next changelog record to read.
const POSITION: &[u8] = b"p";
/// The checkpoint as earlier versions wrote it: the offset of the last record applied. Read as
/// `offset + 1` and replaced by [`POSITION`] on the next write, so existing stores upgrade in
/// place.
const LAST_APPLIED: &[u8] = b"c";
/// The tree of input positions: per input topic and partition, the offset of the next record
/// to process, as of the last transaction applied here. Its name has no `/`, so it is no
/// store's tree.
const INPUTS: &str = "__inputs";

/// Key-value pairs read from a store, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Pending writes to one tree: key -> new value (`None` deletes).
pub(crate) type Layer = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Writes of one transaction, by store then partition. Nested rather than keyed by
/// `(String, i32)` so a lookup by `&str` needs no allocation (one per read showed in profiles).
pub(crate) type Writes = HashMap<String, HashMap<i32, Layer>>;

/// Add one step's writes to a transaction's, as partition `partition`'s (later writes win).
pub(crate) fn buffer(txn: &mut Writes, partition: i32, step: BTreeMap<String, Layer>) {
    for (store, kv) in step {
        txn.entry(store)
            .or_default()
            .entry(partition)
            .or_default()
            .extend(kv);
    }
}

/// The layer of `(store, partition)` in `writes`, if any.
pub(crate) fn layer<'w>(writes: &'w Writes, store: &str, partition: i32) -> Option<&'w Layer> {
    writes.get(store).and_then(|p| p.get(&partition))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("applying committed writes: {0}")]
    Apply(String),
}

/// All state stores of one runtime instance.
#[derive(Clone)]
pub struct StateStores {
    db: sled::Db,
    /// Open trees by store, then partition: opening by name on every read showed in profiles.
    trees: std::sync::Arc<std::sync::Mutex<HashMap<String, HashMap<i32, sled::Tree>>>>,
}

impl StateStores {
    /// Open (or create) the stores at `path`, with a page cache of `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Ok(StateStores {
            db: sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .open()?,
            trees: Default::default(),
        })
    }

    /// In-memory stores (test driver).
    pub fn temporary() -> Result<Self, StoreError> {
        Ok(StateStores {
            db: sled::Config::new().temporary(true).open()?,
            trees: Default::default(),
        })
    }

    fn tree(&self, store: &str, partition: i32) -> Result<sled::Tree, StoreError> {
        let mut trees = self.trees.lock().expect("tree cache lock");
        if let Some(tree) = trees.get(store).and_then(|p| p.get(&partition)) {
            return Ok(tree.clone());
        }
        let tree = self.db.open_tree(format!("{store}/{partition}"))?;
        trees
            .entry(store.to_string())
            .or_default()
            .insert(partition, tree.clone());
        Ok(tree)
    }

    pub fn get(
        &self,
        store: &str,
        partition: i32,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(store, partition)?
            .get(data_key(key))?
            .map(|v| v.to_vec()))
    }

    /// Entries with `from <= key < to`, in key order.
    pub fn range(
        &self,
        store: &str,
        partition: i32,
        from: &[u8],
        to: &[u8],
    ) -> Result<Entries, StoreError> {
        self.tree(store, partition)?
            .range(data_key(from)..data_key(to))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k[1..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// The changelog position this tree reflects: the offset of the next record to read.
    pub fn checkpoint(&self, store: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let tree = self.tree(store, partition)?;
        let offset = |v: sled::IVec| i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
        if let Some(position) = tree.get(POSITION)? {
            return Ok(Some(offset(position)));
        }
        Ok(tree.get(LAST_APPLIED)?.map(|v| offset(v) + 1))
    }

    /// Apply writes and move the checkpoint (a position), atomically for the tree.
    pub fn apply<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        store: &str,
        partition: i32,
        writes: impl IntoIterator<Item = (K, Option<V>)>,
        checkpoint: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(data_key(k.as_ref()), v.as_ref()),
                None => batch.remove(data_key(k.as_ref())),
            }
        }
        if let Some(position) = checkpoint {
            batch.insert(POSITION, &position.to_be_bytes());
            batch.remove(LAST_APPLIED);
        }
        self.tree(store, partition)?.apply_batch(batch)?;
        Ok(())
    }

    /// The input position this instance's state reflects for `topic`'s `partition`: the offset
    /// of the next record to process, as of the last committed transaction applied here.
    pub fn input_position(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        let tree = self.db.open_tree(INPUTS)?;
        Ok(tree
            .get(input_key(topic, partition))?
            .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes)))
    }

    /// Record the input positions a committed transaction reached.
    pub fn set_input_positions<'a>(
        &self,
        positions: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (topic, partition, offset) in positions {
            batch.insert(input_key(topic, partition), &offset.to_be_bytes());
        }
        self.db.open_tree(INPUTS)?.apply_batch(batch)?;
        Ok(())
    }

    /// Forget a tree (its changelog no longer matches it).
    pub fn wipe(&self, store: &str, partition: i32) -> Result<(), StoreError> {
        self.tree(store, partition)?.clear()?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Entries and key + value bytes per store, over every tree on this disk (a full scan: call
    /// it off the poll loop).
    pub fn stats(&self) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        let mut stats: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name).to_string();
            let Some((store, _partition)) = name.rsplit_once('/') else {
                continue; // sled's default tree
            };
            let entry = stats.entry(store.to_string()).or_default();
            for kv in self.db.open_tree(&name)?.iter() {
                let (k, v) = kv?;
                if k.first() == Some(&DATA) {
                    entry.0 += 1;
                    entry.1 += (k.len() - 1 + v.len()) as u64;
                }
            }
        }
        Ok(stats)
    }

    /// Bytes sled uses on disk (benchmarks report it).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn input_key(topic: &str, partition: i32) -> Vec<u8> {
    format!("{topic}/{partition}").into_bytes()
}

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA);
    k.extend_from_slice(key);
    k
}

/// Merge layered overlays onto a base listing (later layers win), restricted to `[from, to)`.
pub(crate) fn merge_range(base: Entries, layers: &[&Layer], from: &[u8], to: &[u8]) -> Entries {
    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = base.into_iter().collect();
    for layer in layers {
        let bounds = (Bound::Included(from.to_vec()), Bound::Excluded(to.to_vec()));
        for (k, v) in layer.range::<Vec<u8>, _>(bounds) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
    }
    merged.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_checkpoint_are_applied_together_and_ranges_merge_overlays() {
        let stores = StateStores::temporary().unwrap();
        assert_eq!(stores.checkpoint("s", 0).unwrap(), None);
        stores
            .apply(
                "s",
                0,
                vec![
                    (b"a".to_vec(), Some(b"1".to_vec())),
                    (b"b".to_vec(), Some(b"2".to_vec())),
                ],
                Some(7),
            )
            .unwrap();
        assert_eq!(stores.checkpoint("s", 0).unwrap(), Some(7));
        assert_eq!(stores.get("s", 0, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            stores.range("s", 0, b"", b"\xff").unwrap().len(),
            2,
            "the checkpoint is not data"
        );
        stores
            .apply(
                "s",
                1,
                vec![(b"c".to_vec(), Some(b"333".to_vec()))],
                Some(1),
            )
            .unwrap();
        assert_eq!(
            stores.stats().unwrap(),
            BTreeMap::from([("s".to_string(), (3, 2 + 2 + 4))]),
            "entries and bytes of every partition, checkpoints excluded"
        );
        assert_eq!(
            stores.get("s", 1, b"a").unwrap(),
            None,
            "partitions are separate trees"
        );

        let mut overlay = BTreeMap::new();
        overlay.insert(b"a".to_vec(), None);
        overlay.insert(b"c".to_vec(), Some(b"3".to_vec()));
        let base = stores.range("s", 0, b"", b"\xff").unwrap();
        let merged = merge_range(base, &[&overlay], b"", b"\xff");
        assert_eq!(
            merged,
            vec![
                (b"b".to_vec(), b"2".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );

        stores.wipe("s", 0).unwrap();
        assert_eq!(stores.checkpoint("s", 0).unwrap(), None);
        assert_eq!(stores.get("s", 0, b"b").unwrap(), None);
    }

    #[test]
    fn input_positions_are_kept_per_topic_and_partition_and_are_no_store_data() {
        let stores = StateStores::temporary().unwrap();
        assert_eq!(stores.input_position("in", 0).unwrap(), None);
        stores
            .set_input_positions([("in", 0, 7), ("in", 1, 3), ("other", 0, 9)])
            .unwrap();
        stores.set_input_positions([("in", 0, 12)]).unwrap();
        assert_eq!(stores.input_position("in", 0).unwrap(), Some(12));
        assert_eq!(stores.input_position("in", 1).unwrap(), Some(3));
        assert_eq!(stores.input_position("other", 0).unwrap(), Some(9));
        assert!(
            stores.stats().unwrap().is_empty(),
            "positions are not a store"
        );
    }

    #[test]
    fn a_checkpoint_written_as_last_applied_offset_reads_as_the_next_position() {
        let stores = StateStores::temporary().unwrap();
        // What earlier versions left on disk: the offset of the last record applied.
        stores
            .tree("s", 0)
            .unwrap()
            .insert(LAST_APPLIED, &41i64.to_be_bytes())
            .unwrap();
        assert_eq!(stores.checkpoint("s", 0).unwrap(), Some(42));
        stores
            .apply("s", 0, vec![(b"k".to_vec(), Some(b"v".to_vec()))], Some(50))
            .unwrap();
        assert_eq!(stores.checkpoint("s", 0).unwrap(), Some(50));
        assert_eq!(
            stores.tree("s", 0).unwrap().get(LAST_APPLIED).unwrap(),
            None
        );
    }
}
