//! The per-VM uinput proxies QEMU reads. They live as long as the
//! supervisor: a replugged keyboard is reopened behind them, so QEMU's fd
//! and the guest's device never change. Nothing destroys them explicitly:
//! the kernel does when the uinput fd closes (`uinput_release` ->
//! `uinput_destroy_device`), on a clean exit, a panic or a SIGKILL alike.

use std::path::{Path, PathBuf};

use evdev::uinput::VirtualDevice;
use evdev::{
    AttributeSet, Device, EventType, InputEvent, KeyCode, MiscCode, RelativeAxisCode,
    UinputAbsSetup,
};

use super::focus::Source;
use super::InputError;

/// uinput's `UINPUT_MAX_NAME_SIZE` is 80 with the NUL, and evdev's
/// builder asserts `len + 1 < 80`: a longer name would panic.
const MAX_NAME: usize = 78;

#[derive(Debug)]
pub(crate) struct Proxy {
    dev: VirtualDevice,
    /// `/dev/input/eventN` of the proxy.
    pub node: PathBuf,
}

impl Proxy {
    /// A proxy able to carry everything `from` reports, plus what any
    /// keyboard (every key code below the button range) or any mouse (eight
    /// buttons, both wheels and their high-resolution twins) may send, so a
    /// different model plugged in later still gets through. QEMU's
    /// virtio-input-host copies the capabilities once, at realize.
    pub(crate) fn create(
        source: Source,
        vm: &str,
        from: &Device,
        link: &Path,
    ) -> Result<Self, InputError> {
        let err = |e| InputError::Proxy {
            source_kind: source.name(),
            error: e,
        };
        let name = proxy_name(vm, source);
        let mut keys = AttributeSet::<KeyCode>::new();
        let mut rel = AttributeSet::<RelativeAxisCode>::new();
        for k in from.supported_keys().into_iter().flat_map(|s| s.iter()) {
            keys.insert(k);
        }
        for r in from
            .supported_relative_axes()
            .into_iter()
            .flat_map(|s| s.iter())
        {
            rel.insert(r);
        }
        match source {
            // KEY_ESC (1) .. KEY_MICMUTE (248): every keyboard key.
            Source::Keyboard => (1..=248).for_each(|c| keys.insert(KeyCode(c))),
            Source::Mouse => {
                (KeyCode::BTN_LEFT.0..=KeyCode::BTN_TASK.0).for_each(|c| keys.insert(KeyCode(c)));
                for r in [
                    RelativeAxisCode::REL_X,
                    RelativeAxisCode::REL_Y,
                    RelativeAxisCode::REL_WHEEL,
                    RelativeAxisCode::REL_HWHEEL,
                    RelativeAxisCode::REL_WHEEL_HI_RES,
                    RelativeAxisCode::REL_HWHEEL_HI_RES,
                ] {
                    rel.insert(r);
                }
            }
        }
        let mut b = VirtualDevice::builder()
            .map_err(err)?
            .name(name.as_bytes())
            .input_id(from.input_id())
            .with_keys(&keys)
            .map_err(err)?;
        if rel.iter().next().is_some() {
            b = b.with_relative_axes(&rel).map_err(err)?;
        }
        if let Ok(axes) = from.get_absinfo() {
            for (code, info) in axes {
                b = b
                    .with_absolute_axis(&UinputAbsSetup::new(code, info))
                    .map_err(err)?;
            }
        }
        let mut msc = AttributeSet::<MiscCode>::new();
        for m in from.misc_properties().into_iter().flat_map(|s| s.iter()) {
            msc.insert(m);
        }
        if msc.iter().next().is_some() {
            b = b.with_msc(&msc).map_err(err)?;
        }
        b = b.with_properties(from.properties()).map_err(err)?;
        let mut dev = b.build().map_err(err)?;
        let node = dev
            .enumerate_dev_nodes_blocking()
            .map_err(err)?
            .flatten()
            .next()
            .ok_or_else(|| err(std::io::ErrorKind::NotFound.into()))?;
        // QEMU's command line names the link, made before QEMU starts.
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&node, link).map_err(|e| InputError::Link {
            path: link.to_path_buf(),
            error: e,
        })?;
        Ok(Self { dev, node })
    }

    /// Writes `events` and the SYN_REPORT that makes the kernel deliver
    /// them, in one write(2): `uinput_write` takes any number of whole
    /// `struct input_event`s (evdev's `emit` makes two writes, one of them
    /// for the SYN alone, and each uinput write is a trip through the
    /// input core). The kernel stamps the time itself, so it is left zero.
    #[cfg(target_pointer_width = "64")]
    pub(crate) fn emit(&mut self, events: &[InputEvent]) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        // struct input_event on 64-bit Linux: struct timeval (two 64-bit
        // fields), __u16 type, __u16 code, __s32 value: 24 bytes.
        let mut buf = Vec::with_capacity((events.len() + 1) * 24);
        let syn = InputEvent::new(EventType::SYNCHRONIZATION.0, 0, 0);
        for ev in events.iter().chain(std::iter::once(&syn)) {
            buf.extend_from_slice(&[0u8; 16]);
            buf.extend_from_slice(&ev.event_type().0.to_ne_bytes());
            buf.extend_from_slice(&ev.code().to_ne_bytes());
            buf.extend_from_slice(&ev.value().to_ne_bytes());
        }
        let n = nix::unistd::write(self.dev.as_fd(), &buf)?;
        if n != buf.len() {
            return Err(std::io::Error::other(format!(
                "short uinput write: {n} of {}",
                buf.len()
            )));
        }
        Ok(())
    }

    /// Other layouts of `struct input_event`: evdev's own two writes.
    #[cfg(not(target_pointer_width = "64"))]
    pub fn emit(&mut self, events: &[InputEvent]) -> std::io::Result<()> {
        self.dev.emit(events)
    }
}

/// `vmrun NAME keyboard`, cut to what uinput takes (VM names are ASCII).
fn proxy_name(vm: &str, source: Source) -> String {
    let mut name = format!("vmrun {vm} {}", source.name());
    name.truncate(MAX_NAME);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_vm_name_still_fits_uinput() {
        let vm = "a".repeat(64);
        assert_eq!(proxy_name(&vm, Source::Keyboard).len(), MAX_NAME);
        assert_eq!(proxy_name("win11", Source::Mouse), "vmrun win11 mouse");
    }
}
