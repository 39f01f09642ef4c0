//! A fixed number of sandbox slots, each on its own thread, behind one fair queue
//! ([`queue`]): requests are admitted by cost (in reviews, and by when they would be
//! answered), served a review at a time in turn, and dropped as soon as nobody waits for them.
//! Every guest answer is checked before it is believed; a sandbox that traps, runs past its
//! deadline, panics the host or answers something impossible is dropped and its slot is given
//! a fresh one from the snapshot.

mod gate;
mod queue;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use feelings_core::{Labels, Prediction};
use tokio::sync::oneshot;

use crate::metrics::PoolMetrics;
use crate::SandboxError;
pub use gate::Gate;
pub use queue::ADMISSION_SHARE;
use queue::{Price, Queue};
use worker::Slot;

/// Something that classifies reviews in isolation: one sandbox.
pub trait Instance: Send {
    /// Classifies `texts`, in order, within `deadline` (the instance's own when `None`).
    /// After an error that [`SandboxError::breaks_sandbox`] the instance is dropped.
    fn classify(
        &mut self,
        texts: &[String],
        deadline: Option<Duration>,
    ) -> Result<Vec<Prediction>, SandboxError>;
}

/// Where fresh instances come from (the pre-initialised component, in the gateway).
pub trait Instances: Send + Sync {
    /// A fresh instance, ready to classify.
    fn instance(&self) -> Result<Box<dyn Instance>, SandboxError>;
}

/// How the pool is sized.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Sandboxes classifying at the same time (one thread each).
    pub instances: usize,
    /// The most reviews that may wait; beyond it requests are turned away at once.
    pub queue: usize,
    /// The most reviews one guest call takes (from different requests, in turn). 1, the
    /// default, runs one review per call: inside the guest tract is no faster per review on
    /// a batch (measured), and one review per call lets requests take turns finely.
    pub max_batch: usize,
    /// Keep a sandbox for the next call instead of replacing it with a fresh one after each
    /// (the default, false: no guest state outlives the call that made it, and an idle slot
    /// holds no sandbox).
    pub reuse_sandboxes: bool,
    /// The cores' turns, shared with other pools: each guest call waits for one (none: the
    /// pool's own slots are its only limit).
    pub gate: Option<Arc<Gate>>,
    /// A review cost the limits cannot take (see [`crate::LimitCheck::slowest_review`]): a
    /// timed probe call slower than this is timed again, up to three times, and the fastest
    /// believed, so a moment of load on the machine does not refuse a start or an upload
    /// (none: one timed call). A deployment's recorded cost above it is not trusted either.
    pub probe_again_above: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            instances: 2,
            queue: 1024,
            max_batch: 1,
            reuse_sandboxes: false,
            gate: None,
            probe_again_above: None,
        }
    }
}

/// What every guest answer must agree with, and the review each sandbox is checked with.
#[derive(Debug, Clone)]
pub struct AnswerCheck {
    /// The bundle's labels: a prediction must carry the one its score decides.
    pub labels: Labels,
    /// The bundle's threshold: a prediction must be decided at it.
    pub threshold: f32,
    /// A review as long as the model reads: every sandbox classifies it before it serves,
    /// and its time is the first estimate of what a review costs.
    pub probe: String,
}

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Its time ran out (or its client left) before all of its reviews ran.
    #[error("the request's time ran out before it was classified")]
    Expired,
    /// A sandbox failed on one of its reviews.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// The answer to one request: its predictions, in order.
pub type JobResult = Result<Vec<Prediction>, JobError>;

/// A request turned away at once: the caller should try again later.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Overloaded {
    /// The queue holds as many reviews as it may.
    #[error("the queue is full ({waiting} reviews waiting, at most {capacity})")]
    Full {
        /// Reviews waiting.
        waiting: usize,
        /// The most that may wait.
        capacity: usize,
    },
    /// Taking turns with the requests already waiting, it would not be answered in time.
    #[error("the sandboxes are busy: this request would take about {estimate:.1?} of its {allowed:.1?} (it is admitted within two thirds)")]
    TooSlow {
        /// When it would be answered, from now.
        estimate: Duration,
        /// Its time.
        allowed: Duration,
    },
    /// The pool is shutting down.
    #[error("the server is shutting down")]
    Stopping,
}

/// What the pool's threads share.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    instances: Arc<dyn Instances>,
    check: AnswerCheck,
    metrics: PoolMetrics,
    /// Per slot: whether it can serve (it has a sandbox, or made its last one without error).
    live: Vec<AtomicBool>,
    /// Sandboxes alive now.
    alive: AtomicUsize,
    /// Slots in a guest call now.
    busy: AtomicUsize,
    gate: Option<Arc<Gate>>,
    /// What a review has been costing a sandbox lately (a moving average), in nanoseconds.
    review_nanos: AtomicU64,
    max_batch: usize,
    /// Whether a slot keeps its sandbox between calls ([`PoolOptions::reuse_sandboxes`]).
    reuse_sandboxes: bool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn review_cost(&self) -> Duration {
        Duration::from_nanos(self.review_nanos.load(Ordering::Relaxed))
    }

    /// Folds the time of one call of `reviews` reviews into the cost estimate.
    fn observe(&self, took: Duration, reviews: usize) {
        let sample = took.as_nanos() as u64 / reviews.max(1) as u64;
        let old = self.review_nanos.load(Ordering::Relaxed);
        self.review_nanos
            .store((old * 7 + sample * 3) / 10, Ordering::Relaxed);
    }

    fn set_live(&self, slot: usize, live: bool) {
        self.live[slot].store(live, Ordering::Relaxed);
    }

    /// Counts a sandbox made (`+1`) or dropped (`-1`).
    fn count_alive(&self, made: bool) {
        let now = if made {
            self.alive.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.alive.fetch_sub(1, Ordering::Relaxed) - 1
        };
        self.metrics.live_sandboxes.set(now as i64);
    }
}

/// The sandboxes and their queue.
pub struct Pool {
    shared: Arc<Shared>,
    slots: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `options.instances` slots. Unless `known_cost` (what a full-length review costs,
    /// measured before) is given, a sandbox first classifies the probe review (every answer
    /// checked, and timed: see [`worker::probe`]), so a broken component or bundle fails here,
    /// not on the first request; with `reuse_sandboxes` every slot's sandbox is probed.
    pub fn start(
        instances: Arc<dyn Instances>,
        options: &PoolOptions,
        check: AnswerCheck,
        metrics: PoolMetrics,
        known_cost: Option<Duration>,
    ) -> Result<Self, SandboxError> {
        let count = options.instances.max(1);
        let mut ready = Vec::with_capacity(count);
        let mut cost = known_cost.unwrap_or_default();
        let probes = match (known_cost, options.reuse_sandboxes) {
            (_, true) => count,
            (None, false) => 1,
            (Some(_), false) => 0,
        };
        for _ in 0..probes {
            let mut instance = instances.instance()?;
            metrics.instantiations.inc();
            let probed = worker::probe(instance.as_mut(), &check, options.probe_again_above)?;
            cost = cost.max(probed);
            ready.push(instance);
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(options.queue.max(1))),
            work: Condvar::new(),
            instances,
            check,
            metrics,
            live: (0..count).map(|_| AtomicBool::new(true)).collect(),
            alive: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            gate: options.gate.clone(),
            review_nanos: AtomicU64::new(cost.as_nanos() as u64),
            max_batch: options.max_batch.max(1),
            reuse_sandboxes: options.reuse_sandboxes,
        });
        // A probed sandbox has run the probe: only a reusing slot keeps it.
        if !shared.reuse_sandboxes {
            ready.clear();
        }
        let mut ready = ready.into_iter();
        let mut slots = Vec::with_capacity(count);
        for index in 0..count {
            let instance = ready.next();
            if instance.is_some() {
                shared.count_alive(true);
            }
            let slot = Slot::new(index, instance, shared.clone());
            let handle = std::thread::Builder::new()
                .name(format!("feelings-sandbox-{index}"))
                .spawn(move || slot.run())
                .map_err(|e| {
                    SandboxError::Component(format!("cannot start a sandbox thread: {e}"))
                })?;
            slots.push(handle);
        }
        Ok(Self { shared, slots })
    }

    /// Queues `texts`, to be answered within `timeout`; the receiver gets the predictions,
    /// in order. Turned away at once when the queue is full or the request could not be
    /// answered in time.
    pub fn submit(
        &self,
        texts: Vec<String>,
        timeout: Duration,
    ) -> Result<oneshot::Receiver<JobResult>, Overloaded> {
        let (reply, answer) = oneshot::channel();
        let price = Price {
            review: self.shared.review_cost(),
            sandboxes: self.shared.live.len(),
        };
        let mut queue = self.shared.queue();
        let now = Instant::now();
        let expires = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        let admitted = queue.admit(texts, reply, expires, price);
        self.shared.metrics.queue_depth.set(queue.waiting() as i64);
        drop(queue);
        match admitted {
            Ok(()) => {
                self.shared.work.notify_all();
                Ok(answer)
            }
            Err(e) => {
                self.shared.metrics.rejected.inc();
                Err(e)
            }
        }
    }

    /// Whether every slot can serve (none failed to make its last sandbox or lost it).
    pub fn is_ready(&self) -> bool {
        self.shared.live.iter().all(|l| l.load(Ordering::Relaxed))
    }

    /// Whether nothing waits and no slot is in a guest call.
    pub fn is_idle(&self) -> bool {
        let queue = self.shared.queue();
        queue.waiting() == 0 && self.shared.busy.load(Ordering::SeqCst) == 0
    }

    /// Sandboxes alive now.
    pub fn alive(&self) -> usize {
        self.shared.alive.load(Ordering::Relaxed)
    }

    /// What one review has been costing a sandbox lately (at start: the probe review).
    pub fn review_cost(&self) -> Duration {
        self.shared.review_cost()
    }
}

impl Drop for Pool {
    /// Admits nothing more, lets the slots finish the requests already admitted, then stops
    /// them.
    fn drop(&mut self) {
        self.shared.queue().closed = true;
        self.shared.work.notify_all();
        for slot in self.slots.drain(..) {
            let _ = slot.join();
        }
    }
}
