//! A bug that panics in the supervisor must not strand the host. The guard
//! is armed before setup changes the host and told QEMU's pid once it is
//! spawned. Dropped while a panic unwinds, it kills QEMU's process group,
//! reaps QEMU (a VFIO device is free only once its last fd is closed, at
//! QEMU's exit; swtpm, run with `--terminate`, follows QEMU) and replays
//! the journal, as every other way out does. `supervisor::run` catches the
//! panic and reports `SupervisorFailed` with this teardown's report: exit 3
//! with the host back, else 4.

use std::cell::RefCell;
use std::path::Path;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::prepare::Host;
use crate::teardown;

pub(super) struct UndoOnPanic<'a> {
    pub journal: &'a Path,
    pub host: &'a Host<'a>,
    /// QEMU, the leader of its own process group.
    pub qemu_pid: Option<u32>,
    pub report: &'a RefCell<Option<teardown::Report>>,
}

impl Drop for UndoOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        tracing::error!("vmrun's supervisor failed (a bug; the panic is above): stopping QEMU");
        if let Some(pid) = self.qemu_pid.and_then(|p| i32::try_from(p).ok()) {
            let pid = Pid::from_raw(pid);
            let _ = killpg(pid, Signal::SIGKILL);
            // SIGKILL can't be caught: this returns once QEMU is gone.
            let _ = waitpid(pid, None);
        }
        *self.report.borrow_mut() = Some(teardown::replay(self.journal, self.host));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostRoot;
    use crate::prepare::change::hugepages::Hugepages;
    use crate::prepare::journal::{Journal, Step};
    use crate::prepare::kernel::fake::FakeKernel;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_panic_while_qemu_runs_kills_it_and_replays_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("sys/kernel/mm/hugepages/hugepages-2048kB");
        std::fs::create_dir_all(&pool).unwrap();
        std::fs::write(pool.join("nr_hugepages"), "6\n").unwrap();
        std::fs::write(pool.join("free_hugepages"), "6\n").unwrap();
        let journal = dir.path().join("journal");
        Journal::open(&journal)
            .unwrap()
            .record(&Step::Hugepages(Hugepages {
                size_kb: 2048,
                before: 2,
                reserved: 4,
            }))
            .unwrap();
        // QEMU's stand-in, in a process group of its own as QEMU is.
        let qemu = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let qemu_pid = qemu.id();
        let (root, kernel) = (HostRoot::new(dir.path()), FakeKernel::new(dir.path()));
        let host = Host::new(&root, &kernel);
        let report = RefCell::new(None);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = UndoOnPanic {
                journal: &journal,
                host: &host,
                qemu_pid: Some(qemu_pid),
                report: &report,
            };
            panic!("a bug in the loop");
        }));
        assert!(panicked.is_err());
        let report = report.into_inner().expect("the guard replayed the journal");
        assert!(report.complete(), "{report:?}");
        assert!(
            !Path::new(&format!("/proc/{qemu_pid}")).exists(),
            "QEMU was killed and reaped"
        );
        assert!(!journal.exists(), "the journal was replayed");
        assert_eq!(
            std::fs::read_to_string(pool.join("nr_hugepages")).unwrap(),
            "2\n"
        );
        drop(qemu);
    }
}
