//! evdev keyboard and mouse. `router` mode: vmrun owns the real devices and
//! feeds per-VM uinput proxies that QEMU reads (`router.rs`, `focus.rs`,
//! `proxy.rs`); `qemu` mode: QEMU's input-linux reads them and vmrun re-adds
//! a replugged one (`readd.rs`). `list.rs` is `vmrun input list`.

pub(crate) mod focus;
pub(crate) mod hotkey;
pub(crate) mod list;
pub(crate) mod proxy;
pub(crate) mod reach;
pub(crate) mod readd;
pub(crate) mod router;
pub(crate) mod switch_user;
pub(crate) mod watch;

use std::path::PathBuf;

pub(crate) use focus::{Side, Switch};

#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    #[error("cannot open the input device {}: {error}; `vmrun input list` shows the connected ones", path.display())]
    Open {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot create the {source_kind} proxy on /dev/uinput: {error} (is the uinput module loaded? `modprobe uinput`)")]
    Proxy {
        source_kind: &'static str,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot link the input proxy at {}: {error}", path.display())]
    Link {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot watch /dev/input for replugged devices: {error}")]
    Watch {
        #[source]
        error: std::io::Error,
    },
    #[error("[input] toggle: {0}")]
    Hotkey(#[source] hotkey::BadKey),
    /// The keyboard can't produce the hotkey: once grabbed, nothing could
    /// switch back. Refused before any grab.
    #[error("[input] toggle = \"{toggle}\": the keyboard {} cannot produce {key} (not in its evdev key capabilities), so nothing could switch the keyboard and mouse back from the guest; choose keys it has, or name another `keyboard` (`vmrun input list`)", path.display())]
    HotkeyUnreachable {
        toggle: String,
        key: String,
        path: PathBuf,
    },
    #[error(transparent)]
    SwitchUser(#[from] switch_user::SwitchUserError),
}
