//! vCPU pinning: each vCPU thread (thread ids from QMP `query-cpus-fast`)
//! gets the host CPU of `[cpu] pin`. Done from outside QEMU, before `cont`,
//! so QEMU's seccomp `resourcecontrol=deny` can stay on.

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::qmp::QmpClient;

#[derive(Debug, thiserror::Error)]
pub(super) enum PinError {
    #[error("QMP query-cpus-fast: {0}")]
    Qmp(#[from] crate::qmp::QmpError),
    #[error("QEMU reports {got} vCPU threads, the config pins {want}")]
    Count { got: usize, want: usize },
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
