//! Exit statuses that say what state the host is in (after crosvm's
//! `CommandStatus`): a script can tell "nothing was changed" from "the VM
//! ran and everything is back" from "run `vmrun restore`".

/// vmrun's exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Done; the host is as it was.
    Ok = 0,
    /// The plan found host problems; nothing was changed.
    HostProblems = 1,
    /// Invalid config or command line; nothing was changed.
    Usage = 2,
    /// The VM failed or crashed; the host was restored.
    VmFailed = 3,
    /// The host is not fully restored: `vmrun restore NAME` is needed.
    RestoreIncomplete = 4,
    /// The guest ignored the ACPI powerdown and was stopped by force
    /// (quit or a signal); the host was restored.
    ForcedStop = 5,
}

impl Exit {
    pub(crate) fn code(self) -> i32 {
        self as i32
    }
}
