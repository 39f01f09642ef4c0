//! One sandbox slot: a thread that takes reviews from the queue, classifies them in its
//! sandbox, checks the answer, and replaces the sandbox when it breaks.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use feelings_core::Prediction;

use super::queue::Review;
use super::{AnswerCheck, Instance, JobError, Shared};
use crate::SandboxError;

/// The deadline of the probe review at start (a loaded machine may be slow to start).
const PROBE_DEADLINE: Duration = Duration::from_secs(60);

/// The longest pause between attempts to make a fresh sandbox.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// The most calls of the probe review timed at start (see [`probe`]).
const PROBE_TIMINGS: usize = 3;
const _: () = assert!(PROBE_TIMINGS > 0);

/// Classifies the probe review in `instance`, checking every answer, and returns the time of a
/// call: the second one (the first pays for pages touched for the first time), unless it is
/// slower than `again_above`; then it is timed again, up to [`PROBE_TIMINGS`] calls in all,
/// and the fastest is returned: what a review costs a sandbox with nothing else to do, the
/// figure the limits are checked against (a call on a busy machine can take several times as
/// long). The cost is also admission's first estimate (which then follows what calls cost)
/// and what a deployment's record keeps for its next warm start.
pub(super) fn probe(
    instance: &mut dyn Instance,
    check: &AnswerCheck,
    again_above: Option<Duration>,
) -> Result<Duration, SandboxError> {
    let texts = [check.probe.clone()];
    check_answer(instance.classify(&texts, Some(PROBE_DEADLINE))?, 1, check)?;
    let mut fastest = Duration::MAX;
    for _ in 0..PROBE_TIMINGS {
        let started = Instant::now();
        check_answer(instance.classify(&texts, Some(PROBE_DEADLINE))?, 1, check)?;
        fastest = fastest.min(started.elapsed());
        if again_above.is_none_or(|slow| fastest <= slow) {
            break;
        }
    }
    Ok(fastest)
}

/// Believes a guest's answer only if it has one prediction per review, each a probability,
/// decided at the bundle's threshold and labelled as its score decides.
fn check_answer(
    predictions: Vec<Prediction>,
    reviews: usize,
    check: &AnswerCheck,
) -> Result<Vec<Prediction>, SandboxError> {
    if predictions.len() != reviews {
        return Err(SandboxError::Invalid(format!(
            "{} predictions for {reviews} reviews",
            predictions.len()
        )));
    }
    for (i, p) in predictions.iter().enumerate() {
        if !(0.0..=1.0).contains(&p.score) {
            return Err(SandboxError::Invalid(format!(
                "review {i}: the score {} is not a probability",
                p.score
            )));
        }
        if p.threshold.to_bits() != check.threshold.to_bits() {
            return Err(SandboxError::Invalid(format!(
                "review {i}: decided at {} instead of the bundle's threshold {}",
                p.threshold, check.threshold
            )));
        }
        let decided = check.labels.decide(p.score, check.threshold);
        if p.label != decided {
            return Err(SandboxError::Invalid(format!(
                "review {i}: labelled {:?} where its score {} means {decided:?}",
                p.label, p.score
            )));
        }
    }
    Ok(predictions)
}

/// One slot of the pool and the sandbox it holds (none while it cannot make one).
pub(super) struct Slot {
    index: usize,
    instance: Option<Box<dyn Instance>>,
    shared: Arc<Shared>,
}

impl Slot {
    pub(super) fn new(
        index: usize,
        instance: Option<Box<dyn Instance>>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            index,
            instance,
            shared,
        }
    }

    /// Serves until the pool stops and its queue is empty. Unless the pool reuses sandboxes,
    /// a slot makes a sandbox for each call once it has the call's reviews and its turn on a
    /// core, and drops it after: a call never meets state another left, and an idle slot holds
    /// nothing.
    pub(super) fn run(mut self) {
        loop {
            if self.shared.reuse_sandboxes && self.instance.is_none() && !self.replace() {
                return;
            }
            let Some(batch) = self.next_batch() else {
                return;
            };
            let shared = self.shared.clone();
            let turn = shared.gate.as_ref().map(|gate| gate.turn());
            let served = (self.instance.is_some() || self.replace()).then(|| self.serve(batch));
            drop(turn);
            if served.is_none() {
                self.shared.busy.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }

    fn drop_instance(&mut self) {
        if self.instance.take().is_some() {
            self.shared.count_alive(false);
        }
    }

    /// Waits for reviews; `None` once the pool stops and nothing is left.
    fn next_batch(&self) -> Option<Vec<Review>> {
        let mut queue = self.shared.queue();
        loop {
            let (batch, dropped) = queue.take(self.shared.max_batch, Instant::now());
            self.shared.metrics.abandoned.inc_by(dropped as u64);
            self.shared.metrics.queue_depth.set(queue.waiting() as i64);
            if !batch.is_empty() {
                self.shared.busy.fetch_add(1, Ordering::SeqCst);
                return Some(batch);
            }
            if queue.closed {
                return None;
            }
            queue = self
                .shared
                .work
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// One guest call for the batch; if it breaks the sandbox, each review again on its own
    /// in a fresh one, so only the request at fault gets the error. The slot is no longer busy
    /// (and, unless sandboxes are reused, holds none) when the answers go out.
    fn serve(&mut self, mut batch: Vec<Review>) {
        let texts: Vec<String> = batch
            .iter_mut()
            .map(|r| std::mem::take(&mut r.text))
            .collect();
        let answers: Vec<Result<Prediction, JobError>> = match self.call(&texts) {
            Ok(predictions) => predictions.into_iter().map(Ok).collect(),
            Err(e) if texts.len() > 1 && e.breaks_sandbox() => {
                texts.iter().map(|text| self.call_alone(text)).collect()
            }
            Err(e) => texts.iter().map(|_| Err(e.clone().into())).collect(),
        };
        // Done with the sandbox before anyone hears back: a client that reads the metrics
        // next sees the slot idle and holding nothing.
        if !self.shared.reuse_sandboxes {
            self.drop_instance();
        }
        self.shared.busy.fetch_sub(1, Ordering::SeqCst);
        let mut queue = self.shared.queue();
        for (review, answer) in batch.iter().zip(answers) {
            queue.answer(review, answer);
        }
    }

    fn call_alone(&mut self, text: &str) -> Result<Prediction, JobError> {
        if self.instance.is_none() && !self.replace() {
            let stopped = "the server stopped before a fresh sandbox could be made";
            return Err(SandboxError::Component(stopped.into()).into());
        }
        let mut predictions = self.call(&[text.to_string()])?;
        Ok(predictions.remove(0))
    }

    /// Classifies in this slot's sandbox and checks the answer; a sandbox that breaks is
    /// dropped (the slot is not live until it has another).
    fn call(&mut self, texts: &[String]) -> Result<Vec<Prediction>, SandboxError> {
        let instance = self
            .instance
            .as_mut()
            .expect("a slot serves only with a sandbox");
        self.shared.metrics.batch_size.observe(texts.len() as f64);
        let started = Instant::now();
        let answer = catch_unwind(AssertUnwindSafe(|| instance.classify(texts, None)))
            .unwrap_or_else(|panic| Err(SandboxError::Crashed(panic_message(&*panic))))
            .and_then(|predictions| check_answer(predictions, texts.len(), &self.shared.check));
        match &answer {
            Ok(_) => self.shared.observe(started.elapsed(), texts.len()),
            Err(e) if e.breaks_sandbox() => {
                tracing::warn!(slot = self.index, "dropping the sandbox: {e}");
                self.shared.metrics.traps.inc();
                self.drop_instance();
                self.shared.set_live(self.index, false);
            }
            Err(_) => {}
        }
        answer
    }

    /// Gives this slot a fresh sandbox, retrying with a growing pause while none can be made
    /// (the slot is not live meanwhile); false if the pool stops first.
    fn replace(&mut self) -> bool {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.shared.instances.instance() {
                Ok(instance) => {
                    self.shared.metrics.instantiations.inc();
                    self.instance = Some(instance);
                    self.shared.count_alive(true);
                    self.shared.set_live(self.index, true);
                    return true;
                }
                Err(e) => {
                    self.shared.set_live(self.index, false);
                    tracing::error!(
                        slot = self.index,
                        "cannot make a sandbox (next try in {pause:?}): {e}"
                    );
                }
            }
            if self.shared.queue().closed {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
