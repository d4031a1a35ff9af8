//! Putting the host back: the journal replayed newest first. The same code
//! runs after QEMU exits, when prepare fails part way, and for
//! `vmrun restore` after a crash. Every step is attempted even when an
//! earlier one failed, and each is reported.

mod takeover;

use std::path::Path;

use serde::Serialize;

use crate::prepare::journal::{self, Step};
use crate::prepare::{hugepages, vfio, Host};

/// How one undone step went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub what: String,
    /// `None` when it went back as it was.
    pub problem: Option<String>,
}

/// The result of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub steps: Vec<StepReport>,
    /// Set when the journal itself could not be read.
    pub journal_problem: Option<String>,
}

impl Report {
    pub fn complete(&self) -> bool {
        self.journal_problem.is_none() && self.steps.iter().all(|s| s.problem.is_none())
    }

    /// One line per step that did not go back, with what to do.
    pub fn problems(&self) -> impl Iterator<Item = String> + '_ {
        self.steps
            .iter()
            .filter_map(|s| s.problem.as_ref().map(|p| format!("{}: {p}", s.what)))
            .chain(self.journal_problem.clone())
    }
}

/// Undoes every step of the journal at `path`, newest first; removes the
/// journal when everything went back.
pub fn replay(path: &Path, host: &Host) -> Report {
    let steps = match journal::read(path) {
        Ok(steps) => steps,
        Err(e) => {
            return Report {
                steps: vec![],
                journal_problem: Some(e.to_string()),
            }
        }
    };
    let mut report = Report::default();
    for step in steps.iter().rev() {
        report.steps.push(undo(step, host));
    }
    if report.complete() {
        journal::remove(path);
    }
    report
}

fn undo(step: &Step, host: &Host) -> StepReport {
    match step {
        Step::BindVfio {
            address,
            driver,
            driver_override,
            rescan_fallback,
        } => {
            let r = vfio::restore(
                host,
                *address,
                driver.as_deref(),
                driver_override.as_deref(),
                *rescan_fallback,
            );
            let what = format!(
                "{address} back to {}{}",
                driver.as_deref().unwrap_or("no driver"),
                if r.rescanned {
                    " (after remove + rescan)"
                } else {
                    ""
                }
            );
            if r.ok() {
                tracing::info!("{what}");
            }
            StepReport {
                what,
                problem: r.problem,
            }
        }
        Step::ChownVfioGroup { group, .. } => StepReport {
            what: format!("/dev/vfio/{group} back to root"),
            problem: crate::prepare::return_group(host, *group).err(),
        },
        Step::Hugepages {
            size_kb,
            before,
            reserved,
        } => StepReport {
            what: format!("up to {reserved} huge pages of {size_kb} kB released"),
            problem: hugepages::release(host, *size_kb, *before, *reserved).err(),
        },
        Step::StopUnit { unit, user } => takeover::start_unit(host, unit, user.as_deref()),
        Step::StopCommand { start, .. } => takeover::start_command(host, start),
        Step::StopProcess { pid, comm } => takeover::stopped_process(*pid, comm),
        Step::UnbindVtcon { index, name } => takeover::bind_vtcon(host, *index, name),
        Step::UnbindFramebuffer {
            driver,
            device,
            gpu,
        } => takeover::bind_framebuffer(host, driver, device, *gpu),
        Step::UnloadModule { module, devices } => takeover::reload_module(host, module, devices),
    }
}
