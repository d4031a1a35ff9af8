//! Who has the keyboard and mouse, as a pure state machine: fed the source
//! devices' event batches, it says what to forward to the proxies and when
//! to grab or release a source. The device side (`router.rs`) carries the
//! actions out; this file touches no device, so every rule is unit-tested.
//!
//! The host side works by releasing the grab: with the host focused, the
//! router is one more reader of the real devices and the compositor sees
//! them as they are (their quirks, their names), and a vmrun that dies
//! cannot take the host's input with it. The cost is the kernel rule that a
//! grab hides later events from every other reader: grabbing with a key
//! down would leave it down on the host forever. So, like QEMU's
//! input-linux, a source is grabbed only once none of its keys is held.

use std::collections::BTreeSet;

use evdev::{EventType, InputEvent, KeyCode};
use serde::{Deserialize, Serialize};

use super::hotkey::Hotkey;

/// The side that has the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Side {
    Host,
    Guest,
}

impl Side {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Side::Host => "host",
            Side::Guest => "guest",
        }
    }
}

/// What `vmrun input NAME ...` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Switch {
    Host,
    Guest,
    Toggle,
}

/// The configured devices, each with its own proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Keyboard = 0,
    Mouse = 1,
}

impl Source {
    pub(crate) const ALL: [Source; 2] = [Source::Keyboard, Source::Mouse];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Source::Keyboard => "keyboard",
            Source::Mouse => "mouse",
        }
    }
}

/// What the device side must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Write these events, then a SYN_REPORT, to the source's proxy.
    Forward(Source, Vec<InputEvent>),
    Grab(Source),
    Ungrab(Source),
    /// The focus moved: run `on_switch`.
    Switched(Side),
}

#[derive(Debug, Default, Clone)]
struct SourceState {
    present: bool,
    grabbed: bool,
    /// Keys and buttons down on the real device.
    held: BTreeSet<u16>,
    /// Keys and buttons sent down to the proxy and not yet up.
    sent: BTreeSet<u16>,
}

#[derive(Debug)]
pub(crate) struct Focus {
    side: Side,
    hotkey: Hotkey,
    sources: [SourceState; 2],
}

impl Focus {
    /// The guest starts with the input, as with QEMU's grab-on-startup.
    pub(crate) fn new(hotkey: Hotkey) -> Self {
        Self {
            side: Side::Guest,
            hotkey,
            sources: Default::default(),
        }
    }

    pub(crate) fn side(&self) -> Side {
        self.side
    }

    #[cfg(test)]
    fn is_grabbed(&self, s: Source) -> bool {
        self.sources[s as usize].grabbed
    }

    /// The device side reports a grab that failed (another reader holds it).
    pub(crate) fn grab_failed(&mut self, s: Source) {
        self.sources[s as usize].grabbed = false;
    }

    /// A source was opened (at start or after a replug) with `held` down.
    pub(crate) fn attached(
        &mut self,
        s: Source,
        held: impl IntoIterator<Item = u16>,
    ) -> Vec<Action> {
        let st = &mut self.sources[s as usize];
        st.present = true;
        st.grabbed = false;
        st.held = held.into_iter().collect();
        let mut out = Vec::new();
        self.grab_when_free(s, &mut out);
        out
    }

    /// A source vanished: whatever it held is released on the proxy, so
    /// nothing stays pressed in the guest until it comes back.
    pub(crate) fn detached(&mut self, s: Source) -> Vec<Action> {
        let st = &mut self.sources[s as usize];
        st.present = false;
        st.grabbed = false;
        st.held.clear();
        let mut out = Vec::new();
        self.release_sent(s, &mut out);
        out
    }

    /// One batch of a source's events (up to, not including, its SYN_REPORT).
    pub(crate) fn on_batch(&mut self, s: Source, batch: &[InputEvent]) -> Vec<Action> {
        let mut forward = Vec::with_capacity(batch.len());
        let mut hotkey = false;
        for ev in batch {
            if ev.event_type() == EventType::KEY {
                let held = &mut self.sources[s as usize].held;
                match ev.value() {
                    0 => {
                        held.remove(&ev.code());
                    }
                    1 => {
                        held.insert(ev.code());
                        if self.completes_hotkey(KeyCode(ev.code())) {
                            // The completing key reaches neither side.
                            hotkey = true;
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            forward.push(*ev);
        }
        let mut out = Vec::new();
        let st = &mut self.sources[s as usize];
        if st.grabbed && !forward.is_empty() {
            for ev in forward.iter().filter(|e| e.event_type() == EventType::KEY) {
                match ev.value() {
                    0 => st.sent.remove(&ev.code()),
                    _ => st.sent.insert(ev.code()),
                };
            }
            out.push(Action::Forward(s, forward));
        }
        if hotkey {
            out.extend(self.switch(Switch::Toggle));
        } else if self.side == Side::Guest {
            self.grab_when_free(s, &mut out);
        }
        out
    }

    /// Moves the focus; nothing happens when it is already there.
    pub(crate) fn switch(&mut self, to: Switch) -> Vec<Action> {
        let next = match (to, self.side) {
            (Switch::Host, _) | (Switch::Toggle, Side::Guest) => Side::Host,
            (Switch::Guest, _) | (Switch::Toggle, Side::Host) => Side::Guest,
        };
        let mut out = Vec::new();
        if next == self.side {
            return out;
        }
        self.side = next;
        for s in Source::ALL {
            match next {
                Side::Host => {
                    self.release_sent(s, &mut out);
                    let st = &mut self.sources[s as usize];
                    if st.grabbed {
                        st.grabbed = false;
                        out.push(Action::Ungrab(s));
                    }
                }
                Side::Guest => self.grab_when_free(s, &mut out),
            }
        }
        out.push(Action::Switched(next));
        out
    }

    fn completes_hotkey(&self, pressed: KeyCode) -> bool {
        let held = |k: KeyCode| self.sources.iter().any(|st| st.held.contains(&k.0));
        self.hotkey.completed_by(pressed, held)
    }

    fn grab_when_free(&mut self, s: Source, out: &mut Vec<Action>) {
        let st = &mut self.sources[s as usize];
        if self.side == Side::Guest && st.present && !st.grabbed && st.held.is_empty() {
            st.grabbed = true;
            out.push(Action::Grab(s));
        }
    }

    fn release_sent(&mut self, s: Source, out: &mut Vec<Action>) {
        let sent = std::mem::take(&mut self.sources[s as usize].sent);
        if !sent.is_empty() {
            let ups = sent
                .into_iter()
                .map(|code| InputEvent::new(EventType::KEY.0, code, 0))
                .collect();
            out.push(Action::Forward(s, ups));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Source::{Keyboard as Kbd, Mouse};

    const LCTRL: u16 = KeyCode::KEY_LEFTCTRL.0;
    const RCTRL: u16 = KeyCode::KEY_RIGHTCTRL.0;
    const A: u16 = KeyCode::KEY_A.0;
    const BTN_LEFT: u16 = KeyCode::BTN_LEFT.0;

    fn key(code: u16, value: i32) -> InputEvent {
        InputEvent::new(EventType::KEY.0, code, value)
    }

    fn rel(code: u16, value: i32) -> InputEvent {
        InputEvent::new(EventType::RELATIVE.0, code, value)
    }

    /// Both devices attached and grabbed, the guest focused.
    fn guest() -> Focus {
        let mut f = Focus::new(Hotkey::of(&crate::config::Toggle::default()).unwrap());
        assert_eq!(f.attached(Kbd, []), [Action::Grab(Kbd)]);
        assert_eq!(f.attached(Mouse, []), [Action::Grab(Mouse)]);
        f
    }

    #[test]
    fn guest_focus_forwards_every_event_to_the_proxy() {
        let mut f = guest();
        let hwheel = rel(6, -1); // REL_HWHEEL
        assert_eq!(
            f.on_batch(Mouse, &[hwheel, key(0x113, 1)]), // BTN_SIDE
            [Action::Forward(Mouse, vec![hwheel, key(0x113, 1)])]
        );
    }

    #[test]
    fn host_focus_forwards_nothing_and_ungrabs() {
        let mut f = guest();
        assert_eq!(
            f.switch(Switch::Host),
            [
                Action::Ungrab(Kbd),
                Action::Ungrab(Mouse),
                Action::Switched(Side::Host)
            ]
        );
        assert!(f.on_batch(Kbd, &[key(A, 1)]).is_empty());
        assert!(f.on_batch(Mouse, &[rel(0, 5)]).is_empty());
    }

    #[test]
    fn switching_to_where_the_focus_is_does_nothing() {
        let mut f = guest();
        assert!(f.switch(Switch::Guest).is_empty());
    }

    #[test]
    fn keys_held_in_the_guest_are_released_on_the_proxy_when_it_loses_focus() {
        let mut f = guest();
        f.on_batch(Kbd, &[key(A, 1)]);
        f.on_batch(Mouse, &[key(BTN_LEFT, 1)]);
        assert_eq!(
            f.switch(Switch::Host),
            [
                Action::Forward(Kbd, vec![key(A, 0)]),
                Action::Ungrab(Kbd),
                Action::Forward(Mouse, vec![key(BTN_LEFT, 0)]),
                Action::Ungrab(Mouse),
                Action::Switched(Side::Host),
            ]
        );
    }

    #[test]
    fn hotkey_in_the_guest_releases_the_first_key_and_swallows_the_second() {
        let mut f = guest();
        assert_eq!(
            f.on_batch(Kbd, &[key(LCTRL, 1)]),
            [Action::Forward(Kbd, vec![key(LCTRL, 1)])]
        );
        assert_eq!(
            f.on_batch(Kbd, &[key(RCTRL, 1)]),
            [
                Action::Forward(Kbd, vec![key(LCTRL, 0)]),
                Action::Ungrab(Kbd),
                Action::Ungrab(Mouse),
                Action::Switched(Side::Host),
            ]
        );
        assert_eq!(f.side(), Side::Host);
    }

    #[test]
    fn hotkey_on_the_host_grabs_only_once_every_key_is_up() {
        let mut f = guest();
        f.switch(Switch::Host);
        assert!(f.on_batch(Kbd, &[key(LCTRL, 1)]).is_empty());
        // The mouse holds nothing: grabbed at once; the keyboard waits.
        assert_eq!(
            f.on_batch(Kbd, &[key(RCTRL, 1)]),
            [Action::Grab(Mouse), Action::Switched(Side::Guest)]
        );
        assert!(f.on_batch(Kbd, &[key(RCTRL, 0)]).is_empty());
        assert!(!f.is_grabbed(Kbd));
        assert_eq!(f.on_batch(Kbd, &[key(LCTRL, 0)]), [Action::Grab(Kbd)]);
        // From now on the guest gets the keys.
        assert_eq!(
            f.on_batch(Kbd, &[key(A, 1)]),
            [Action::Forward(Kbd, vec![key(A, 1)])]
        );
    }

    #[test]
    fn autorepeat_of_a_hotkey_key_does_not_toggle_again() {
        let mut f = guest();
        f.on_batch(Kbd, &[key(LCTRL, 1)]);
        f.on_batch(Kbd, &[key(RCTRL, 1)]);
        assert!(f.on_batch(Kbd, &[key(RCTRL, 2)]).is_empty());
        assert_eq!(f.side(), Side::Host);
    }

    #[test]
    fn a_vanished_device_releases_its_keys_and_is_regrabbed_when_back() {
        let mut f = guest();
        f.on_batch(Kbd, &[key(A, 1)]);
        assert_eq!(f.detached(Kbd), [Action::Forward(Kbd, vec![key(A, 0)])]);
        assert!(!f.is_grabbed(Kbd));
        assert_eq!(f.attached(Kbd, []), [Action::Grab(Kbd)]);
        // Back while something is held: it waits, as at a switch.
        f.detached(Kbd);
        assert!(f.attached(Kbd, [A]).is_empty());
        assert_eq!(f.on_batch(Kbd, &[key(A, 0)]), [Action::Grab(Kbd)]);
    }

    #[test]
    fn a_failed_grab_forwards_nothing_and_is_retried() {
        let mut f = guest();
        f.grab_failed(Kbd);
        assert_eq!(f.on_batch(Kbd, &[rel(0, 1)]), [Action::Grab(Kbd)]);
    }
}
