//! Host interrupts off the pinned CPUs: each `/proc/irq/N/smp_affinity_list`
//! (core-api/irq/irq-affinity.rst) set to the host CPUs while the VM runs.
//!
//! Kernel facts relied on: some interrupts refuse a new affinity (per-CPU
//! timers, managed MSI-X vectors of multiqueue devices: EIO), which is
//! noted and skipped; an interrupt that comes later (the VM's own VFIO
//! vectors, allocated when the guest enables MSI, after this step) takes
//! `/proc/irq/default_smp_affinity`, which is left alone, so the VM's
//! vectors are never confined to the host CPUs.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::host::cpuset::CpuSet;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::kernel::WriteError;
use crate::prepare::Host;

/// One interrupt's affinity before vmrun changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqPrevious {
    pub irq: u32,
    pub cpus: String,
}

/// The journal step: the affinities of these interrupts before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqAffinity {
    pub irqs: Vec<IrqPrevious>,
}

#[derive(Debug, thiserror::Error)]
pub enum IrqError {
    #[error(transparent)]
    Journal(#[from] JournalError),
}

fn list_file(host: &Host, irq: u32) -> PathBuf {
    host.root.path(format!("/proc/irq/{irq}/smp_affinity_list"))
}

/// Every interrupt with an affinity file and the CPUs it may run on now.
fn current(host: &Host) -> Vec<IrqPrevious> {
    let Ok(entries) = fs::read_dir(host.root.path("/proc/irq")) else {
        return Vec::new();
    };
    let mut irqs: Vec<IrqPrevious> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(|irq| {
            let cpus = fs::read_to_string(list_file(host, irq)).ok()?;
            Some(IrqPrevious {
                irq,
                cpus: cpus.trim().into(),
            })
        })
        .collect();
    irqs.sort_by_key(|i| i.irq);
    irqs
}

/// A write the kernel refuses for this interrupt (EIO: it cannot be
/// moved; ENOENT: it went away), not a failure of the step.
fn refused(e: &WriteError) -> bool {
    matches!(e, WriteError::Io { source, .. }
        if source.raw_os_error() == Some(nix::libc::EIO) || source.kind() == io::ErrorKind::NotFound)
}

/// Moves every host interrupt to `cpus`, journaled; those the kernel
/// refuses are counted and skipped. Returns (moved, refused).
pub fn confine(
    host: &Host,
    journal: &mut Journal,
    cpus: &CpuSet,
) -> Result<(usize, usize), IrqError> {
    let irqs = current(host);
    if irqs.is_empty() {
        return Ok((0, 0));
    }
    journal.record(&Step::IrqAffinity(IrqAffinity { irqs: irqs.clone() }))?;
    let list = cpus.to_string();
    let (mut moved, mut skipped) = (0, 0);
    for i in irqs.iter().filter(|i| i.cpus != list) {
        match host.kernel.write(&list_file(host, i.irq), &list) {
            Ok(()) => moved += 1,
            Err(e) => {
                if !refused(&e) {
                    tracing::warn!("IRQ {}: {e}", i.irq);
                }
                skipped += 1;
            }
        }
    }
    tracing::info!(
        "{moved} IRQs on CPUs {list}; {skipped} refused a new affinity (left as they were)"
    );
    Ok((moved, skipped))
}

impl Undo for IrqAffinity {
    fn undo(&self, host: &Host) -> StepReport {
        let mut failed = Vec::new();
        for i in &self.irqs {
            let file = list_file(host, i.irq);
            let now = fs::read_to_string(&file).unwrap_or_default();
            if now.trim() == i.cpus || !file.exists() {
                continue;
            }
            if let Err(e) = host.kernel.write(&file, &i.cpus) {
                if !refused(&e) {
                    failed.push(e.to_string());
                }
            }
        }
        StepReport::logged(
            format!("{} IRQ affinities as they were", self.irqs.len()),
            (!failed.is_empty()).then(|| failed.join("; ")),
        )
    }
}
