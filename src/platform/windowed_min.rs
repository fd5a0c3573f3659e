//! A windowed minimum: the smallest value seen over the current window and the one before
//! it, so the minimum always covers between one and two windows of the recent past and an
//! old extreme is forgotten after two: a sliding-window minimum, as CoDel estimates the
//! standing queue (RFC 8289 §3.2, "Estimating Queue Delay"), kept cheaply in two buckets.
//!
//! Used for a floor that a measurement is judged against: an edge's clock offset
//! ([`crate::platform::queue_time`]) and the time an unloaded group commit takes
//! (`messaging::admission`).

use std::time::{Duration, Instant};

/// The smallest `T` recorded over the current window and the one before it, each `window`
/// long; a window with nothing recorded (or two gone by unseen) leaves nothing behind.
#[derive(Debug)]
pub struct WindowedMin<T> {
    window: Duration,
    window_started: Instant,
    current: Option<T>,
    previous: Option<T>,
}

impl<T: Ord + Copy> WindowedMin<T> {
    /// Nothing recorded yet; the first window starts at `now`.
    pub fn new(window: Duration, now: Instant) -> Self {
        Self {
            window,
            window_started: now,
            current: None,
            previous: None,
        }
    }

    /// Records `value` seen at `now` and returns the minimum it now stands at (at most
    /// `value`).
    pub fn record(&mut self, value: T, now: Instant) -> T {
        self.roll(now);
        let current = self.current.map_or(value, |c| c.min(value));
        self.current = Some(current);
        self.previous.map_or(current, |p| p.min(current))
    }

    /// The minimum at `now`, if anything was recorded in this window or the one before.
    pub fn get(&mut self, now: Instant) -> Option<T> {
        self.roll(now);
        match (self.current, self.previous) {
            (Some(c), Some(p)) => Some(c.min(p)),
            (c, p) => c.or(p),
        }
    }

    /// Starts a new window once the current one is over.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_started);
        if elapsed >= self.window {
            self.previous = if elapsed >= 2 * self.window {
                None
            } else {
                self.current
            };
            self.current = None;
            self.window_started = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[test]
    fn the_minimum_covers_this_window_and_the_one_before() {
        let t0 = Instant::now();
        let mut m = WindowedMin::new(W, t0);
        assert_eq!(m.get(t0), None, "nothing recorded");
        assert_eq!(m.record(5, t0), 5);
        assert_eq!(m.record(9, t0), 5, "a larger value does not raise it");
        let t1 = t0 + W + Duration::from_secs(1);
        assert_eq!(m.record(7, t1), 5, "the window before still counts");
        let t2 = t1 + W;
        assert_eq!(
            m.get(t2),
            Some(7),
            "two windows on, the old minimum is gone"
        );
        assert_eq!(m.record(8, t2), 7);
        let t3 = t2 + 3 * W;
        assert_eq!(
            m.get(t3),
            None,
            "windows with nothing recorded leave nothing"
        );
    }
}
