//! Which user QEMU runs as. As root, vmrun hands QEMU an unprivileged user
//! (QEMU drops to it itself after opening its files); as a normal user,
//! QEMU simply runs as that user.

use std::fs;

use super::finding::Finding;
use crate::config::QemuUser;
use crate::host::HostRoot;

/// Users tried in order for `user = "auto"`: our own, then the names
/// distributions create for QEMU and libvirt.
const AUTO_USERS: [&str; 3] = ["vmrun", "qemu", "libvirt-qemu"];

/// The user QEMU should drop to, or `None` to leave it as it starts.
pub(crate) fn qemu_user(
    wanted: &QemuUser,
    is_root: bool,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) -> Option<String> {
    if !is_root {
        return None;
    }
    let passwd = fs::read_to_string(root.path("/etc/passwd")).unwrap_or_default();
    let exists = |name: &str| passwd.lines().any(|l| l.split(':').next() == Some(name));
    match wanted {
        QemuUser::Root => None,
        QemuUser::Auto => Some(
            AUTO_USERS
                .into_iter()
                .find(|u| exists(u))
                .unwrap_or("nobody")
                .to_string(),
        ),
        QemuUser::Named(name) => {
            if !exists(name) {
                findings.push(
                    Finding::error(
                        "qemu.user",
                        format!("user `{name}` does not exist on this host"),
                    )
                    .fix(format!(
                        "create it (useradd --system {name}) or set [qemu] user = \"auto\""
                    )),
                );
            }
            Some(name.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    fn root_with_passwd(text: &str) -> TestHost {
        TestHost::new().file("/etc/passwd", text)
    }

    #[test]
    fn auto_prefers_the_distribution_qemu_user() {
        let dir = root_with_passwd(
            "root:x:0:0::/root:/bin/sh\nlibvirt-qemu:x:64055:108::/:/usr/sbin/nologin\n",
        );
        let user = qemu_user(
            &QemuUser::Auto,
            true,
            &HostRoot::new(dir.path()),
            &mut vec![],
        );
        assert_eq!(user.as_deref(), Some("libvirt-qemu"));
    }

    #[test]
    fn auto_falls_back_to_nobody_and_non_root_drops_nothing() {
        let dir = root_with_passwd("root:x:0:0::/root:/bin/sh\n");
        let root = HostRoot::new(dir.path());
        assert_eq!(
            qemu_user(&QemuUser::Auto, true, &root, &mut vec![]).as_deref(),
            Some("nobody")
        );
        assert_eq!(qemu_user(&QemuUser::Auto, false, &root, &mut vec![]), None);
        assert_eq!(qemu_user(&QemuUser::Root, true, &root, &mut vec![]), None);
    }

    #[test]
    fn a_missing_named_user_is_a_finding() {
        let dir = root_with_passwd("root:x:0:0::/root:/bin/sh\n");
        let mut findings = vec![];
        qemu_user(
            &QemuUser::Named("kvmuser".into()),
            true,
            &HostRoot::new(dir.path()),
            &mut findings,
        );
        assert_eq!(findings[0].subject, "qemu.user");
    }
}
