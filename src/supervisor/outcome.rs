//! How a run ended, and the exit status that tells a script what state the
//! host is in. Both are pure: the loop gathers the facts, these decide.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use super::shutdown::Step;
use super::state::VmState;
use super::Outcome;
use crate::exit::Exit;

/// What the loop saw of a run, enough to say how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    /// Whether the guest ever ran (QMP answered and `cont` went through).
    pub ran: bool,
    /// QEMU's SHUTDOWN event, if one came: `Some(true)` when the guest
    /// powered off.
    pub shutdown_by_guest: Option<bool>,
    /// The step our stop schedule reached, if a stop was begun.
    pub stop_step: Option<Step>,
}

/// How the VM ended, from what the loop saw and QEMU's exit `status`
/// (`log` is named in a failed start's reason).
pub(super) fn how_it_ended(
    seen: &Seen,
    status: &std::io::Result<ExitStatus>,
    log: &Path,
) -> Outcome {
    let status_text = describe_exit(status);
    let exited_cleanly = matches!(status, Ok(s) if s.success());
    // QEMU exits 0 after a SHUTDOWN; any other end is QEMU failing.
    let guest_off = seen.shutdown_by_guest == Some(true) && exited_cleanly;
    let host_quit = seen.shutdown_by_guest == Some(false) && exited_cleanly;
    match seen.stop_step {
        _ if !seen.ran => Outcome::StartFailed {
            reason: format!(
                "QEMU ended before the guest ran ({status_text}); see {}",
                log.display()
            ),
        },
        _ if guest_off => Outcome::GuestShutdown,
        // Ended by the step we sent (quit, SIGTERM or SIGKILL).
        Some(step) if step != Step::Powerdown => Outcome::ForcedStop { step },
        // Someone else's QMP `quit` (e.g. `vmrun qmp NAME quit`).
        _ if host_quit => Outcome::ForcedStop { step: Step::Quit },
        // Powered off after our powerdown, its SHUTDOWN event unseen.
        Some(_) if exited_cleanly => Outcome::GuestShutdown,
        _ => Outcome::Crashed {
            status: status_text,
        },
    }
}

/// QEMU's exit as the shell shows it.
fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "unknown".into(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

impl Outcome {
    /// The state the VM ends in.
    pub(super) fn final_state(&self) -> VmState {
        match self {
            Outcome::Crashed { .. } | Outcome::StartFailed { .. } | Outcome::SupervisorFailed => {
                VmState::Crashed
            }
            Outcome::GuestShutdown | Outcome::ForcedStop { .. } => VmState::Stopped,
        }
    }
}

/// How a supervised start ended, as far as its exit status cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended<'a> {
    /// Refused or failed before QEMU was spawned (a `SupervisorError`).
    BeforeQemu,
    /// QEMU was spawned and is reaped.
    Vm(&'a Outcome),
}

/// The exit status of `vmrun start`: whether the host is back decides
/// first (a script must know to run `vmrun restore`), then how it ended.
pub(crate) fn exit_status(ended: Ended<'_>, host_restored: bool) -> Exit {
    if !host_restored {
        return Exit::RestoreIncomplete;
    }
    match ended {
        Ended::BeforeQemu => Exit::HostProblems,
        Ended::Vm(Outcome::GuestShutdown) => Exit::Ok,
        Ended::Vm(Outcome::ForcedStop { .. }) => Exit::ForcedStop,
        Ended::Vm(
            Outcome::Crashed { .. } | Outcome::StartFailed { .. } | Outcome::SupervisorFailed,
        ) => Exit::VmFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> std::io::Result<ExitStatus> {
        // A wait status: the exit code sits in the second byte.
        Ok(ExitStatus::from_raw(code << 8))
    }

    fn killed(signal: i32) -> std::io::Result<ExitStatus> {
        Ok(ExitStatus::from_raw(signal))
    }

    fn seen(ran: bool, shutdown_by_guest: Option<bool>, stop_step: Option<Step>) -> Seen {
        Seen {
            ran,
            shutdown_by_guest,
            stop_step,
        }
    }

    fn ended(seen: Seen, status: std::io::Result<ExitStatus>) -> Outcome {
        how_it_ended(&seen, &status, Path::new("/run/vm.log"))
    }

    fn crashed(status: &str) -> Outcome {
        Outcome::Crashed {
            status: status.into(),
        }
    }

    #[test]
    fn how_it_ended_table() {
        use Step::*;
        let forced = |step| Outcome::ForcedStop { step };
        let cases = [
            // The guest powered off by itself, or after our powerdown.
            (
                seen(true, Some(true), None),
                exited(0),
                Outcome::GuestShutdown,
            ),
            (
                seen(true, Some(true), Some(Powerdown)),
                exited(0),
                Outcome::GuestShutdown,
            ),
            // Its SHUTDOWN went by while we waited for the exit.
            (
                seen(true, None, Some(Powerdown)),
                exited(0),
                Outcome::GuestShutdown,
            ),
            // The guest wins over a step we sent after it powered off.
            (
                seen(true, Some(true), Some(Quit)),
                exited(0),
                Outcome::GuestShutdown,
            ),
            // Our quit, SIGTERM or SIGKILL ended it.
            (seen(true, Some(false), Some(Quit)), exited(0), forced(Quit)),
            (seen(true, None, Some(Sigterm)), killed(15), forced(Sigterm)),
            (seen(true, None, Some(Sigkill)), killed(9), forced(Sigkill)),
            // Someone else's QMP quit.
            (seen(true, Some(false), None), exited(0), forced(Quit)),
            // QEMU died on its own.
            (
                seen(true, None, None),
                killed(9),
                crashed("killed by signal 9"),
            ),
            (seen(true, None, None), exited(1), crashed("exit status 1")),
            (seen(true, None, None), exited(0), crashed("exit status 0")),
            (
                seen(true, Some(true), None),
                exited(1),
                crashed("exit status 1"),
            ),
            (
                seen(true, None, Some(Powerdown)),
                exited(1),
                crashed("exit status 1"),
            ),
        ];
        for (seen, status, want) in cases {
            assert_eq!(ended(seen, status), want, "{seen:?}");
        }
    }

    #[test]
    fn a_vm_that_never_ran_failed_to_start_whatever_stopped_it() {
        for stop_step in [None, Some(Step::Quit), Some(Step::Sigkill)] {
            let outcome = ended(seen(false, Some(false), stop_step), exited(0));
            assert_eq!(
                outcome,
                Outcome::StartFailed {
                    reason: "QEMU ended before the guest ran (exit status 0); see /run/vm.log"
                        .into()
                }
            );
        }
    }

    #[test]
    fn a_qemu_that_could_not_be_waited_for_crashed() {
        let status = Err(std::io::Error::other("ECHILD"));
        assert_eq!(
            ended(seen(true, None, None), status),
            crashed("could not be waited for: ECHILD")
        );
    }

    #[test]
    fn failures_end_crashed_and_stops_end_stopped() {
        let reason = String::new();
        assert_eq!(Outcome::GuestShutdown.final_state(), VmState::Stopped);
        let forced = Outcome::ForcedStop { step: Step::Quit };
        assert_eq!(forced.final_state(), VmState::Stopped);
        assert_eq!(crashed("x").final_state(), VmState::Crashed);
        let failed = Outcome::StartFailed { reason };
        assert_eq!(failed.final_state(), VmState::Crashed);
    }

    #[test]
    fn exit_status_table() {
        let forced = Outcome::ForcedStop {
            step: Step::Sigkill,
        };
        let crash = crashed("killed by signal 9");
        let failed = Outcome::StartFailed {
            reason: "QEMU ended before the guest ran".into(),
        };
        // (how it ended, host restored, host not restored)
        let cases = [
            (
                Ended::BeforeQemu,
                Exit::HostProblems,
                Exit::RestoreIncomplete,
            ),
            (
                Ended::Vm(&Outcome::GuestShutdown),
                Exit::Ok,
                Exit::RestoreIncomplete,
            ),
            (
                Ended::Vm(&forced),
                Exit::ForcedStop,
                Exit::RestoreIncomplete,
            ),
            (Ended::Vm(&crash), Exit::VmFailed, Exit::RestoreIncomplete),
            (Ended::Vm(&failed), Exit::VmFailed, Exit::RestoreIncomplete),
            (
                Ended::Vm(&Outcome::SupervisorFailed),
                Exit::VmFailed,
                Exit::RestoreIncomplete,
            ),
        ];
        for (ended, restored, not_restored) in cases {
            assert_eq!(exit_status(ended, true), restored, "{ended:?}, restored");
            assert_eq!(
                exit_status(ended, false),
                not_restored,
                "{ended:?}, not restored"
            );
        }
    }

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let codes = [
            exit_status(Ended::Vm(&Outcome::GuestShutdown), true),
            exit_status(Ended::BeforeQemu, true),
            exit_status(Ended::Vm(&crashed("")), true),
            exit_status(Ended::Vm(&Outcome::GuestShutdown), false),
            exit_status(Ended::Vm(&Outcome::ForcedStop { step: Step::Quit }), true),
        ]
        .map(Exit::code);
        assert_eq!(codes, [0, 1, 3, 4, 5]);
    }
}
