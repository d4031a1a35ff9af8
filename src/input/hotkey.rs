//! The switch hotkey: the config's `toggle` as evdev key codes. A hotkey is
//! a list of groups; it fires when one key of every group is held.
//! QEMU's names keep their QEMU meaning (`ctrl-ctrl` is both Ctrl keys,
//! `ctrl-scrolllock` either Ctrl with ScrollLock); `A+B` is exactly A and B.

use std::str::FromStr;

use evdev::KeyCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hotkey(Vec<Vec<KeyCode>>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a key name (try LeftCtrl, RightAlt, F12, ScrollLock)")]
pub struct BadKey(pub String);

impl Hotkey {
    pub fn parse(toggle: &str) -> Result<Self, BadKey> {
        use KeyCode as K;
        let fixed = |groups: &[&[KeyCode]]| Self(groups.iter().map(|g| g.to_vec()).collect());
        let ctrl: &[KeyCode] = &[K::KEY_LEFTCTRL, K::KEY_RIGHTCTRL];
        Ok(match toggle {
            "ctrl-ctrl" => fixed(&[&[K::KEY_LEFTCTRL], &[K::KEY_RIGHTCTRL]]),
            "alt-alt" => fixed(&[&[K::KEY_LEFTALT], &[K::KEY_RIGHTALT]]),
            "shift-shift" => fixed(&[&[K::KEY_LEFTSHIFT], &[K::KEY_RIGHTSHIFT]]),
            "meta-meta" => fixed(&[&[K::KEY_LEFTMETA], &[K::KEY_RIGHTMETA]]),
            "scrolllock" => fixed(&[&[K::KEY_SCROLLLOCK]]),
            "ctrl-scrolllock" => fixed(&[ctrl, &[K::KEY_SCROLLLOCK]]),
            keys => Self(
                keys.split('+')
                    .map(|k| key_code(k.trim()).map(|c| vec![c]))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// Whether `pressed` completes the hotkey, with `held(key)` telling
    /// which keys are down (`pressed` included).
    pub fn completed_by(&self, pressed: KeyCode, held: impl Fn(KeyCode) -> bool) -> bool {
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
    use KeyCode as K;

    #[test]
    fn default_is_both_ctrl_keys() {
        let h = Hotkey::parse("ctrl-ctrl").unwrap();
        assert_eq!(h, Hotkey::parse("LeftCtrl+RightCtrl").unwrap());
        let held = |k| k == K::KEY_LEFTCTRL || k == K::KEY_RIGHTCTRL;
        assert!(h.completed_by(K::KEY_RIGHTCTRL, held));
        assert!(!h.completed_by(K::KEY_RIGHTCTRL, |k| k == K::KEY_RIGHTCTRL));
        // A key outside the hotkey never completes it, even with it held.
        assert!(!h.completed_by(K::KEY_A, |k| held(k) || k == K::KEY_A));
    }

    #[test]
    fn qemu_ctrl_scrolllock_takes_either_ctrl() {
        let h = Hotkey::parse("ctrl-scrolllock").unwrap();
        let with = |ctrl| move |k| k == ctrl || k == K::KEY_SCROLLLOCK;
        assert!(h.completed_by(K::KEY_SCROLLLOCK, with(K::KEY_LEFTCTRL)));
        assert!(h.completed_by(K::KEY_SCROLLLOCK, with(K::KEY_RIGHTCTRL)));
        assert!(!h.completed_by(K::KEY_SCROLLLOCK, |k| k == K::KEY_SCROLLLOCK));
    }

    #[test]
    fn any_combination_of_named_keys() {
        let h = Hotkey::parse("F12+LeftAlt+a+1").unwrap();
        let keys = [K::KEY_F12, K::KEY_LEFTALT, K::KEY_A, K::KEY_1];
        assert!(h.completed_by(K::KEY_1, |k| keys.contains(&k)));
        assert!(!h.completed_by(K::KEY_1, |k| k != K::KEY_A && keys.contains(&k)));
    }

    #[test]
    fn unknown_key_names_are_errors() {
        assert_eq!(Hotkey::parse("LeftCtrl+Hyper"), Err(BadKey("Hyper".into())));
        assert!(Hotkey::parse("LeftCtrl+").is_err());
        assert!(Hotkey::parse("KEY_A+B_").is_err());
    }

    #[test]
    fn every_name_the_config_accepts_is_a_key() {
        use crate::config::{check_toggle, InputMode};
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
            assert_eq!(check_toggle(n, InputMode::Router), Ok(()), "{n}");
            assert!(Hotkey::parse(n).is_ok(), "{n}");
        }
    }
}
