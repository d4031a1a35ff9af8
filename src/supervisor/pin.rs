//! vCPU pinning: each vCPU thread (thread ids from QMP `query-cpus-fast`)
//! gets the host CPU of `[cpu] pin`. Done from outside QEMU, before `cont`,
//! so QEMU's seccomp `resourcecontrol=deny` can stay on.
//!
//! QEMU's other threads (main loop, I/O threads, the thread pool's
//! workers) go on the emulator CPUs: every thread of the process that is
//! not a vCPU, at the same moment. A thread created later inherits the
//! affinity of the thread that creates it (sched_setaffinity(2)), and QEMU
//! creates its workers from the main loop, so they start there too.

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::qmp::QmpClient;

#[derive(Debug, thiserror::Error)]
pub(super) enum PinError {
    #[error("QMP query-cpus-fast: {0}")]
    Qmp(#[from] crate::qmp::QmpError),
    #[error("QEMU reports {got} vCPU threads, the config pins {want}")]
    Count { got: usize, want: usize },
    #[error("QEMU's threads (/proc/{pid}/task): {source}")]
    Tasks {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning QEMU thread {thread} to host CPUs {cpus}: {source}")]
    Emulator {
        thread: i32,
        cpus: String,
        #[source]
        source: nix::Error,
    },
    #[error("pinning vCPU {vcpu} (thread {thread}) to host CPU {cpu}: {source}")]
    Affinity {
        vcpu: u32,
        thread: i32,
        cpu: u32,
        #[source]
        source: nix::Error,
    },
}

pub(super) async fn pin_vcpus(qmp: &QmpClient, pins: &[u32]) -> Result<(), PinError> {
    if pins.is_empty() {
        return Ok(());
    }
    let threads = qmp.query_cpus_fast().await?;
    if threads.len() != pins.len() {
        return Err(PinError::Count {
            got: threads.len(),
            want: pins.len(),
        });
    }
    for t in &threads {
        let Some(&cpu) = pins.get(t.cpu_index as usize) else {
            continue;
        };
        let mut set = CpuSet::new();
        let err = |source| PinError::Affinity {
            vcpu: t.cpu_index,
            thread: t.thread_id,
            cpu,
            source,
        };
        set.set(cpu as usize).map_err(err)?;
        sched_setaffinity(Pid::from_raw(t.thread_id), &set).map_err(err)?;
    }
    tracing::info!("pinned {} vCPUs", threads.len());
    Ok(())
}

/// Pins every thread of QEMU (`pid`) that is not a vCPU to `cpus`;
/// returns how many.
pub(super) async fn pin_emulator(
    qmp: &QmpClient,
    pid: u32,
    cpus: &crate::host::cpuset::CpuSet,
) -> Result<usize, PinError> {
    if cpus.is_empty() {
        return Ok(0);
    }
    let vcpus: Vec<i32> = qmp
        .query_cpus_fast()
        .await?
        .iter()
        .map(|t| t.thread_id)
        .collect();
    let mut set = CpuSet::new();
    let err = |thread, source| PinError::Emulator {
        thread,
        cpus: cpus.to_string(),
        source,
    };
    for cpu in &cpus.0 {
        set.set(*cpu as usize).map_err(|e| err(0, e))?;
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|source| PinError::Tasks { pid, source })?;
    let mut pinned = 0;
    for tid in tasks
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|t| !vcpus.contains(t))
    {
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            Ok(()) => pinned += 1,
            // A worker that ended since the listing.
            Err(nix::Error::ESRCH) => {}
            Err(e) => return Err(err(tid, e)),
        }
    }
    tracing::info!("pinned {pinned} QEMU threads to host CPUs {cpus}");
    Ok(pinned)
}
