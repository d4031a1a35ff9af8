//! The pinned CPUs' cpufreq governor while the VM runs
//! (admin-guide/pm/cpufreq.rst: `cpuN/cpufreq/scaling_governor`, one of
//! `scaling_available_governors`). A host without cpufreq (a VM, some
//! intel_pstate setups without the file) gets a note, not a failure.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
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

fn file(host: &Host, cpu: u32, name: &str) -> PathBuf {
    host.root
        .path(format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}"))
}

/// Sets `governor` on each of `cpus`, journaled per CPU.
pub fn set(
    host: &Host,
    journal: &mut Journal,
    cpus: &[u32],
    governor: &str,
) -> Result<(), GovernorError> {
    for &cpu in cpus {
        let Ok(previous) = fs::read_to_string(file(host, cpu, "scaling_governor")) else {
            tracing::warn!("CPU {cpu} has no cpufreq: its governor stays as it is");
            continue;
        };
        let previous = previous.trim().to_string();
        if previous == governor {
            continue;
        }
        let offered =
            fs::read_to_string(file(host, cpu, "scaling_available_governors")).unwrap_or_default();
        if !offered.split_whitespace().any(|g| g == governor) {
            return Err(GovernorError::Unavailable {
                cpu,
                want: governor.into(),
                offered: offered.trim().into(),
            });
        }
        journal.record(&Step::Governor(Governor { cpu, previous }))?;
        host.kernel
            .write(&file(host, cpu, "scaling_governor"), governor)?;
    }
    Ok(())
}

impl Undo for Governor {
    fn undo(&self, host: &Host) -> StepReport {
        let problem = host
            .kernel
            .write(&file(host, self.cpu, "scaling_governor"), &self.previous)
            .err()
            .map(|e| e.to_string());
        StepReport::logged(
            format!("CPU {} governor {} again", self.cpu, self.previous),
            problem,
        )
    }
}
