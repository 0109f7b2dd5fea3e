//! The cap on each node's connections (`[pooling] max_node_connections`):
//! every connection sluice holds to a node, attached to a session or kept
//! between sessions, holds a [`Slot`]. A session that finds none free (and
//! no kept connection it may take) waits for [`Slots::freed`], which is
//! signalled when a slot is given back or a connection is kept at any
//! node ([`Waits`], shared by the nodes), up to `wait_timeout`: a
//! connection a session gives back goes to a waiting session as it is,
//! without a new login.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// What sessions waiting for a connection share across the nodes.
#[derive(Default)]
pub struct Waits {
    freed: Notify,
    waiting: AtomicUsize,
}

/// One node's slots.
pub struct Slots {
    semaphore: Arc<Semaphore>,
    /// The cap now in force; `None`: no cap.
    cap: Mutex<Option<usize>>,
    /// Permits a lower cap still has to take back as slots are returned.
    owed: AtomicUsize,
    /// Sessions waiting that tried this node first (for its metric).
    waiting_here: AtomicUsize,
    waits: Arc<Waits>,
}

impl Default for Slots {
    fn default() -> Self {
        Slots::sharing(Arc::default())
    }
}

/// A node connection's place under the cap; given back when dropped,
/// waking a session that waits for one.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    waits: Arc<Waits>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.waits.freed.notify_one();
    }
}

/// Counts a waiting session while it lives.
pub struct Waiting<'a> {
    here: &'a AtomicUsize,
    all: &'a AtomicUsize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.here.fetch_sub(1, Ordering::Relaxed);
        self.all.fetch_sub(1, Ordering::Relaxed);
    }
}

/// No slot came free within the wait.
#[derive(Debug)]
pub struct Full {
    pub cap: usize,
}

impl Slots {
    /// A node's slots, waited for with the other nodes' (`waits`).
    pub fn sharing(waits: Arc<Waits>) -> Slots {
        Slots {
            semaphore: Arc::new(Semaphore::new(0)),
            cap: Mutex::new(None),
            owed: AtomicUsize::new(0),
            waiting_here: AtomicUsize::new(0),
            waits,
        }
    }

    /// Sets the cap (at start and on reload). A lower cap takes effect as
    /// connections are given back; none is closed for it.
    pub fn set_cap(&self, cap: Option<usize>) {
        let mut current = self.cap.lock().expect("slots lock");
        let old = current.unwrap_or(0);
        let new = cap.unwrap_or(0);
        if new > old {
            let repaid = self.owed.swap(0, Ordering::Relaxed).min(new - old);
            self.semaphore.add_permits(new - old - repaid);
        } else if new < old {
            let taken = self.semaphore.forget_permits(old - new);
            self.owed.fetch_add(old - new - taken, Ordering::Relaxed);
        }
        *current = cap;
    }

    pub fn cap(&self) -> Option<usize> {
        *self.cap.lock().expect("slots lock")
    }

    /// A slot if one is free now; `Ok(None)` when there is no cap.
    pub fn try_take(&self) -> Result<Option<Slot>, Full> {
        let Some(cap) = self.cap() else {
            return Ok(None);
        };
        self.settle_owed();
        match self.semaphore.clone().try_acquire_owned() {
            Ok(permit) => Ok(Some(Slot {
                _permit: permit,
                waits: self.waits.clone(),
            })),
            Err(_) => Err(Full { cap }),
        }
    }

    /// Signalled once per slot given back or connection kept, at any
    /// node: a waiting session looks again.
    pub fn freed(&self) -> &Notify {
        &self.waits.freed
    }

    /// A session starts waiting, having tried this node first.
    pub fn wait(&self) -> Waiting<'_> {
        self.waiting_here.fetch_add(1, Ordering::Relaxed);
        self.waits.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting {
            here: &self.waiting_here,
            all: &self.waits.waiting,
        }
    }

    /// Sessions waiting now that tried this node first.
    pub fn waiting(&self) -> usize {
        self.waiting_here.load(Ordering::Relaxed)
    }

    /// Sessions waiting now for any node: a newcomer goes behind them.
    pub fn anyone_waiting(&self) -> bool {
        self.waits.waiting.load(Ordering::Relaxed) > 0
    }

    /// Slots not taken now.
    pub fn free(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// A lowered cap takes back the permits it could not take when set.
    fn settle_owed(&self) {
        let owed = self.owed.load(Ordering::Relaxed);
        if owed > 0 {
            let taken = self.semaphore.forget_permits(owed);
            self.owed.fetch_sub(taken, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cap_holds_and_a_given_back_slot_wakes_a_waiter() {
        let slots = Slots::default();
        assert!(
            matches!(slots.try_take(), Ok(None)),
            "no cap, no slot needed"
        );
        slots.set_cap(Some(2));
        let a = slots.try_take().unwrap().unwrap();
        let _b = slots.try_take().unwrap().unwrap();
        assert_eq!(slots.try_take().err().unwrap().cap, 2);
        let waiting = slots.wait();
        assert_eq!(slots.waiting(), 1);
        let freed = slots.freed().notified();
        drop(a);
        tokio::time::timeout(std::time::Duration::from_secs(5), freed)
            .await
            .expect("woken");
        assert!(slots.try_take().unwrap().is_some());
        drop(waiting);
        assert_eq!(slots.waiting(), 0);
        assert!(!slots.anyone_waiting());
    }

    #[tokio::test]
    async fn a_slot_given_back_at_one_node_wakes_a_session_waiting_at_another() {
        let waits = Arc::new(Waits::default());
        let (a, b) = (Slots::sharing(waits.clone()), Slots::sharing(waits));
        a.set_cap(Some(1));
        b.set_cap(Some(1));
        let held = b.try_take().unwrap().unwrap();
        let _waiting = a.wait();
        assert!(b.anyone_waiting(), "b's newcomers see a's waiter");
        let freed = a.freed().notified();
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), freed)
            .await
            .expect("woken by the other node's slot");
    }

    #[tokio::test]
    async fn a_lower_cap_takes_effect_as_slots_come_back() {
        let slots = Slots::default();
        slots.set_cap(Some(3));
        let a = slots.try_take().unwrap().unwrap();
        let b = slots.try_take().unwrap().unwrap();
        slots.set_cap(Some(1));
        drop(a);
        drop(b);
        let _c = slots.try_take().unwrap().unwrap();
        assert!(slots.try_take().is_err(), "one slot under the new cap");
        slots.set_cap(Some(2));
        assert!(slots.try_take().unwrap().is_some());
    }
}
