//! `[display]`: how the guest's screen is shown, if at all.

use serde::{Deserialize, Serialize};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;
use crate::config::section::hostdev::Hostdev;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Display {
    None,
    Gtk,
    Spice,
    Serial,
}

impl Display {
    /// The name `mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gtk => "gtk",
            Self::Spice => "spice",
            Self::Serial => "serial",
        }
    }
}

/// An emulated display card beside a passed-through GPU: what a gtk or
/// spice window shows while the guest has no driver for the real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Secondary {
    /// `virtio-vga`: virtio-gpu with a VGA-compatible front (OVMF and
    /// Windows installers draw on it; virtio-win has the full driver).
    Virtio,
    /// QEMU's standard VGA (`-device VGA`, Bochs VBE): every guest drives it.
    Std,
}

impl Secondary {
    /// The QEMU device.
    pub fn device(self) -> &'static str {
        match self {
            Self::Virtio => "virtio-vga",
            Self::Std => "VGA",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireDisplay {
    mode: S<Display>,
    secondary: Option<Secondary>,
}

/// `[display]` checked: the mode and the secondary display card, if any.
pub(crate) fn check(
    d: WireDisplay,
    hostdevs: &[Hostdev],
    v: &mut Checker<'_>,
) -> (Display, Option<Secondary>) {
    let Some((span, mode)) = d.mode.map(parts) else {
        // A passed-through GPU is the display; without one, the serial
        // console is the only way to see a headless guest.
        let mode = if hostdevs.is_empty() {
            Display::Serial
        } else {
            Display::None
        };
        return (mode, d.secondary);
    };
    // x-vga=on hands the legacy VGA ranges to the real GPU, so the argv
    // adds `-vga none`: a window shows something only when a secondary
    // card is asked for beside it.
    let window = matches!(mode, Display::Gtk | Display::Spice);
    if window && d.secondary.is_none() && hostdevs.iter().any(|h| h.x_vga) {
        v.err("display.mode", span, K::WindowWithXVga(mode.name()));
    }
    (mode, d.secondary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{check as check_file, errors};

    #[test]
    fn headless_guest_defaults_to_serial() {
        let c = check_file("").expect("valid");
        assert_eq!((c.display, c.secondary_display), (Display::Serial, None));
    }

    #[test]
    fn written_mode_wins() {
        let c = check_file("[display]\nmode = \"gtk\"\n").expect("valid");
        assert_eq!(c.display, Display::Gtk);
    }

    const X_VGA_GPU: &str = "[[hostdev]]\naddress = \"01:00.0\"\nx_vga = true\n";

    #[test]
    fn a_window_beside_x_vga_is_rejected() {
        for mode in ["gtk", "spice"] {
            let e = errors(&format!("{X_VGA_GPU}[display]\nmode = \"{mode}\"\n"));
            assert_eq!(e, [K::WindowWithXVga(mode)]);
        }
    }

    #[test]
    fn a_window_beside_x_vga_with_a_secondary_display_is_allowed() {
        for (name, card) in [("virtio", Secondary::Virtio), ("std", Secondary::Std)] {
            let text = format!("{X_VGA_GPU}[display]\nmode = \"spice\"\nsecondary = \"{name}\"\n");
            let c = check_file(&text).expect("valid");
            assert_eq!(
                (c.display, c.secondary_display),
                (Display::Spice, Some(card))
            );
        }
    }

    #[test]
    fn x_vga_with_no_window_is_allowed() {
        for mode in ["none", "serial"] {
            assert!(check_file(&format!("{X_VGA_GPU}[display]\nmode = \"{mode}\"\n")).is_ok());
        }
    }

    #[test]
    fn a_window_beside_a_gpu_without_x_vga_is_allowed() {
        let text = "[[hostdev]]\naddress = \"01:00.0\"\n[display]\nmode = \"gtk\"\n";
        assert_eq!(check_file(text).expect("valid").display, Display::Gtk);
    }
}
