//! The VM's own cgroup: before the host's cgroups are confined to the host
//! CPUs (`cpuset.rs`), the supervisor leaves the one it was started in (a
//! terminal's session scope under `user.slice`, `vmrun@.service` under
//! `system.slice`), so that it, and the swtpm and QEMU it forks after (a
//! child starts in its parent's cgroup), are not confined with the host.
//!
//! With systemd, a transient scope under `machine.slice`, made by the
//! manager's `StartTransientUnit` with our PID (systemd owns the tree; a
//! scope is how a running process is handed to it: org.freedesktop.systemd1
//! (5), "PIDs"). The scope ends by itself when its last process exits.
//! Without systemd, a `vmrun.slice/NAME` cgroup directory, the cpuset
//! controller enabled in the root's `cgroup.subtree_control` where it was
//! not (cgroup-v2.rst: a controller's files appear in the children of a
//! cgroup that enables it), our PID written to its `cgroup.procs` (which
//! moves every thread of the process).

use std::fs;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::host::cpuset::{cgroup_dir, cgroup_of};
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::kernel::WriteError;
use crate::prepare::Host;

/// The slice systemd keeps VMs and containers in (systemd.special(7)).
pub const MACHINE_SLICE: &str = "machine.slice";
/// vmrun's own top-level cgroup on a host without systemd.
pub const VMRUN_SLICE: &str = "vmrun.slice";

/// How long systemd may take to move us into the new scope (the job runs
/// after the call returns).
const SCOPE_WAIT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// The journal step: the supervisor left cgroup `from` for the transient
/// systemd scope `unit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmScope {
    pub unit: String,
    pub from: String,
}

/// The journal step: the supervisor left cgroup `from` for the cgroup
/// `cgroup` (`vmrun.slice/NAME`); `enabled` lists the cgroups whose
/// `cgroup.subtree_control` got `+cpuset` from us (`""`: the root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmCgroup {
    pub cgroup: String,
    pub from: String,
    pub enabled: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("this process's cgroup is unknown (/proc/self/cgroup has no cgroup v2 `0::` line): `isolate` needs the unified cgroup hierarchy")]
    NoCgroupV2,
    #[error("systemd did not start scope {unit}: {output}")]
    Scope { unit: String, output: String },
    #[error("systemd started scope {unit}, but vmrun is still in {now} after {SCOPE_WAIT:?}")]
    NotMoved { unit: String, now: String },
}

/// The scope's unit name for VM `name`.
pub fn scope_unit(name: &str) -> String {
    format!("vmrun-{name}.scope")
}

/// Moves this process into its own scope under `machine.slice`, journaled.
pub fn enter_scope(host: &Host, journal: &mut Journal, vm: &str) -> Result<(), CgroupError> {
    let from = cgroup_of(host.root, "self").ok_or(CgroupError::NoCgroupV2)?;
    let unit = scope_unit(vm);
    journal.record(&Step::VmScope(VmScope {
        unit: unit.clone(),
        from,
    }))?;
    let pid = std::process::id().to_string();
    let argv: Vec<String> = [
        "busctl",
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        &unit,
        "fail",
        "3",
        "PIDs",
        "au",
        "1",
        &pid,
        "Slice",
        "s",
        MACHINE_SLICE,
        "Description",
        "s",
        &format!("vmrun VM {vm}"),
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ran = host.kernel.run(&argv, COMMAND_TIMEOUT)?;
    if !ran.success {
        return Err(CgroupError::Scope {
            unit,
            output: ran.output,
        });
    }
    let want = format!("{MACHINE_SLICE}/{unit}");
    let deadline = Instant::now() + SCOPE_WAIT;
    loop {
        let now = cgroup_of(host.root, "self").unwrap_or_default();
        if now == want {
            tracing::info!("vmrun is in its own scope, {unit}");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::NotMoved { unit, now });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Undo for VmScope {
    fn undo(&self, host: &Host) -> StepReport {
        let mine = cgroup_of(host.root, "self")
            .is_some_and(|c| c == format!("{MACHINE_SLICE}/{}", self.unit));
        if mine {
            // Stopping it would kill this process; it ends when we exit.
            return StepReport::logged(format!("scope {} ends with vmrun", self.unit), None);
        }
        let what = format!("scope {} stopped", self.unit);
        let active = ["systemctl", "is-active", "--quiet", &self.unit].map(String::from);
        match host.kernel.run(&active, COMMAND_TIMEOUT) {
            Ok(r) if !r.success => return StepReport::logged(what, None),
            Err(e) => return StepReport::logged(what, Some(e.to_string())),
            Ok(_) => {}
        }
        let stop = ["systemctl", "stop", &self.unit].map(String::from);
        let problem = match host.kernel.run(&stop, COMMAND_TIMEOUT) {
            Ok(r) if r.success => None,
            Ok(r) => Some(r.output),
            Err(e) => Some(e.to_string()),
        };
        StepReport::logged(what, problem)
    }
}

fn has_cpuset(host: &Host, rel: &str) -> bool {
    fs::read_to_string(cgroup_dir(host.root, rel).join("cgroup.subtree_control"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpuset"))
}

/// Moves this process into `vmrun.slice/NAME`, journaled, enabling the
/// cpuset controller below the root first where it is off (the host's
/// top-level cgroups get their `cpuset.cpus` from it).
pub fn enter_cgroup(host: &Host, journal: &mut Journal, vm: &str) -> Result<(), CgroupError> {
    let from = cgroup_of(host.root, "self").ok_or(CgroupError::NoCgroupV2)?;
    let cgroup = format!("{VMRUN_SLICE}/{vm}");
    let enabled: Vec<String> = (!has_cpuset(host, ""))
        .then(String::new)
        .into_iter()
        .collect();
    journal.record(&Step::VmCgroup(VmCgroup {
        cgroup: cgroup.clone(),
        from,
        enabled: enabled.clone(),
    }))?;
    for rel in &enabled {
        let file = cgroup_dir(host.root, rel).join("cgroup.subtree_control");
        host.kernel.write(&file, "+cpuset")?;
    }
    for rel in [VMRUN_SLICE, cgroup.as_str()] {
        let dir = cgroup_dir(host.root, rel);
        if !dir.is_dir() {
            host.kernel.create_dir(&dir)?;
        }
    }
    let procs = cgroup_dir(host.root, &cgroup).join("cgroup.procs");
    host.kernel.write(&procs, &std::process::id().to_string())?;
    tracing::info!("vmrun is in its own cgroup, {cgroup}");
    Ok(())
}

impl Undo for VmCgroup {
    fn undo(&self, host: &Host) -> StepReport {
        let what = format!(
            "cgroup {} removed, its processes back in /{}",
            self.cgroup, self.from
        );
        StepReport::logged(what, self.put_back(host).err())
    }
}

impl VmCgroup {
    fn put_back(&self, host: &Host) -> Result<(), String> {
        let dir = cgroup_dir(host.root, &self.cgroup);
        if dir.is_dir() {
            // Where we came from may be gone (a session scope that ended):
            // then the root, which every process may be in.
            let back = Some(cgroup_dir(host.root, &self.from))
                .filter(|d| d.is_dir())
                .unwrap_or_else(|| cgroup_dir(host.root, ""));
            let pids = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in pids.split_whitespace() {
                host.kernel
                    .write(&back.join("cgroup.procs"), pid)
                    .map_err(|e| e.to_string())?;
            }
            host.kernel.remove_dir(&dir).map_err(|e| e.to_string())?;
        }
        // Another VM's cgroup may still be in the slice: it stays then.
        let slice = cgroup_dir(host.root, VMRUN_SLICE);
        if slice.is_dir() && host.kernel.remove_dir(&slice).is_err() {
            tracing::info!("{VMRUN_SLICE} kept: another VM's cgroup is in it");
        }
        for rel in self.enabled.iter().rev() {
            let file = cgroup_dir(host.root, rel).join("cgroup.subtree_control");
            // Refused (EBUSY) while a child enables cpuset for its own
            // children, someone else's doing: the controller on is harmless.
            if let Err(e) = host.kernel.write(&file, "-cpuset") {
                tracing::info!("cpuset controller left on: {e}");
            }
        }
        Ok(())
    }
}
