//! Reserving huge pages for guest RAM. Only what is missing is reserved,
//! and only that is given back: pages another user of the pool had stay.
//! Contract: Documentation/admin-guide/mm/hugetlbpage.rst — writing
//! `nr_hugepages` grows the persistent pool as far as the kernel can find
//! contiguous memory; the value read back is what it got.

use std::fs;
use std::path::PathBuf;

use super::journal::{Journal, JournalError, Step};
use super::sysfs::WriteError;
use super::vfio::Host;
use crate::config::HugePageSize;

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
    journal.record(&Step::Hugepages {
        size_kb: kb,
        reserved: missing,
    })?;
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

/// Shrinks the pool by what vmrun reserved (never below zero).
pub fn release(host: &Host, size_kb: u64, reserved: u64) -> Result<(), String> {
    let file = pool_dir(host, size_kb).join("nr_hugepages");
    let total = read_count(file.clone()).map_err(|e| e.to_string())?;
    host.kernel
        .write(&file, &total.saturating_sub(reserved).to_string())
        .map_err(|e| e.to_string())
}
