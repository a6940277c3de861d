//! One task (Kafka Streams' `StreamTask`): partition `p` of every input topic and tree
//! `<store>/<p>` of every store, with its processor, where it is in its life (restoring its
//! stores, or running) and its retry back-off. A step runs the processor on one record or one
//! punctuation and says what to do with the outcome; the transaction around the step is the
//! engine's (or the test driver's).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pickple_schemas::RecordHeaders;
use tracing::Span;

use crate::context::{Cause, Context, Output, StoreView};
use crate::processor::{ProcessError, Processor, Record};
use crate::store::Layer;
use crate::Millis;

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Its stores are being brought up to their changelogs' ends by restore job `job`; its
    /// inputs are paused meanwhile.
    Restoring {
        job: u64,
        /// Store-partitions of the task the job has yet to finish.
        stores_left: usize,
        /// Changelog records applied so far.
        records: u64,
        since: Instant,
    },
    Running,
}

/// The back-off of a task whose processor asked for a record to be retried: its inputs are
/// paused for a delay that doubles from [`Backoff::FIRST`] to [`Backoff::LONGEST`] while the
/// record keeps failing, and starts over once a record succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    next_delay: Duration,
    /// While paused: when the inputs are due to be resumed.
    until: Option<Instant>,
    /// Failures in a row.
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next_delay: Self::FIRST,
            until: None,
            failures: 0,
        }
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const LONGEST: Duration = Duration::from_secs(5);

    /// A record failed at `now`: pause until the returned instant.
    pub fn failed(&mut self, now: Instant) -> Instant {
        let until = now + self.next_delay;
        self.until = Some(until);
        self.next_delay = (self.next_delay * 2).min(Self::LONGEST);
        self.failures += 1;
        until
    }

    /// A record went through: the next failure waits the shortest delay again.
    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    /// Whether the task is paused, waiting to retry.
    pub fn is_waiting(&self) -> bool {
        self.until.is_some()
    }

    /// When the wait ends, while waiting.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Whether the wait is over at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now >= until)
    }

    /// The inputs were resumed; the delay keeps growing until a record succeeds.
    pub fn resumed(&mut self) {
        self.until = None;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// What to do with the outcome of one step.
pub(crate) enum Step {
    /// Keep the step's writes and outputs in the transaction.
    Keep {
        writes: BTreeMap<String, Layer>,
        outputs: Vec<Output>,
        commit_requested: bool,
    },
    /// The step can never succeed: dead-letter its input (a punctuation's effects are dropped).
    Refuse(String),
    /// A transient failure: process the record again after the task's back-off.
    Retry(String),
}

/// A step's outcome, and the span it ran in (a traced record's, or a punctuation's that sent
/// something): keep it entered while handling the outcome, so those log lines carry the trace.
pub(crate) struct Outcome {
    pub step: Step,
    pub span: Option<Span>,
}

/// Settings of a step that are the instance's, not the task's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepSettings<'a> {
    /// The application's name, for spans.
    pub app: &'a str,
    /// The clock a step reads; `None` reads the wall clock on first use.
    pub now: Option<Millis>,
    /// The size guard (`PICKPLE_MAX_VALUE_BYTES`).
    pub max_value_bytes: usize,
}

pub(crate) struct Task<P> {
    partition: i32,
    processor: P,
    lifecycle: Lifecycle,
    backoff: Backoff,
}

impl<P: Processor> Task<P> {
    pub fn new(partition: i32, processor: P, lifecycle: Lifecycle) -> Self {
        Task {
            partition,
            processor,
            lifecycle,
            backoff: Backoff::default(),
        }
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn lifecycle_mut(&mut self) -> &mut Lifecycle {
        &mut self.lifecycle
    }

    pub fn is_running(&self) -> bool {
        self.lifecycle == Lifecycle::Running
    }

    /// Whether its records may be processed now: running, and not waiting to retry.
    pub fn takes_records(&self) -> bool {
        self.is_running() && !self.backoff.is_waiting()
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    pub fn backoff_mut(&mut self) -> &mut Backoff {
        &mut self.backoff
    }

    /// Give the processor back (the task is closed; its processor is parked for later).
    pub fn into_processor(self) -> P {
        self.processor
    }

    /// Run the processor on one record. A traced record runs in its span and its outputs
    /// continue the trace; the size guard refuses a step that writes a value over the limit.
    pub fn process(
        &mut self,
        view: StoreView<'_>,
        record: &Record<'_>,
        settings: StepSettings<'_>,
    ) -> Outcome {
        let traced = crate::trace::record_span(
            &record.headers,
            settings.app,
            record.topic,
            record.partition,
            record.offset,
        );
        let (span, onward) = match traced {
            Some((span, onward)) => (Some(span), Some(onward)),
            None => (None, None),
        };
        let _entered = span.as_ref().map(Span::enter);
        let cause = Cause::Record {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
        };
        let parent = onward.as_ref().unwrap_or(&record.headers);
        let mut ctx = Context::new(view, settings.now, parent, cause);
        let step = match self.processor.process(&mut ctx, record) {
            Ok(()) => {
                let (writes, outputs, commit_requested) = ctx.into_effects();
                kept(writes, outputs, commit_requested, settings.max_value_bytes)
            }
            Err(ProcessError::Invalid(reason)) => Step::Refuse(reason),
            Err(ProcessError::Retry(reason)) => Step::Retry(reason),
        };
        drop(_entered);
        Outcome { step, span }
    }

    /// Run the punctuator. Its outputs start a trace of their own when it sent any. A
    /// punctuation has no record to dead-letter: a refused one (over the size guard) and a
    /// failed one are dropped, and it runs again next interval.
    pub fn punctuate(
        &mut self,
        view: StoreView<'_>,
        headers: &RecordHeaders,
        settings: StepSettings<'_>,
    ) -> Result<Outcome, ProcessError> {
        let cause = Cause::Named(format!("punctuate/{}", self.partition));
        let mut ctx = Context::new(view, settings.now, headers, cause);
        self.processor.punctuate(&mut ctx)?;
        let (writes, mut outputs, _) = ctx.into_effects();
        let span = crate::trace::punctuation_span(settings.app, self.partition, &mut outputs);
        let step = kept(writes, outputs, false, settings.max_value_bytes);
        Ok(Outcome { step, span })
    }
}

fn kept(
    writes: BTreeMap<String, Layer>,
    outputs: Vec<Output>,
    commit_requested: bool,
    max_value_bytes: usize,
) -> Step {
    match crate::limits::oversized(&writes, &outputs, max_value_bytes) {
        Some(reason) => Step::Refuse(reason),
        None => Step::Keep {
            writes,
            outputs,
            commit_requested,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_100_ms_to_a_cap_and_starts_over_after_a_success() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert!(!b.is_waiting());
        let delays: Vec<Duration> = (0..8).map(|_| b.failed(t0) - t0).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.failures(), 8);

        b.succeeded();
        assert!(!b.is_waiting());
        assert_eq!(b.failed(t0) - t0, Backoff::FIRST, "reset on success");
    }

    #[test]
    fn a_backoff_is_due_at_its_end_and_keeps_growing_across_a_resume() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let until = b.failed(t0);
        assert!(b.is_waiting());
        assert!(!b.is_due(t0 + Duration::from_millis(99)));
        assert!(b.is_due(until));
        b.resumed();
        assert!(
            !b.is_waiting() && !b.is_due(until),
            "resumed: no longer waiting"
        );
        assert_eq!(
            b.failed(until) - until,
            Duration::from_millis(200),
            "the record failed again: the next wait is longer"
        );
    }
}
