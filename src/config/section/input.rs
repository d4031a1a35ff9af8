//! `[input]`: the keyboard and mouse given to the guest, and the hotkey that
//! switches them between host and guest.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    Router,
    Qemu,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireInput {
    keyboard: Option<String>,
    mouse: Option<String>,
    toggle: S<String>,
    mode: Option<InputMode>,
    #[serde(default)]
    on_switch: Vec<String>,
    on_switch_user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Input {
    pub keyboard: Option<PathBuf>,
    pub mouse: Option<PathBuf>,
    pub toggle: Toggle,
    pub mode: InputMode,
    pub on_switch: Vec<String>,
    /// Who runs `on_switch` when vmrun runs as root: a user name, or
    /// `root` to allow root. Unset: the user behind sudo, else the owner
    /// of the active seat's session (`input/switch_user.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_switch_user: Option<String>,
}

/// QEMU's `GrabToggleKeys` (qapi/common.json), the only values `input-linux`'s
/// `grab-toggle` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuToggle {
    CtrlCtrl,
    AltAlt,
    ShiftShift,
    MetaMeta,
    ScrollLock,
    CtrlScrollLock,
}

impl QemuToggle {
    pub const ALL: [Self; 6] = [
        Self::CtrlCtrl,
        Self::AltAlt,
        Self::ShiftShift,
        Self::MetaMeta,
        Self::ScrollLock,
        Self::CtrlScrollLock,
    ];

    /// The name QEMU's `grab-toggle` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::CtrlCtrl => "ctrl-ctrl",
            Self::AltAlt => "alt-alt",
            Self::ShiftShift => "shift-shift",
            Self::MetaMeta => "meta-meta",
            Self::ScrollLock => "scrolllock",
            Self::CtrlScrollLock => "ctrl-scrolllock",
        }
    }
}

/// The switch hotkey: one of QEMU's names, or (router mode only) key names
/// that must all be held, written joined by `+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toggle {
    Qemu(QemuToggle),
    /// evdev key names without `KEY_`, as written (`LeftCtrl`, `f12`, `a`).
    Keys(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToggleError {
    #[error("`{0}` is not one of QEMU's grab-toggle keys")]
    NotQemu(String),
    #[error("`{0}` is not a key name")]
    BadKey(String),
}

impl Toggle {
    /// QEMU mode takes only QEMU's names; router mode also takes `Key+Key`.
    pub fn parse(text: &str, mode: InputMode) -> Result<Self, ToggleError> {
        if let Some(q) = QemuToggle::ALL.into_iter().find(|q| q.name() == text) {
            return Ok(Self::Qemu(q));
        }
        if mode == InputMode::Qemu {
            return Err(ToggleError::NotQemu(text.to_string()));
        }
        text.split('+')
            .map(|k| match k.trim() {
                name if is_key_name(name) => Ok(name.to_string()),
                _ => Err(ToggleError::BadKey(k.to_string())),
            })
            .collect::<Result<_, _>>()
            .map(Self::Keys)
    }
}

impl Default for Toggle {
    fn default() -> Self {
        Self::Qemu(QemuToggle::CtrlCtrl)
    }
}

impl fmt::Display for Toggle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Qemu(q) => f.write_str(q.name()),
            Self::Keys(keys) => f.write_str(&keys.join("+")),
        }
    }
}

impl Serialize for Toggle {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        s.collect_str(self)
    }
}

/// Key names a router-mode toggle may combine (evdev names, `KEY_` dropped),
/// besides letters, digits and F1-F24.
const KEY_NAMES: &[&str] = &[
    "leftctrl",
    "rightctrl",
    "leftshift",
    "rightshift",
    "leftalt",
    "rightalt",
    "leftmeta",
    "rightmeta",
    "scrolllock",
    "pause",
    "sysrq",
    "insert",
    "home",
    "end",
    "pageup",
    "pagedown",
    "delete",
    "esc",
    "tab",
    "space",
    "enter",
    "capslock",
    "numlock",
    "menu",
    "compose",
    "grave",
    "backslash",
];

fn is_key_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    let single = |c: u8| c.is_ascii_alphanumeric();
    KEY_NAMES.contains(&k.as_str())
        || (k.len() == 1 && single(k.as_bytes()[0]))
        || k.strip_prefix('f')
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=24).contains(&n) && !k.starts_with("f0"))
}

pub(crate) fn check(i: S<WireInput>, v: &mut Checker<'_>) -> Option<Input> {
    let (span, i) = parts(i?);
    let mode = i.mode.unwrap_or(InputMode::Router);
    if i.keyboard.is_none() && i.mouse.is_none() {
        v.err("input", span, K::InputWithoutDevices);
    } else if i.keyboard.is_none() && mode == InputMode::Router {
        // Router mode grabs each device it routes to the guest; only a
        // keyboard it reads can give them back.
        v.err("input", span, K::RouterWithoutKeyboard);
    }
    let toggle = match i.toggle.map(parts) {
        Some((s, text)) => match Toggle::parse(&text, mode) {
            Ok(toggle) => toggle,
            Err(e) => {
                let kind = match e {
                    ToggleError::NotQemu(t) => K::BadQemuToggle(t),
                    ToggleError::BadKey(k) => K::BadToggleKey(k),
                };
                v.err("input.toggle", s, kind);
                Toggle::default()
            }
        },
        None => Toggle::default(),
    };
    Some(Input {
        keyboard: i.keyboard.map(|p| v.resolve(&p)),
        mouse: i.mouse.map(|p| v.resolve(&p)),
        toggle,
        mode,
        on_switch: i.on_switch,
        on_switch_user: i.on_switch_user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{check as check_file, errors};

    fn parse(text: &str, mode: InputMode) -> Result<Toggle, ToggleError> {
        Toggle::parse(text, mode)
    }

    #[test]
    fn qemu_names_are_accepted_in_both_modes() {
        let want = Ok(Toggle::Qemu(QemuToggle::ScrollLock));
        assert_eq!(parse("scrolllock", InputMode::Qemu), want);
        assert_eq!(parse("scrolllock", InputMode::Router), want);
    }

    #[test]
    fn router_mode_takes_key_names_joined_by_plus() {
        let t = parse("LeftCtrl + f12", InputMode::Router).expect("valid");
        assert_eq!(t, Toggle::Keys(vec!["LeftCtrl".into(), "f12".into()]));
        assert_eq!(t.to_string(), "LeftCtrl+f12");
    }

    #[test]
    fn qemu_mode_refuses_key_names() {
        assert_eq!(
            parse("LeftCtrl+RightCtrl", InputMode::Qemu),
            Err(ToggleError::NotQemu("LeftCtrl+RightCtrl".into()))
        );
    }

    #[test]
    fn unknown_key_names_are_refused() {
        assert_eq!(
            parse("LeftCtrl+Hyper", InputMode::Router),
            Err(ToggleError::BadKey("Hyper".into()))
        );
        assert!(parse("F0", InputMode::Router).is_err());
        assert!(parse("", InputMode::Router).is_err());
    }

    #[test]
    fn toggle_defaults_to_both_ctrl_keys() {
        let c = check_file("[input]\nkeyboard = \"/dev/kbd\"\n").expect("valid");
        let input = c.input.expect("given");
        assert_eq!(input.toggle, Toggle::Qemu(QemuToggle::CtrlCtrl));
        assert_eq!(input.mode, InputMode::Router);
    }

    #[test]
    fn toggle_problems_name_the_mode_rule() {
        assert_eq!(
            errors("[input]\nkeyboard = \"/k\"\nmode = \"qemu\"\ntoggle = \"a+b\"\n"),
            [K::BadQemuToggle("a+b".into())]
        );
        assert_eq!(
            errors("[input]\nkeyboard = \"/k\"\ntoggle = \"a+Hyper\"\n"),
            [K::BadToggleKey("Hyper".into())]
        );
    }

    #[test]
    fn input_without_devices_is_rejected() {
        assert_eq!(
            errors("[input]\nmode = \"qemu\"\n"),
            [K::InputWithoutDevices]
        );
    }
}
