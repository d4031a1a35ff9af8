//! A token bucket for log lines whose number someone else decides (QEMU's
//! stderr, QMP events, control clients): a burst goes through, then a
//! steady rate, and what was held back is counted so the log can say so.
//! Below the stages that use it (`qmp`, `supervisor`), so none imports
//! another for it.

use std::time::Instant;

/// At most `burst` messages at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
    /// Messages refused since the last one let through.
    suppressed: u64,
}

impl RateLimit {
    /// A full bucket: the first `burst` messages go through at once.
    pub(crate) fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            tokens: f64::from(burst),
            last: Instant::now(),
            suppressed: 0,
        }
    }

    /// Whether one more message may be logged now.
    pub(crate) fn admit(&mut self) -> Option<Admitted> {
        self.admit_at(Instant::now())
    }

    /// Whether one more message may be logged at `now`: `Some` with the
    /// number refused since the last one let through, `None` if this one
    /// must be dropped (it is counted).
    pub(crate) fn admit_at(&mut self, now: Instant) -> Option<Admitted> {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            let suppressed = std::mem::take(&mut self.suppressed);
            Some(Admitted { suppressed })
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Messages refused and not yet reported; reading resets the count
    /// (for a last word when the source ends).
    pub(crate) fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// A message let through, with how many were dropped just before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    pub suppressed: u64,
}

/// `text` cut to at most `max` bytes on a char boundary, with a marker
/// when cut: for names and lines someone else chose, before they are logged.
pub(crate) fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... [{} more bytes]", &text[..end], text.len() - end).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_goes_through_then_the_rest_is_counted() {
        let mut rl = RateLimit::new(3, 1);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.admit_at(t0), Some(Admitted { suppressed: 0 }));
        }
        assert_eq!(rl.admit_at(t0), None);
        assert_eq!(rl.admit_at(t0), None);
        // One second later one token is back; the two dropped are reported.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(rl.admit_at(t1), Some(Admitted { suppressed: 2 }));
        assert_eq!(rl.admit_at(t1), None);
        assert_eq!(rl.take_suppressed(), 1);
        assert_eq!(rl.take_suppressed(), 0);
    }

    #[test]
    fn the_bucket_never_holds_more_than_the_burst() {
        let mut rl = RateLimit::new(2, 10);
        let later = Instant::now() + Duration::from_secs(3600);
        assert!(rl.admit_at(later).is_some());
        assert!(rl.admit_at(later).is_some());
        assert!(rl.admit_at(later).is_none());
    }

    #[test]
    fn a_clock_going_back_adds_no_tokens() {
        let mut rl = RateLimit::new(1, 1);
        let t0 = Instant::now() + Duration::from_secs(10);
        assert!(rl.admit_at(t0).is_some());
        assert!(rl.admit_at(t0 - Duration::from_secs(5)).is_none());
        assert!(rl.admit_at(t0).is_none());
    }

    #[test]
    fn clip_cuts_on_a_char_boundary_and_says_how_much() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdef", 3), "abc... [3 more bytes]");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(clip("aé", 2), "a... [2 more bytes]");
    }
}
