//! The fair queue in front of the sandboxes: requests are admitted by cost and served one
//! review at a time in turn, so a request of 64 reviews interleaves with the single reviews
//! of other requests instead of holding a sandbox for all of its reviews. A request whose
//! client has gone (its answer's receiver dropped) or whose time is up is dropped the next
//! time its turn comes, before any more of its reviews run.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use feelings_core::Prediction;
use tokio::sync::oneshot;

use super::{JobError, JobResult, Overloaded};

/// The share of a request's time its estimated answer may take for it to be admitted: the
/// rest is left for the reviews of requests that arrive after it (they take turns with it)
/// and for reviews slower than the estimate. Measured with the shipped model under a flood of
/// 64-review requests: admitting up to the whole timeout, 5 of 7 admitted ones timed out.
pub const ADMISSION_SHARE: f64 = 2.0 / 3.0;

/// Which request a review belongs to.
pub(crate) type JobId = u64;

/// One review handed to a sandbox.
#[derive(Debug)]
pub(crate) struct Review {
    /// The request it belongs to.
    pub job: JobId,
    /// Its place in the request's texts.
    pub index: usize,
    /// The text.
    pub text: String,
}

/// One admitted request.
struct Job {
    texts: Vec<String>,
    /// Reviews handed out so far (the next one to hand out).
    handed: usize,
    answers: Vec<Option<Prediction>>,
    /// Answers still missing.
    missing: usize,
    reply: oneshot::Sender<JobResult>,
    expires: Instant,
}

impl Job {
    fn abandoned(&self, now: Instant) -> bool {
        self.reply.is_closed() || now >= self.expires
    }

    fn waiting(&self) -> usize {
        self.texts.len() - self.handed
    }
}

/// What the queue needs to know to price a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Price {
    /// What one review has been costing a sandbox lately.
    pub review: Duration,
    /// Sandboxes serving the queue.
    pub sandboxes: usize,
}

/// The requests waiting or being served, in turn order.
pub(crate) struct Queue {
    /// Requests with reviews not yet handed out, in the order their turn comes.
    turns: VecDeque<JobId>,
    jobs: HashMap<JobId, Job>,
    /// Reviews admitted and not yet handed out.
    waiting: usize,
    /// The most reviews that may wait.
    capacity: usize,
    next_id: JobId,
    /// No more requests are admitted; the ones admitted are still served.
    pub closed: bool,
}

impl Queue {
    /// An empty queue holding at most `capacity` waiting reviews.
    pub fn new(capacity: usize) -> Self {
        Self {
            turns: VecDeque::new(),
            jobs: HashMap::new(),
            waiting: 0,
            capacity,
            next_id: 0,
            closed: false,
        }
    }

    /// Reviews admitted and not yet handed to a sandbox.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Admits `texts` if they fit in the queue and, taking turns with the requests already
    /// admitted, would be answered within [`ADMISSION_SHARE`] of the time until `expires`;
    /// otherwise says why not.
    pub fn admit(
        &mut self,
        texts: Vec<String>,
        reply: oneshot::Sender<JobResult>,
        expires: Instant,
        price: Price,
    ) -> Result<(), Overloaded> {
        let count = texts.len();
        if self.closed {
            return Err(Overloaded::Stopping);
        }
        if count == 0 {
            let _ = reply.send(Ok(Vec::new()));
            return Ok(());
        }
        if self.waiting + count > self.capacity {
            return Err(Overloaded::Full {
                waiting: self.waiting,
                capacity: self.capacity,
            });
        }
        let estimate = self.finish_estimate(count, price);
        let allowed = expires.saturating_duration_since(Instant::now());
        if estimate > allowed.mul_f64(ADMISSION_SHARE) {
            return Err(Overloaded::TooSlow { estimate, allowed });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.jobs.insert(
            id,
            Job {
                answers: vec![None; count],
                missing: count,
                texts,
                handed: 0,
                reply,
                expires,
            },
        );
        self.turns.push_back(id);
        self.waiting += count;
        Ok(())
    }

    /// When a request of `count` reviews would be answered, taking turns: each request already
    /// admitted runs at most `count` more reviews before it.
    fn finish_estimate(&self, count: usize, price: Price) -> Duration {
        let ahead: usize = self
            .jobs
            .values()
            .filter(|j| !j.reply.is_closed())
            .map(|j| j.waiting().min(count))
            .sum();
        let reviews = (ahead + count) as u32;
        price.review * reviews / price.sandboxes.max(1) as u32
    }

    /// Hands out up to `max` reviews, one per request in turn order (a request with more
    /// waits for its next turn); drops the requests found abandoned. Returns the reviews and
    /// how many requests were dropped.
    pub fn take(&mut self, max: usize, now: Instant) -> (Vec<Review>, usize) {
        let mut reviews = Vec::new();
        let mut dropped = 0;
        while reviews.len() < max {
            let Some(id) = self.turns.pop_front() else {
                break;
            };
            let Some(job) = self.jobs.get_mut(&id) else {
                continue; // failed while its turn was waiting
            };
            if job.abandoned(now) {
                let job = self.jobs.remove(&id).expect("the job was just found");
                self.waiting -= job.waiting();
                dropped += 1;
                let _ = job.reply.send(Err(JobError::Expired));
                continue;
            }
            let index = job.handed;
            job.handed += 1;
            self.waiting -= 1;
            reviews.push(Review {
                job: id,
                index,
                text: job.texts[index].clone(),
            });
            if job.waiting() > 0 {
                self.turns.push_back(id);
            }
        }
        (reviews, dropped)
    }

    /// Records a sandbox's answer for one review; the request is answered when it has them
    /// all, or at its first failure (its remaining reviews are dropped).
    pub fn answer(&mut self, review: &Review, answer: Result<Prediction, JobError>) {
        let Some(job) = self.jobs.get_mut(&review.job) else {
            return; // already failed or abandoned
        };
        match answer {
            Ok(prediction) => {
                job.answers[review.index] = Some(prediction);
                job.missing -= 1;
                if job.missing > 0 {
                    return;
                }
                let job = self
                    .jobs
                    .remove(&review.job)
                    .expect("the job was just found");
                let answers = job.answers.into_iter().flatten().collect();
                let _ = job.reply.send(Ok(answers));
            }
            Err(e) => {
                let job = self
                    .jobs
                    .remove(&review.job)
                    .expect("the job was just found");
                self.waiting -= job.waiting();
                let _ = job.reply.send(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: Price = Price {
        review: Duration::from_millis(100),
        sandboxes: 2,
    };

    fn texts(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn admit(
        queue: &mut Queue,
        texts: Vec<String>,
    ) -> Result<oneshot::Receiver<JobResult>, Overloaded> {
        let (reply, answer) = oneshot::channel();
        let expires = Instant::now() + Duration::from_secs(30);
        queue.admit(texts, reply, expires, PRICE).map(|()| answer)
    }

    fn prediction(score: f32) -> Prediction {
        Prediction {
            label: "positive".into(),
            score,
            threshold: 0.5,
            truncated: false,
        }
    }

    #[test]
    fn requests_take_turns_one_review_at_a_time() {
        let mut queue = Queue::new(100);
        let _big = admit(&mut queue, texts("big", 5)).unwrap();
        let _small = admit(&mut queue, texts("small", 1)).unwrap();
        let (first, _) = queue.take(1, Instant::now());
        let (second, _) = queue.take(1, Instant::now());
        let (rest, _) = queue.take(10, Instant::now());
        assert_eq!(first[0].text, "big0");
        assert_eq!(
            second[0].text, "small0",
            "the single review's turn comes second"
        );
        let rest: Vec<&str> = rest.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(rest, ["big1", "big2", "big3", "big4"]);
        assert!(queue.take(10, Instant::now()).0.is_empty());
        assert_eq!(queue.waiting(), 0);
    }

    #[test]
    fn answers_arrive_in_order_whatever_order_they_come_back_in() {
        let mut queue = Queue::new(100);
        let mut answer = admit(&mut queue, texts("r", 3)).unwrap();
        let (reviews, _) = queue.take(3, Instant::now());
        for review in reviews.iter().rev() {
            queue.answer(review, Ok(prediction(review.index as f32 / 10.0)));
        }
        let scores: Vec<f32> = answer
            .try_recv()
            .unwrap()
            .unwrap()
            .iter()
            .map(|p| p.score)
            .collect();
        assert_eq!(scores, [0.0, 0.1, 0.2]);
    }

    #[test]
    fn a_failed_review_fails_its_request_and_drops_the_rest_of_it() {
        let mut queue = Queue::new(100);
        let mut answer = admit(&mut queue, texts("r", 4)).unwrap();
        let (reviews, _) = queue.take(1, Instant::now());
        queue.answer(&reviews[0], Err(JobError::Expired));
        assert!(answer.try_recv().unwrap().is_err());
        assert_eq!(queue.waiting(), 0);
        assert!(queue.take(10, Instant::now()).0.is_empty());
    }

    #[test]
    fn abandoned_and_expired_requests_are_dropped_before_they_run() {
        let mut queue = Queue::new(100);
        let gone = admit(&mut queue, texts("gone", 10)).unwrap();
        let (reply, mut late) = oneshot::channel();
        let soon = Instant::now() + Duration::from_millis(1);
        queue
            .admit(
                texts("late", 10),
                reply,
                soon,
                Price {
                    review: Duration::ZERO,
                    ..PRICE
                },
            )
            .unwrap();
        let _kept = admit(&mut queue, texts("kept", 1)).unwrap();
        drop(gone);
        let (reviews, dropped) = queue.take(10, soon + Duration::from_millis(1));
        assert_eq!(dropped, 2);
        assert_eq!(
            reviews.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
            ["kept0"]
        );
        assert!(matches!(late.try_recv(), Ok(Err(JobError::Expired))));
        assert_eq!(queue.waiting(), 0);
    }

    #[test]
    fn a_request_of_no_texts_is_answered_at_once() {
        let mut queue = Queue::new(10);
        let mut answer = admit(&mut queue, Vec::new()).unwrap();
        assert!(answer.try_recv().unwrap().unwrap().is_empty());
        assert_eq!(queue.waiting(), 0);
        assert!(queue.take(10, Instant::now()).0.is_empty());
    }

    #[test]
    fn admission_is_bounded_in_reviews_and_by_the_time_left() {
        let mut queue = Queue::new(10);
        let _a = admit(&mut queue, texts("a", 8)).unwrap();
        assert!(matches!(
            admit(&mut queue, texts("b", 3)),
            Err(Overloaded::Full {
                waiting: 8,
                capacity: 10
            })
        ));
        let _c = admit(&mut queue, texts("c", 2)).unwrap();

        // 100 ms a review on 2 sandboxes: a request of 4 behind two others of 4 needs
        // (4 + 4 + 4) × 50 ms = 600 ms.
        let mut queue = Queue::new(100);
        let (_a, _b) = (
            admit(&mut queue, texts("a", 4)).unwrap(),
            admit(&mut queue, texts("b", 4)).unwrap(),
        );
        let (reply, _answer) = oneshot::channel();
        let expires = Instant::now() + Duration::from_millis(500);
        let refused = queue.admit(texts("c", 4), reply, expires, PRICE);
        assert!(
            matches!(refused, Err(Overloaded::TooSlow { .. })),
            "{refused:?}"
        );
        // A single review waits for one turn of each: (1 + 1 + 1) × 50 ms.
        let (reply, _answer) = oneshot::channel();
        queue.admit(texts("d", 1), reply, expires, PRICE).unwrap();
    }
}
