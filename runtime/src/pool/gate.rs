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

    #[test]
    fn at_most_cores_run_and_turns_go_in_order() {
        let gate = Arc::new(Gate::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let held = gate.turn();
        let order = Arc::new(Mutex::new(Vec::new()));
        let second = gate.turn();
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
                while gate.asked() < 3 + i as u64 {
                    std::thread::yield_now();
                }
                thread
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        assert!(order.lock().unwrap().is_empty(), "both turns are held");
        drop(held);
        drop(second);
        for thread in waiting {
            thread.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
        assert!(most.load(Ordering::SeqCst) <= 2);
    }
}
