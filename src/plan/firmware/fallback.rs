//! Known OVMF locations, for hosts whose descriptors are missing or match
//! nothing (RESEARCH.md 5.1). Used only after descriptors: paths move
//! between releases, descriptors follow them.

use std::path::Path;

use super::descriptor::machine_matches;
use super::ImageFormat;
use crate::host::HostRoot;

/// One code/VARS pair as a distro ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Known {
    pub code: &'static str,
    pub vars: &'static str,
    pub format: ImageFormat,
    pub secure_boot: bool,
    /// The VARS template has Microsoft's keys enrolled.
    pub enrolled_keys: bool,
}

const fn pair(
    code: &'static str,
    vars: &'static str,
    format: ImageFormat,
    secure_boot: bool,
    enrolled_keys: bool,
) -> Known {
    Known {
        code,
        vars,
        format,
        secure_boot,
        enrolled_keys,
    }
}

use ImageFormat::{Qcow2, Raw};

/// Within a distro the order is that of its descriptors (enrolled Secure
/// Boot first, plain last), so an unspecified request gets what the
/// descriptors would have given. Every secure-boot build needs SMM
/// (`SMM_REQUIRE`), so `requires_smm` is `secure_boot`.
#[rustfmt::skip]
pub(super) const KNOWN: &[Known] = &[
    // Debian/Ubuntu `ovmf`: 4 MB images, then the 2 MB ones trixie dropped.
    pair("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", Raw, true, true),
    pair("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", Raw, false, false),
    pair("/usr/share/OVMF/OVMF_CODE.secboot.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd", Raw, true, true),
    pair("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd", Raw, false, false),
    // Fedora 39+ `edk2-ovmf`: 4 MB qcow2 (its secboot VARS is MS-enrolled), then 2 MB raw.
    pair("/usr/share/edk2/ovmf/OVMF_CODE_4M.secboot.qcow2", "/usr/share/edk2/ovmf/OVMF_VARS_4M.secboot.qcow2", Qcow2, true, true),
    pair("/usr/share/edk2/ovmf/OVMF_CODE_4M.qcow2", "/usr/share/edk2/ovmf/OVMF_VARS_4M.qcow2", Qcow2, false, false),
    pair("/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd", Raw, true, true),
    pair("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd", Raw, false, false),
    // Arch `edk2-ovmf`: no MS-enrolled VARS known (RESEARCH.md 5.1), then the old layout.
    pair("/usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd", Raw, true, false),
    pair("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd", Raw, false, false),
    pair("/usr/share/edk2-ovmf/x64/OVMF_CODE.secboot.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd", Raw, true, false),
    pair("/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd", Raw, false, false),
];

/// The first known pair present under `root` that satisfies the tri-state
/// `secure_boot` request on `machine`, with the same rules as descriptor
/// matching. The machines are those the distros' descriptors list: Secure
/// Boot (SMM) builds for `pc-q35-*` only, plain ones for i440fx too.
pub(super) fn find(root: &HostRoot, machine: &str, secure_boot: Option<bool>) -> Option<Known> {
    let q35 = machine_matches("pc-q35-*", machine);
    let i440fx = machine_matches("pc-i440fx-*", machine);
    KNOWN
        .iter()
        .filter(|k| q35 || (i440fx && !k.secure_boot))
        .filter(|k| match secure_boot {
            Some(true) => k.secure_boot && k.enrolled_keys,
            Some(false) => !k.secure_boot,
            None => true,
        })
        .find(|k| exists(root, k.code) && exists(root, k.vars))
        .copied()
}

/// The code images looked for, for the "not found" error.
pub(super) fn searched(root: &HostRoot) -> impl Iterator<Item = std::path::PathBuf> + '_ {
    KNOWN.iter().map(|k| root.path(k.code))
}

fn exists(root: &HostRoot, path: &str) -> bool {
    root.path(Path::new(path)).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    fn host_with(files: &[&str]) -> (TestHost, HostRoot) {
        let host = files
            .iter()
            .fold(TestHost::new(), |host, f| host.file(f, "fw"));
        let root = host.root();
        (host, root)
    }

    #[test]
    fn secure_request_needs_enrolled_keys() {
        let (_d, root) = host_with(&[
            "/usr/share/edk2/x64/OVMF_CODE.secboot.4m.fd",
            "/usr/share/edk2/x64/OVMF_CODE.4m.fd",
            "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
        ]);
        assert_eq!(find(&root, "q35", Some(true)), None);
        assert_eq!(
            find(&root, "q35", Some(false)).map(|k| k.code),
            Some("/usr/share/edk2/x64/OVMF_CODE.4m.fd")
        );
    }

    #[test]
    fn fedora_qcow2_pair_is_found() {
        let (_d, root) = host_with(&[
            "/usr/share/edk2/ovmf/OVMF_CODE_4M.secboot.qcow2",
            "/usr/share/edk2/ovmf/OVMF_VARS_4M.secboot.qcow2",
        ]);
        let k = find(&root, "q35", Some(true)).unwrap();
        assert_eq!(k.format, Qcow2);
        assert!(k.enrolled_keys);
    }

    #[test]
    fn half_a_pair_is_not_used() {
        let (_d, root) = host_with(&["/usr/share/OVMF/OVMF_CODE_4M.fd"]);
        assert_eq!(find(&root, "q35", None), None);
    }

    #[test]
    fn machine_limits_the_known_pairs() {
        let (_d, root) = host_with(&[
            "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        ]);
        assert_eq!(find(&root, "microvm", None), None);
        assert_eq!(find(&root, "pc-i440fx-7.2", Some(true)), None);
        assert!(!find(&root, "pc", None).unwrap().secure_boot);
    }

    #[test]
    fn unspecified_request_takes_the_first_present_pair() {
        let (_d, root) = host_with(&[
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
            "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
        ]);
        assert!(find(&root, "q35", None).unwrap().secure_boot);
    }
}
