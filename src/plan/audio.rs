//! `[audio]` on this host: whose sound server the guest plays into, the
//! socket QEMU connects to, and how an unprivileged QEMU reaches it.
//!
//! A desktop sound server is its user's: PulseAudio admits a client whose
//! peer uid (SO_PEERCRED) is its own, or one that shows its cookie
//! (`~/.config/pulse/cookie`), so a socket opened to another uid still
//! refuses it ("Access denied"); PipeWire's sockets live in the user's
//! 0700 `/run/user/UID`. Either way an admitted client may load modules
//! into the server (`pactl load-module`, pipewire-pulse too), which run as
//! its user: reaching the server *is* that user's power. So vmrun does not open the socket to a
//! per-VM uid (an ACL would grant the same power while hiding it, and is
//! not enough for PulseAudio); with `[qemu] user = "auto"` QEMU runs as
//! the sound server's user instead, and the dry-run says so.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use serde::Serialize;

use super::finding::Finding;
use super::identity::QemuIdentity;
use crate::config::{Audio, AudioBackend, AudioModel, QemuUser};
use crate::host::qemu::QemuVersion;
use crate::host::HostRoot;
use crate::input::switch_user::{self, Caller, RunAs};

/// QEMU's own `pipewire` audiodev came with 8.1 (audio/pwaudio.c); older
/// QEMUs reach PipeWire through pipewire-pulse with the `pa` audiodev.
pub const PIPEWIRE_AUDIODEV_SINCE: (u32, u32) = (8, 1);

/// Which QEMU audiodev driver plays the guest's sound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioDriver {
    /// `pipewire`: PipeWire's native socket, `pipewire-0`.
    Pipewire,
    /// `pa`: PulseAudio's native protocol (PulseAudio or pipewire-pulse).
    Pa,
    Alsa,
    Spice,
}

/// The user whose sound server it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SoundUser {
    pub uid: u32,
    pub name: String,
}

/// `[audio]` planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudioPlan {
    pub driver: AudioDriver,
    pub model: AudioModel,
    /// Whose server (`None` for ALSA and SPICE, or when no user was found).
    pub user: Option<SoundUser>,
    /// `pa`: the server's socket; `pipewire`: the runtime dir that holds
    /// `pipewire-0` (QEMU's pipewire audiodev takes no path: libpipewire
    /// finds the socket through `PIPEWIRE_RUNTIME_DIR`).
    pub server: Option<PathBuf>,
}

impl AudioPlan {
    /// The environment QEMU needs to find the server.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        match (&self.driver, &self.server) {
            (AudioDriver::Pipewire, Some(dir)) => vec![("PIPEWIRE_RUNTIME_DIR", dir.clone())],
            _ => Vec::new(),
        }
    }
}

/// The runtime dir logind makes for `uid` (`$XDG_RUNTIME_DIR` of its sessions).
fn runtime_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/run/user/{uid}"))
}

/// Plans `audio` for a QEMU of `version`.
pub(crate) fn plan(
    audio: &Audio,
    version: QemuVersion,
    is_root: bool,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) -> AudioPlan {
    let (major, minor) = PIPEWIRE_AUDIODEV_SINCE;
    let driver = match audio.backend {
        AudioBackend::Pipewire if version.at_least(major, minor) => AudioDriver::Pipewire,
        AudioBackend::Pipewire | AudioBackend::Pulseaudio => AudioDriver::Pa,
        AudioBackend::Alsa => AudioDriver::Alsa,
        // `[audio]` is absent when its backend is none.
        AudioBackend::Spice | AudioBackend::None => AudioDriver::Spice,
    };
    let mut plan = AudioPlan {
        driver,
        model: audio.model,
        user: None,
        server: None,
    };
    if !matches!(driver, AudioDriver::Pipewire | AudioDriver::Pa) {
        return plan;
    }
    let Some(user) = sound_user(audio, is_root, root, findings) else {
        return plan;
    };
    let dir = runtime_dir(user.uid);
    let socket = match driver {
        AudioDriver::Pipewire => dir.join("pipewire-0"),
        _ => dir.join("pulse/native"),
    };
    let is_socket = std::fs::metadata(root.path(&socket)).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        let (server, start) = match (audio.backend, driver) {
            (AudioBackend::Pipewire, AudioDriver::Pipewire) => {
                ("PipeWire", "systemctl --user start pipewire.socket pipewire.service")
            }
            (AudioBackend::Pipewire, _) => (
                "pipewire-pulse (this QEMU predates the pipewire audiodev)",
                "systemctl --user start pipewire-pulse.socket pipewire-pulse.service",
            ),
            _ => (
                "PulseAudio",
                "systemctl --user start pulseaudio.socket (or pipewire-pulse.socket where PipeWire serves PulseAudio clients)",
            ),
        };
        findings.push(
            Finding::error(
                "audio.backend",
                format!(
                    "{}'s {server} is not running: {} is no socket",
                    user.name,
                    socket.display()
                ),
            )
            .fix(format!(
                "as {}: `{start}`, or set [audio] user to the user whose session plays sound",
                user.name
            )),
        );
    }
    plan.server = Some(match driver {
        AudioDriver::Pipewire => dir,
        _ => socket,
    });
    plan.user = Some(user);
    plan
}

/// Whose sound server: the configured user; as root, else the desktop's
/// user (sudo's, else seat0's active session's); not root: vmrun's own
/// user, the only one whose server its QEMU may reach.
fn sound_user(
    audio: &Audio,
    is_root: bool,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) -> Option<SoundUser> {
    let fix = "set `user` under [audio] to the user whose session plays the sound";
    let found: Option<RunAs> = match (&audio.user, is_root) {
        (Some(name), _) => switch_user::named_user(name).or_else(|| {
            findings.push(
                Finding::error("audio.user", format!("no user `{name}` on this host")).fix(fix),
            );
            None
        }),
        (None, false) => {
            let uid = nix::unistd::geteuid();
            nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .and_then(|u| switch_user::named_user(&u.name))
        }
        (None, true) => {
            let caller = Caller {
                seat: root.path(switch_user::SEAT0),
                ..Caller::from_process()
            };
            switch_user::desktop_user(&caller).ok().flatten().or_else(|| {
                findings.push(
                    Finding::error(
                        "audio.user",
                        "no desktop user whose sound server to use: vmrun was not started through sudo and no session is active on seat0",
                    )
                    .fix(fix),
                );
                None
            })
        }
    };
    let user = found?;
    if !is_root && user.uid != nix::unistd::geteuid().as_raw() {
        findings.push(
            Finding::error(
                "audio.user",
                format!(
                    "vmrun is not root, so QEMU runs as its own user and can't join {}'s sound server",
                    user.name
                ),
            )
            .fix("run vmrun as that user, or through sudo"),
        );
    }
    Some(SoundUser {
        uid: user.uid,
        name: user.name,
    })
}

/// Whether QEMU runs as the sound server's user: as root with `[qemu] user
/// = "auto"`, a server backend makes QEMU that user rather than a per-VM
/// uid (see the module's comment for why not an ACL).
pub(crate) fn runs_qemu_as<'a>(
    plan: Option<&'a AudioPlan>,
    wanted: &QemuUser,
    is_root: bool,
) -> Option<&'a SoundUser> {
    (is_root && *wanted == QemuUser::Auto).then_some(plan?.user.as_ref()?)
}

/// A QEMU identity of another uid than the server's can't join it.
pub(crate) fn access_finding(
    plan: &AudioPlan,
    identity: Option<&QemuIdentity>,
    findings: &mut Vec<Finding>,
) {
    let (Some(user), Some(id)) = (&plan.user, identity) else {
        return;
    };
    if id.uid != user.uid {
        findings.push(
            Finding::error(
                "audio.user",
                format!(
                    "QEMU runs as {} (uid {}), and {}'s sound server admits only its own user's clients",
                    id.label, id.uid, user.name
                ),
            )
            .fix(format!(
                "set [qemu] user = \"auto\" (QEMU then runs as {}) or to \"{}\"",
                user.name, user.name
            )),
        );
    }
}

/// ALSA's device nodes for QEMU's identity: udev makes `/dev/snd/*`
/// `root:audio` 0660 (with a uaccess ACL for the seat's user only), so a
/// per-VM uid gets their group for the run, as it gets `/dev/kvm`'s.
pub(crate) fn add_alsa_group(plan: &AudioPlan, id: &mut QemuIdentity, root: &HostRoot) {
    use std::os::unix::fs::MetadataExt;
    if plan.driver != AudioDriver::Alsa {
        return;
    }
    let Ok(meta) = std::fs::metadata(root.dev().join("snd/timer")) else {
        return;
    };
    let gid = meta.gid();
    let open_to_all = meta.mode() & 0o006 == 0o006;
    if !open_to_all && gid != 0 && gid != id.gid && !id.groups.contains(&gid) {
        id.groups.push(gid);
    }
}

/// How the dry-run explains the sound path.
pub fn describe(plan: &AudioPlan, identity: Option<&QemuIdentity>) -> Option<String> {
    let user = plan.user.as_ref()?;
    let server = plan.server.as_ref()?.display();
    Some(match identity {
        Some(id) if id.uid == user.uid => format!(
            "audio: QEMU runs as {} (not a per-VM uid) to join that user's sound server at {server}",
            user.name
        ),
        _ => format!("audio: QEMU joins {}'s sound server at {server}", user.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: QemuVersion = QemuVersion::new(7, 2, 0);
    const NEW: QemuVersion = QemuVersion::new(10, 0, 0);
    // uid 65534 (`nobody`) is in every Debian /etc/passwd.
    const NOBODY: u32 = 65534;

    fn host_with_sockets(uid: u32, names: &[&str]) -> (tempfile::TempDir, HostRoot) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(format!("run/user/{uid}"));
        for n in names {
            let p = dir.join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::net::UnixListener::bind(&p).unwrap();
        }
        let root = HostRoot::new(tmp.path());
        (tmp, root)
    }

    /// `backend` for `user` planned as root against QEMU `version`.
    fn planned(
        backend: AudioBackend,
        user: Option<&str>,
        version: QemuVersion,
        root: &HostRoot,
    ) -> (AudioPlan, Vec<Finding>) {
        let audio = Audio {
            backend,
            model: AudioModel::Hda,
            user: user.map(Into::into),
        };
        let mut findings = vec![];
        let p = plan(&audio, version, true, root, &mut findings);
        (p, findings)
    }

    #[test]
    fn pipewire_is_native_on_new_qemu_and_through_pipewire_pulse_before() {
        let (_t, root) = host_with_sockets(NOBODY, &["pipewire-0", "pulse/native"]);
        let (p, f) = planned(AudioBackend::Pipewire, Some("nobody"), NEW, &root);
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(p.driver, AudioDriver::Pipewire);
        assert_eq!(p.server, Some(PathBuf::from("/run/user/65534")));
        assert_eq!(
            p.env(),
            [("PIPEWIRE_RUNTIME_DIR", PathBuf::from("/run/user/65534"))]
        );
        let (p, f) = planned(AudioBackend::Pipewire, Some("nobody"), OLD, &root);
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(p.driver, AudioDriver::Pa);
        assert_eq!(
            p.server,
            Some(PathBuf::from("/run/user/65534/pulse/native"))
        );
        assert!(p.env().is_empty());
    }

    #[test]
    fn a_missing_server_refuses_and_says_what_to_start() {
        let (_t, root) = host_with_sockets(NOBODY, &[]);
        let (_, f) = planned(AudioBackend::Pipewire, Some("nobody"), NEW, &root);
        assert_eq!(f[0].severity, crate::plan::Severity::Error);
        assert!(f[0].message.contains("pipewire-0"), "{}", f[0].message);
        assert!(f[0].fix.as_deref().unwrap().contains("pipewire.socket"));
        let (_, f) = planned(AudioBackend::Pulseaudio, Some("nobody"), NEW, &root);
        assert!(f[0].message.contains("pulse/native"), "{}", f[0].message);
    }

    #[test]
    fn a_plain_file_is_no_server() {
        let (tmp, root) = host_with_sockets(NOBODY, &[]);
        let dir = tmp.path().join("run/user/65534/pulse");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("native"), "").unwrap();
        let (_, f) = planned(AudioBackend::Pulseaudio, Some("nobody"), OLD, &root);
        assert_eq!(f.len(), 1, "{f:?}");
    }

    #[test]
    fn auto_as_root_is_sudos_user_else_seat0s_else_refused() {
        // The test process's own environment decides sudo's user; a seat
        // file under the host root decides seat0's.
        let (tmp, root) = host_with_sockets(NOBODY, &["pulse/native"]);
        let sudo = std::env::var("SUDO_UID")
            .ok()
            .and_then(|u| u.parse::<u32>().ok())
            .filter(|&u| u != 0);
        let (p, f) = planned(AudioBackend::Pulseaudio, None, OLD, &root);
        if let Some(uid) = sudo {
            assert_eq!(p.user.map(|u| u.uid), Some(uid));
            return;
        }
        assert!(p.user.is_none());
        assert_eq!(f[0].subject, "audio.user");
        let seat = tmp.path().join("run/systemd/seats");
        std::fs::create_dir_all(&seat).unwrap();
        std::fs::write(seat.join("seat0"), format!("ACTIVE_UID={NOBODY}\n")).unwrap();
        let (p, f) = planned(AudioBackend::Pulseaudio, None, OLD, &root);
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(p.user.unwrap().uid, NOBODY);
    }

    #[test]
    fn alsa_and_spice_need_no_server() {
        let (_t, root) = host_with_sockets(NOBODY, &[]);
        for (b, d) in [
            (AudioBackend::Alsa, AudioDriver::Alsa),
            (AudioBackend::Spice, AudioDriver::Spice),
        ] {
            let (p, f) = planned(b, None, NEW, &root);
            assert!(f.is_empty(), "{f:?}");
            assert_eq!((p.driver, p.user, p.server), (d, None, None));
        }
    }

    #[test]
    fn alsa_gives_qemu_the_group_of_dev_snd() {
        let (tmp, root) = host_with_sockets(NOBODY, &[]);
        let timer = tmp.path().join("dev/snd/timer");
        std::fs::create_dir_all(timer.parent().unwrap()).unwrap();
        std::fs::write(&timer, "").unwrap();
        nix::unistd::chown(&timer, None, Some(nix::unistd::Gid::from_raw(29))).unwrap();
        std::fs::set_permissions(&timer, std::os::unix::fs::PermissionsExt::from_mode(0o660))
            .unwrap();
        let mut id = crate::testing::per_vm_identity();
        let (alsa, _) = planned(AudioBackend::Alsa, None, NEW, &root);
        add_alsa_group(&alsa, &mut id, &root);
        add_alsa_group(&alsa, &mut id, &root);
        assert_eq!(id.groups, vec![29], "added once");
        let (spice, _) = planned(AudioBackend::Spice, None, NEW, &root);
        let mut other = crate::testing::per_vm_identity();
        add_alsa_group(&spice, &mut other, &root);
        assert!(other.groups.is_empty());
    }

    #[test]
    fn auto_qemu_runs_as_the_sound_user_and_another_uid_is_refused() {
        let (_t, root) = host_with_sockets(NOBODY, &["pulse/native"]);
        let (p, _) = planned(AudioBackend::Pulseaudio, Some("nobody"), OLD, &root);
        assert_eq!(
            runs_qemu_as(Some(&p), &QemuUser::Auto, true).map(|u| u.uid),
            Some(NOBODY)
        );
        assert_eq!(runs_qemu_as(Some(&p), &QemuUser::Root, true), None);
        assert_eq!(runs_qemu_as(Some(&p), &QemuUser::Auto, false), None);
        let mut f = vec![];
        access_finding(&p, Some(&crate::testing::per_vm_identity()), &mut f);
        assert_eq!(f[0].subject, "audio.user");
        let same = QemuIdentity {
            uid: NOBODY,
            label: "nobody".into(),
            dynamic: false,
            ..crate::testing::per_vm_identity()
        };
        let mut f = vec![];
        access_finding(&p, Some(&same), &mut f);
        assert!(f.is_empty());
        assert!(describe(&p, Some(&same))
            .unwrap()
            .contains("QEMU runs as nobody"));
    }
}
