//! Putting the host back: the journal replayed newest first, each step's
//! own `undo` called (they live beside the changes, in
//! `prepare::change`). The same function runs after QEMU exits, when
//! prepare fails part way, before a start that finds a dead run's journal,
//! and for `vmrun restore` after a crash. Every step is attempted even when
//! an earlier one failed, and each is reported.

use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::prepare::journal;
use crate::prepare::Host;

pub use crate::prepare::change::StepReport;

/// The result of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub steps: Vec<StepReport>,
    /// The journal, or lines of it, could not be read: changes that did
    /// not go back.
    pub journal_problems: Vec<String>,
}

impl Report {
    pub fn complete(&self) -> bool {
        self.journal_problems.is_empty() && self.steps.iter().all(|s| s.problem.is_none())
    }

    /// One line per step that did not go back, with what to do.
    pub fn problems(&self) -> impl Iterator<Item = String> + '_ {
        self.steps
            .iter()
            .filter_map(|s| s.problem.as_ref().map(|p| format!("{}: {p}", s.what)))
            .chain(self.journal_problems.iter().cloned())
    }
}

/// Undoes every step of the journal at `path` it can read, newest first;
/// removes the journal when everything went back. A line it cannot read is
/// a problem of the report and keeps the journal.
pub fn replay(path: &Path, host: &Host) -> Report {
    // Waits out a `Journal::open_running` recording a step from another
    // process, and keeps new ones out until the journal is unlinked (the
    // lock goes with this function).
    let _exclusive = std::fs::File::open(path)
        .ok()
        .and_then(|f| Flock::lock(f, FlockArg::LockExclusive).ok());
    let contents = match journal::read(path) {
        Ok(contents) => contents,
        Err(e) => {
            return Report {
                steps: vec![],
                journal_problems: vec![e.to_string()],
            }
        }
    };
    let report = Report {
        steps: contents.steps.iter().rev().map(|s| s.undo(host)).collect(),
        journal_problems: contents
            .unreadable
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    if report.complete() {
        journal::remove(path);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostRoot;
    use crate::prepare::change::hugepages::Hugepages;
    use crate::prepare::journal::{Journal, Step};
    use crate::prepare::kernel::fake::FakeKernel;

    /// A 2 MiB huge page pool of `total` pages, all free.
    fn pool(dir: &Path, total: u64) {
        let p = dir.join("sys/kernel/mm/hugepages/hugepages-2048kB");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("nr_hugepages"), format!("{total}\n")).unwrap();
        std::fs::write(p.join("free_hugepages"), format!("{total}\n")).unwrap();
    }

    fn journal_of(path: &Path, steps: &[Step]) {
        let mut j = Journal::open(path).unwrap();
        for s in steps {
            j.record(s).unwrap();
        }
    }

    fn reserved(size_kb: u64, before: u64, reserved: u64) -> Step {
        Step::Hugepages(Hugepages {
            size_kb,
            before,
            reserved,
        })
    }

    #[test]
    fn a_fully_replayed_journal_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        pool(dir.path(), 6);
        let path = dir.path().join("journal");
        journal_of(&path, &[reserved(2048, 2, 4)]);
        let (root, kernel) = (HostRoot::new(dir.path()), FakeKernel::new(dir.path()));
        let report = replay(&path, &Host::new(&root, &kernel));
        assert!(report.complete(), "{report:?}");
        assert!(!path.exists());
    }

    /// `vmrun usb attach` records a step in a running VM's journal from
    /// its own process: the VM's teardown waits for it and replays that
    /// step too, and once the journal is replayed no step gets in.
    #[test]
    fn a_step_recorded_by_another_process_is_replayed_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        pool(dir.path(), 6);
        let path = dir.path().join("journal");
        journal_of(&path, &[reserved(2048, 2, 4)]);
        let mut attach = Journal::open_running(&path).unwrap();
        let (done, ended) = std::sync::mpsc::channel();
        let (d, p) = (dir.path().to_path_buf(), path.clone());
        let teardown = std::thread::spawn(move || {
            let (root, kernel) = (HostRoot::new(&d), FakeKernel::new(&d));
            let report = replay(&p, &Host::new(&root, &kernel));
            done.send(()).unwrap();
            report
        });
        assert!(
            ended
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the replay waits while a step is being recorded"
        );
        attach.record(&reserved(2048, 2, 4)).unwrap();
        drop(attach);
        let report = teardown.join().unwrap();
        assert_eq!(report.steps.len(), 2, "{report:?}");
        assert!(report.complete(), "{report:?}");
        assert!(!path.exists());
        let refused = Journal::open_running(&path).unwrap_err();
        assert_eq!(refused.source.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn every_step_is_tried_newest_first_and_a_failed_one_keeps_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        pool(dir.path(), 6);
        let path = dir.path().join("journal");
        // No 1 GiB pool on this host: that step cannot go back.
        journal_of(&path, &[reserved(1048576, 0, 1), reserved(2048, 2, 4)]);
        let (root, kernel) = (HostRoot::new(dir.path()), FakeKernel::new(dir.path()));
        let report = replay(&path, &Host::new(&root, &kernel));
        assert_eq!(report.steps.len(), 2);
        assert!(report.steps[0].problem.is_none(), "{report:?}");
        assert!(report.steps[1].what.contains("1048576 kB"), "{report:?}");
        assert_eq!(report.problems().count(), 1);
        assert!(path.exists(), "kept for `vmrun restore`");
    }

    #[test]
    fn an_unreadable_line_keeps_the_journal_and_the_other_steps_go_back() {
        let dir = tempfile::tempdir().unwrap();
        pool(dir.path(), 6);
        let path = dir.path().join("journal");
        let step = serde_json::to_string(&reserved(2048, 2, 4)).unwrap();
        std::fs::write(&path, format!("garbage\n{step}\n")).unwrap();
        let (root, kernel) = (HostRoot::new(dir.path()), FakeKernel::new(dir.path()));
        let report = replay(&path, &Host::new(&root, &kernel));
        assert_eq!(report.steps.len(), 1);
        assert!(report.steps[0].problem.is_none(), "{report:?}");
        let nr = dir
            .path()
            .join("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages");
        assert_eq!(std::fs::read_to_string(nr).unwrap().trim(), "2");
        assert!(!report.complete());
        let problems: Vec<String> = report.problems().collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("line 1: not a journal step: \"garbage\""),
            "{problems:?}"
        );
        assert!(path.exists(), "kept for `vmrun restore`");
    }
}
