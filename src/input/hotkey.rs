//! The switch hotkey: the config's `Toggle` as evdev key codes. A hotkey is
//! a list of groups; it fires when one key of every group is held.
//! QEMU's names keep their QEMU meaning (`ctrl-ctrl` is both Ctrl keys,
//! `ctrl-scrolllock` either Ctrl with ScrollLock); `A+B` is exactly A and B.

use std::str::FromStr;

use evdev::KeyCode;

use crate::config::{QemuToggle, Toggle};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hotkey(Vec<Vec<KeyCode>>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a key name (try LeftCtrl, RightAlt, F12, ScrollLock)")]
pub(crate) struct BadKey(pub String);

impl Hotkey {
    /// The keys of `toggle`; the config has checked its grammar and names,
    /// so an error here is a name evdev does not know.
    pub(crate) fn of(toggle: &Toggle) -> Result<Self, BadKey> {
        use KeyCode as K;
        let fixed = |groups: &[&[KeyCode]]| Self(groups.iter().map(|g| g.to_vec()).collect());
        let ctrl: &[KeyCode] = &[K::KEY_LEFTCTRL, K::KEY_RIGHTCTRL];
        Ok(match toggle {
            Toggle::Qemu(QemuToggle::CtrlCtrl) => fixed(&[&[K::KEY_LEFTCTRL], &[K::KEY_RIGHTCTRL]]),
            Toggle::Qemu(QemuToggle::AltAlt) => fixed(&[&[K::KEY_LEFTALT], &[K::KEY_RIGHTALT]]),
            Toggle::Qemu(QemuToggle::ShiftShift) => {
                fixed(&[&[K::KEY_LEFTSHIFT], &[K::KEY_RIGHTSHIFT]])
            }
            Toggle::Qemu(QemuToggle::MetaMeta) => fixed(&[&[K::KEY_LEFTMETA], &[K::KEY_RIGHTMETA]]),
            Toggle::Qemu(QemuToggle::ScrollLock) => fixed(&[&[K::KEY_SCROLLLOCK]]),
            Toggle::Qemu(QemuToggle::CtrlScrollLock) => fixed(&[ctrl, &[K::KEY_SCROLLLOCK]]),
            Toggle::Keys(keys) => Self(
                keys.iter()
                    .map(|k| key_code(k).map(|c| vec![c]))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// A key of the hotkey that a keyboard whose keys are `has` can't
    /// produce (a group none of whose keys it has), as evdev names it.
    pub(crate) fn missing_on(&self, has: impl Fn(KeyCode) -> bool) -> Option<String> {
        self.0.iter().find(|g| !g.iter().any(|k| has(*k))).map(|g| {
            g.iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        })
    }

    /// Whether `pressed` completes the hotkey, with `held(key)` telling
    /// which keys are down (`pressed` included).
    pub(crate) fn completed_by(&self, pressed: KeyCode, held: impl Fn(KeyCode) -> bool) -> bool {
        self.0.iter().any(|g| g.contains(&pressed))
            && self.0.iter().all(|g| g.iter().any(|k| held(*k)))
    }
}

/// `LeftCtrl` / `f12` / `a` / `1` -> `KEY_LEFTCTRL` / `KEY_F12` / `KEY_A` / `KEY_1`.
fn key_code(name: &str) -> Result<KeyCode, BadKey> {
    let bad = || BadKey(name.to_string());
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad());
    }
    KeyCode::from_str(&format!("KEY_{}", name.to_ascii_uppercase())).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InputMode;
    use KeyCode as K;

    /// The hotkey of a router-mode `toggle`, which takes every form.
    fn hotkey(toggle: &str) -> Hotkey {
        let toggle = Toggle::parse(toggle, InputMode::Router).expect("valid toggle");
        Hotkey::of(&toggle).expect("known keys")
    }

    #[test]
    fn default_is_both_ctrl_keys() {
        let h = hotkey("ctrl-ctrl");
        assert_eq!(h, hotkey("LeftCtrl+RightCtrl"));
        let held = |k| k == K::KEY_LEFTCTRL || k == K::KEY_RIGHTCTRL;
        assert!(h.completed_by(K::KEY_RIGHTCTRL, held));
        assert!(!h.completed_by(K::KEY_RIGHTCTRL, |k| k == K::KEY_RIGHTCTRL));
        // A key outside the hotkey never completes it, even with it held.
        assert!(!h.completed_by(K::KEY_A, |k| held(k) || k == K::KEY_A));
    }

    #[test]
    fn qemu_ctrl_scrolllock_takes_either_ctrl() {
        let h = hotkey("ctrl-scrolllock");
        let with = |ctrl| move |k| k == ctrl || k == K::KEY_SCROLLLOCK;
        assert!(h.completed_by(K::KEY_SCROLLLOCK, with(K::KEY_LEFTCTRL)));
        assert!(h.completed_by(K::KEY_SCROLLLOCK, with(K::KEY_RIGHTCTRL)));
        assert!(!h.completed_by(K::KEY_SCROLLLOCK, |k| k == K::KEY_SCROLLLOCK));
    }

    #[test]
    fn any_combination_of_named_keys() {
        let h = hotkey("F12+LeftAlt+a+1");
        let keys = [K::KEY_F12, K::KEY_LEFTALT, K::KEY_A, K::KEY_1];
        assert!(h.completed_by(K::KEY_1, |k| keys.contains(&k)));
        assert!(!h.completed_by(K::KEY_1, |k| k != K::KEY_A && keys.contains(&k)));
    }

    #[test]
    fn a_key_the_keyboard_lacks_is_named() {
        let h = hotkey("ctrl-scrolllock");
        let full = |_| true;
        assert_eq!(h.missing_on(full), None);
        assert_eq!(
            h.missing_on(|k| k != K::KEY_SCROLLLOCK),
            Some("KEY_SCROLLLOCK".into())
        );
        assert_eq!(
            h.missing_on(|k| k == K::KEY_SCROLLLOCK),
            Some("KEY_LEFTCTRL or KEY_RIGHTCTRL".into())
        );
        assert_eq!(
            h.missing_on(|k| k == K::KEY_SCROLLLOCK || k == K::KEY_RIGHTCTRL),
            None
        );
    }

    #[test]
    fn a_name_evdev_does_not_know_is_an_error() {
        let toggle = Toggle::Keys(vec!["Hyper".into()]);
        assert_eq!(Hotkey::of(&toggle), Err(BadKey("Hyper".into())));
        let toggle = Toggle::Keys(vec!["B_".into()]);
        assert!(Hotkey::of(&toggle).is_err());
    }

    #[test]
    fn every_name_the_config_accepts_is_a_key() {
        let names = [
            "LeftCtrl",
            "RightMeta",
            "ScrollLock",
            "Pause",
            "SysRq",
            "Insert",
            "Home",
            "End",
            "PageUp",
            "PageDown",
            "Delete",
            "Esc",
            "Tab",
            "Space",
            "Enter",
            "CapsLock",
            "NumLock",
            "Menu",
            "Compose",
            "Grave",
            "Backslash",
            "F1",
            "F24",
            "z",
            "0",
        ];
        for n in names {
            let toggle = Toggle::parse(n, InputMode::Router).expect(n);
            assert!(Hotkey::of(&toggle).is_ok(), "{n}");
        }
    }
}
