//! Committed writes go to sled on a thread of their own: applying ~10,000 keys took a tenth of
//! the poll loop's time, which another core can do while the loop goes on. One transaction is
//! in flight at a time, so every tree moves in commit order, and until it has landed its writes
//! stay readable from memory ([`Applier::pending`]).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::store::{StateStores, StoreError, Writes};

/// One committed transaction: its writes, and per store and partition the changelog position
/// the tree reflects once they are applied (its checkpoint), and the input positions the
/// transaction committed (physical topic, partition, next offset).
pub(crate) struct Committed {
    pub writes: Arc<Writes>,
    pub checkpoints: HashMap<String, HashMap<i32, i64>>,
    pub inputs: Vec<(String, i32, i64)>,
}

pub(crate) struct Applier {
    worker: Worker,
    /// The writes handed over and not yet known to be in sled.
    pending: Option<Arc<Writes>>,
}

enum Worker {
    /// The instance's `store-apply` thread.
    Thread {
        jobs: Option<Sender<Committed>>,
        done: Receiver<Result<(), StoreError>>,
        thread: Option<JoinHandle<()>>,
    },
    /// The test driver's: the transaction is applied when the driver settles it, so that a test
    /// can read while its writes are still pending, which the thread makes a matter of luck.
    OnSettle {
        stores: StateStores,
        held: Option<Committed>,
    },
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
            worker: Worker::Thread {
                jobs: Some(jobs),
                done,
                thread: Some(thread),
            },
            pending: None,
        })
    }

    /// An applier without a thread: a transaction is applied by [`settle`](Self::settle) (or by
    /// the next [`submit`](Self::submit)), on the caller's thread.
    pub fn on_settle(stores: StateStores) -> Applier {
        Applier {
            worker: Worker::OnSettle { stores, held: None },
            pending: None,
        }
    }

    /// Committed writes not yet in sled, for reads.
    pub fn pending(&self) -> Option<&Writes> {
        self.pending.as_deref()
    }

    /// Hand a committed transaction over, after the previous one has landed.
    pub fn submit(&mut self, committed: Committed) -> Result<(), StoreError> {
        self.settle()?;
        let writes = committed.writes.clone();
        match &mut self.worker {
            Worker::Thread { jobs, .. } => jobs
                .as_ref()
                .and_then(|jobs| jobs.send(committed).ok())
                .ok_or_else(|| StoreError::Apply("the store-apply thread is gone".into()))?,
            Worker::OnSettle { held, .. } => *held = Some(committed),
        }
        self.pending = Some(writes);
        Ok(())
    }

    /// Forget the pending writes if they have landed, without waiting.
    pub fn poll(&mut self) -> Result<(), StoreError> {
        let Worker::Thread { done, .. } = &self.worker else {
            return Ok(());
        };
        if self.pending.is_some() {
            match done.try_recv() {
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
        if self.pending.take().is_none() {
            return Ok(());
        }
        match &mut self.worker {
            Worker::Thread { done, .. } => done.recv().map_err(|_| gone())?,
            Worker::OnSettle { stores, held } => match held.take() {
                Some(committed) => apply(stores, &committed),
                None => Ok(()),
            },
        }
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        if let Worker::Thread { jobs, thread, .. } = &mut self.worker {
            // Closing the channel ends the thread once it has applied what it was given.
            jobs.take();
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn gone() -> StoreError {
    StoreError::Apply("the store-apply thread stopped".into())
}

fn apply(stores: &StateStores, committed: &Committed) -> Result<(), StoreError> {
    for (store, partitions) in committed.writes.iter() {
        for (partition, kv) in partitions {
            let checkpoint = committed
                .checkpoints
                .get(store)
                .and_then(|c| c.get(partition))
                .copied();
            let kv = kv.iter().map(|(k, v)| (k, v.as_ref()));
            stores.apply(store, *partition, kv, checkpoint)?;
        }
    }
    // After the state: a position is never ahead of the state it stands for.
    if !committed.inputs.is_empty() {
        stores.set_input_positions(
            committed
                .inputs
                .iter()
                .map(|(t, p, o)| (t.as_str(), *p, *o)),
        )?;
    }
    Ok(())
}
