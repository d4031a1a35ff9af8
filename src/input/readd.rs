//! QEMU mode: QEMU's `input-linux` reads the real devices itself, and on a
//! read error (ENODEV after an unplug) it closes the fd for good
//! (`input_linux_event` removes its fd handler). vmrun notices the device
//! node coming back and replaces the dead object over QMP with `object-del`
//! and `object-add` of the same properties.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::watch::Watch;
use crate::config::{Input, InputMode};

/// One `-object input-linux`, as on the command line and in `object-add`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputLinux {
    pub id: &'static str,
    pub evdev: PathBuf,
    /// Keyboard only: its toggle also (un)grabs the mouse.
    pub grab_all: bool,
    /// Keyboard only: forward autorepeat events.
    pub repeat: bool,
    pub grab_toggle: String,
}

impl InputLinux {
    /// The objects of a `qemu`-mode `[input]`.
    pub(crate) fn of(input: &Input) -> Vec<InputLinux> {
        let obj = |id, evdev: &PathBuf, kbd| InputLinux {
            id,
            evdev: evdev.clone(),
            grab_all: kbd,
            repeat: kbd,
            grab_toggle: input.toggle.to_string(),
        };
        let kbd = input.keyboard.iter().map(|p| obj("kbd0", p, true));
        let mouse = input.mouse.iter().map(|p| obj("mouse0", p, false));
        kbd.chain(mouse).collect()
    }

    /// `object-add`'s arguments (flat since QEMU 6.0's QAPI object-add).
    pub(crate) fn qmp_args(&self) -> Value {
        let mut args = json!({
            "qom-type": "input-linux",
            "id": self.id,
            "evdev": self.evdev.to_string_lossy(),
            "grab-toggle": self.grab_toggle,
        });
        if self.grab_all {
            args["grab_all"] = json!(true);
        }
        if self.repeat {
            args["repeat"] = json!(true);
        }
        args
    }
}

/// Which node a path resolves to: a replugged device gets a new inode in
/// devtmpfs even when it gets its old `eventN` back.
type Identity = Option<(u64, u64)>;

fn identity(path: &std::path::Path) -> Identity {
    std::fs::metadata(path).ok().map(|m| (m.ino(), m.rdev()))
}

pub(crate) struct Readd {
    watch: Watch,
    objects: Vec<(InputLinux, Identity)>,
    /// QEMU's uid and gid: a replugged node is udev's `root:input` again,
    /// and QEMU opens it itself; teardown's `ChownDevice` step gives it back.
    pub(crate) owner: Option<(u32, u32)>,
}

impl Readd {
    pub(crate) fn new(input: &Input) -> Option<std::io::Result<Self>> {
        if input.mode != InputMode::Qemu {
            return None;
        }
        let objects: Vec<_> = InputLinux::of(input)
            .into_iter()
            .map(|o| {
                let id = identity(&o.evdev);
                (o, id)
            })
            .collect();
        let paths = objects.iter().map(|(o, _)| o.evdev.clone()).collect();
        Some(Watch::new(paths).map(|watch| Self {
            watch,
            objects,
            owner: None,
        }))
    }

    pub(crate) async fn changed(&mut self) {
        self.watch.changed().await
    }

    /// The objects whose device is back as a different node since the
    /// last look (a device that is gone is remembered as gone).
    pub(crate) fn replugged(&mut self) -> Vec<InputLinux> {
        let mut out = Vec::new();
        for (obj, last) in &mut self.objects {
            let now = identity(&obj.evdev);
            if now != *last {
                if now.is_some() {
                    if let Some((uid, gid)) = self.owner {
                        let owner = (
                            Some(nix::unistd::Uid::from_raw(uid)),
                            Some(nix::unistd::Gid::from_raw(gid)),
                        );
                        if let Err(e) = nix::unistd::chown(&obj.evdev, owner.0, owner.1) {
                            tracing::warn!(
                                "input: giving {} to QEMU's uid {uid}: {e}",
                                obj.evdev.display()
                            );
                        }
                    }
                    out.push(obj.clone());
                } else {
                    tracing::warn!(
                        "input: {} is gone; re-added when it is back",
                        obj.evdev.display()
                    );
                }
                *last = now;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{QemuToggle, Toggle};

    fn input() -> Input {
        Input {
            keyboard: Some("/dev/input/by-id/kbd".into()),
            mouse: Some("/dev/input/by-id/mouse".into()),
            toggle: Toggle::Qemu(QemuToggle::ScrollLock),
            mode: InputMode::Qemu,
            on_switch: vec![],
            on_switch_user: None,
        }
    }

    #[test]
    fn object_add_repeats_the_command_line_properties() {
        let objs = InputLinux::of(&input());
        assert_eq!(
            objs[0].qmp_args(),
            json!({"qom-type": "input-linux", "id": "kbd0", "evdev": "/dev/input/by-id/kbd",
                   "grab_all": true, "repeat": true, "grab-toggle": "scrolllock"})
        );
        assert_eq!(
            objs[1].qmp_args(),
            json!({"qom-type": "input-linux", "id": "mouse0", "evdev": "/dev/input/by-id/mouse",
                   "grab-toggle": "scrolllock"})
        );
    }

    #[test]
    fn a_node_replaced_under_the_same_name_is_replugged_once() {
        let tmp = tempfile::tempdir().unwrap();
        let node = tmp.path().join("event3");
        std::fs::write(&node, "").unwrap();
        let mut i = input();
        i.keyboard = Some(node.clone());
        i.mouse = None;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut r = Readd::new(&i).unwrap().unwrap();
        assert!(r.replugged().is_empty());
        std::fs::remove_file(&node).unwrap();
        assert!(r.replugged().is_empty());
        std::fs::write(&node, "").unwrap();
        assert_eq!(r.replugged().len(), 1);
        assert!(r.replugged().is_empty());
    }
}
