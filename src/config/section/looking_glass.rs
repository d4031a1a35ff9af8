//! `[looking_glass]`: the shared memory the Looking Glass host app in the
//! guest writes frames into and the client on the host reads them from,
//! through QEMU's `ivshmem-plain` device.

use serde::{Deserialize, Serialize};

use crate::config::checker::{parts, Checker, S};
use crate::config::error::ProblemKind as K;
use crate::config::section::qemu::desktop_user;
use crate::config::types::ByteSize;

/// Where the shared memory lives on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LgDevice {
    /// A file in `/dev/shm`, made by vmrun for the VM's run.
    Shm,
    /// `/dev/kvmfr0`, from the kvmfr module (its size fixed at load).
    Kvmfr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireLookingGlass {
    enabled: Option<bool>,
    resolution: S<String>,
    size: S<String>,
    device: Option<LgDevice>,
    user: S<String>,
    spice: Option<bool>,
}

/// The guest's largest frame, `WIDTHxHEIGHT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

/// Looking Glass's frame buffers are at most this wide or high (its
/// host app caps at 16K) ...and the product must stay far below u64.
const MAX_SIDE: u32 = 16384;

impl std::str::FromStr for Resolution {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (w, h) = s.split_once(['x', 'X']).ok_or(())?;
        let side = |v: &str| -> Result<u32, ()> {
            let n: u32 = v.trim().parse().map_err(|_| ())?;
            (1..=MAX_SIDE).contains(&n).then_some(n).ok_or(())
        };
        Ok(Self {
            width: side(w)?,
            height: side(h)?,
        })
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl Resolution {
    /// Looking Glass's sizing rule (its documentation's "Determining
    /// memory"): a row of 4-byte pixels padded to 256 bytes, three frames,
    /// 4 MiB for the cursor and the headers, rounded up to a power of two
    /// (a PCI BAR's size always is one: ivshmem's BAR2 is the whole region).
    pub fn shm_size(self) -> ByteSize {
        let pitch = (u64::from(self.width) * 4).div_ceil(256) * 256;
        let bytes = pitch * u64::from(self.height) * 3 + 4 * ByteSize::MIB;
        ByteSize::from_bytes(bytes.next_power_of_two())
    }
}

/// `[looking_glass]` as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LookingGlass {
    /// The shared memory's size: `size`, else from `resolution`.
    pub size: ByteSize,
    pub resolution: Option<Resolution>,
    pub device: LgDevice,
    /// Who runs the client (owns the shm file); `None`: the desktop's user.
    pub user: Option<String>,
    /// A SPICE socket and the vdagent channel, for the client's input.
    pub spice: bool,
}

/// The smallest region ivshmem takes: Looking Glass's headers alone need
/// more, and QEMU's BAR is at least a page.
const MIN_SIZE: u64 = ByteSize::MIB;

pub(crate) fn check(w: S<WireLookingGlass>, v: &mut Checker<'_>) -> Option<LookingGlass> {
    let (table, w) = parts(w?);
    if w.enabled == Some(false) {
        return None;
    }
    if w.resolution.is_none() && w.size.is_none() {
        v.err("looking_glass", table, K::LgNoSize);
    }
    let resolution = w.resolution.map(parts).and_then(|(s, text)| {
        text.parse::<Resolution>()
            .map_err(|()| v.err("looking_glass.resolution", s, K::BadResolution(text)))
            .ok()
    });
    let size = match w.size.map(parts) {
        None => resolution.map(Resolution::shm_size),
        Some((s, text)) => match text.parse::<ByteSize>() {
            Err(e) => {
                v.err("looking_glass.size", s, K::Invalid(e.to_string()));
                None
            }
            Ok(b) if b.bytes() < MIN_SIZE || !b.bytes().is_power_of_two() => {
                v.err("looking_glass.size", s, K::LgSizeNotPowerOfTwo(text));
                None
            }
            Ok(b) => {
                if let Some(r) = resolution.filter(|r| r.shm_size() > b) {
                    let need = r.shm_size().to_string();
                    v.err(
                        "looking_glass.size",
                        s,
                        K::LgSizeTooSmall {
                            resolution: r.to_string(),
                            need,
                        },
                    );
                }
                Some(b)
            }
        },
    };
    let user = desktop_user(w.user, "looking_glass.user", v);
    Some(LookingGlass {
        size: size?,
        resolution,
        device: w.device.unwrap_or(LgDevice::Shm),
        user,
        spice: w.spice.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vm::testing::{assert_problems, check as check_file};

    fn lg(text: &str) -> LookingGlass {
        check_file(&format!("[looking_glass]\n{text}"))
            .expect("valid")
            .looking_glass
            .expect("enabled")
    }

    #[test]
    fn size_follows_looking_glass_rule() {
        for (res, mib) in [
            ("1920x1080", 32),
            ("2560x1440", 64),
            ("3840x2160", 128),
            ("800x600", 16),
        ] {
            let r: Resolution = res.parse().unwrap();
            assert_eq!(r.shm_size().bytes(), mib * ByteSize::MIB, "{res}");
        }
    }

    #[test]
    fn defaults_are_shm_the_desktop_user_and_no_spice() {
        let l = lg("resolution = \"2560x1440\"\n");
        assert_eq!(l.size.to_string(), "64M");
        assert_eq!((l.device, l.user, l.spice), (LgDevice::Shm, None, false));
    }

    #[test]
    fn explicit_size_user_device_and_spice_are_kept() {
        let l = lg("size = \"128M\"\ndevice = \"kvmfr\"\nuser = \"alice\"\nspice = true\n");
        assert_eq!(l.size.bytes(), 128 * ByteSize::MIB);
        assert_eq!(l.device, LgDevice::Kvmfr);
        assert_eq!(l.user.as_deref(), Some("alice"));
        assert!(l.spice);
    }

    #[test]
    fn disabled_or_absent_is_none() {
        assert!(check_file("").unwrap().looking_glass.is_none());
        let c = check_file("[looking_glass]\nenabled = false\nresolution = \"1x1\"\n").unwrap();
        assert!(c.looking_glass.is_none());
    }

    #[test]
    fn bad_values_are_refused() {
        let t = "[looking_glass]\n";
        assert_problems(&[
            (
                &format!("{t}resolution = \"1920\"\n"),
                &[K::BadResolution("1920".into())],
            ),
            (
                &format!("{t}resolution = \"0x1080\"\n"),
                &[K::BadResolution("0x1080".into())],
            ),
            (
                &format!("{t}size = \"48M\"\n"),
                &[K::LgSizeNotPowerOfTwo("48M".into())],
            ),
            (
                &format!("{t}size = \"512K\"\n"),
                &[K::LgSizeNotPowerOfTwo("512K".into())],
            ),
            (
                &format!("{t}resolution = \"3840x2160\"\nsize = \"64M\"\n"),
                &[K::LgSizeTooSmall {
                    resolution: "3840x2160".into(),
                    need: "128M".into(),
                }],
            ),
            (&format!("{t}spice = true\n"), &[K::LgNoSize]),
            (
                &format!("{t}size = \"32M\"\nuser = \"root\"\n"),
                &[K::BadUser("root".into())],
            ),
        ]);
    }
}
