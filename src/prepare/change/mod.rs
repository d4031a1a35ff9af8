//! One module per kind of host change, each holding its journal step (the
//! state the change replaces), the change itself and its undo, side by
//! side. `prepare` makes the changes in order; `teardown` walks the journal
//! newest first and calls each step's `undo`.

pub mod cgroup;
pub mod cpuset;
pub mod device_owner;
pub mod governor;
pub mod group_owner;
pub mod hugepages;
pub mod irq_affinity;
pub mod shared_memory;
pub mod takeover;
pub mod tap;
pub mod usb_driver;
pub mod vfio;
pub mod workqueue;

use serde::Serialize;

use super::Host;

/// How one undone step went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub what: String,
    /// `None` when it went back as it was.
    pub problem: Option<String>,
}

impl StepReport {
    /// The report of an undo, logged: a note that is no failure goes in
    /// `what`.
    pub(crate) fn logged(what: String, problem: Option<String>) -> Self {
        match &problem {
            None => tracing::info!("{what}"),
            Some(p) => tracing::warn!("{what}: {p}"),
        }
        Self { what, problem }
    }
}

/// A journaled change that can be put back. Undo steps are "make it as it
/// was": undoing a change that never happened is harmless.
pub trait Undo {
    fn undo(&self, host: &Host) -> StepReport;
}
