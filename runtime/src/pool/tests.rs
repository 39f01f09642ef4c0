//! The pool with fake sandboxes (no wasmtime): turns, abandoned work, checked answers,
//! replaced slots and readiness.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use feelings_core::{Labels, Prediction};

use super::{AnswerCheck, Gate, Instance, Instances, JobError, Pool, PoolOptions};
use crate::metrics::Metrics;
use crate::SandboxError;

/// A fake sandbox: `slow N` takes N ms; the first text `panic` panics, `short` answers too
/// little, `nan` answers NaN; anything else is negative at 0.25.
struct Fake;

impl Instance for Fake {
    fn classify(
        &mut self,
        texts: &[String],
        _: Option<Duration>,
    ) -> Result<Vec<Prediction>, SandboxError> {
        let mut answers = Vec::new();
        for text in texts {
            if let Some(ms) = text.strip_prefix("slow ") {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
            }
            answers.push(Prediction {
                label: "negative".into(),
                score: 0.25,
                threshold: 0.5,
                truncated: false,
            });
        }
        match texts[0].as_str() {
            "panic" => panic!("the host broke"),
            "short" => {
                answers.pop();
            }
            "nan" => answers[0].score = f32::NAN,
            _ => {}
        }
        Ok(answers)
    }
}

/// Makes fakes, or fails to while `broken` is set; counts what it made.
#[derive(Default)]
struct Factory {
    broken: AtomicBool,
    made: AtomicUsize,
}

impl Instances for Factory {
    fn instance(&self) -> Result<Box<dyn Instance>, SandboxError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(SandboxError::Component(
                "no memory left for a sandbox".into(),
            ));
        }
        self.made.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Fake))
    }
}

fn pool(factory: &Arc<Factory>, instances: usize, max_batch: usize) -> Pool {
    pool_with(factory, instances, max_batch, false)
}

fn pool_with(factory: &Arc<Factory>, instances: usize, max_batch: usize, reuse: bool) -> Pool {
    gated_pool(factory, instances, max_batch, reuse, None)
}

fn gated_pool(
    factory: &Arc<Factory>,
    instances: usize,
    max_batch: usize,
    reuse: bool,
    gate: Option<Arc<Gate>>,
) -> Pool {
    let check = AnswerCheck {
        labels: Labels::default(),
        threshold: 0.5,
        probe: "a probe".into(),
    };
    let options = PoolOptions {
        instances,
        queue: 1000,
        max_batch,
        reuse_sandboxes: reuse,
        gate,
        probe_again_above: None,
    };
    let metrics = Metrics::new().deployment("test");
    Pool::start(factory.clone(), &options, check, metrics, None).unwrap()
}

fn texts(text: &str, n: usize) -> Vec<String> {
    vec![text.to_string(); n]
}

async fn ask(pool: &Pool, texts: Vec<String>) -> Result<Vec<Prediction>, JobError> {
    pool.submit(texts, Duration::from_secs(30))
        .unwrap()
        .await
        .unwrap()
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_review_is_not_stuck_behind_big_requests() {
    let factory = Arc::new(Factory::default());
    let pool = Arc::new(pool(&factory, 2, 1));
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { ask(&pool, texts("slow 10", 64)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let started = Instant::now();
    let single = ask(&pool, texts("slow 10", 1)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(single.len(), 1);
    // Taking turns: one review of each of the 5 requests on 2 sandboxes, about 30 ms; behind
    // the four floods it would have waited 4 × 64 × 10 ms / 2 = 1.3 s.
    assert!(took < Duration::from_millis(400), "waited {took:?}");
    for flood in floods {
        assert_eq!(flood.await.unwrap().unwrap().len(), 64);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_work_of_a_request_nobody_waits_for_is_dropped() {
    let factory = Arc::new(Factory::default());
    let pool = pool(&factory, 1, 1);
    let gone = pool
        .submit(texts("slow 20", 100), Duration::from_secs(30))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(gone); // the client left
    let started = Instant::now();
    ask(&pool, texts("fine", 1)).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "waited {took:?} behind abandoned work"
    );
    assert_eq!(pool.shared.metrics.abandoned.get(), 1);

    let expired = pool.submit(texts("slow 20", 100), Duration::from_millis(500));
    assert!(
        expired.is_err(),
        "100 × 20 ms cannot be answered in 500 ms: turned away at once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_gets_a_fresh_sandbox_unless_they_are_reused() {
    for reuse in [false, true] {
        let factory = Arc::new(Factory::default());
        let pool = pool_with(&factory, 1, 1, reuse);
        for _ in 0..4 {
            assert_eq!(ask(&pool, texts("fine", 2)).await.unwrap().len(), 2);
        }
        // Probed at start; then, fresh, one per call (two reviews, one call each), made when
        // the call comes and dropped after it.
        let made = factory.made.load(Ordering::SeqCst);
        if reuse {
            assert_eq!(made, 1);
            assert_eq!(pool.alive(), 1);
        } else {
            assert_eq!(made, 9);
            wait_until("the idle slot holds no sandbox", || pool.alive() == 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooded_pool_does_not_keep_another_from_the_shared_cores() {
    let gate = Arc::new(Gate::new(1));
    let flooded = gated_pool(&Arc::default(), 2, 1, false, Some(gate.clone()));
    let quiet = gated_pool(&Arc::default(), 1, 1, false, Some(gate));
    let flood: Vec<_> = (0..20)
        .map(|_| {
            flooded
                .submit(texts("slow 40", 1), Duration::from_secs(30))
                .unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let started = Instant::now();
    assert_eq!(ask(&quiet, texts("fine", 1)).await.unwrap().len(), 1);
    let waited = started.elapsed();
    // One core: at most the call running now and the one whose turn came first.
    assert!(
        waited < Duration::from_millis(200),
        "waited {waited:?} behind the flood"
    );
    let mut answered = 0;
    for answer in flood {
        if answer.await.is_ok() {
            answered += 1;
        }
    }
    assert_eq!(answered, 20, "the flood is answered too");
}

#[tokio::test(flavor = "multi_thread")]
async fn impossible_answers_fail_their_request_and_replace_the_sandbox() {
    let factory = Arc::new(Factory::default());
    let pool = pool_with(&factory, 1, 16, true);
    let made = factory.made.load(Ordering::SeqCst);
    for fault in ["short", "nan", "panic"] {
        let answer = ask(&pool, vec![fault.into(), "fine".into(), "fine".into()]).await;
        let message = answer.unwrap_err().to_string();
        assert!(
            message.contains("impossible") || message.contains("crashed"),
            "{fault}: {message}"
        );
        assert_eq!(
            ask(&pool, texts("fine", 3)).await.unwrap().len(),
            3,
            "after {fault}"
        );
    }
    assert_eq!(
        factory.made.load(Ordering::SeqCst),
        made + 6,
        "per fault, a fresh sandbox after the shared call and after the faulty review alone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_batched_with_a_faulty_one_get_their_own_answers() {
    let factory = Arc::new(Factory::default());
    let pool = Arc::new(pool(&factory, 1, 16));
    // Keep the sandbox busy so the next three wait together and share one call.
    let busy = pool
        .submit(texts("slow 100", 1), Duration::from_secs(30))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let bad = pool
        .submit(texts("short", 1), Duration::from_secs(30))
        .unwrap();
    let good: Vec<_> = (0..2)
        .map(|_| {
            pool.submit(texts("fine", 2), Duration::from_secs(30))
                .unwrap()
        })
        .collect();
    busy.await.unwrap().unwrap();
    assert!(bad.await.unwrap().is_err());
    for answer in good {
        assert_eq!(answer.await.unwrap().unwrap().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_that_cannot_get_a_sandbox_is_not_ready_until_it_does() {
    // Reusing: a slot that needs no fresh sandbox keeps serving.
    let factory = Arc::new(Factory::default());
    let pool = pool_with(&factory, 2, 1, true);
    assert!(pool.is_ready());
    factory.broken.store(true, Ordering::SeqCst);
    assert!(ask(&pool, texts("panic", 1)).await.is_err());
    wait_until("not ready", || !pool.is_ready());
    // The other slot keeps serving.
    assert_eq!(ask(&pool, texts("fine", 4)).await.unwrap().len(), 4);
    factory.broken.store(false, Ordering::SeqCst);
    wait_until("ready again", || pool.is_ready());
    assert_eq!(pool.shared.metrics.live_sandboxes.get(), 2);
    assert_eq!(pool.alive(), 2);
}

/// Sleeps the next time of `millis` (the last one repeated), then answers as [`Fake`].
struct Jittery {
    calls: usize,
    millis: Vec<u64>,
}

impl Instance for Jittery {
    fn classify(
        &mut self,
        texts: &[String],
        deadline: Option<Duration>,
    ) -> Result<Vec<Prediction>, SandboxError> {
        let ms = self.millis[self.calls.min(self.millis.len() - 1)];
        self.calls += 1;
        std::thread::sleep(Duration::from_millis(ms));
        Fake.classify(texts, deadline)
    }
}

fn probed(millis: &[u64], again_above: Option<Duration>) -> (Duration, usize) {
    let check = AnswerCheck {
        labels: Labels::default(),
        threshold: 0.5,
        probe: "a probe".into(),
    };
    let mut sandbox = Jittery {
        calls: 0,
        millis: millis.to_vec(),
    };
    let cost = super::worker::probe(&mut sandbox, &check, again_above).unwrap();
    (cost, sandbox.calls)
}

#[test]
fn a_probe_slower_than_the_limits_allow_is_timed_again_and_the_fastest_believed() {
    let ms = Duration::from_millis;
    let within = |cost: Duration, low: u64, high: u64| cost >= ms(low) && cost < ms(high);
    // The untimed first call is quick, to show it is not the one timed.
    let (cost, calls) = probed(&[1, 150, 20, 150], None);
    assert!(
        within(cost, 150, 250) && calls == 2,
        "{cost:?} after {calls} calls"
    );
    let (cost, calls) = probed(&[1, 30, 150], Some(ms(100)));
    assert!(
        within(cost, 30, 100) && calls == 2,
        "{cost:?} after {calls} calls"
    );
    // A call slowed by other work, then a quiet one: believed, and no more calls.
    let (cost, calls) = probed(&[1, 150, 20, 150], Some(ms(100)));
    assert!(
        within(cost, 20, 100) && calls == 3,
        "{cost:?} after {calls} calls"
    );
    // Slow every time: three timed calls, the fastest kept for the limits to refuse.
    let (cost, calls) = probed(&[1, 250, 150, 250, 10], Some(ms(100)));
    assert!(
        within(cost, 150, 240) && calls == 4,
        "{cost:?} after {calls} calls"
    );
}
