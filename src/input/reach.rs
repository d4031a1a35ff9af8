//! Whether the configured keyboard can press the switch hotkey at all,
//! from its `capabilities/key` bitmap in sysfs (the `EVIOCGBIT(EV_KEY)`
//! bits, read without opening the node): a hotkey it can't produce, with
//! its keys and the mouse grabbed, would lock the user out. Checked before
//! anything is planned or grabbed; the router checks the opened device
//! again (`Router::new`).

use std::path::Path;

use evdev::KeyCode;

use super::hotkey::Hotkey;
use super::list::Bits;
use super::InputError;
use crate::config::Input;
use crate::host::HostRoot;

/// Refuses a hotkey the keyboard under `root` lacks a key of. A keyboard
/// whose bitmap can't be read (not plugged in, a fake tree without it)
/// passes: the start opens it and checks it then.
pub(crate) fn check(input: &Input, root: &HostRoot) -> Result<(), InputError> {
    let Some(path) = &input.keyboard else {
        return Ok(());
    };
    let hotkey = Hotkey::of(&input.toggle).map_err(InputError::Hotkey)?;
    let Some(keys) = key_bits(root, path) else {
        return Ok(());
    };
    unreachable(&hotkey, path, &input.toggle.to_string(), |k| {
        keys.has(usize::from(k.code()))
    })
}

/// The error for a hotkey that a keyboard with keys `has` can't press.
pub(crate) fn unreachable(
    hotkey: &Hotkey,
    path: &Path,
    toggle: &str,
    has: impl Fn(KeyCode) -> bool,
) -> Result<(), InputError> {
    match hotkey.missing_on(has) {
        None => Ok(()),
        Some(key) => Err(InputError::HotkeyUnreachable {
            toggle: toggle.to_string(),
            key,
            path: path.to_path_buf(),
        }),
    }
}

/// `/sys/class/input/eventN/device/capabilities/key` of the node `path`
/// leads to (udev's by-id links are relative: `../event3`).
fn key_bits(root: &HostRoot, path: &Path) -> Option<Bits> {
    let node = std::fs::canonicalize(root.path(path)).ok()?;
    let event = node.file_name()?.to_str()?;
    if !event.starts_with("event") {
        return None;
    }
    let caps = root.path(format!("/sys/class/input/{event}/device/capabilities/key"));
    Some(Bits::parse(&std::fs::read_to_string(caps).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{InputMode, Toggle};
    use crate::testing::Machine;

    fn input(keyboard: &str, toggle: &str) -> Input {
        Input {
            keyboard: Some(keyboard.into()),
            mouse: None,
            toggle: Toggle::parse(toggle, InputMode::Router).unwrap(),
            mode: InputMode::Router,
            on_switch: vec![],
            on_switch_user: None,
        }
    }

    const KBD: &str = "/dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd";
    const MOUSE: &str = "/dev/input/by-id/usb-Logitech_USB_Optical_Mouse-event-mouse";

    #[test]
    fn a_full_keyboard_can_press_any_hotkey() {
        let host = Machine::FixtureDesktop.build();
        for toggle in ["ctrl-ctrl", "scrolllock", "LeftAlt+F12"] {
            assert!(check(&input(KBD, toggle), &host.root()).is_ok(), "{toggle}");
        }
    }

    #[test]
    fn a_keyboard_without_the_hotkeys_keys_is_refused_naming_key_and_device() {
        // A mouse named as the keyboard: buttons only.
        let host = Machine::FixtureDesktop.build();
        match check(&input(MOUSE, "ctrl-ctrl"), &host.root()) {
            Err(InputError::HotkeyUnreachable { key, path, toggle }) => {
                assert_eq!(key, "KEY_LEFTCTRL");
                assert_eq!(path, Path::new(MOUSE));
                assert_eq!(toggle, "ctrl-ctrl");
            }
            other => panic!("expected HotkeyUnreachable, got {other:?}"),
        }
    }

    #[test]
    fn a_keyboard_not_on_this_host_is_left_to_the_start() {
        let host = Machine::FixtureDesktop.build();
        assert!(check(&input("/dev/input/by-id/gone", "ctrl-ctrl"), &host.root()).is_ok());
    }
}
