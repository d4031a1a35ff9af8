//! `[display]`: how the guest's screen is shown, if at all.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Display {
    None,
    Gtk,
    Spice,
    Serial,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireDisplay {
    pub mode: Option<Display>,
}

pub(crate) fn check(d: WireDisplay, has_hostdev: bool) -> Display {
    match d.mode {
        Some(mode) => mode,
        // A passed-through GPU is the display; without one, the serial
        // console is the only way to see a headless guest.
        None if has_hostdev => Display::None,
        None => Display::Serial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::check as check_file;

    #[test]
    fn headless_guest_defaults_to_serial() {
        assert_eq!(check_file("").expect("valid").display, Display::Serial);
    }

    #[test]
    fn written_mode_wins() {
        let c = check_file("[display]\nmode = \"gtk\"\n").expect("valid");
        assert_eq!(c.display, Display::Gtk);
    }
}
