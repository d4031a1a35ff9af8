//! Reserving huge pages for guest RAM. Only what is missing is reserved,
//! and only that is given back: pages another user of the pool had stay.
//! Contract: Documentation/admin-guide/mm/hugetlbpage.rst — writing
//! `nr_hugepages` grows the persistent pool as far as the kernel can find
//! contiguous memory; the value read back is what it got.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::config::HugePageSize;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::kernel::WriteError;
use crate::prepare::Host;

/// The journal step: the persistent huge page pool, `before` pages, was
/// grown by up to `reserved` pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hugepages {
    pub size_kb: u64,
    pub before: u64,
    pub reserved: u64,
}

impl Undo for Hugepages {
    fn undo(&self, host: &Host) -> StepReport {
        StepReport {
            what: format!(
                "up to {} huge pages of {} kB released",
                self.reserved, self.size_kb
            ),
            problem: release(host, self.size_kb, self.before, self.reserved).err(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HugepageError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("{path}: unreadable ({0})", path = .1.display())]
    Read(String, PathBuf),
    #[error("needed {needed} huge pages of {size_kb} kB, the kernel could provide {got} (memory too fragmented?): free memory, or reserve them at boot with hugepagesz=… hugepages=…")]
    Short { needed: u64, got: u64, size_kb: u64 },
}

pub fn size_kb(size: HugePageSize) -> u64 {
    size.size().bytes() / 1024
}

fn pool_dir(host: &Host, size_kb: u64) -> PathBuf {
    host.root
        .path(format!("/sys/kernel/mm/hugepages/hugepages-{size_kb}kB"))
}

fn read_count(path: PathBuf) -> Result<u64, HugepageError> {
    fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| HugepageError::Read("not a number".into(), path))
}

/// Makes `pages` huge pages of `size` free for the VM, journaled.
/// Returns how many were reserved.
pub fn reserve(
    host: &Host,
    journal: &mut Journal,
    size: HugePageSize,
    pages: u64,
) -> Result<u64, HugepageError> {
    let kb = size_kb(size);
    let dir = pool_dir(host, kb);
    let free = read_count(dir.join("free_hugepages"))?;
    if free >= pages {
        return Ok(0);
    }
    let missing = pages - free;
    let total = read_count(dir.join("nr_hugepages"))?;
    journal.record(&Step::Hugepages(Hugepages {
        size_kb: kb,
        before: total,
        reserved: missing,
    }))?;
    host.kernel
        .write(&dir.join("nr_hugepages"), &(total + missing).to_string())?;
    let mut got = read_count(dir.join("nr_hugepages"))?.saturating_sub(total);
    if got < missing {
        // Free page cache and defragment, then ask again
        // (Documentation/admin-guide/sysctl/vm.rst: drop_caches, compact_memory).
        let _ = host
            .kernel
            .write(&host.root.path("/proc/sys/vm/drop_caches"), "3");
        let _ = host
            .kernel
            .write(&host.root.path("/proc/sys/vm/compact_memory"), "1");
        host.kernel
            .write(&dir.join("nr_hugepages"), &(total + missing).to_string())?;
        got = read_count(dir.join("nr_hugepages"))?.saturating_sub(total);
    }
    tracing::info!("reserved {got} of {missing} missing huge pages of {kb} kB");
    if got < missing {
        return Err(HugepageError::Short {
            needed: pages,
            got: free + got,
            size_kb: kb,
        });
    }
    Ok(got)
}

/// Shrinks the pool by what vmrun reserved, never below what it was
/// before (the kernel may have found fewer pages than asked for).
pub fn release(host: &Host, size_kb: u64, before: u64, reserved: u64) -> Result<(), String> {
    let file = pool_dir(host, size_kb).join("nr_hugepages");
    let total = read_count(file.clone()).map_err(|e| e.to_string())?;
    let target = total.saturating_sub(reserved).max(before);
    if target == total {
        return Ok(());
    }
    host.kernel
        .write(&file, &target.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostRoot;
    use crate::prepare::journal;
    use crate::prepare::kernel::fake::FakeKernel;

    const POOL: &str = "sys/kernel/mm/hugepages/hugepages-2048kB";

    /// A 2 MiB pool behind a fake kernel, a journal beside it.
    struct Pool {
        dir: tempfile::TempDir,
        root: HostRoot,
        kernel: FakeKernel,
    }

    impl Pool {
        /// `total` pages of which `free` are free; the kernel finds at
        /// most `limit` pages in all.
        fn new(total: u64, free: u64, limit: Option<u64>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join(POOL);
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("nr_hugepages"), format!("{total}\n")).unwrap();
            fs::write(p.join("free_hugepages"), format!("{free}\n")).unwrap();
            fs::create_dir_all(dir.path().join("proc/sys/vm")).unwrap();
            let mut kernel = FakeKernel::new(dir.path());
            if let Some(l) = limit {
                kernel = kernel.hugepage_limit(l);
            }
            Self {
                root: HostRoot::new(dir.path()),
                kernel,
                dir,
            }
        }

        fn host(&self) -> Host<'_> {
            Host::new(&self.root, &self.kernel)
        }

        fn journal(&self) -> PathBuf {
            self.dir.path().join("journal")
        }

        fn reserve(&self, pages: u64) -> Result<u64, HugepageError> {
            let mut j = Journal::open(&self.journal()).unwrap();
            reserve(&self.host(), &mut j, HugePageSize::Size2M, pages)
        }

        /// Undoes the journal; whether everything went back.
        fn undo(&self) -> bool {
            journal::undo_all(&self.journal(), &self.host()).complete()
        }

        fn nr(&self) -> u64 {
            let p = self.dir.path().join(POOL).join("nr_hugepages");
            fs::read_to_string(p).unwrap().trim().parse().unwrap()
        }
    }

    #[test]
    fn only_the_missing_pages_are_reserved_and_given_back() {
        let pool = Pool::new(4, 2, None);
        assert_eq!(pool.reserve(8).unwrap(), 6);
        assert_eq!(pool.nr(), 10);
        assert_eq!(
            journal::read(&pool.journal()).unwrap().steps,
            [Step::Hugepages(Hugepages {
                size_kb: 2048,
                before: 4,
                reserved: 6
            })]
        );
        assert!(pool.undo());
        assert_eq!(pool.nr(), 4);
    }

    #[test]
    fn enough_free_pages_reserve_nothing() {
        let pool = Pool::new(16, 16, None);
        assert_eq!(pool.reserve(8).unwrap(), 0);
        assert!(pool.kernel.writes.borrow().is_empty());
    }

    #[test]
    fn a_short_pool_compacts_retries_and_reports_what_it_got() {
        let pool = Pool::new(0, 0, Some(3));
        let err = pool.reserve(8).unwrap_err();
        assert!(
            matches!(
                err,
                HugepageError::Short {
                    needed: 8,
                    got: 3,
                    ..
                }
            ),
            "{err}"
        );
        let written = pool.kernel.writes.borrow();
        assert!(written
            .iter()
            .any(|(p, _)| p == "proc/sys/vm/compact_memory"));
        drop(written);
        assert!(pool.undo());
        assert_eq!(pool.nr(), 0);
    }

    #[test]
    fn release_never_takes_pages_that_were_there_before() {
        let pool = Pool::new(4, 0, Some(7));
        assert!(pool.reserve(8).is_err());
        assert_eq!(pool.nr(), 7);
        assert!(pool.undo());
        assert_eq!(pool.nr(), 4);
    }
}
