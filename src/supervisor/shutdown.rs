//! The stop policy, as a pure schedule: ACPI powerdown (re-sent, guests miss
//! the first one while booting), then QMP `quit`, then SIGTERM, then SIGKILL
//! of QEMU's process group. A second request ("Ctrl-C again", `--force`)
//! skips to the next step at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often `system_powerdown` is repeated while the guest ignores it.
pub(crate) const POWERDOWN_RESEND: Duration = Duration::from_secs(5);
/// How long QEMU gets to exit after `quit` before SIGTERM, and after
/// SIGTERM before SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(3);

/// A step of the escalation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Step {
    Powerdown,
    Quit,
    Sigterm,
    Sigkill,
}

impl Step {
    fn next(self) -> Step {
        match self {
            Step::Powerdown => Step::Quit,
            Step::Quit => Step::Sigterm,
            Step::Sigterm | Step::Sigkill => Step::Sigkill,
        }
    }
}

/// Where a stop is in its escalation.
#[derive(Debug, Clone)]
pub(crate) struct Escalation {
    step: Step,
    /// Time since the current step began.
    in_step: Duration,
    /// Time since the last powerdown was sent.
    since_powerdown: Duration,
    timeout: Duration,
}

/// What the supervisor should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Send(Step),
    Wait,
}

impl Escalation {
    /// Starts a stop whose guest gets `timeout` to power off. Returns the
    /// first action (a powerdown, or `quit` when the timeout is zero).
    pub(crate) fn begin(timeout: Duration) -> (Self, Action) {
        let step = if timeout.is_zero() {
            Step::Quit
        } else {
            Step::Powerdown
        };
        let e = Self {
            step,
            in_step: Duration::ZERO,
            since_powerdown: Duration::ZERO,
            timeout,
        };
        (e, Action::Send(step))
    }

    pub(crate) fn step(&self) -> Step {
        self.step
    }

    /// How long the current step lasts before the next one.
    fn step_length(&self) -> Duration {
        match self.step {
            Step::Powerdown => self.timeout,
            Step::Quit | Step::Sigterm => GRACE,
            Step::Sigkill => Duration::MAX,
        }
    }

    /// Advances the clock by `elapsed` and says what to send, if anything.
    pub(crate) fn tick(&mut self, elapsed: Duration) -> Action {
        self.in_step += elapsed;
        self.since_powerdown += elapsed;
        if self.in_step >= self.step_length() {
            return self.escalate();
        }
        if self.step == Step::Powerdown && self.since_powerdown >= POWERDOWN_RESEND {
            self.since_powerdown = Duration::ZERO;
            return Action::Send(Step::Powerdown);
        }
        Action::Wait
    }

    /// Goes to the next step now (a second Ctrl-C, `vmrun stop --force`).
    pub(crate) fn escalate(&mut self) -> Action {
        if self.step == Step::Sigkill {
            return Action::Wait;
        }
        self.step = self.step.next();
        self.in_step = Duration::ZERO;
        Action::Send(self.step)
    }

    /// Time until the next `tick` may have something to do.
    pub(crate) fn next_deadline(&self) -> Duration {
        let to_next_step = self.step_length().saturating_sub(self.in_step);
        if self.step == Step::Powerdown {
            to_next_step.min(POWERDOWN_RESEND.saturating_sub(self.since_powerdown))
        } else {
            to_next_step
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn powerdown_is_resent_until_the_timeout_then_quit() {
        let (mut e, first) = Escalation::begin(12 * S);
        assert_eq!(first, Action::Send(Step::Powerdown));
        assert_eq!(e.tick(4 * S), Action::Wait);
        assert_eq!(e.tick(S), Action::Send(Step::Powerdown));
        assert_eq!(e.tick(5 * S), Action::Send(Step::Powerdown));
        assert_eq!(e.tick(2 * S), Action::Send(Step::Quit));
    }

    #[test]
    fn quit_then_sigterm_then_sigkill_after_grace() {
        let (mut e, _) = Escalation::begin(S);
        assert_eq!(e.tick(S), Action::Send(Step::Quit));
        assert_eq!(e.tick(GRACE), Action::Send(Step::Sigterm));
        assert_eq!(e.tick(GRACE), Action::Send(Step::Sigkill));
        assert_eq!(e.tick(GRACE * 100), Action::Wait);
    }

    #[test]
    fn second_request_escalates_at_once() {
        let (mut e, _) = Escalation::begin(60 * S);
        assert_eq!(e.escalate(), Action::Send(Step::Quit));
        assert_eq!(e.escalate(), Action::Send(Step::Sigterm));
        assert_eq!(e.escalate(), Action::Send(Step::Sigkill));
        assert_eq!(e.escalate(), Action::Wait);
    }

    #[test]
    fn zero_timeout_starts_with_quit() {
        assert_eq!(
            Escalation::begin(Duration::ZERO).1,
            Action::Send(Step::Quit)
        );
    }

    #[test]
    fn deadline_is_the_nearer_of_resend_and_timeout() {
        let (e, _) = Escalation::begin(3 * S);
        assert_eq!(e.next_deadline(), 3 * S);
        let (e, _) = Escalation::begin(60 * S);
        assert_eq!(e.next_deadline(), POWERDOWN_RESEND);
    }
}
