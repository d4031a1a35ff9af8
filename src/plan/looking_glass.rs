//! `[looking_glass]` on this host: where the shared memory is, who owns it,
//! whether the kvmfr module can hold it, and the client's command line.

use std::path::PathBuf;

use serde::Serialize;

use super::finding::Finding;
use super::identity::QemuIdentity;
use crate::config::{ByteSize, LgDevice, LookingGlass};
use crate::host::HostRoot;
use crate::input::switch_user::{self, Caller};

/// The node the kvmfr module makes for its first device.
pub const KVMFR_NODE: &str = "/dev/kvmfr0";

/// Who owns the shared memory while the VM runs: the client's user, and
/// QEMU's group, so that both open it read-write (mode 0660) and no one
/// else does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LgOwner {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
}

/// `[looking_glass]` planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LgPlan {
    pub device: LgDevice,
    /// `/dev/shm/looking-glass-NAME` or `/dev/kvmfr0` (as on the real host).
    pub path: PathBuf,
    pub size: ByteSize,
    /// `None` when vmrun is not root: the file is simply the caller's.
    pub owner: Option<LgOwner>,
    /// SPICE for the client's input and clipboard.
    pub spice: bool,
}

impl LgPlan {
    /// The Looking Glass client's command line for this VM: `-f` the shared
    /// memory; SPICE over the VM's unix socket (`spice:host` is the path
    /// and `spice:port` 0 for a unix socket), or `-s` (no SPICE).
    pub fn client_command(&self, spice_socket: &std::path::Path) -> Vec<String> {
        let mut cmd = vec![
            "looking-glass-client".to_string(),
            "-f".into(),
            self.path.display().to_string(),
        ];
        if self.spice {
            cmd.extend([
                "-c".into(),
                spice_socket.display().to_string(),
                "-p".into(),
                "0".into(),
            ]);
        } else {
            cmd.push("-s".into());
        }
        cmd
    }
}

/// Plans `lg` for VM `name`.
pub(crate) fn plan(
    lg: &LookingGlass,
    name: &str,
    is_root: bool,
    identity: Option<&QemuIdentity>,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) -> LgPlan {
    let path = match lg.device {
        LgDevice::Shm => PathBuf::from(format!("/dev/shm/looking-glass-{name}")),
        LgDevice::Kvmfr => PathBuf::from(KVMFR_NODE),
    };
    if lg.device == LgDevice::Kvmfr {
        findings.extend(kvmfr_finding(lg.size, root));
    }
    let owner = if is_root {
        owner(lg, identity, root, findings)
    } else {
        if let Some(name) = &lg.user {
            findings.push(Finding::warning(
                "looking_glass.user",
                format!(
                    "vmrun is not root, so the shared memory is its own user's, not `{name}`'s"
                ),
            ));
        }
        None
    };
    LgPlan {
        device: lg.device,
        path,
        size: lg.size,
        owner,
        spice: lg.spice,
    }
}

fn owner(
    lg: &LookingGlass,
    identity: Option<&QemuIdentity>,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) -> Option<LgOwner> {
    let user = match &lg.user {
        Some(name) => switch_user::named_user(name).or_else(|| {
            findings.push(
                Finding::error(
                    "looking_glass.user",
                    format!("no user `{name}` on this host"),
                )
                .fix("set `user` under [looking_glass] to the user who runs looking-glass-client"),
            );
            None
        })?,
        None => {
            let caller = Caller {
                seat: root.path(switch_user::SEAT0),
                ..Caller::from_process()
            };
            match switch_user::desktop_user(&caller) {
                Ok(Some(u)) => u,
                Ok(None) | Err(_) => {
                    findings.push(
                        Finding::error(
                            "looking_glass.user",
                            "no desktop user to own the shared memory: vmrun was not started through sudo and no session is active on seat0",
                        )
                        .fix("set `user` under [looking_glass] to the user who runs looking-glass-client"),
                    );
                    return None;
                }
            }
        }
    };
    Some(LgOwner {
        uid: user.uid,
        // QEMU's own group, so its uid needs nothing but the group bits;
        // with QEMU as root, the user's own group.
        gid: identity.map_or(user.gid, |id| id.gid),
        user: user.name,
    })
}

/// The kvmfr module: loaded, and its first device at least `size`
/// (`static_size_mb`, fixed when the module loads: kvmfr's README).
pub(crate) fn kvmfr_finding(size: ByteSize, root: &HostRoot) -> Option<Finding> {
    let module = root.sys().join("module/kvmfr");
    let load = format!("modprobe kvmfr static_size_mb={}", size.mib());
    if !module.exists() {
        return Some(
            Finding::error("looking_glass", "the kvmfr module is not loaded").fix(format!(
                "install Looking Glass's kvmfr module (DKMS) and `{load}`"
            )),
        );
    }
    let text = std::fs::read_to_string(module.join("parameters/static_size_mb")).ok()?;
    let first: u64 = text.trim().split(',').next()?.trim().parse().ok()?;
    (first < size.mib()).then(|| {
        Finding::error(
            "looking_glass",
            format!(
                "/dev/kvmfr0 holds {first} MiB; this VM needs {}",
                size.mib()
            ),
        )
        .fix(format!("reload the module: `rmmod kvmfr && {load}`"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lg(device: LgDevice, spice: bool, user: Option<&str>) -> LookingGlass {
        LookingGlass {
            size: ByteSize::from_bytes(64 * ByteSize::MIB),
            resolution: None,
            device,
            user: user.map(Into::into),
            spice,
        }
    }

    fn id() -> QemuIdentity {
        crate::testing::per_vm_identity()
    }

    #[test]
    fn shm_is_named_after_the_vm_and_owned_by_the_user_with_qemus_group() {
        let tmp = tempfile::tempdir().unwrap();
        let root = HostRoot::new(tmp.path());
        let mut f = vec![];
        let p = plan(
            &lg(LgDevice::Shm, false, Some("nobody")),
            "win",
            true,
            Some(&id()),
            &root,
            &mut f,
        );
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(p.path, PathBuf::from("/dev/shm/looking-glass-win"));
        let owner = p.owner.unwrap();
        assert_eq!(
            (owner.uid, owner.gid, owner.user.as_str()),
            (65534, 60600, "nobody")
        );
    }

    #[test]
    fn an_unknown_user_is_an_error_finding() {
        let tmp = tempfile::tempdir().unwrap();
        let root = HostRoot::new(tmp.path());
        let mut f = vec![];
        let p = plan(
            &lg(LgDevice::Shm, false, Some("no-such-user-x")),
            "w",
            true,
            None,
            &root,
            &mut f,
        );
        assert!(p.owner.is_none());
        assert_eq!(f[0].subject, "looking_glass.user");
    }

    #[test]
    fn kvmfr_must_be_loaded_and_large_enough() {
        let tmp = tempfile::tempdir().unwrap();
        let root = HostRoot::new(tmp.path());
        let size = ByteSize::from_bytes(64 * ByteSize::MIB);
        assert!(kvmfr_finding(size, &root)
            .unwrap()
            .message
            .contains("not loaded"));
        let params = tmp.path().join("sys/module/kvmfr/parameters");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::write(params.join("static_size_mb"), "32\n").unwrap();
        assert!(kvmfr_finding(size, &root)
            .unwrap()
            .message
            .contains("32 MiB"));
        std::fs::write(params.join("static_size_mb"), "128,32\n").unwrap();
        assert_eq!(kvmfr_finding(size, &root), None);
    }

    #[test]
    fn client_command_uses_spice_socket_or_disables_spice() {
        let tmp = tempfile::tempdir().unwrap();
        let root = HostRoot::new(tmp.path());
        let mut f = vec![];
        let sock = std::path::Path::new("/run/vmrun-spice/w/spice.sock");
        let p = plan(
            &lg(LgDevice::Shm, true, None),
            "w",
            false,
            None,
            &root,
            &mut f,
        );
        assert_eq!(
            p.client_command(sock).join(" "),
            "looking-glass-client -f /dev/shm/looking-glass-w -c /run/vmrun-spice/w/spice.sock -p 0"
        );
        let p = plan(
            &lg(LgDevice::Kvmfr, false, None),
            "w",
            false,
            None,
            &root,
            &mut f,
        );
        assert_eq!(
            p.client_command(sock).join(" "),
            "looking-glass-client -f /dev/kvmfr0 -s"
        );
    }
}
