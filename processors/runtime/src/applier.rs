//! Committed writes go to sled on a thread of their own: applying ~10,000 keys took a tenth of
//! the poll loop's time, which another core can do while the loop goes on. One transaction is
//! in flight at a time, so every tree moves in commit order, and until it has landed its writes
//! stay readable from memory ([`Applier::pending`]).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::store::{StateStores, StoreError, Writes};

/// One committed transaction: its writes, the changelog topic of each store written, and the
/// offset of the last changelog record per (changelog topic, partition) to checkpoint.
pub(crate) struct Committed {
    pub writes: Arc<Writes>,
    pub changelogs: HashMap<String, String>,
    pub checkpoints: HashMap<String, HashMap<i32, i64>>,
}

pub(crate) struct Applier {
    jobs: Option<Sender<Committed>>,
    done: Receiver<Result<(), StoreError>>,
    thread: Option<JoinHandle<()>>,
    /// The writes sent to the thread and not yet known to be in sled.
    pending: Option<Arc<Writes>>,
}

impl Applier {
    pub fn start(stores: StateStores) -> Result<Applier, StoreError> {
        let (jobs, inbox) = mpsc::channel::<Committed>();
        let (outbox, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-apply".into())
            .spawn(move || {
                for committed in inbox {
                    if outbox.send(apply(&stores, &committed)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::Apply(e.to_string()))?;
        Ok(Applier {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            pending: None,
        })
    }

    /// Committed writes not yet in sled, for reads.
    pub fn pending(&self) -> Option<&Writes> {
        self.pending.as_deref()
    }

    /// Hand a committed transaction over, after the previous one has landed.
    pub fn submit(&mut self, committed: Committed) -> Result<(), StoreError> {
        self.settle()?;
        let writes = committed.writes.clone();
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(committed).ok())
            .ok_or_else(|| StoreError::Apply("the store-apply thread is gone".into()))?;
        self.pending = Some(writes);
        Ok(())
    }

    /// Forget the pending writes if they have landed, without waiting.
    pub fn poll(&mut self) -> Result<(), StoreError> {
        if self.pending.is_some() {
            match self.done.try_recv() {
                Ok(result) => {
                    self.pending = None;
                    result?;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Err(gone()),
            }
        }
        Ok(())
    }

    /// Wait until the pending writes are in sled.
    pub fn settle(&mut self) -> Result<(), StoreError> {
        if self.pending.take().is_some() {
            self.done.recv().map_err(|_| gone())??;
        }
        Ok(())
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has applied what it was given.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn gone() -> StoreError {
    StoreError::Apply("the store-apply thread stopped".into())
}

fn apply(stores: &StateStores, committed: &Committed) -> Result<(), StoreError> {
    for (store, partitions) in committed.writes.iter() {
        let topic = &committed.changelogs[store];
        for (partition, kv) in partitions {
            let checkpoint = committed
                .checkpoints
                .get(topic)
                .and_then(|c| c.get(partition))
                .copied();
            let kv = kv.iter().map(|(k, v)| (k, v.as_ref()));
            stores.apply(store, *partition, kv, checkpoint)?;
        }
    }
    Ok(())
}
