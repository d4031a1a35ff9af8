//! Confining the host's top-level cgroups to the host CPUs while the VM
//! runs, so no host task runs on a pinned CPU.
//!
//! With systemd: `systemctl set-property --runtime UNIT AllowedCPUs=LIST`
//! on `init.scope`, `system.slice`, `user.slice` and any other top-level
//! unit holding processes (systemd.resource-control(5): AllowedCPUs= is
//! written to the unit's `cpuset.cpus`; `--runtime` lasts until reboot and
//! leaves no drop-in on disk). Without systemd: the cgroup's `cpuset.cpus`
//! directly. `machine.slice` (VMs, ours included) and `vmrun.slice` are
//! left alone.
//!
//! Kernel fact relied on (cgroup-v2.rst, cpuset): an empty `cpuset.cpus`
//! means "the parent's CPUs", but a populated cgroup's `cpuset.cpus` cannot
//! be written back to empty (the kernel answers ENOSPC). A cgroup that had
//! no list of its own gets the full list of its parent's effective CPUs
//! back, so its effective CPUs are what they were.

use std::fs;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::host::cpuset::{cgroup_dir, host_top_level, CpuSet};
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::kernel::WriteError;
use crate::prepare::Host;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The journal step: systemd unit `unit` got `AllowedCPUs=` the host CPUs;
/// `previous` is what `systemctl show` gave before (`""`: not set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedCpus {
    pub unit: String,
    pub previous: String,
}

/// The journal step: cgroup `cgroup` (relative to the root) had
/// `cpuset.cpus` = `previous` (`""`: its parent's) before the host CPUs
/// were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupCpus {
    pub cgroup: String,
    pub previous: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CpusetError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("`{command}`: {output}")]
    Command { command: String, output: String },
}

/// The top-level cgroups the host's tasks are in.
pub fn host_cgroups(host: &Host) -> Vec<String> {
    host_top_level(host.root)
}

fn run(host: &Host, argv: &[&str]) -> Result<String, CpusetError> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let command = argv.join(" ");
    match host.kernel.run(&argv, COMMAND_TIMEOUT) {
        Ok(r) if r.success => Ok(r.output),
        Ok(r) => Err(CpusetError::Command {
            command,
            output: r.output,
        }),
        Err(e) => Err(CpusetError::Command {
            command,
            output: e.to_string(),
        }),
    }
}

fn set_allowed(host: &Host, unit: &str, cpus: &str) -> Result<(), CpusetError> {
    let value = format!("AllowedCPUs={cpus}");
    run(
        host,
        &["systemctl", "set-property", "--runtime", unit, &value],
    )
    .map(drop)
}

/// Confines systemd unit `unit` to `cpus`, journaled.
pub fn confine_unit(
    host: &Host,
    journal: &mut Journal,
    unit: &str,
    cpus: &CpuSet,
) -> Result<(), CpusetError> {
    let previous = run(
        host,
        &["systemctl", "show", "-p", "AllowedCPUs", "--value", unit],
    )?;
    journal.record(&Step::AllowedCpus(AllowedCpus {
        unit: unit.into(),
        previous: previous.trim().into(),
    }))?;
    set_allowed(host, unit, &cpus.to_string())?;
    tracing::info!("{unit}: AllowedCPUs={cpus}");
    Ok(())
}

/// The root's effective CPUs: what a cgroup without a list of its own gets.
fn all_cpus(host: &Host) -> String {
    fs::read_to_string(cgroup_dir(host.root, "").join("cpuset.cpus.effective"))
        .or_else(|_| fs::read_to_string(host.root.path("/sys/devices/system/cpu/online")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl Undo for AllowedCpus {
    fn undo(&self, host: &Host) -> StepReport {
        let shown = if self.previous.is_empty() {
            "unset"
        } else {
            &self.previous
        };
        let what = format!("{}: AllowedCPUs {shown} again", self.unit);
        let result = if self.previous.is_empty() {
            // Every CPU first, then the property reset: systemd writes the
            // empty list, which the kernel refuses for a populated cgroup,
            // and the first write already made the effective CPUs whole.
            set_allowed(host, &self.unit, &all_cpus(host))
                .and_then(|()| set_allowed(host, &self.unit, ""))
        } else {
            set_allowed(host, &self.unit, &self.previous)
        };
        // A unit that is gone (a user's slice after logout) confines nothing.
        let gone = !cgroup_dir(host.root, &self.unit).is_dir();
        StepReport::logged(what, result.err().filter(|_| !gone).map(|e| e.to_string()))
    }
}

/// Confines cgroup `cgroup` to `cpus` through its `cpuset.cpus`, journaled.
pub fn confine_cgroup(
    host: &Host,
    journal: &mut Journal,
    cgroup: &str,
    cpus: &CpuSet,
) -> Result<(), CpusetError> {
    let file = cgroup_dir(host.root, cgroup).join("cpuset.cpus");
    let previous = fs::read_to_string(&file).unwrap_or_default();
    journal.record(&Step::CgroupCpus(CgroupCpus {
        cgroup: cgroup.into(),
        previous: previous.trim().into(),
    }))?;
    host.kernel.write(&file, &cpus.to_string())?;
    tracing::info!("{cgroup}: cpuset.cpus {cpus}");
    Ok(())
}

impl Undo for CgroupCpus {
    fn undo(&self, host: &Host) -> StepReport {
        let dir = cgroup_dir(host.root, &self.cgroup);
        let value = if self.previous.is_empty() {
            all_cpus(host)
        } else {
            self.previous.clone()
        };
        let what = format!("{}: cpuset.cpus {value} again", self.cgroup);
        if !dir.is_dir() {
            return StepReport::logged(format!("{what} (the cgroup is gone)"), None);
        }
        let problem = host
            .kernel
            .write(&dir.join("cpuset.cpus"), &value)
            .err()
            .map(|e| e.to_string());
        StepReport::logged(what, problem)
    }
}
