//! Admission control for sends: an adaptive limit on the sends an instance holds at once
//! (queued for group commit or being appended), set by how long they wait.
//!
//! A fixed queue bound cannot keep latency: on shared cores the sends an instance can
//! append in a given time depend on what else runs (NGINX, the database, other services),
//! and once the cores are saturated every queue on the path grows, not only ours. The limit
//! is found instead by additive increase, multiplicative decrease (AIMD, TCP's congestion
//! avoidance, RFC 5681 §3.1), on the queueing delay of each batch's oldest send
//! ([`SendAdmission::queueing_delay`]): CoDel's sojourn time (RFC 8289 §3), counted from the
//! edge (NGINX's `X-Request-Start`, [`crate::platform::queue_time`]) to the moment its batch
//! was taken, less the part of that wait the batch before it spent committing — the round
//! trip of its `COMMIT`, which waits for the WAL to reach the disk.
//!
//! What the wait behind the batch before is made of: its statement, whose time grows with
//! the sends in it, and its commit, whose time does not. A batch holds what queued while the
//! one before it ran, so under overload each batch is bigger and slower than the last until
//! it reaches `SEND_BATCH_MAX`: that growth is a queue too, hidden inside the batches, and a
//! send waits behind it without ever missing a batch. It counts (2026-12-02, 2 × the
//! sustainable rate: every send was accepted at p50 60–120 ms while no send missed a batch,
//! so a delay that left out the whole batch before saw no wait and never cut the limit).
//! The commit does not: it is the disk's time, not the queue's — a WAL flush at any load, a
//! synchronous standby's round trip, and the disk's stalls (50 ms to 2.5 s on the benchmark
//! host). Refusing sends does not shorten a stalled flush, and a closed loop of clients that
//! never queue beyond one batch would otherwise be refused after every stall (counting the
//! whole wait less only the quickest append of the last minutes, the benchmark's closed
//! loop of 32 users got 41 refusals in 30 s).
//!
//! Approximations: with several writers (`SEND_WRITERS`) the commit excused is the last one
//! recorded by any of them, and only where it overlapped the wait; on saturated cores a
//! commit's round trip holds some waiting for a core too, which is then not counted.
//!
//! When a writer takes a batch whose oldest send waited
//!
//! - longer than the target (`SEND_QUEUE_MAX_WAIT_MS`), as every batch has for at least
//!   CoDel's interval (100 ms, RFC 8289 §4.3: a burst that drains within it is not a
//!   standing queue, and is not refused): the sends held (or the limit, if
//!   fewer: TCP cuts its flight size, not its window, RFC 5681 §3.1 eq. 4 — a limit far
//!   above what is held would take several cuts to bind) are multiplied by target ÷ wait,
//!   kept between 0.5 (TCP Reno's factor) and 0.7 (CUBIC's, RFC 9438 §4.6): the longer the
//!   wait, the deeper the cut (the ratio is Netflix Gradient's limit update). At most once
//!   per window: only a send admitted after the last cut can cause the next, so the sends
//!   already admitted under the old limit do not cut it again;
//! - within the target, while the limit is in use (at least half of it held): it grows by
//!   one per limit's worth of sends taken, probing for room;
//! - within the target while less than half of it is held, and no batch has waited past
//!   the target for [`CALM_INTERVALS`] intervals: by one per send taken. The limit does not
//!   bind then, so growing it adds no load now; it only lets a calm instance forget a past
//!   cut as fast as it serves sends, so a later burst that fits the queue is not refused
//!   for a slowdown long gone. (TCP does the opposite after idle, RFC 5681 §4.1, because
//!   its window is all a sender may put on the network; this limit binds only when sends
//!   pile up, and the next standing queue cuts it again.) Not sooner: under overload the
//!   sends held dip below half the limit for a moment after every cut, while the sends
//!   admitted before it are answered and the next ones are still on their way in, and
//!   growing by one per send then took the limit from its cut back to the ceiling within a
//!   second, let in a burst of the ceiling's size and cut it again (2026-12-03, 2 × the
//!   sustainable rate: an instance's limit swung between 3 and 128 every half second, and
//!   the accepted sends' p99 was 80–460 ms by second); until calm, it grows as when in use.
//!
//! It starts at, and never exceeds, the queue's capacity (`SEND_QUEUE_CAPACITY`, the bound
//! on memory), and never falls below one. A send over the limit answers 503 with
//! `Retry-After` at once, before it costs the database anything: the instance accepts what
//! it can serve without a standing queue and turns the rest away while it is cheap to.
//!
//! **A user's share.** One user holds at most [`USER_SHARE`] of the limit (at least one
//! send): a single account sending as fast as it is answered would otherwise take every
//! place, and every other user of the instance would be refused until it stopped. Past its
//! share a user's send answers 503 with `Retry-After` at once, as past the limit. (The send
//! budget, `SEND_RATE_LIMIT`, bounds a user's sends over a window across instances, but it
//! is checked in the batch statement, after a send has taken its place here.) The share is
//! rounded down, so at a limit of 2 or 3 it is one send; it is no fair queue: two such
//! users together can still take every place, and at a limit of one, one user holds it.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

/// The least a wait over the target multiplies the limit by: CUBIC's β (RFC 9438 §4.6).
pub const GENTLEST_CUT: f64 = 0.7;

/// The most a wait over the target multiplies the limit by: TCP Reno's halving
/// (RFC 5681 §3.1).
pub const DEEPEST_CUT: f64 = 0.5;

/// How long waits must stay past the target before they cut the limit: CoDel's interval
/// (RFC 8289 §4.3). A burst that drains within it is not a standing queue.
pub const STANDING_INTERVAL: Duration = Duration::from_millis(100);

/// The most of the limit one user's sends may hold (see the module's "A user's share").
pub const USER_SHARE: f64 = 0.5;

/// How many [`STANDING_INTERVAL`]s without a wait past the target make an instance calm,
/// so that its limit may grow by one per send (1 s: TCP's least retransmission timeout,
/// RFC 6298 §2.4, the idle time after which RFC 5681 §4.1 deems a connection's state
/// stale).
pub const CALM_INTERVALS: u32 = 10;

/// The adaptive limit of one instance's sends in flight.
pub struct SendAdmission {
    ceiling: f64,
    target: Duration,
    interval: Duration,
    /// [`CALM_INTERVALS`] intervals.
    calm: Duration,
    /// Sends admitted and not yet answered.
    in_flight: AtomicUsize,
    limit: Mutex<Window>,
    /// Each user's sends holding a share ([`SendAdmission::share`]); no entry at zero.
    shares: Mutex<HashMap<Uuid, usize>>,
}

/// A user's place within their share of the limit, given back when dropped (once the send
/// is answered, or was never queued).
pub struct Share {
    admission: Arc<SendAdmission>,
    user: Uuid,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut shares = self
            .admission
            .shares
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(held) = shares.get_mut(&self.user) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                shares.remove(&self.user);
            }
        }
    }
}

struct Window {
    /// Sends in flight allowed now, in [1, ceiling].
    limit: f64,
    /// When the limit last decreased: sends admitted before then cannot decrease it again.
    decreased_at: Option<Instant>,
    /// When the last batch appended was committing: from sending its `COMMIT` to the answer
    /// ([`SendAdmission::appended`]).
    last_commit: Option<(Instant, Instant)>,
    /// Since when every batch taken has waited past the target; `None` while the last did not.
    above_since: Option<Instant>,
    /// When a batch taken last waited past the target.
    last_above: Option<Instant>,
}

/// A batch a writer just took, as admission control learns from it.
pub struct Taken {
    /// Sends in the batch.
    pub sends: usize,
    /// Its oldest send's queueing delay ([`SendAdmission::queueing_delay`]).
    pub waited: Duration,
    /// When the first of its sends was admitted (see [`SendAdmission::admit`]).
    pub first_admitted: Instant,
}

impl SendAdmission {
    /// A limit starting at `ceiling` sends in flight (at least one), kept to `target`, cut
    /// once waits have stayed past it for [`STANDING_INTERVAL`].
    pub fn new(ceiling: usize, target: Duration) -> Self {
        Self::with_interval(ceiling, target, STANDING_INTERVAL)
    }

    fn with_interval(ceiling: usize, target: Duration, interval: Duration) -> Self {
        let ceiling = ceiling.max(1) as f64;
        Self {
            ceiling,
            target,
            interval,
            calm: interval * CALM_INTERVALS,
            in_flight: AtomicUsize::new(0),
            limit: Mutex::new(Window {
                limit: ceiling,
                decreased_at: None,
                last_commit: None,
                above_since: None,
                last_above: None,
            }),
            shares: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a place for one send of `user` within their share of the limit
    /// ([`USER_SHARE`] of it, at least one), before [`SendAdmission::admit`]: `None` when
    /// they hold as many as that already (the caller refuses the send).
    pub fn share(self: &Arc<Self>, user: Uuid) -> Option<Share> {
        let most = ((self.limit() * USER_SHARE) as usize).max(1);
        // A panic never happens while the map is held; were it poisoned, it is still whole.
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        let held = shares.entry(user).or_insert(0);
        if *held >= most {
            return None;
        }
        *held += 1;
        Some(Share {
            admission: self.clone(),
            user,
        })
    }

    /// Takes a place for one send: `Some(now)` (its admission instant, for
    /// [`Taken::first_admitted`]) when fewer than the limit are in flight, else `None` (the
    /// caller refuses it). The place is given back by [`SendAdmission::release`] once the
    /// send is answered (or was never queued).
    pub fn admit(&self) -> Option<Instant> {
        let limit = self.limit() as usize;
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Instant::now())
    }

    /// Gives back `sends` places taken by [`SendAdmission::admit`].
    pub fn release(&self, sends: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(sends))
            });
    }

    /// The queueing delay of a batch taken at `now` whose oldest send reached the edge at
    /// `arrived`: how long that send waited until its batch was taken, less the part of that
    /// wait the last batch appended spent committing ([`SendAdmission::appended`]; with one
    /// writer, the batch it waited behind; nothing before the first, nor for a send that
    /// arrived after that commit), never below zero.
    pub fn queueing_delay(&self, arrived: Instant, now: Instant) -> Duration {
        let sojourn = now.saturating_duration_since(arrived);
        let committing = self
            .limit
            .lock()
            .ok()
            .and_then(|w| w.last_commit)
            .map_or(Duration::ZERO, |(from, to)| {
                to.min(now).saturating_duration_since(from.max(arrived))
            });
        sojourn.saturating_sub(committing)
    }

    /// Records when the batch a writer just appended was committing (`from` sending its
    /// `COMMIT` to `to`, the answer): the part of a wait behind it that is the disk's, not
    /// the queue's.
    pub fn appended(&self, from: Instant, to: Instant) {
        if let Ok(mut w) = self.limit.lock() {
            w.last_commit = Some((from, to));
        }
    }

    /// Learns from a batch a writer just took (its sends stay held until released).
    pub fn taken(&self, batch: &Taken) {
        let held = self.in_flight.load(Ordering::Acquire);
        if let Ok(mut w) = self.limit.lock() {
            let now = Instant::now();
            if batch.waited > self.target {
                w.last_above = Some(now);
                let since = *w.above_since.get_or_insert(now);
                let standing = now.saturating_duration_since(since) >= self.interval;
                if standing && w.decreased_at.is_none_or(|at| batch.first_admitted > at) {
                    let factor = (self.target.as_secs_f64() / batch.waited.as_secs_f64())
                        .clamp(DEEPEST_CUT, GENTLEST_CUT);
                    w.limit = (w.limit.min(held as f64) * factor).max(1.0);
                    w.decreased_at = Some(now);
                }
            } else if held as f64 * 2.0 >= w.limit
                || w.last_above
                    .is_some_and(|at| now.saturating_duration_since(at) < self.calm)
            {
                w.above_since = None;
                w.limit = (w.limit + batch.sends as f64 / w.limit).min(self.ceiling);
            } else {
                w.above_since = None;
                w.limit = (w.limit + batch.sends as f64).min(self.ceiling);
            }
        }
    }

    /// Sends in flight allowed now.
    pub fn limit(&self) -> f64 {
        self.limit.lock().map_or(self.ceiling, |w| w.limit)
    }

    /// Sends admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(40);

    fn batch(sends: usize, waited_ms: u64, first_admitted: Instant) -> Taken {
        Taken {
            sends,
            waited: Duration::from_millis(waited_ms),
            first_admitted,
        }
    }

    /// A batch taken and answered.
    fn served(a: &SendAdmission, batch: &Taken) {
        a.taken(batch);
        a.release(batch.sends);
    }

    fn admit_all(a: &SendAdmission, n: usize) -> Instant {
        let mut first = None;
        for _ in 0..n {
            let at = a.admit().expect("under the limit");
            first.get_or_insert(at);
        }
        first.expect("admitted one")
    }

    #[test]
    fn a_full_limit_refuses_and_an_answer_makes_room() {
        let a = SendAdmission::with_interval(4, TARGET, Duration::ZERO);
        let first = admit_all(&a, 4);
        assert!(
            a.admit().is_none(),
            "a fifth send admitted over a limit of 4"
        );
        served(&a, &batch(1, 5, first));
        assert!(a.admit().is_some(), "no room after a send was answered");
    }

    #[test]
    fn a_slow_batch_shrinks_the_limit_once_per_window() {
        let a = SendAdmission::with_interval(100, TARGET, Duration::ZERO);
        let first = admit_all(&a, 90);
        served(&a, &batch(30, 50, first));
        assert_near(
            a.limit(),
            63.0,
            "a batch a little slow cuts the 90 held by 0.7",
        );
        served(&a, &batch(30, 50, first));
        assert_near(
            a.limit(),
            63.0,
            "sends admitted before the cut cut it again",
        );
        let later = admit_all(&a, 1) + Duration::from_millis(1);
        served(&a, &batch(1, 60, later));
        assert_near(
            a.limit(),
            31.0 * 40.0 / 60.0,
            "a send admitted after it did not, from the 31 held, by target ÷ wait",
        );
        a.release(20);
        let later = admit_all(&a, 1) + Duration::from_millis(1);
        served(&a, &batch(1, 400, later));
        assert_near(
            a.limit(),
            5.5,
            "far over the target, the 11 held by half at most",
        );
        assert_eq!(a.in_flight(), 10);
    }

    #[test]
    fn a_cut_is_from_the_sends_held_when_fewer_than_the_limit() {
        let a = SendAdmission::with_interval(512, TARGET, Duration::ZERO);
        let first = admit_all(&a, 40);
        served(&a, &batch(8, 400, first));
        assert_eq!(a.limit(), 20.0, "half of the 40 held, not 256");
    }

    #[test]
    fn the_limit_never_falls_below_one_send() {
        let a = SendAdmission::with_interval(3, TARGET, Duration::ZERO);
        shrink(&a, 10);
        assert_eq!(a.limit(), 1.0);
        assert!(a.admit().is_some(), "an idle instance refuses every send");
    }

    /// `n` times: fills the limit and answers it all in one batch far over the target,
    /// admitted after the cut before it (each halves the limit).
    fn shrink(a: &SendAdmission, n: usize) {
        for _ in 0..n {
            let held = a.limit() as usize - a.in_flight();
            admit_all(a, held);
            served(
                a,
                &batch(held, 500, Instant::now() + Duration::from_millis(1)),
            );
        }
    }

    fn assert_near(got: f64, want: f64, why: &str) {
        assert!((got - want).abs() < 1e-9, "{why}: {got}, not {want}");
    }

    #[test]
    fn fast_batches_grow_the_limit_by_one_per_window_up_to_the_ceiling() {
        let a = SendAdmission::with_interval(64, TARGET, Duration::ZERO);
        shrink(&a, 3);
        let shrunk = a.limit();
        assert_eq!(shrunk, 8.0);
        let first = admit_all(&a, 4);
        served(&a, &batch(1, 5, first));
        assert_near(
            a.limit(),
            shrunk + 1.0 / shrunk,
            "one send within the target",
        );
        // Half the limit held, one send answered at a time, each within the target.
        for _ in 0..10_000 {
            while a.in_flight() * 2 < a.limit().ceil() as usize {
                admit_all(&a, 1);
            }
            served(&a, &batch(1, 5, first));
        }
        assert_eq!(a.limit(), 64.0, "the ceiling is the queue's capacity");
    }

    #[test]
    fn the_wait_behind_a_growing_batch_is_queueing_delay_and_its_commit_is_not() {
        let a = SendAdmission::with_interval(8, TARGET, Duration::ZERO);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            a.queueing_delay(t0, t0 + ms(30)),
            ms(30),
            "before any batch, the whole wait"
        );
        // The batch before ran from 0 to 70 ms, committing from 58 ms: a send that waited
        // through it waited 58 ms for the sends ahead of it.
        a.appended(t0 + ms(58), t0 + ms(70));
        assert_eq!(a.queueing_delay(t0, t0 + ms(70)), ms(58));
        // One that arrived during the commit waited for the disk alone.
        assert_eq!(a.queueing_delay(t0 + ms(60), t0 + ms(70)), Duration::ZERO);
        // A stalled disk held the next commit for 900 ms: the wait through it is the disk's.
        a.appended(t0 + ms(75), t0 + ms(975));
        assert_eq!(a.queueing_delay(t0 + ms(70), t0 + ms(975)), ms(5));
        // A send that arrived after that commit, once the writer was idle, is not excused by it.
        assert_eq!(a.queueing_delay(t0 + ms(2000), t0 + ms(2030)), ms(30));
    }

    #[test]
    fn a_burst_shorter_than_the_interval_is_not_cut() {
        let a = SendAdmission::new(64, TARGET);
        let first = admit_all(&a, 40);
        a.taken(&batch(20, 500, first));
        assert_eq!(a.limit(), 64.0, "cut on the first slow batch");
        a.taken(&batch(20, 5, first));
        a.release(40);
        std::thread::sleep(STANDING_INTERVAL);
        let later = admit_all(&a, 40) + Duration::from_millis(1);
        a.taken(&batch(20, 500, later));
        assert_eq!(
            a.limit(),
            64.0,
            "a fast batch between did not end the burst"
        );
        std::thread::sleep(STANDING_INTERVAL);
        a.taken(&batch(20, 500, later));
        assert_near(
            a.limit(),
            20.0,
            "waits past the target for an interval: 40 held, halved",
        );
    }

    #[test]
    fn a_user_holds_at_most_half_the_limit_and_others_keep_their_room() {
        let a = Arc::new(SendAdmission::with_interval(8, TARGET, Duration::ZERO));
        let (flooder, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut held: Vec<Share> = (0..4)
            .map(|_| a.share(flooder).expect("within half of 8"))
            .collect();
        assert!(a.share(flooder).is_none(), "a fifth of 8 for one user");
        let others: Vec<Share> = (0..4)
            .map(|_| a.share(other).expect("another user's half"))
            .collect();
        held.pop();
        assert!(a.share(flooder).is_some(), "no room after an answer");
        drop((held, others));
        assert!(
            a.shares.lock().expect("shares").is_empty(),
            "entries left for users holding nothing"
        );
        shrink(&a, 10);
        assert_eq!(a.limit(), 1.0);
        assert!(a.share(flooder).is_some(), "a share of a limit of one");
    }

    #[test]
    fn until_calm_a_cut_limit_grows_by_one_per_limit_of_sends_even_when_little_is_held() {
        let a = SendAdmission::with_interval(64, TARGET, Duration::from_millis(100));
        let first = admit_all(&a, 40);
        a.taken(&batch(20, 500, first));
        std::thread::sleep(Duration::from_millis(100));
        let later = admit_all(&a, 1) + Duration::from_millis(1);
        a.taken(&batch(21, 500, later));
        a.release(41);
        assert_eq!(a.limit(), 20.5, "41 held, cut by half after the interval");
        // The sends held dip below half the limit, as they do between batches under load.
        for _ in 0..32 {
            let at = admit_all(&a, 1);
            served(&a, &batch(1, 5, at));
        }
        assert!(
            a.limit() < 23.0,
            "grew by one per send within the calm period: {}",
            a.limit()
        );
        std::thread::sleep(Duration::from_millis(100) * CALM_INTERVALS);
        let before = a.limit();
        let at = admit_all(&a, 1);
        served(&a, &batch(1, 5, at));
        assert_near(a.limit(), before + 1.0, "calm: one per send again");
    }

    #[test]
    fn a_calm_instance_forgets_a_past_cut_one_send_at_a_time() {
        let a = SendAdmission::with_interval(64, TARGET, Duration::ZERO);
        shrink(&a, 4);
        assert_eq!(a.limit(), 4.0);
        for n in 1..=60 {
            let at = admit_all(&a, 1);
            served(&a, &batch(1, 5, at));
            assert_eq!(a.limit(), 4.0 + n as f64, "after {n} calm sends");
        }
        let at = admit_all(&a, 1);
        served(&a, &batch(1, 5, at));
        assert_eq!(a.limit(), 64.0, "past the ceiling");
    }
}
