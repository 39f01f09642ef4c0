//! A fixed set of sandboxes, each on its own thread, behind one bounded queue. Jobs that wait
//! together are classified in one guest call (micro-batching); a sandbox that traps or runs
//! past its deadline is dropped and replaced by a fresh one from the snapshot.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use feelings_core::Prediction;
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::{Sandbox, SandboxError, Sandboxes};

/// The deadline of the one review each sandbox classifies at start.
const START_CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// How the pool is sized.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Sandboxes classifying at the same time (one thread each).
    pub instances: usize,
    /// Jobs that may wait; beyond it requests are turned away at once.
    pub queue: usize,
    /// The most reviews one guest call takes when jobs are batched together. 1 (the default)
    /// turns batching off: inside the guest, tract is no faster per review on a batch of 16
    /// than on one (measured), so batching would only make the first request wait.
    pub max_batch: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            instances: 2,
            queue: 64,
            max_batch: 1,
        }
    }
}

/// The answer to one job.
pub type JobResult = Result<Vec<Prediction>, SandboxError>;

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<JobResult>,
}

/// The queue was full (or the pool is stopping): the caller should try again later.
#[derive(Debug, thiserror::Error)]
#[error("all sandboxes are busy and the queue is full")]
pub struct Overloaded;

/// The sandboxes and their queue.
pub struct Pool {
    sender: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl Pool {
    /// Starts `options.instances` sandboxes; each classifies a warm-up review before the pool
    /// counts as ready, so a broken component or bundle fails here, not on the first request.
    pub fn start(
        sandboxes: Arc<Sandboxes>,
        options: &PoolOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SandboxError> {
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(options.queue.max(1));
        let mut workers = Vec::with_capacity(options.instances);
        for i in 0..options.instances.max(1) {
            let mut sandbox = fresh(&sandboxes, &metrics)?;
            let check = ["A first review, to check the sandbox answers.".to_string()];
            sandbox.classify_within(&check, START_CHECK_DEADLINE)?;
            let worker = Worker {
                sandboxes: sandboxes.clone(),
                sandbox,
                receiver: receiver.clone(),
                metrics: metrics.clone(),
                max_batch: options.max_batch.max(1),
            };
            let handle = std::thread::Builder::new()
                .name(format!("feelings-sandbox-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| {
                    SandboxError::Component(format!("cannot start a sandbox thread: {e}"))
                })?;
            workers.push(handle);
        }
        Ok(Self {
            sender: Some(sender),
            workers,
            metrics,
        })
    }

    /// Queues `texts`; the receiver gets the predictions, in order.
    pub fn submit(&self, texts: Vec<String>) -> Result<oneshot::Receiver<JobResult>, Overloaded> {
        let (reply, answer) = oneshot::channel();
        let sender = self.sender.as_ref().ok_or(Overloaded)?;
        match sender.try_send(Job { texts, reply }) {
            Ok(()) => {
                self.metrics.queue_depth.set(sender.len() as i64);
                Ok(answer)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.rejected.inc();
                Err(Overloaded)
            }
        }
    }

    /// Whether every sandbox started and answered its first review.
    pub fn is_ready(&self) -> bool {
        self.sender.is_some()
    }
}

impl Drop for Pool {
    /// Lets the workers finish the jobs already queued, then stops them.
    fn drop(&mut self) {
        self.sender.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn fresh(sandboxes: &Sandboxes, metrics: &Metrics) -> Result<Sandbox, SandboxError> {
    let (sandbox, _) = sandboxes.instance()?;
    metrics.instantiations.inc();
    Ok(sandbox)
}

struct Worker {
    sandboxes: Arc<Sandboxes>,
    sandbox: Sandbox,
    receiver: Receiver<Job>,
    metrics: Arc<Metrics>,
    max_batch: usize,
}

impl Worker {
    fn run(mut self) {
        while let Ok(first) = self.receiver.recv() {
            let mut reviews = first.texts.len();
            let mut jobs = vec![first];
            while reviews < self.max_batch {
                match self.receiver.try_recv() {
                    Ok(job) => {
                        reviews += job.texts.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.metrics.queue_depth.set(self.receiver.len() as i64);
            self.serve(jobs);
        }
    }

    /// One guest call for all `jobs`; if it fails on a trap, each job again on its own, so only
    /// the one at fault gets the error.
    fn serve(&mut self, jobs: Vec<Job>) {
        if jobs.len() == 1 {
            let job = jobs.into_iter().next().expect("one job");
            let answer = self.classify(&job.texts);
            let _ = job.reply.send(answer);
            return;
        }
        let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
        match self.classify(&texts) {
            Ok(mut predictions) => {
                for job in jobs.into_iter().rev() {
                    let own = predictions.split_off(predictions.len() - job.texts.len());
                    let _ = job.reply.send(Ok(own));
                }
            }
            Err(_) => {
                for job in jobs {
                    let answer = self.classify(&job.texts);
                    let _ = job.reply.send(answer);
                }
            }
        }
    }

    /// Classifies in the current sandbox; replaces it when it traps.
    fn classify(&mut self, texts: &[String]) -> JobResult {
        self.metrics.batch_size.observe(texts.len() as f64);
        let answer = self.sandbox.classify(texts);
        if let Err(SandboxError::Trap(_) | SandboxError::Deadline(_)) = &answer {
            self.metrics.traps.inc();
            match fresh(&self.sandboxes, &self.metrics) {
                Ok(sandbox) => self.sandbox = sandbox,
                Err(e) => tracing::error!("cannot replace a broken sandbox: {e}"),
            }
        }
        answer
    }
}
