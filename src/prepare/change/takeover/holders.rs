//! Takeover's GPU holders: the processes still holding the GPU once the
//! display manager and units stopped. Those named in `stop_processes` are
//! stopped (SIGTERM, then SIGKILL); any other is refused by name. Not
//! restarted on undo: whatever started them owns them.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::TakeoverError;
use crate::host::procs;
use crate::plan::takeover::{matches_any, TakeoverPlan};
use crate::prepare::change::{StepReport, Undo};
use crate::prepare::journal::{Journal, Step};
use crate::prepare::Host;

/// The journal step: a process still holding the GPU, stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopProcess {
    pub pid: u32,
    pub comm: String,
}

fn holders(host: &Host, plan: &TakeoverPlan) -> Vec<procs::Holder> {
    let own = std::process::id();
    procs::holders(host.root, |p| plan.gpus.iter().any(|g| g.holds(p)))
        .holders
        .into_iter()
        .filter(|h| h.pid != own)
        .collect()
}

fn alive(host: &Host, pid: u32) -> bool {
    // A zombie (state Z) has let go of its files.
    match std::fs::read_to_string(host.root.path(format!("/proc/{pid}/stat"))) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => host.root.path(format!("/proc/{pid}")).exists(),
    }
}

fn wait_gone(host: &Host, pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(host, pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Waits for the GPU's holders to exit, stops those named in
/// `stop_processes`, and refuses, naming them, if others remain.
pub fn stop_holders(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    let deadline = Instant::now() + host.timings.settle;
    let mut left = holders(host, plan);
    while left
        .iter()
        .any(|h| !matches_any(&plan.stop_processes, &h.comm))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        left = holders(host, plan);
    }
    let (ours, others): (Vec<_>, Vec<_>) = left
        .into_iter()
        .partition(|h| matches_any(&plan.stop_processes, &h.comm));
    if !others.is_empty() {
        return Err(TakeoverError::Held {
            holders: procs::by_process(&others).join(", "),
        });
    }
    let grace = host.timings.term_grace;
    let mut done: Vec<u32> = Vec::new();
    for h in ours {
        if done.contains(&h.pid) {
            continue;
        }
        done.push(h.pid);
        journal.record(&Step::StopProcess(StopProcess {
            pid: h.pid,
            comm: h.comm.clone(),
        }))?;
        let _ = host.kernel.signal(h.pid, Signal::SIGTERM);
        if !wait_gone(host, h.pid, grace) {
            let _ = host.kernel.signal(h.pid, Signal::SIGKILL);
            if !wait_gone(host, h.pid, grace) {
                return Err(TakeoverError::Stuck {
                    what: format!("{} (pid {})", h.comm, h.pid),
                    after: grace * 2,
                });
            }
        }
        tracing::info!("takeover: stopped {} (pid {})", h.comm, h.pid);
    }
    Ok(())
}

impl Undo for StopProcess {
    fn undo(&self, _host: &Host) -> StepReport {
        StepReport::logged(
            format!(
                "{} (pid {}) was stopped for the VM: start it again yourself if you need it (vmrun does not restart processes)",
                self.comm, self.pid
            ),
            None,
        )
    }
}
