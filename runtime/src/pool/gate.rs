//! Turns on the machine's cores, first come first served, shared by every deployment's pool:
//! a deployment flooded with requests holds at most its own slots in the line, so a request
//! to another deployment waits for at most one guest call per core before its turn.

use std::sync::{Condvar, Mutex, PoisonError};

/// A ticket semaphore: at most `cores` guest calls at once, granted in the order asked.
#[derive(Debug)]
pub struct Gate {
    tickets: Mutex<Tickets>,
    granted: Condvar,
}

#[derive(Debug)]
struct Tickets {
    /// The next ticket handed out.
    next: u64,
    /// Tickets below this may run.
    granted: u64,
}

/// One guest call's turn; the next ticket is granted when it is dropped.
pub struct Turn<'a>(&'a Gate);

impl Gate {
    /// A gate letting `cores` (at least one) guest calls run at once.
    pub fn new(cores: usize) -> Self {
        Self {
            tickets: Mutex::new(Tickets {
                next: 0,
                granted: cores.max(1) as u64,
            }),
            granted: Condvar::new(),
        }
    }

    /// Waits for this caller's turn, after every caller that asked before it.
    pub fn turn(&self) -> Turn<'_> {
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = tickets.next;
        tickets.next += 1;
        while ticket >= tickets.granted {
            tickets = self
                .granted
                .wait(tickets)
                .unwrap_or_else(PoisonError::into_inner);
        }
        Turn(self)
    }

    /// Tickets handed out so far.
    #[cfg(test)]
    fn asked(&self) -> u64 {
        self.tickets.lock().unwrap().next
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut tickets = self
            .0
            .tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tickets.granted += 1;
        drop(tickets);
        self.0.granted.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::Gate;

    /// Holds all `cores` turns, lets four callers ask one after another, then lets them run;
    /// returns the order they started in and the most that ran at once.
    fn four_callers(cores: usize) -> (Vec<usize>, usize) {
        let gate = Arc::new(Gate::new(cores));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let held: Vec<_> = (0..cores).map(|_| gate.turn()).collect();
        let waiting: Vec<_> = (0..4)
            .map(|i| {
                let (mine, running, most, order) =
                    (gate.clone(), running.clone(), most.clone(), order.clone());
                let thread = std::thread::spawn(move || {
                    let _turn = mine.turn();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    order.lock().unwrap().push(i);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                });
                // Each asks after the one before it has asked.
                while gate.asked() < (cores + 1 + i) as u64 {
                    std::thread::yield_now();
                }
                thread
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        assert!(order.lock().unwrap().is_empty(), "every turn is held");
        drop(held);
        for thread in waiting {
            thread.join().unwrap();
        }
        let order = order.lock().unwrap().clone();
        (order, most.load(Ordering::SeqCst))
    }

    #[test]
    fn turns_go_in_the_order_asked() {
        // One core: each caller starts only after the one before it has finished.
        assert_eq!(four_callers(1), (vec![0, 1, 2, 3], 1));
    }

    #[test]
    fn at_most_cores_run_at_once() {
        let (mut order, most) = four_callers(2);
        assert!(most <= 2, "{most} ran at once on 2 cores");
        order.sort_unstable();
        assert_eq!(order, vec![0, 1, 2, 3], "every caller ran");
    }
}
