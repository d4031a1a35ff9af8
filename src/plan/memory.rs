//! Whether the host could ever hold the guest's huge pages. Huge pages are
//! never swapped nor overcommitted: each one is a physically contiguous
//! block taken out of `MemTotal` (proc(5): `HugePages_Total` pages are part
//! of it), so a guest larger than the host, or needing more pages than fit
//! in it, is refused here, before `prepare` grows the pool (which would
//! strip the host of memory and still fail).

use super::finding::Finding;
use crate::config::{ByteSize, VmConfig};
use crate::host::cpu::meminfo_kb;
use crate::host::HostRoot;

/// A finding (error) when `vm` uses huge pages and the host, all of its
/// memory counted, cannot hold them. A host whose `/proc/meminfo` can't be
/// read gets none: `prepare` finds the pool short then.
pub(crate) fn check(vm: &VmConfig, root: &HostRoot, findings: &mut Vec<Finding>) {
    let Some(page) = vm.hugepages.map(|p| p.size()) else {
        return;
    };
    let Some(total_kb) = meminfo_kb(root, "MemTotal") else {
        return;
    };
    findings.extend(too_big(vm.memory, page, total_kb.saturating_mul(1024)));
}

fn too_big(memory: ByteSize, page: ByteSize, total: u64) -> Option<Finding> {
    let needed = memory.bytes().div_ceil(page.bytes());
    let possible = total / page.bytes();
    if needed <= possible && memory.bytes() <= total {
        return None;
    }
    let mib = |b: u64| b / ByteSize::MIB;
    Some(
        Finding::error(
            "memory",
            format!(
                "the guest's {memory} in {page} huge pages needs {needed} pages, and this host's whole memory (MemTotal {} MiB) holds at most {possible}",
                mib(total)
            ),
        )
        .fix(format!(
            "lower `size` under [memory] to at most {} MiB (less, to leave the host some)",
            mib(possible * page.bytes())
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Severity;

    const GIB: u64 = ByteSize::GIB;

    fn size(s: &str) -> ByteSize {
        s.parse().unwrap()
    }

    #[test]
    fn a_guest_larger_than_the_host_is_refused_with_the_numbers() {
        let f = too_big(size("1T"), size("2M"), 24 * GIB).expect("refused");
        assert_eq!(f.severity, Severity::Error);
        assert!(f.message.contains("needs 524288 pages"), "{}", f.message);
        assert!(f.message.contains("MemTotal 24576 MiB"), "{}", f.message);
        assert!(f.message.contains("at most 12288"), "{}", f.message);
    }

    #[test]
    fn more_1g_pages_than_fit_are_refused_though_the_size_fits() {
        // 23.5G fits in 23.78G, but needs 24 whole 1G pages of 23.
        let total = 23 * GIB + 800 * ByteSize::MIB;
        let f = too_big(size("24064M"), size("1G"), total);
        assert!(f.is_some_and(|f| f.message.contains("needs 24 pages")));
    }

    #[test]
    fn a_guest_that_fits_is_no_finding() {
        assert!(too_big(size("16G"), size("2M"), 24 * GIB).is_none());
        assert!(too_big(size("24G"), size("1G"), 24 * GIB).is_none());
    }

    #[test]
    fn meminfo_of_the_host_root_is_read() {
        let host = crate::testing::TestHost::new().memory_gib(4);
        let vm = crate::config::load_str(
            "big",
            std::path::Path::new("/nonexistent/big.toml"),
            "[memory]\nsize = \"8G\"\nhugepages = \"2M\"\n",
        )
        .unwrap();
        let mut findings = vec![];
        check(&vm, &host.root(), &mut findings);
        assert_eq!(findings.len(), 1, "{findings:?}");
        let mut none = vec![];
        let small = crate::config::load_str(
            "small",
            std::path::Path::new("/nonexistent/small.toml"),
            "[memory]\nsize = \"2G\"\nhugepages = \"2M\"\n",
        )
        .unwrap();
        check(&small, &host.root(), &mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
