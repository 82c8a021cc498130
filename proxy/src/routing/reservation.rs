//! Guards for a worker's session accounting: a new session's slot ([`SlotReservation`])
//! and a DELETE in flight ([`PendingDelete`]).
//!
//! The placement that reserves a slot returns the guard; whatever happens to the request
//! after that (the client goes away, the worker fails or refuses the session with 503 and
//! it is placed elsewhere, the create fails with a 4xx/5xx, an early return), the slot is
//! given back exactly once: when the guard drops, unless it was settled first
//! ([`SlotReservation::commit`]: the worker answered 2xx, the session exists). Settling
//! takes the guard by value, so settling twice does not compile, and a settled guard's
//! `Drop` does nothing.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::upstream::Worker;

/// A session slot reserved on a worker for a create in flight: released on drop unless
/// committed.
#[must_use = "dropping the reservation releases the slot at once"]
pub struct SlotReservation {
    /// `Some` until settled (only `settle` and `Drop` take it).
    worker: Option<Arc<Worker>>,
}

impl SlotReservation {
    /// Reserves a slot if the worker may take a new session now (healthy, not draining,
    /// below capacity); `None` otherwise.
    pub fn try_reserve(worker: &Arc<Worker>, now: Instant) -> Option<SlotReservation> {
        worker.try_reserve(now).then(|| SlotReservation {
            worker: Some(worker.clone()),
        })
    }

    /// Counts a slot without a capacity check (a create pinned by a cookie or hashed on a
    /// client-chosen key: it must go to that worker, whose answer decides).
    pub fn count(worker: &Arc<Worker>) -> SlotReservation {
        worker.add_session();
        SlotReservation {
            worker: Some(worker.clone()),
        }
    }

    /// The session was created: the slot stays counted.
    pub fn commit(self) {
        self.settle(true);
    }

    /// Settles for the worker's final answer: kept when `created`, released otherwise.
    pub fn settle(mut self, created: bool) {
        if let Some(w) = self.worker.take() {
            w.settle_create(created);
        }
    }
}

impl Drop for SlotReservation {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.settle_create(false);
        }
    }
}

impl fmt::Debug for SlotReservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.worker.as_ref().map(|w| w.spec.id.as_str());
        f.debug_struct("SlotReservation")
            .field("worker", &id)
            .finish()
    }
}

/// A DELETE sent to a worker and not answered yet: counted as not done on drop unless
/// settled with the worker's answer.
#[must_use = "dropping it settles the delete as failed at once"]
pub struct PendingDelete {
    /// `Some` until settled.
    worker: Option<Arc<Worker>>,
}

impl PendingDelete {
    /// A DELETE starts on `worker`.
    pub fn begin(worker: &Arc<Worker>) -> PendingDelete {
        worker.begin_delete();
        PendingDelete {
            worker: Some(worker.clone()),
        }
    }

    /// Settles for the worker's final answer: a successful delete frees its slot.
    pub fn settle(mut self, deleted: bool) {
        if let Some(w) = self.worker.take() {
            w.settle_delete(deleted);
        }
    }
}

impl Drop for PendingDelete {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.settle_delete(false);
        }
    }
}

impl fmt::Debug for PendingDelete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.worker.as_ref().map(|w| w.spec.id.as_str());
        f.debug_struct("PendingDelete")
            .field("worker", &id)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::upstream::{ReadyReport, Registry, Worker};

    /// One worker `w1` of capacity `cap`, probed empty (exact accounting from there).
    fn worker(cap: u64) -> (Registry, Arc<Worker>) {
        let y = format!("workers:\n  - id: w1\n    address: 127.0.0.1:9000\n    capacity: {cap}\n");
        let reg = Registry::new(parse("t", &y).expect("valid"));
        let w = reg.workers().get("w1").expect("w1").clone();
        w.observe_ready(ReadyReport {
            sessions_active: 0,
            max_sessions: None,
            draining: false,
            full: false,
        });
        (reg, w)
    }

    fn sessions(w: &Worker) -> u64 {
        Worker::sessions_of(&w.snapshot())
    }

    fn in_flight(w: &Worker) -> u32 {
        w.snapshot().in_flight
    }

    #[test]
    fn drop_releases_the_slot_once() {
        let (_reg, w) = worker(2);
        let r = SlotReservation::try_reserve(&w, Instant::now()).expect("room");
        assert_eq!((sessions(&w), in_flight(&w)), (1, 1));
        drop(r);
        assert_eq!((sessions(&w), in_flight(&w)), (0, 0));
        // Another slot counted: a second release of the first one would take it away.
        let kept = SlotReservation::count(&w);
        assert_eq!(sessions(&w), 1);
        kept.commit();
        assert_eq!((sessions(&w), in_flight(&w)), (1, 0));
    }

    #[test]
    fn commit_keeps_the_slot_and_drop_after_it_does_nothing() {
        let (_reg, w) = worker(2);
        let a = SlotReservation::try_reserve(&w, Instant::now()).expect("room");
        let b = SlotReservation::try_reserve(&w, Instant::now()).expect("room");
        assert!(
            SlotReservation::try_reserve(&w, Instant::now()).is_none(),
            "capacity 2: a third reservation must be refused"
        );
        a.commit();
        assert_eq!((sessions(&w), in_flight(&w)), (2, 1));
        b.settle(false);
        assert_eq!((sessions(&w), in_flight(&w)), (1, 0));
        // The freed slot is placeable again; the committed one is not given back.
        let c = SlotReservation::try_reserve(&w, Instant::now()).expect("the freed slot");
        assert!(SlotReservation::try_reserve(&w, Instant::now()).is_none());
        drop(c);
        assert_eq!((sessions(&w), in_flight(&w)), (1, 0));
    }

    #[test]
    fn a_reservation_held_in_a_dropped_owner_is_released() {
        // What a request context does on any early return or a client gone: the guard is a
        // field of something dropped.
        let (_reg, w) = worker(1);
        let held: Vec<Option<SlotReservation>> =
            vec![SlotReservation::try_reserve(&w, Instant::now())];
        assert!(held[0].is_some());
        assert!(
            SlotReservation::try_reserve(&w, Instant::now()).is_none(),
            "full"
        );
        drop(held);
        assert_eq!((sessions(&w), in_flight(&w)), (0, 0));
        assert!(SlotReservation::try_reserve(&w, Instant::now()).is_some());
    }

    #[test]
    fn pending_delete_settles_once() {
        let (_reg, w) = worker(3);
        SlotReservation::count(&w).commit();
        SlotReservation::count(&w).commit();
        assert_eq!(sessions(&w), 2);
        let d = PendingDelete::begin(&w);
        assert_eq!(in_flight(&w), 1);
        d.settle(true);
        assert_eq!((sessions(&w), in_flight(&w)), (1, 0));
        // Dropped unanswered: in flight ends, nothing is freed.
        drop(PendingDelete::begin(&w));
        assert_eq!((sessions(&w), in_flight(&w)), (1, 0));
    }
}
