//! The pinned CPUs' cpufreq governor while the VM runs
//! (admin-guide/pm/cpufreq.rst: `cpuN/cpufreq/scaling_governor`, one of
//! `scaling_available_governors`). A host without cpufreq (a VM, some
//! intel_pstate setups without the file) gets a note, not a failure.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::host::cpuset;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::kernel::WriteError;
use crate::prepare::Host;

/// The journal step: CPU `cpu`'s governor was `previous`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governor {
    pub cpu: u32,
    pub previous: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GovernorError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("CPU {cpu} has no cpufreq governor `{want}` (it offers: {offered})")]
    Unavailable {
        cpu: u32,
        want: String,
        offered: String,
    },
}

fn file(host: &Host, cpu: u32) -> PathBuf {
    cpuset::cpufreq_file(host.root, cpu, "scaling_governor")
}

/// Sets `governor` on each of `cpus`, journaled per CPU.
pub fn set(
    host: &Host,
    journal: &mut Journal,
    cpus: &[u32],
    governor: &str,
) -> Result<(), GovernorError> {
    for &cpu in cpus {
        let Some(now) = cpuset::governors(host.root, cpu) else {
            tracing::warn!("CPU {cpu} has no cpufreq: its governor stays as it is");
            continue;
        };
        if now.current == governor {
            continue;
        }
        // The plan refused this already; the host may have changed since.
        if !now.allows(governor) {
            return Err(GovernorError::Unavailable {
                cpu,
                want: governor.into(),
                offered: now.offered.join(" "),
            });
        }
        journal.record(&Step::Governor(Governor {
            cpu,
            previous: now.current,
        }))?;
        host.kernel.write(&file(host, cpu), governor)?;
    }
    Ok(())
}

impl Undo for Governor {
    fn undo(&self, host: &Host) -> StepReport {
        let problem = host
            .kernel
            .write(&file(host, self.cpu), &self.previous)
            .err()
            .map(|e| e.to_string());
        StepReport::logged(
            format!("CPU {} governor {} again", self.cpu, self.previous),
            problem,
        )
    }
}
