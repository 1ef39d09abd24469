//! The queue in front of a pool. At most `limit` connections are out at
//! once (held by clients, being opened or checked, or on their way to a
//! waiter); past that, requests wait first come, first served. A returned
//! connection goes straight to the oldest waiter: one lock, one wake-up, no
//! trip through the pool's idle list. With nobody waiting it stays on the
//! gate's short "hot" stack, and the next request admitted takes it under
//! the same lock that admits it: a busy pool's checkout and return are one
//! lock each. The owner moves connections that sat there too long back to
//! the pool ([`Gate::evict_hot`]), where its idle checks reach them. A
//! request takes the newest hot connection of its own worker thread
//! ([`crate::home`]); with none, it opens one while the pool has room, and
//! only at the pool's size borrows another worker's.
//!
//! Waiting costs no allocation and no timer of its own: waiters live in a
//! slot table that is reused, and one reaper task per gate, asleep until the
//! earliest deadline, times them out. A request that finds room never
//! touches the queue.
//!
//! The gate is generic over what it hands out (`T`, a checked-out pool
//! object in the pool) so it is tested without a server.

use crate::home::Homed;
use crate::limit::{AdaptiveLimit, LimitParams};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What a waiter gets: a connection still checked out from the pool, or the
/// right to check one out (or open one) itself.
#[derive(Debug)]
pub(crate) enum Grant<T> {
    Item(T),
    Permit,
}

/// Why a wait ended without a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitError {
    TimedOut,
    Closed,
}

/// The outcome of asking to enter.
pub(crate) enum Entry<'a, T> {
    /// A permit is held, with the connection returned most recently if one
    /// is on the hot stack (the caller checks it is still fresh); else check
    /// one out.
    Admitted(Option<T>),
    /// `max_queue` requests already wait.
    QueueFull {
        waiting: usize,
    },
    Closed,
    /// In the queue: await it.
    Wait(Wait<'a, T>),
}

enum Slot<T> {
    Free,
    Waiting,
    Granted(Grant<T>),
    TimedOut,
    Closed,
}

struct Waiter<T> {
    /// Bumped each time the slot is freed, so stale queue entries are told
    /// apart from the slot's next waiter.
    generation: u32,
    slot: Slot<T>,
    waker: Option<Waker>,
    deadline: Instant,
}

struct State<T> {
    /// Permits out: connections held by clients, being checked out, or
    /// granted to a waiter that has not run yet.
    out: usize,
    limit: usize,
    max: usize,
    /// Waiters in `Slot::Waiting`.
    queued: usize,
    closed: bool,
    waiters: Vec<Waiter<T>>,
    free: Vec<u32>,
    /// Returned items nobody waited for, newest last: not out, not in the
    /// pool's idle list.
    hot: Vec<T>,
    /// Waiters in arrival order, as (slot, generation); entries whose slot
    /// moved on are skipped.
    queue: VecDeque<(u32, u32)>,
    /// When the reaper looks next; `None` while it sleeps with no deadline.
    reaper_at: Option<Instant>,
    adaptive: Option<AdaptiveLimit>,
}

pub(crate) struct Gate<T> {
    state: Mutex<State<T>>,
    /// Wakes the reaper when a deadline earlier than the one it sleeps
    /// towards appears, or when the gate closes or goes away.
    reaper: Arc<Notify>,
}

impl<T> Drop for Gate<T> {
    fn drop(&mut self) {
        self.reaper.notify_one();
    }
}

/// A point-in-time view for status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GateStatus {
    pub out: usize,
    pub limit: usize,
    pub queued: usize,
    /// Items on the hot stack (idle, not in the pool's own idle list).
    pub hot: usize,
}

impl<T: Send + 'static> Gate<T> {
    /// A gate admitting up to `max` at once (or, with `adaptive`, up to the
    /// limit it finds, never above `max`); spawns its reaper on the current
    /// Tokio runtime.
    pub(crate) fn new(max: usize, adaptive: Option<AdaptiveLimit>) -> Arc<Self> {
        let limit = adaptive.as_ref().map_or(max, |a| a.limit().min(max));
        let gate = Arc::new(Gate {
            state: Mutex::new(State {
                out: 0,
                limit,
                max,
                queued: 0,
                closed: false,
                waiters: Vec::new(),
                free: Vec::new(),
                hot: Vec::new(),
                queue: VecDeque::new(),
                reaper_at: None,
                adaptive,
            }),
            reaper: Arc::new(Notify::new()),
        });
        tokio::spawn(reap(Arc::downgrade(&gate), gate.reaper.clone()));
        gate
    }
}

impl<T> Gate<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a permit if one is free and nobody waits (FIFO: a newcomer
    /// never passes a waiter); else queues, refusing when `max_queue`
    /// (0 = no bound) already wait.
    pub(crate) fn enter(&self, max_queue: usize, timeout: Duration) -> Entry<'_, T>
    where
        T: Homed,
    {
        let mut s = self.lock();
        if s.closed {
            return Entry::Closed;
        }
        if s.out < s.limit && s.queued == 0 {
            s.out += 1;
            return Entry::Admitted(s.take_hot(crate::home::worker()));
        }
        if max_queue > 0 && s.queued >= max_queue {
            return Entry::QueueFull { waiting: s.queued };
        }
        let deadline = Instant::now() + timeout;
        let index = match s.free.pop() {
            Some(i) => i,
            None => {
                s.waiters.push(Waiter {
                    generation: 0,
                    slot: Slot::Free,
                    waker: None,
                    deadline,
                });
                (s.waiters.len() - 1) as u32
            }
        };
        let w = &mut s.waiters[index as usize];
        w.slot = Slot::Waiting;
        w.deadline = deadline;
        let generation = w.generation;
        s.queue.push_back((index, generation));
        s.queued += 1;
        let rearm = s.reaper_at.is_none_or(|at| deadline < at);
        if rearm {
            s.reaper_at = Some(deadline);
        }
        drop(s);
        if rearm {
            self.reaper.notify_one();
        }
        Entry::Wait(Wait {
            gate: self,
            index,
            generation,
            done: false,
        })
    }

    /// Takes a permit only if one is free and nobody waits (housekeeping,
    /// which must never delay a client).
    pub(crate) fn try_enter(&self) -> bool {
        let mut s = self.lock();
        if s.closed || s.out >= s.limit || s.queued > 0 {
            return false;
        }
        s.out += 1;
        true
    }

    /// Gives a returned item to the oldest waiter (its permit goes along)
    /// and says so. When nobody waits, the item goes on the hot stack and
    /// the permit is freed; when the limit has shrunk below the permits out
    /// or the gate is closed, the item is dropped (which puts it back in
    /// its pool) and the permit freed. One lock either way: the item is
    /// back before the permit is, so a request admitted next finds it.
    pub(crate) fn put_back(&self, item: T, sample: Option<(Duration, Instant)>) -> bool {
        let mut s = self.lock();
        if let Some((rtt, now)) = sample {
            s.observe(rtt, now);
        }
        let next = if s.closed || s.out > s.limit {
            None
        } else {
            s.pop_waiter()
        };
        let Some(index) = next else {
            s.out -= 1;
            s.shelve(item);
            return false;
        };
        let w = &mut s.waiters[index];
        w.slot = Slot::Granted(Grant::Item(item));
        let waker = w.waker.take();
        drop(s);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Returns one permit: to the oldest waiter, who then checks a
    /// connection out itself, or to the free count.
    pub(crate) fn release(&self, sample: Option<(Duration, Instant)>) {
        let mut s = self.lock();
        if let Some((rtt, now)) = sample {
            s.observe(rtt, now);
        }
        let waker = s.release_locked();
        drop(s);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// New bound, adaptive limit on or off (configuration reload). With the
    /// adaptive limit on, the limit stays where it is if that is below the
    /// new bound.
    pub(crate) fn set_bounds(&self, max: usize, adaptive: bool) {
        let mut s = self.lock();
        s.max = max;
        if !adaptive {
            s.adaptive = None;
        } else if s.adaptive.is_none() {
            s.adaptive = Some(AdaptiveLimit::new(LimitParams::new(max)));
        }
        let limit = match &mut s.adaptive {
            Some(a) => {
                a.set_max(max);
                a.limit()
            }
            None => max,
        };
        s.set_limit(limit);
    }

    /// Takes off the hot stack every item `keep` says no to, for the caller
    /// to drop (back into the pool) outside the lock.
    pub(crate) fn evict_hot(&self, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut s = self.lock();
        if s.hot.iter().all(&mut keep) {
            return Vec::new();
        }
        let (kept, evicted) = std::mem::take(&mut s.hot).into_iter().partition(|t| keep(t));
        s.hot = kept;
        evicted
    }

    /// Closes the gate: waiters get `Closed` now, later requests at once;
    /// the hot stack goes back to the pool.
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.closed = true;
        let hot = std::mem::take(&mut s.hot);
        while let Some(index) = s.pop_waiter() {
            let w = &mut s.waiters[index];
            w.slot = Slot::Closed;
            if let Some(waker) = w.waker.take() {
                waker.wake();
            }
        }
        drop(s);
        drop(hot);
        self.reaper.notify_one();
    }

    pub(crate) fn status(&self) -> GateStatus {
        let s = self.lock();
        GateStatus {
            out: s.out,
            limit: s.limit,
            queued: s.queued,
            hot: s.hot.len(),
        }
    }

    pub(crate) fn waiting(&self) -> usize {
        self.lock().queued
    }

    /// Times out every waiter whose deadline has passed; returns the next
    /// deadline (None: no waiter, or closed).
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut s = self.lock();
        let s = &mut *s;
        let mut next: Option<Instant> = None;
        let mut expired = 0;
        for w in s.waiters.iter_mut() {
            if !matches!(w.slot, Slot::Waiting) {
                continue;
            }
            if w.deadline <= now {
                w.slot = Slot::TimedOut;
                expired += 1;
                if let Some(waker) = w.waker.take() {
                    waker.wake();
                }
            } else if next.is_none_or(|n| w.deadline < n) {
                next = Some(w.deadline);
            }
        }
        if expired > 0 {
            s.queued -= expired;
            let waiters = &s.waiters;
            s.queue.retain(|&(i, g)| {
                let w = &waiters[i as usize];
                w.generation == g && matches!(w.slot, Slot::Waiting)
            });
        }
        if s.closed {
            next = None;
        }
        s.reaper_at = next;
        next
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

impl<T: Homed> State<T> {
    /// The hot item for a request on worker `home`: the newest of its own
    /// worker's; else, while the pool can still open one (so the caller's
    /// checkout does not wait), none: a connection opened here serves this
    /// worker from then on; else the newest of another worker's (usable
    /// from here, at a cross-thread wake-up per packet).
    fn take_hot(&mut self, home: usize) -> Option<T> {
        let i = match self.hot.iter().rposition(|t| t.home() == home) {
            Some(i) => i,
            // Checked out of the pool: items of other permit holders and
            // the hot ones. Below `max`, a checkout finds one idle or opens one.
            None if self.out + self.hot.len() <= self.max => return None,
            None => self.hot.len().checked_sub(1)?,
        };
        Some(self.hot.remove(i))
    }
}

impl<T> State<T> {
    /// Keeps a returned item nobody waits for on the hot stack; a closed
    /// gate or one over its limit drops it (back to the pool) instead.
    fn shelve(&mut self, item: T) {
        if self.closed || self.out >= self.limit {
            drop(item);
        } else {
            self.hot.push(item);
        }
    }

    /// The oldest live waiter, taken off the queue (and out of `queued`);
    /// its slot is still `Waiting` for the caller to fill.
    fn pop_waiter(&mut self) -> Option<usize> {
        while let Some((index, generation)) = self.queue.pop_front() {
            let w = &self.waiters[index as usize];
            if w.generation == generation && matches!(w.slot, Slot::Waiting) {
                self.queued -= 1;
                return Some(index as usize);
            }
        }
        None
    }

    fn release_locked(&mut self) -> Option<Waker> {
        if !self.closed && self.out <= self.limit {
            if let Some(index) = self.pop_waiter() {
                let w = &mut self.waiters[index];
                w.slot = Slot::Granted(Grant::Permit);
                return w.waker.take();
            }
        }
        self.out -= 1;
        None
    }

    fn observe(&mut self, rtt: Duration, now: Instant) {
        let out = self.out;
        let changed = self.adaptive.as_mut().and_then(|a| a.on_sample(rtt, out, now));
        if let Some(limit) = changed {
            self.set_limit(limit.min(self.max));
        }
    }

    /// Applies a new limit; a larger one admits waiters at once.
    fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        while !self.closed && self.out < self.limit {
            let Some(index) = self.pop_waiter() else { break };
            self.out += 1;
            let w = &mut self.waiters[index];
            w.slot = Slot::Granted(Grant::Permit);
            if let Some(waker) = w.waker.take() {
                waker.wake();
            }
        }
    }

    /// Frees a slot whose waiter is done with it.
    fn free_slot(&mut self, index: u32) {
        let w = &mut self.waiters[index as usize];
        w.slot = Slot::Free;
        w.waker = None;
        w.generation = w.generation.wrapping_add(1);
        self.free.push(index);
    }
}

/// A place in the queue. Dropping it (the client went away, or its own
/// timeout fired) gives up the place; a grant that arrived meanwhile goes to
/// the next waiter, so no connection or permit is lost.
pub(crate) struct Wait<'a, T> {
    gate: &'a Gate<T>,
    index: u32,
    generation: u32,
    done: bool,
}

impl<T> Future for Wait<'_, T> {
    type Output = Result<Grant<T>, WaitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut s = this.gate.lock();
        let w = &mut s.waiters[this.index as usize];
        debug_assert_eq!(w.generation, this.generation);
        let result = match std::mem::replace(&mut w.slot, Slot::Free) {
            Slot::Waiting => {
                w.slot = Slot::Waiting;
                match &mut w.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    waker => *waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            Slot::Granted(grant) => Ok(grant),
            Slot::TimedOut => Err(WaitError::TimedOut),
            Slot::Closed => Err(WaitError::Closed),
            Slot::Free => unreachable!("a waiter's slot is freed only by the waiter"),
        };
        s.free_slot(this.index);
        this.done = true;
        Poll::Ready(result)
    }
}

impl<T> Drop for Wait<'_, T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut s = self.gate.lock();
        let w = &mut s.waiters[self.index as usize];
        let mut wake = None;
        match std::mem::replace(&mut w.slot, Slot::Free) {
            Slot::Waiting => s.queued -= 1,
            Slot::Granted(Grant::Permit) => wake = s.release_locked(),
            Slot::Granted(Grant::Item(item)) => {
                // Straight to the next waiter if there is one, else back
                // to the pool (outside the lock) and the permit with it.
                let next = if !s.closed && s.out <= s.limit {
                    s.pop_waiter()
                } else {
                    None
                };
                match next {
                    Some(next) => {
                        let n = &mut s.waiters[next];
                        n.slot = Slot::Granted(Grant::Item(item));
                        wake = n.waker.take();
                    }
                    None => {
                        // Back on the hot stack, then the permit (under
                        // the lock, as in `put_back`).
                        s.out -= 1;
                        s.shelve(item);
                    }
                }
            }
            Slot::TimedOut | Slot::Closed | Slot::Free => {}
        }
        s.free_slot(self.index);
        drop(s);
        if let Some(waker) = wake {
            waker.wake();
        }
    }
}

/// Sleeps until the earliest waiter's deadline (or until told of an earlier
/// one), times out the waiters due, and repeats; ends with its gate.
async fn reap<T>(gate: Weak<Gate<T>>, notify: Arc<Notify>) {
    let mut next = None;
    loop {
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                    _ = notify.notified() => {}
                }
            }
            None => notify.notified().await,
        }
        let Some(gate) = gate.upgrade() else { return };
        if gate.is_closed() {
            return;
        }
        next = gate.expire(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LONG: Duration = Duration::from_secs(60);

    /// Counts drops, standing in for "returned to the pool".
    struct Item(u32, Arc<AtomicUsize>);
    impl Homed for Item {
        /// Items numbered 1000-1999 belong to worker 1, 2000 and up to
        /// worker 0, the rest to the test's thread (not a worker).
        fn home(&self) -> usize {
            match self.0 {
                2000.. => 0,
                1000.. => 1,
                _ => crate::home::OFF_WORKERS,
            }
        }
    }
    impl Drop for Item {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waiter<'a>(gate: &'a Gate<Item>, max_queue: usize, timeout: Duration) -> Wait<'a, Item> {
        match gate.enter(max_queue, timeout) {
            Entry::Wait(w) => w,
            Entry::Admitted(_) => panic!("admitted, expected to wait"),
            Entry::QueueFull { .. } => panic!("queue full"),
            Entry::Closed => panic!("closed"),
        }
    }

    fn admitted(gate: &Gate<Item>) -> bool {
        matches!(gate.enter(0, LONG), Entry::Admitted(_))
    }

    fn ready<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(f).poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn admits_up_to_the_limit_then_queues() {
        let gate = Gate::<Item>::new(2, None);
        assert!(admitted(&gate));
        assert!(admitted(&gate));
        let mut w = waiter(&gate, 0, LONG);
        assert!(ready(&mut w).is_none());
        assert_eq!(
            gate.status(),
            GateStatus {
                out: 2,
                limit: 2,
                queued: 1,
                hot: 0
            }
        );
        gate.release(None);
        assert!(matches!(ready(&mut w), Some(Ok(Grant::Permit))));
        assert_eq!(
            gate.status(),
            GateStatus {
                out: 2,
                limit: 2,
                queued: 0,
                hot: 0
            }
        );
        gate.release(None);
        gate.release(None);
        assert_eq!(gate.status().out, 0);
    }

    #[tokio::test]
    async fn waiters_are_served_in_arrival_order_with_the_item_itself() {
        let drops = Arc::new(AtomicUsize::new(0));
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let mut waits: Vec<_> = (0..5).map(|_| waiter(&gate, 0, LONG)).collect();
        for w in &mut waits {
            assert!(ready(w).is_none());
        }
        for (n, w) in waits.iter_mut().enumerate() {
            assert!(gate.put_back(Item(n as u32, drops.clone()), None));
            match ready(w) {
                Some(Ok(Grant::Item(item))) => assert_eq!(item.0, n as u32),
                _ => panic!("waiter {n} not served in order"),
            }
            // Later waiters are still waiting.
            assert_eq!(gate.waiting(), 4 - n);
        }
        // Nobody waits: the item goes on the hot stack, the permit is free,
        // and the next request admitted gets that item.
        assert!(!gate.put_back(Item(9, drops.clone()), None));
        assert_eq!(gate.status().out, 0);
        assert_eq!(gate.status().hot, 1);
        assert_eq!(drops.load(Ordering::SeqCst), 5);
        match gate.enter(0, LONG) {
            Entry::Admitted(Some(item)) => assert_eq!(item.0, 9),
            _ => panic!("the hot item was not handed to the next request"),
        }
        assert_eq!(gate.status().hot, 0);
    }

    /// Takes a hot item as worker `worker` would.
    fn hot_for(gate: &Gate<Item>, worker: usize) -> Option<u32> {
        crate::home::set_worker(worker);
        let entry = gate.enter(0, LONG);
        crate::home::set_worker(crate::home::OFF_WORKERS);
        match entry {
            Entry::Admitted(hot) => hot.map(|item| item.0),
            _ => panic!("expected to be admitted"),
        }
    }

    #[tokio::test]
    async fn a_worker_takes_its_own_hot_connection_then_opens_one_then_borrows() {
        let drops = Arc::new(AtomicUsize::new(0));
        let gate = Gate::<Item>::new(3, None);
        assert!(admitted(&gate) && admitted(&gate));
        // Worker 1's item, then worker 0's on top.
        gate.put_back(Item(1000, drops.clone()), None);
        gate.put_back(Item(2007, drops.clone()), None);
        // Worker 1 gets its own although worker 0's is newer.
        assert_eq!(hot_for(&gate, 1), Some(1000));
        // Worker 1 again: none of its own; the pool has room (1 out + 1 hot
        // + this one = 3), so it opens one rather than borrow.
        assert_eq!(hot_for(&gate, 1), None);
        // With the pool at its size (2 out, 2 hot, this one), worker 2
        // borrows the newest of another worker's.
        gate.put_back(Item(1001, drops.clone()), None);
        assert_eq!(gate.status().out, 1);
        assert_eq!(hot_for(&gate, 2), Some(1001));
        assert_eq!(hot_for(&gate, 0), Some(2007));
    }

    #[tokio::test]
    async fn the_hot_stack_is_newest_first_evictable_and_emptied_on_close() {
        let drops = Arc::new(AtomicUsize::new(0));
        let gate = Gate::<Item>::new(3, None);
        for _ in 0..3 {
            assert!(admitted(&gate));
        }
        for n in 0..3 {
            assert!(!gate.put_back(Item(n, drops.clone()), None));
        }
        assert_eq!(gate.status().hot, 3);
        // The owner evicts what it no longer trusts; nothing is dropped
        // under the lock, the caller gets the items.
        let evicted = gate.evict_hot(|item| item.0 != 0);
        assert_eq!(evicted.len(), 1);
        drop(evicted);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let two = match gate.enter(0, LONG) {
            Entry::Admitted(Some(item)) => item,
            _ => panic!("expected a hot item"),
        };
        assert_eq!(two.0, 2, "newest first");
        let one = match gate.enter(0, LONG) {
            Entry::Admitted(Some(item)) => item,
            _ => panic!("expected a hot item"),
        };
        // A limit below the permits out drops a returned item instead.
        gate.set_bounds(1, false);
        assert!(!gate.put_back(two, None));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        assert!(!gate.put_back(one, None));
        assert_eq!(gate.status().hot, 1);
        gate.close();
        assert_eq!(drops.load(Ordering::SeqCst), 3, "close returns the hot stack");
        assert_eq!(gate.status().hot, 0);
    }

    #[tokio::test]
    async fn a_newcomer_does_not_pass_a_waiter() {
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let mut w = waiter(&gate, 0, LONG);
        assert!(ready(&mut w).is_none());
        // A permit comes back and goes to the waiter, not to the next
        // request, which queues behind.
        gate.release(None);
        let mut late = waiter(&gate, 0, LONG);
        assert!(matches!(ready(&mut w), Some(Ok(Grant::Permit))));
        assert!(ready(&mut late).is_none());
        assert!(!gate.try_enter());
    }

    #[tokio::test]
    async fn max_queue_refuses_at_once() {
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let _a = waiter(&gate, 2, LONG);
        let _b = waiter(&gate, 2, LONG);
        assert!(matches!(gate.enter(2, LONG), Entry::QueueFull { waiting: 2 }));
        // No bound: queues.
        assert!(matches!(gate.enter(0, LONG), Entry::Wait(_)));
    }

    #[tokio::test]
    async fn a_wait_times_out_at_its_deadline() {
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let started = Instant::now();
        let result = waiter(&gate, 0, Duration::from_millis(100)).await;
        let waited = started.elapsed();
        assert!(matches!(result, Err(WaitError::TimedOut)));
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert_eq!(
            gate.status(),
            GateStatus {
                out: 1,
                limit: 1,
                queued: 0,
                hot: 0
            }
        );
    }

    #[tokio::test]
    async fn an_earlier_deadline_behind_a_later_one_still_fires() {
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let mut slow = waiter(&gate, 0, LONG);
        assert!(ready(&mut slow).is_none());
        // Fires on its own deadline, not the slow waiter's (LONG): a gate
        // that only watched the queue's head would still be waiting here.
        let fast = tokio::time::timeout(LONG / 2, waiter(&gate, 0, Duration::from_millis(50)))
            .await
            .expect("the earlier deadline fired before the later one");
        assert!(matches!(fast, Err(WaitError::TimedOut)));
        assert!(ready(&mut slow).is_none());
        gate.release(None);
        assert!(matches!(ready(&mut slow), Some(Ok(Grant::Permit))));
    }

    #[tokio::test]
    async fn a_timed_out_waiter_is_skipped() {
        let drops = Arc::new(AtomicUsize::new(0));
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let first = waiter(&gate, 0, Duration::from_millis(20));
        let mut second = waiter(&gate, 0, LONG);
        assert!(matches!(first.await, Err(WaitError::TimedOut)));
        assert!(gate.put_back(Item(1, drops.clone()), None));
        assert!(matches!(ready(&mut second), Some(Ok(Grant::Item(Item(1, _))))));
    }

    #[tokio::test]
    async fn a_dropped_waiter_passes_its_grant_on() {
        let drops = Arc::new(AtomicUsize::new(0));
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let mut a = waiter(&gate, 0, LONG);
        let mut b = waiter(&gate, 0, LONG);
        assert!(ready(&mut a).is_none());
        assert!(ready(&mut b).is_none());
        // The item is handed to `a`, whose client goes away before it runs.
        assert!(gate.put_back(Item(7, drops.clone()), None));
        drop(a);
        let item = match ready(&mut b) {
            Some(Ok(Grant::Item(item))) => item,
            _ => panic!("the item was lost"),
        };
        assert_eq!(item.0, 7);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        // Same with nobody behind: the item goes on the hot stack, the
        // permit is freed.
        let mut c = waiter(&gate, 0, LONG);
        assert!(ready(&mut c).is_none());
        assert!(gate.put_back(item, None));
        drop(c);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert_eq!(
            gate.status(),
            GateStatus {
                out: 0,
                limit: 1,
                queued: 0,
                hot: 1
            }
        );
        // And a dropped permit grant frees the permit.
        assert!(admitted(&gate));
        let mut d = waiter(&gate, 0, LONG);
        assert!(ready(&mut d).is_none());
        gate.release(None);
        drop(d);
        assert_eq!(
            gate.status(),
            GateStatus {
                out: 0,
                limit: 1,
                queued: 0,
                hot: 0
            }
        );
    }

    #[tokio::test]
    async fn a_waiter_dropped_while_waiting_leaves_the_queue() {
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let mut a = waiter(&gate, 0, LONG);
        assert!(ready(&mut a).is_none());
        drop(a);
        assert_eq!(gate.waiting(), 0);
        gate.release(None);
        assert_eq!(gate.status().out, 0);
        // Its slot is reused without confusion.
        assert!(admitted(&gate));
        let mut b = waiter(&gate, 0, LONG);
        gate.release(None);
        assert!(matches!(ready(&mut b), Some(Ok(Grant::Permit))));
    }

    #[tokio::test]
    async fn close_wakes_every_waiter_and_refuses_newcomers() {
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let mut a = waiter(&gate, 0, LONG);
        let mut b = waiter(&gate, 0, LONG);
        assert!(ready(&mut a).is_none());
        gate.close();
        assert!(matches!(ready(&mut a), Some(Err(WaitError::Closed))));
        assert!(matches!(ready(&mut b), Some(Err(WaitError::Closed))));
        assert!(matches!(gate.enter(0, LONG), Entry::Closed));
        assert!(!gate.try_enter());
        // A connection coming back is not handed on.
        let drops = Arc::new(AtomicUsize::new(0));
        assert!(!gate.put_back(Item(1, drops), None));
        assert_eq!(gate.status().out, 0);
    }

    #[tokio::test]
    async fn a_wider_bound_admits_waiters_a_narrower_one_drains() {
        let gate = Gate::<Item>::new(1, None);
        assert!(admitted(&gate));
        let mut a = waiter(&gate, 0, LONG);
        let mut b = waiter(&gate, 0, LONG);
        gate.set_bounds(3, false);
        assert!(matches!(ready(&mut a), Some(Ok(Grant::Permit))));
        assert!(matches!(ready(&mut b), Some(Ok(Grant::Permit))));
        assert_eq!(
            gate.status(),
            GateStatus {
                out: 3,
                limit: 3,
                queued: 0,
                hot: 0
            }
        );
        gate.set_bounds(1, false);
        let mut c = waiter(&gate, 0, LONG);
        // Over the bound: returns do not go to waiters until below it.
        let drops = Arc::new(AtomicUsize::new(0));
        assert!(!gate.put_back(Item(1, drops.clone()), None));
        gate.release(None);
        assert!(ready(&mut c).is_none());
        gate.release(None);
        assert!(matches!(ready(&mut c), Some(Ok(Grant::Permit))));
        assert_eq!(
            gate.status(),
            GateStatus {
                out: 1,
                limit: 1,
                queued: 0,
                hot: 0
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_tasks_share_few_permits_without_loss() {
        let gate = Gate::<Item>::new(3, None);
        let drops = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for t in 0..16u32 {
            let gate = gate.clone();
            let drops = drops.clone();
            let served = served.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..200u32 {
                    let item = match gate.enter(0, LONG) {
                        Entry::Admitted(hot) => hot.unwrap_or_else(|| Item(t * 1000 + i, drops.clone())),
                        Entry::Wait(w) => match w.await.expect("granted") {
                            Grant::Item(item) => item,
                            Grant::Permit => Item(t * 1000 + i, drops.clone()),
                        },
                        _ => panic!("refused"),
                    };
                    served.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    gate.put_back(item, None);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(served.load(Ordering::SeqCst), 16 * 200);
        let status = gate.status();
        assert_eq!((status.out, status.queued), (0, 0));
        assert!(status.hot <= 3, "{status:?}");
    }
}

/// The waiting path's own cost, without a server: 16 tasks sharing 2 (or
/// 16) dummy connections, through deadpool alone (as before the gate) and
/// through the gate in front of deadpool (as now). Prints CPU per
/// checkout-and-return.
/// `cargo test --release -p sluice-pool wait_path_cost -- --ignored --nocapture`
#[cfg(test)]
mod cost {
    use super::*;
    use deadpool::managed::{self, Metrics, RecycleResult};

    struct Dummy;
    impl Homed for managed::Object<Dummy> {
        fn home(&self) -> usize {
            0
        }
    }
    impl managed::Manager for Dummy {
        type Type = u64;
        type Error = ();
        async fn create(&self) -> Result<u64, ()> {
            Ok(0)
        }
        async fn recycle(&self, _: &mut u64, _: &Metrics) -> RecycleResult<()> {
            Ok(())
        }
    }
    type DPool = managed::Pool<Dummy>;
    type Obj = managed::Object<Dummy>;

    fn dpool(max: usize) -> DPool {
        DPool::builder(Dummy)
            .max_size(max)
            .wait_timeout(Some(Duration::from_secs(2)))
            .create_timeout(Some(Duration::from_secs(2)))
            .recycle_timeout(Some(Duration::from_secs(2)))
            .queue_mode(managed::QueueMode::Fifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .unwrap()
    }

    fn cpu() -> Duration {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }

    const TASKS: usize = 16;
    const ROUNDS: usize = 40_000;

    async fn run<F, Fut>(one: F) -> (Duration, Duration)
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (c0, t0) = (cpu(), Instant::now());
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let one = one.clone();
                tokio::spawn(async move {
                    for _ in 0..ROUNDS {
                        one().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let n = (TASKS * ROUNDS) as u32;
        ((cpu() - c0) / n, t0.elapsed() / n)
    }

    async fn deadpool_only(max: usize) -> (Duration, Duration) {
        let pool = dpool(max);
        run(move || {
            let pool = pool.clone();
            async move {
                let conn = pool.get().await.unwrap();
                tokio::task::yield_now().await;
                drop(conn);
            }
        })
        .await
    }

    async fn gated(max: usize) -> (Duration, Duration) {
        let pool = dpool(max);
        let gate = Gate::<Obj>::new(max, None);
        run(move || {
            let (pool, gate) = (pool.clone(), gate.clone());
            async move {
                let conn = match gate.enter(0, Duration::from_secs(2)) {
                    Entry::Admitted(hot) => match hot {
                        Some(conn) => conn,
                        None => pool.get().await.unwrap(),
                    },
                    Entry::Wait(w) => match w.await.unwrap() {
                        Grant::Item(conn) => conn,
                        Grant::Permit => pool.get().await.unwrap(),
                    },
                    _ => unreachable!(),
                };
                tokio::task::yield_now().await;
                gate.put_back(conn, None);
            }
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check"]
    async fn wait_path_cost() {
        for max in [2, 16] {
            let (cpu, wall) = deadpool_only(max).await;
            println!(
                "deadpool alone, {TASKS} tasks, {max} connections: {cpu:?} CPU, {wall:?} wall per checkout"
            );
            let (cpu, wall) = gated(max).await;
            println!(
                "gate + deadpool, {TASKS} tasks, {max} connections: {cpu:?} CPU, {wall:?} wall per checkout"
            );
        }
    }
}
