//! evdev keyboard and mouse. `router` mode: vmrun owns the real devices and
//! feeds per-VM uinput proxies that QEMU reads (`router.rs`, `focus.rs`,
//! `proxy.rs`); `qemu` mode: QEMU's input-linux reads them and vmrun re-adds
//! a replugged one (`readd.rs`). `list.rs` is `vmrun input list`.

pub mod focus;
pub mod hotkey;
pub mod list;
pub mod proxy;
pub mod readd;
pub mod router;
pub mod watch;

use std::path::PathBuf;

pub use focus::{Side, Switch};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
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
}
