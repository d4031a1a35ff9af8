//! The VM's lifecycle as the supervisor sees it, with the transitions that
//! are allowed (after cloud-hypervisor's `VmState::valid_transition`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum VmState {
    /// QEMU spawned paused (`-S`); QMP, pinning and `cont` are under way.
    Starting,
    Running,
    /// Paused by someone over QMP (`stop`), or by QEMU on an I/O error.
    Paused,
    /// A stop was asked for; the escalation (powerdown, quit, signals) runs.
    ShuttingDown,
    /// QEMU exited after a shutdown (by the guest or by request).
    Stopped,
    /// QEMU exited without being asked to.
    Crashed,
}

impl VmState {
    /// Whether `self -> next` is a transition the supervisor may make.
    pub(crate) fn can_become(self, next: VmState) -> bool {
        use VmState::*;
        match (self, next) {
            (Starting, Running | Paused | ShuttingDown | Crashed | Stopped) => true,
            (Running, Paused | ShuttingDown | Stopped | Crashed) => true,
            (Paused, Running | ShuttingDown | Stopped | Crashed) => true,
            (ShuttingDown, Stopped | Crashed) => true,
            (Stopped | Crashed, _) => false,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::VmState::*;

    #[test]
    fn running_can_pause_and_stop_but_not_restart() {
        assert!(Running.can_become(Paused));
        assert!(Paused.can_become(Running));
        assert!(Running.can_become(ShuttingDown));
        assert!(!Running.can_become(Starting));
    }

    #[test]
    fn shutting_down_never_goes_back_to_running() {
        assert!(!ShuttingDown.can_become(Running));
        assert!(!ShuttingDown.can_become(Paused));
        assert!(ShuttingDown.can_become(Stopped));
    }

    #[test]
    fn final_states_are_final() {
        for s in [Starting, Running, Paused, ShuttingDown, Stopped, Crashed] {
            assert!(!Stopped.can_become(s) && !Crashed.can_become(s));
        }
    }
}
