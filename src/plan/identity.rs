//! Who QEMU and swtpm run as. As root, each VM gets an unprivileged
//! identity of its own, set before QEMU is exec'd (so QEMU opens only what
//! that identity may); as a normal user, QEMU simply runs as that user.
//!
//! `user = "auto"` gives each VM its own uid (and a gid of the same number)
//! from `DYNAMIC_UIDS`, like systemd's `DynamicUser=`: no VM's escaped QEMU
//! can read another's TPM state or rewrite its UEFI variables. The uid is
//! held for the VM's life by a flock on `UID_LOCK_DIR/UID` (`claim`), so
//! two running VMs never share one.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::finding::Finding;
use crate::config::{Accel, QemuUser};
use crate::host::HostRoot;

/// systemd's UIDS-GIDS.md lists 60578…61183 as "Unused": below its dynamic
/// service users (61184…65519), above its homed (60001…60513) and nspawn
/// (60514…60577) ranges, above useradd's `UID_MAX` (60000) and below
/// every `/etc/subuid` range (100000 and up). vmrun takes it for its
/// per-VM uids; a uid in it that `/etc/passwd` or `/etc/group` already
/// names is skipped.
pub const DYNAMIC_UIDS: std::ops::RangeInclusive<u32> = 60578..=61183;

/// Where the per-VM uids are held (one flocked file per uid in use),
/// whatever `VMRUN_RUN_DIR` says: the uids are the host's, not a run dir's.
pub const UID_LOCK_DIR: &str = "/run/vmrun/uids";

/// The identity QEMU and swtpm are exec'd as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QemuIdentity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the `kvm` group of `/dev/kvm`, a named user's).
    pub groups: Vec<u32>,
    /// How it is shown: `vmrun-60712` or the user's name.
    pub label: String,
    /// Whether the uid is one of `DYNAMIC_UIDS`, held by `claim`.
    pub dynamic: bool,
}

/// The identity QEMU should run as, or `None` to leave its uid alone (vmrun
/// is not root, or `user = "root"`).
pub(crate) fn qemu_identity(
    wanted: &QemuUser,
    is_root: bool,
    accel: Accel,
    vm_name: &str,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) -> Option<QemuIdentity> {
    if !is_root {
        return None;
    }
    let db = UserDb::read(root);
    match wanted {
        QemuUser::Root => None,
        QemuUser::Auto => {
            let lock_dir = root.path(UID_LOCK_DIR);
            let held = |uid| held_by_another(&lock_dir, uid, vm_name);
            let Some(uid) = choose_uid(vm_name, |uid| db.names(uid) || held(uid)) else {
                findings.push(
                    Finding::error("qemu.user", format!("every uid of {}..{} is taken: too many VMs run, or /etc/passwd names them", DYNAMIC_UIDS.start(), DYNAMIC_UIDS.end()))
                        .fix("stop a VM, or set [qemu] user to a user of its own"),
                );
                return None;
            };
            Some(QemuIdentity {
                uid,
                gid: uid,
                groups: kvm_group(accel, root).into_iter().collect(),
                label: format!("vmrun-{uid}"),
                dynamic: true,
            })
        }
        QemuUser::Named(name) => match named_user(name, root, &db) {
            Some((uid, gid, groups)) => Some(QemuIdentity {
                uid,
                gid,
                groups,
                label: name.clone(),
                dynamic: false,
            }),
            None => {
                findings.push(
                    Finding::error(
                        "qemu.user",
                        format!("user `{name}` does not exist on this host"),
                    )
                    .fix(format!(
                        "create it (useradd --system {name}) or set [qemu] user = \"auto\""
                    )),
                );
                None
            }
        },
    }
}

/// QEMU as the named (existing) user `name`, with its groups and, under
/// KVM, `/dev/kvm`'s group: the sound server's user, whose server admits
/// only its own uid (`plan::audio`).
pub(crate) fn user_identity(name: &str, accel: Accel, root: &HostRoot) -> Option<QemuIdentity> {
    let (uid, gid, mut groups) = named_user(name, root, &UserDb::read(root))?;
    groups.extend(kvm_group(accel, root).filter(|g| *g != gid && !groups.contains(g)));
    Some(QemuIdentity {
        uid,
        gid,
        groups,
        label: name.to_string(),
        dynamic: false,
    })
}

/// What the identity can't do that the VM asks for, as findings: open a
/// root-only `/dev/kvm`, reach the desktop for a GTK window, or attach to a
/// tap it does not own (TUNSETIFF needs the tap's owner or CAP_NET_ADMIN).
pub(crate) fn access_findings(
    vm: &crate::config::VmConfig,
    id: &QemuIdentity,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) {
    use crate::config::NetworkMode;
    let kvm = root.dev().join("kvm");
    if let (Accel::Kvm, Ok(meta)) = (vm.qemu.accel, fs::metadata(&kvm)) {
        let mode = meta.mode();
        let by_group =
            mode & 0o060 == 0o060 && (meta.gid() == id.gid || id.groups.contains(&meta.gid()));
        let by_owner = meta.uid() == id.uid && mode & 0o600 == 0o600;
        if mode & 0o006 != 0o006 && !by_group && !by_owner {
            findings.push(
                Finding::error(
                    "kvm",
                    format!(
                        "QEMU runs as uid {} and can't open /dev/kvm (mode {:03o}, gid {})",
                        id.uid,
                        mode & 0o777,
                        meta.gid()
                    ),
                )
                .fix("make /dev/kvm root:kvm 0660 (systemd's udev rule does: udevadm trigger /dev/kvm), or set [qemu] user = \"root\""),
            );
        }
    }
    if vm.display == crate::config::Display::Gtk {
        // Before, QEMU opened the window as root and dropped after; the
        // desktop's Wayland socket and Xauthority are its user's, 0700/0600.
        findings.push(
            Finding::warning(
                "display.mode",
                format!(
                    "QEMU runs as uid {} ({}) and can't reach the desktop's display (its Wayland socket and Xauthority belong to the desktop's user)",
                    id.uid, id.label
                ),
            )
            .fix("set [qemu] user to the desktop's user, or use display mode = \"spice\" and a SPICE client"),
        );
    }
    // A bridge gets a tap vmrun makes for the uid (`plan::network`).
    if let NetworkMode::Tap { .. } = &vm.network.mode {
        findings.push(
            Finding::warning(
                "network.mode",
                format!(
                    "QEMU runs as uid {} ({}): attaching to a tap needs its owner's uid or CAP_NET_ADMIN",
                    id.uid, id.label
                ),
            )
            .fix("make the tap for that uid (ip tuntap add mode tap user UID), or set [qemu] user to its owner, or use mode = \"bridge\", for which vmrun makes the tap"),
        );
    }
}

/// A named user's uid, primary gid and supplementary groups: from NSS
/// (getpwnam(3), getgrouplist(3): LDAP and systemd-userdb users too) on
/// the real host, from the tree's `/etc/passwd` and `/etc/group` on a
/// `HostRoot` of tests.
fn named_user(name: &str, root: &HostRoot, db: &UserDb) -> Option<(u32, u32, Vec<u32>)> {
    if root.is_real() {
        let user = nix::unistd::User::from_name(name).ok()??;
        let cname = std::ffi::CString::new(name).ok()?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map(|gs| {
                gs.into_iter()
                    .map(|g| g.as_raw())
                    .filter(|&g| g != user.gid.as_raw())
                    .collect()
            })
            .unwrap_or_default();
        return Some((user.uid.as_raw(), user.gid.as_raw(), groups));
    }
    let (uid, gid) = db.user(name)?;
    Some((uid, gid, db.groups_of(name, gid)))
}

/// The uid for VM `name`: a hash of the name into `DYNAMIC_UIDS` (so a VM
/// keeps its uid from run to run while nothing else takes it), then the
/// next one up, wrapping, past every uid `taken` says is in use.
pub(crate) fn choose_uid(name: &str, mut taken: impl FnMut(u32) -> bool) -> Option<u32> {
    let first = *DYNAMIC_UIDS.start();
    let len = DYNAMIC_UIDS.end() - first + 1;
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (0..len)
        .map(|i| first + (h.wrapping_add(i) % len))
        .find(|&uid| !taken(uid))
}

/// The group of `/dev/kvm`, when QEMU needs it: the accel is KVM and the
/// node is not open to everyone (Debian's udev rule makes it `root:kvm`
/// 0660; some hosts leave it 0666).
fn kvm_group(accel: Accel, root: &HostRoot) -> Option<u32> {
    if accel != Accel::Kvm {
        return None;
    }
    let meta = fs::metadata(root.dev().join("kvm")).ok()?;
    (meta.mode() & 0o006 != 0o006 && meta.gid() != 0).then_some(meta.gid())
}

/// Whether `uid` is held by a running VM other than `vm_name`: its lock
/// file is flocked. Testing takes the lock for a moment and lets it go.
fn held_by_another(lock_dir: &std::path::Path, uid: u32, vm_name: &str) -> bool {
    let path = lock_dir.join(uid.to_string());
    let Ok(file) = File::open(&path) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        // The VM itself still runs (a dry-run beside it): it keeps its uid.
        Err(_) => fs::read_to_string(&path).map_or(true, |holder| holder.trim() != vm_name),
    }
}

/// `/etc/passwd` and `/etc/group` of the host root (the plan reads the
/// host through `HostRoot`, so tests give it their own).
struct UserDb {
    passwd: String,
    group: String,
}

impl UserDb {
    fn read(root: &HostRoot) -> Self {
        let read = |p: &str| fs::read_to_string(root.path(p)).unwrap_or_default();
        Self {
            passwd: read("/etc/passwd"),
            group: read("/etc/group"),
        }
    }

    /// Whether a user or group of this number exists.
    fn names(&self, id: u32) -> bool {
        let has = |text: &str| {
            text.lines()
                .any(|l| l.split(':').nth(2).and_then(|n| n.parse().ok()) == Some(id))
        };
        has(&self.passwd) || has(&self.group)
    }

    /// A user's uid and primary gid.
    fn user(&self, name: &str) -> Option<(u32, u32)> {
        self.passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name) && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
    }

    /// The groups that list `name` as a member (getgrouplist(3) over
    /// `/etc/group`), without its primary group.
    fn groups_of(&self, name: &str, primary: u32) -> Vec<u32> {
        let mut groups: Vec<u32> = self
            .group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                let member = f.get(3)?.split(',').any(|m| m == name);
                member.then(|| f[2].parse().ok()).flatten()
            })
            .filter(|&g| g != primary)
            .collect();
        groups.dedup();
        groups
    }
}

/// A per-VM uid, held until this is dropped (the kernel drops a flock when
/// its holder dies, whatever the way).
#[derive(Debug)]
pub struct UidLock(#[allow(dead_code)] Flock<File>);

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("uid {uid} for QEMU was taken by VM {holder} since the plan was made: start again")]
    Taken { uid: u32, holder: String },
    #[error("uid lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Holds the uid of `identity` for VM `vm_name`, when it is a per-VM one.
pub fn claim(
    identity: Option<&QemuIdentity>,
    vm_name: &str,
    root: &HostRoot,
) -> Result<Option<UidLock>, ClaimError> {
    let Some(id) = identity.filter(|id| id.dynamic) else {
        return Ok(None);
    };
    let dir = root.path(UID_LOCK_DIR);
    crate::fsutil::create_private_dir(&dir).map_err(|e| ClaimError::Io {
        path: dir.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let path = dir.join(id.uid.to_string());
    let lock = crate::fsutil::claim_file(&path, vm_name).map_err(|e| match e {
        crate::fsutil::ClaimError::Held(holder) => ClaimError::Taken {
            uid: id.uid,
            holder,
        },
        crate::fsutil::ClaimError::Io(source) => ClaimError::Io { path, source },
    })?;
    Ok(Some(UidLock(lock)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nkvmuser:x:990:990::/:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nkvm:x:104:alice,kvmuser\nvideo:x:44:kvmuser\nkvmuser:x:990:\n";

    fn host() -> TestHost {
        TestHost::new()
            .file("/etc/passwd", PASSWD)
            .file("/etc/group", GROUP)
    }

    fn identity(
        wanted: QemuUser,
        host: &TestHost,
        findings: &mut Vec<Finding>,
    ) -> Option<QemuIdentity> {
        qemu_identity(
            &wanted,
            true,
            Accel::Tcg,
            "win11",
            &HostRoot::new(host.path()),
            findings,
        )
    }

    #[test]
    fn auto_gives_a_per_vm_uid_in_the_unused_range() {
        let h = host();
        let id = identity(QemuUser::Auto, &h, &mut vec![]).unwrap();
        assert!(DYNAMIC_UIDS.contains(&id.uid), "{id:?}");
        assert_eq!(id.gid, id.uid);
        assert!(id.groups.is_empty(), "TCG needs no kvm group");
        assert!(id.dynamic);
        let other = qemu_identity(
            &QemuUser::Auto,
            true,
            Accel::Tcg,
            "win10",
            &HostRoot::new(h.path()),
            &mut vec![],
        )
        .unwrap();
        assert_ne!(other.uid, id.uid, "another VM, another uid");
    }

    #[test]
    fn the_probe_skips_taken_uids_and_wraps() {
        let first = choose_uid("vm", |_| false).unwrap();
        let next = choose_uid("vm", |uid| uid == first).unwrap();
        assert_eq!(
            next,
            if first == *DYNAMIC_UIDS.end() {
                *DYNAMIC_UIDS.start()
            } else {
                first + 1
            }
        );
        assert_eq!(choose_uid("vm", |_| true), None);
        let mut seen = 0;
        choose_uid("vm", |_| {
            seen += 1;
            true
        });
        assert_eq!(
            seen,
            DYNAMIC_UIDS.count(),
            "every uid of the range is tried once"
        );
    }

    #[test]
    fn a_uid_in_passwd_or_group_is_skipped() {
        let uid = choose_uid("win11", |_| false).unwrap();
        let h = TestHost::new()
            .file(
                "/etc/passwd",
                &format!("{PASSWD}svc:x:{uid}:{uid}::/:/bin/false\n"),
            )
            .file("/etc/group", GROUP);
        let id = identity(QemuUser::Auto, &h, &mut vec![]).unwrap();
        assert_ne!(id.uid, uid);
        let h = TestHost::new()
            .file("/etc/passwd", PASSWD)
            .file("/etc/group", &format!("{GROUP}svc:x:{uid}:\n"));
        assert_ne!(identity(QemuUser::Auto, &h, &mut vec![]).unwrap().uid, uid);
    }

    #[test]
    fn a_uid_held_by_another_running_vm_is_skipped_but_our_own_is_kept() {
        let h = host();
        let root = HostRoot::new(h.path());
        let uid = choose_uid("win11", |_| false).unwrap();
        let lock = claim(
            Some(&QemuIdentity {
                uid,
                gid: uid,
                groups: vec![],
                label: String::new(),
                dynamic: true,
            }),
            "other",
            &root,
        )
        .unwrap();
        assert!(lock.is_some());
        assert_ne!(identity(QemuUser::Auto, &h, &mut vec![]).unwrap().uid, uid);
        drop(lock);
        assert_eq!(
            identity(QemuUser::Auto, &h, &mut vec![]).unwrap().uid,
            uid,
            "released"
        );
        let _mine = claim(
            Some(&QemuIdentity {
                uid,
                gid: uid,
                groups: vec![],
                label: String::new(),
                dynamic: true,
            }),
            "win11",
            &root,
        )
        .unwrap();
        assert_eq!(
            identity(QemuUser::Auto, &h, &mut vec![]).unwrap().uid,
            uid,
            "a dry-run beside the VM shows its uid"
        );
    }

    #[test]
    fn a_second_claim_of_a_held_uid_names_the_holder() {
        let h = host();
        let root = HostRoot::new(h.path());
        let id = QemuIdentity {
            uid: 60600,
            gid: 60600,
            groups: vec![],
            label: String::new(),
            dynamic: true,
        };
        let _held = claim(Some(&id), "first", &root).unwrap();
        let err = claim(Some(&id), "second", &root).unwrap_err();
        assert!(
            matches!(&err, ClaimError::Taken { uid: 60600, holder } if holder == "first"),
            "{err}"
        );
    }

    #[test]
    fn a_named_user_brings_its_groups() {
        let h = host();
        let id = identity(QemuUser::Named("kvmuser".into()), &h, &mut vec![]).unwrap();
        assert_eq!((id.uid, id.gid), (990, 990));
        assert_eq!(id.groups, vec![104, 44]);
        assert!(!id.dynamic);
    }

    #[test]
    fn kvm_adds_the_group_of_a_private_dev_kvm() {
        let h = host().file("/dev/kvm", "");
        let kvm = h.path().join("dev/kvm");
        nix::unistd::chown(&kvm, None, Some(nix::unistd::Gid::from_raw(104))).unwrap();
        std::fs::set_permissions(&kvm, std::os::unix::fs::PermissionsExt::from_mode(0o660))
            .unwrap();
        let id = qemu_identity(
            &QemuUser::Auto,
            true,
            Accel::Kvm,
            "w",
            &HostRoot::new(h.path()),
            &mut vec![],
        )
        .unwrap();
        assert_eq!(id.groups, vec![104]);
        std::fs::set_permissions(&kvm, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let id = qemu_identity(
            &QemuUser::Auto,
            true,
            Accel::Kvm,
            "w",
            &HostRoot::new(h.path()),
            &mut vec![],
        )
        .unwrap();
        assert!(id.groups.is_empty(), "a world-rw /dev/kvm needs no group");
    }

    #[test]
    fn a_root_only_dev_kvm_and_a_foreign_tap_are_findings_for_an_unprivileged_qemu() {
        let h = host().file("/dev/kvm", "");
        let kvm = h.path().join("dev/kvm");
        std::fs::set_permissions(&kvm, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let vm =
            crate::testing::vm("memory = \"1G\"\n[network]\nmode = \"tap\"\nifname = \"tap0\"\n");
        let id = qemu_identity(
            &QemuUser::Auto,
            true,
            Accel::Kvm,
            "w",
            &HostRoot::new(h.path()),
            &mut vec![],
        )
        .unwrap();
        let mut findings = vec![];
        access_findings(&vm, &id, &HostRoot::new(h.path()), &mut findings);
        let subjects: Vec<_> = findings
            .iter()
            .map(|f| (f.subject.as_str(), f.severity))
            .collect();
        assert_eq!(
            subjects,
            [
                ("kvm", crate::plan::Severity::Error),
                ("network.mode", crate::plan::Severity::Warning)
            ]
        );
        std::fs::set_permissions(&kvm, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let mut findings = vec![];
        access_findings(
            &crate::testing::vm("memory = \"1G\"\n"),
            &id,
            &HostRoot::new(h.path()),
            &mut findings,
        );
        assert!(findings.is_empty(), "{findings:?}");
        // A bridge's tap is vmrun's to make for the uid: nothing to warn of.
        let bridged =
            crate::testing::vm("memory = \"1G\"\n[network]\nmode = \"bridge\"\nbridge = \"br0\"\n");
        access_findings(&bridged, &id, &HostRoot::new(h.path()), &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
        let gtk = crate::testing::vm("memory = \"1G\"\n[display]\nmode = \"gtk\"\n");
        access_findings(&gtk, &id, &HostRoot::new(h.path()), &mut findings);
        assert_eq!(findings[0].subject, "display.mode");
    }

    #[test]
    fn non_root_and_root_user_change_nothing_and_a_missing_user_is_a_finding() {
        let h = host();
        let root = HostRoot::new(h.path());
        assert_eq!(
            qemu_identity(&QemuUser::Auto, false, Accel::Tcg, "w", &root, &mut vec![]),
            None
        );
        assert_eq!(identity(QemuUser::Root, &h, &mut vec![]), None);
        let mut findings = vec![];
        assert_eq!(
            identity(QemuUser::Named("nobody2".into()), &h, &mut findings),
            None
        );
        assert_eq!(findings[0].subject, "qemu.user");
    }
}
