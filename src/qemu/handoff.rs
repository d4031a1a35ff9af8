//! The files and sockets QEMU gets from vmrun as open descriptors. QEMU
//! runs unprivileged from its first instruction, so it opens by path only
//! what its own identity may; everything of vmrun's (disks, the VARS copy,
//! the console log, the monitor sockets, swtpm's control socket, a VBIOS)
//! is opened here, as root, and placed at a fixed fd number in QEMU.
//!
//! `FdPlan` is pure: which fd each item gets, so `build_run_argv` can name
//! them. `open` makes the descriptors.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::open_as::open_nonblocking;
use crate::config::trust;
use crate::host::file_kind::{self, Wanted};
use crate::plan::{Plan, QemuIdentity};

/// The first fd handed over: 0 is the QMP listener, 1 and 2 stdout and
/// stderr.
const FIRST_FD: RawFd = 3;

/// What an item of the plan is, to look its fd up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    FwCode,
    FwVars,
    Disk(usize),
    ConsoleLog,
    QmpCtl,
    Console,
    Swtpm,
    /// The `romfile` of hostdev N (in `plan.hostdevs` order).
    Rom(usize),
    /// The dir QEMU binds SPICE's socket in.
    SpiceDir,
}

/// How QEMU opens a file it is handed through an fdset. QEMU's
/// `qemu_open` of `/dev/fdset/S` dups the member whose access mode
/// (`O_ACCMODE`) equals the one it asks for (`monitor_fdset_dup_fd_add`),
/// so each file is opened with the mode QEMU uses: a read-only block node
/// O_RDONLY, a writable one O_RDWR, a chardev logfile O_WRONLY|O_APPEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
    Append,
}

/// What vmrun opens for one handed fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file QEMU opens as `/dev/fdset/SET` (`-add-fd fd=N,set=SET`).
    File {
        path: PathBuf,
        set: u32,
        access: Access,
    },
    /// A unix socket vmrun binds (0600) and QEMU serves (`fd=N,server=on`).
    Listen(PathBuf),
    /// Our connection to swtpm's control socket (`-chardev socket,fd=N`).
    SwtpmCtrl,
    /// A VBIOS copied into a memfd, named `/proc/self/fd/N`: QEMU opens a
    /// `romfile` with plain open(2), and the magic link skips the 0700
    /// dirs above the file.
    Rom(PathBuf),
    /// A dir made 0700 for QEMU's uid, named `/proc/self/fd/N`.
    OwnDir(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handed {
    pub key: Key,
    pub fd: RawFd,
    pub source: Source,
}

/// Every fd QEMU is handed, numbered from `FIRST_FD` in command-line order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdPlan {
    pub items: Vec<Handed>,
    /// The `/dev/input/eventN` nodes of the router's proxies (keyboard,
    /// mouse), known once they exist; QEMU opens them by path as its own
    /// uid (they are chowned to it).
    pub evdev: [Option<PathBuf>; 2],
}

impl FdPlan {
    pub fn new(plan: &Plan) -> Self {
        let mut p = Self::default();
        let mut set = 0;
        let mut file = |p: &mut Self, key, path: &Path, access| {
            set += 1;
            p.push(
                key,
                Source::File {
                    path: path.to_path_buf(),
                    set,
                    access,
                },
            );
        };
        if let Some(fw) = &plan.firmware {
            file(&mut p, Key::FwCode, &fw.code, Access::ReadOnly);
            file(
                &mut p,
                Key::FwVars,
                &plan.paths.vars_file,
                Access::ReadWrite,
            );
        }
        for (i, disk) in plan.vm.disks.iter().enumerate() {
            let access = if disk.readonly {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            file(&mut p, Key::Disk(i), &disk.path, access);
        }
        file(
            &mut p,
            Key::ConsoleLog,
            &plan.paths.console_log,
            Access::Append,
        );
        p.push(
            Key::QmpCtl,
            Source::Listen(plan.paths.qmp_ctl_socket.clone()),
        );
        p.push(
            Key::Console,
            Source::Listen(plan.paths.console_socket.clone()),
        );
        if plan.vm.tpm {
            p.push(Key::Swtpm, Source::SwtpmCtrl);
        }
        if plan.spice() {
            if let Some(dir) = plan.paths.spice_socket.parent() {
                p.push(Key::SpiceDir, Source::OwnDir(dir.to_path_buf()));
            }
        }
        for (i, hd) in plan.hostdevs.iter().enumerate() {
            if let Some(rom) = &hd.config.romfile {
                p.push(Key::Rom(i), Source::Rom(rom.clone()));
            }
        }
        p
    }

    fn push(&mut self, key: Key, source: Source) {
        let fd = FIRST_FD + self.items.len() as RawFd;
        self.items.push(Handed { key, fd, source });
    }

    pub fn get(&self, key: Key) -> Option<&Handed> {
        self.items.iter().find(|h| h.key == key)
    }
}

impl Key {
    /// The config key that names this item's file, if the config does.
    fn config_key(self) -> Option<&'static str> {
        match self {
            Key::Disk(_) => Some("[[disk]] path"),
            Key::FwCode => Some("[firmware] code"),
            Key::Rom(_) => Some("[[hostdev]] romfile"),
            _ => None,
        }
    }

    /// What the file may be: a disk may be a block device.
    fn wanted(self) -> Wanted {
        match self {
            Key::Disk(_) => Wanted::Image,
            _ => Wanted::Regular,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("opening {}{path} for QEMU: {source}", .key.map(|k| format!("{k} ")).unwrap_or_default())]
pub(crate) struct HandoffError {
    /// The config key, when the config named the file.
    pub key: Option<&'static str>,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Opens every item of `fds` (swtpm's connection comes from `swtpm`),
/// as `(fd in QEMU, descriptor)` pairs.
pub(crate) fn open(
    fds: &FdPlan,
    identity: Option<&QemuIdentity>,
    mut swtpm: Option<UnixStream>,
) -> Result<Vec<(RawFd, OwnedFd)>, HandoffError> {
    let mut out = Vec::new();
    for h in &fds.items {
        let keyed = |e: HandoffError| HandoffError {
            key: h.key.config_key(),
            ..e
        };
        let wanted = h.key.wanted();
        let owned = match &h.source {
            Source::File { path, access, .. } => {
                open_file(path, *access, wanted).map_err(keyed)?.into()
            }
            Source::Listen(path) => listen(path)?.into(),
            Source::SwtpmCtrl => swtpm
                .take()
                .ok_or_else(|| HandoffError {
                    key: None,
                    path: "swtpm".into(),
                    source: io::Error::other("swtpm is not running"),
                })?
                .into(),
            Source::Rom(path) => rom_memfd(path).map_err(keyed)?,
            Source::OwnDir(path) => own_dir(path, identity)?,
        };
        out.push((h.fd, owned));
    }
    Ok(out)
}

fn open_file(path: &Path, access: Access, wanted: Wanted) -> Result<File, HandoffError> {
    let mut o = OpenOptions::new();
    let opened = match access {
        Access::ReadOnly => open_guarded(path, false, wanted),
        Access::ReadWrite => open_guarded(path, true, wanted),
        // In vmrun's run dir; made 0600 by `ensure_console_log` already.
        Access::Append => o.append(true).create(true).mode(0o600).open(path),
    };
    opened.map_err(|source| HandoffError {
        key: None,
        path: path.to_path_buf(),
        source,
    })
}

/// Opens a file the config names. As root, a path that another user
/// controls (`trust::who_controls`) is opened with that user's rights, so
/// a link swapped in gives the guest nothing the user couldn't read. The
/// plan refused a file of the wrong type; one swapped in since is refused
/// here, without blocking (`open_nonblocking`).
fn open_guarded(path: &Path, writable: bool, wanted: Wanted) -> io::Result<File> {
    let file = if !trust::running_as_root() {
        open_nonblocking(path, writable)?
    } else {
        match trust::who_controls(path) {
            Ok(None) => open_nonblocking(path, writable)?,
            Ok(Some(uid)) => super::open_as::open_as(uid, path, writable)?,
            Err(untrusted) => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    untrusted.to_string(),
                ))
            }
        }
    };
    file_kind::check_opened(&file, wanted)?;
    Ok(file)
}

/// Binds `path` mode 0600: only root connects (`vmrun console`, `vmrun
/// qmp`). QEMU's socket chardev takes a listening socket as `fd=`.
fn listen(path: &Path) -> Result<UnixListener, HandoffError> {
    let err = |source| HandoffError {
        key: None,
        path: path.to_path_buf(),
        source,
    };
    // A dead run's socket file would make bind fail with EADDRINUSE.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

fn rom_memfd(path: &Path) -> Result<OwnedFd, HandoffError> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let err = |source| HandoffError {
        key: None,
        path: path.to_path_buf(),
        source,
    };
    let mut rom = open_guarded(path, false, Wanted::Regular).map_err(err)?;
    let fd = memfd_create(c"vmrun-rom", MFdFlags::MFD_CLOEXEC).map_err(|e| err(e.into()))?;
    let mut copy = File::from(fd);
    io::copy(&mut rom, &mut copy).map_err(err)?;
    Ok(copy.into())
}

/// Makes `path` a 0700 dir of QEMU's identity (a stale one is replaced:
/// it is made afresh for each run) and opens it. Its parent is vmrun's,
/// 0711: passable, not listable (`DirsEnv::spice_base`).
pub(crate) fn own_dir(
    path: &Path,
    identity: Option<&QemuIdentity>,
) -> Result<OwnedFd, HandoffError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| HandoffError {
        key: None,
        path: path.to_path_buf(),
        source,
    };
    if let Some(base) = path.parent() {
        crate::fsutil::create_private_dir(base)
            .map_err(|e| err(io::Error::other(e.to_string())))?;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o711)).map_err(err)?;
    }
    let _ = std::fs::remove_dir_all(path);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(err)?;
    if let Some(id) = identity {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(id.uid)),
            Some(nix::unistd::Gid::from_raw(id.gid)),
        )
        .map_err(|e| err(e.into()))?;
    }
    open_dir(path)
}

/// A dir opened O_RDONLY|O_DIRECTORY|O_NOFOLLOW: not a link planted there.
pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd, HandoffError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::DIRECTORY | libc_flags::NOFOLLOW)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| HandoffError {
            key: None,
            path: path.to_path_buf(),
            source,
        })
}

mod libc_flags {
    use nix::fcntl::OFlag;
    pub(super) const DIRECTORY: i32 = OFlag::O_DIRECTORY.bits();
    pub(super) const NOFOLLOW: i32 = OFlag::O_NOFOLLOW.bits();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::build_run_argv;

    fn plan(extra: &str) -> (tempfile::TempDir, Plan) {
        let tmp = tempfile::tempdir().unwrap();
        let plan = plan_in(&tmp, extra);
        (tmp, plan)
    }

    fn plan_in(tmp: &tempfile::TempDir, extra: &str) -> Plan {
        let ctx = crate::plan::PlanContext {
            root: crate::host::HostRoot::new(tmp.path()),
            dirs: crate::plan::DirsEnv {
                is_root: true,
                uid: 0,
                run_base: Some(tmp.path().join("run")),
                state_base: Some(tmp.path().join("state")),
                ..Default::default()
            },
            qemu_version: Some(crate::host::qemu::QemuVersion::new(7, 2, 0)),
        };
        let text = format!("memory = \"256M\"\n[firmware]\ntype = \"bios\"\n{extra}");
        crate::plan::plan(crate::testing::vm(&text), &ctx)
    }

    fn args(plan: &Plan, fds: &FdPlan) -> Vec<String> {
        build_run_argv(plan, fds)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn disks_and_the_console_log_are_fdsets_opened_in_qemus_mode() {
        let (_tmp, plan) = plan(
            "[tpm]\nenabled = true\n[[disk]]\npath = \"/vm/a.qcow2\"\n[[disk]]\npath = \"/vm/b.iso\"\nmedia = \"cdrom\"\nreadonly = true\n",
        );
        let fds = FdPlan::new(&plan);
        let access: Vec<_> = fds
            .items
            .iter()
            .filter_map(|h| match &h.source {
                Source::File { access, set, .. } => Some((h.fd, *set, *access)),
                _ => None,
            })
            .collect();
        assert_eq!(
            access,
            [
                (3, 1, Access::ReadWrite),
                (4, 2, Access::ReadOnly),
                (5, 3, Access::Append)
            ]
        );
        let a = args(&plan, &fds);
        for want in ["fd=3,set=1", "fd=4,set=2", "fd=5,set=3"] {
            assert!(a.iter().any(|x| x == want), "-add-fd {want} in {a:?}");
        }
        assert!(
            a.iter().any(|x| x.contains("filename=/dev/fdset/1")),
            "{a:?}"
        );
        assert!(
            a.iter()
                .any(|x| x.contains("filename=/dev/fdset/2,read-only=on")),
            "{a:?}"
        );
        assert!(
            a.iter().any(|x| x
                == "socket,id=console,fd=7,server=on,wait=off,logfile=/dev/fdset/3,logappend=on"),
            "{a:?}"
        );
        assert!(
            a.iter()
                .any(|x| x == "socket,id=qmp-ctl,fd=6,server=on,wait=off"),
            "{a:?}"
        );
        assert!(a.iter().any(|x| x == "socket,id=chrtpm,fd=8"), "{a:?}");
        assert!(
            a.iter()
                .any(|x| x == "socket,id=qmp,fd=0,server=on,wait=off"),
            "{a:?}"
        );
        // Nothing of vmrun's dirs is named: QEMU can't reach them.
        let run = plan.paths.run_dir.to_string_lossy().into_owned();
        let state = plan.paths.state_dir.to_string_lossy().into_owned();
        assert!(
            !a.iter().any(|x| x.contains(&run) || x.contains(&state)),
            "{a:?}"
        );
        assert!(!a.iter().any(|x| x == "-pidfile" || x == "-runas"), "{a:?}");
    }

    #[test]
    fn the_path_form_names_paths_and_never_changes_uid() {
        let (_tmp, plan) = plan("[[disk]]\npath = \"/vm/a.qcow2\"\n");
        let a: Vec<String> = crate::qemu::build_argv(&plan)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            a.iter().any(|x| x.contains("filename=/vm/a.qcow2")),
            "{a:?}"
        );
        assert!(!a.iter().any(|x| x == "-add-fd"), "{a:?}");
        assert!(
            a.iter().any(|x| x.contains("elevateprivileges=deny")),
            "{a:?}"
        );
        assert!(
            !a.iter().any(|x| x == "-runas" || x == "-run-with"),
            "{a:?}"
        );
    }

    #[test]
    fn a_qcow2_without_a_backing_file_gets_backing_null_in_json() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("vm")).unwrap();
        let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
        header.resize(32, 0);
        std::fs::write(tmp.path().join("vm/a.qcow2"), header).unwrap();
        let plan = plan_in(&tmp, "[[disk]]\npath = \"/vm/a.qcow2\"\n");
        let a = args(&plan, &FdPlan::new(&plan));
        let node: serde_json::Value = serde_json::from_str(
            a.iter()
                .find(|x| x.starts_with('{'))
                .expect("a JSON -blockdev"),
        )
        .unwrap();
        assert_eq!(node["backing"], serde_json::Value::Null);
        assert!(node.as_object().unwrap().contains_key("backing"));
        assert_eq!(node["driver"], "qcow2");
        assert_eq!(node["file"], "disk0-file");
    }

    #[test]
    fn a_romfile_is_read_into_a_memfd() {
        let tmp = tempfile::tempdir().unwrap();
        let rom = tmp.path().join("vbios.rom");
        std::fs::write(&rom, b"\x55\xaarom").unwrap();
        let fd = rom_memfd(&rom).unwrap();
        let copy = std::fs::read(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .unwrap();
        assert_eq!(copy, b"\x55\xaarom");
    }
}
