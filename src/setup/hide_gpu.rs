//! `vmrun host hide-gpu`: keep the desktop's compositor off a GPU's DRM
//! card node for good, so `vmrun start` takes the GPU while the desktop
//! runs on the GPU the host keeps. The render node is left alone: render
//! offload (DRI_PRIME, CUDA, Vulkan) keeps working until the VM starts.
//!
//! What each compositor honours, read in its source:
//! - Every compositor that enumerates DRM cards through udev skips a card
//!   whose `ID_SEAT` property names another seat than its own (unset means
//!   `seat0`): Xorg (xserver config/udev.c `config_udev_odev_probe`, which
//!   calls `check_seat` before the probe callback, so the node is never
//!   opened; `device_added` does the same for hotplug), mutter
//!   (src/backends/native/meta-udev.c `meta_udev_is_drm_device`, and
//!   `meta_udev_list_drm_devices` lists only cards tagged `seat`), wlroots
//!   without `WLR_DRM_DEVICES` (backend/session/session.c
//!   `wlr_session_find_gpus`), KWin without `KWIN_DRM_DEVICES`
//!   (src/backends/drm/drm_backend.cpp `DrmBackend::initialize`, and
//!   `handleUdevEvent` for hotplug). So the rule sets `ID_SEAT` to a seat that
//!   does not exist, and removes the `seat` and `master-of-seat` tags that
//!   systemd's 71-seat.rules gives every DRM card: systemd-logind creates
//!   a seat for a `master-of-seat` device whose `ID_SEAT` names a new seat,
//!   and a display manager would start a greeter on it.
//! - mutter's own `mutter-device-ignore` tag (mutter's 61-mutter.rules
//!   uses it for vkms): added too, for mutter releases that read it.
//! - KWin, wlroots and Hyprland's aquamarine take an explicit list of the
//!   cards to open (`KWIN_DRM_DEVICES`, `WLR_DRM_DEVICES`,
//!   `AQ_DRM_DEVICES`), split on ':' (wlroots `explicit_find_gpus`:
//!   strtok_r on ":"), so `/dev/dri/by-path/pci-0000:..` names can't be
//!   used: the rule gives each kept card a colon-free link
//!   `/dev/dri/vmrun-keep-DDDD-BB-SS.F`, and the lists name those links.
//!
//! No Xorg snippet: `AutoAddGPU` off only stops Xorg adding a card it has
//! already probed (and stops it adding any other GPU too); the seat keeps
//! the card out of the probe itself.

use std::fs;
use std::path::PathBuf;

use crate::config::PciAddress;
use crate::host::display::connected_outputs;
use crate::host::pci::{self, PciDevice};
use crate::host::HostRoot;

/// Sorted after systemd's 71-seat.rules (which tags every card `seat` and
/// `master-of-seat`) and before 73-seat-late.rules (which turns `ID_SEAT`
/// into a tag and applies `uaccess`).
pub(crate) const RULE_FILE: &str = "/etc/udev/rules.d/72-vmrun-hide-gpu.rules";
/// environment.d(5): read by the systemd user manager, which starts the
/// Plasma 6 session (kwin_wayland as a user unit) and compositors run
/// through uwsm; login shells are not covered (see docs/config.md).
pub(crate) const ENV_FILE: &str = "/etc/environment.d/90-vmrun-hide-gpu.conf";
/// The first line of both files: a file that starts with it is vmrun's
/// own, replaced without a backup (a backup of it would make `--undo`
/// put the hiding back).
pub(crate) const MARKER: &str = "# Written by `vmrun host hide-gpu`";
/// A seat name logind accepts ("seat" + [A-Za-z0-9_-]) that no seat has.
pub(crate) const SEAT: &str = "seat-vmrun-hidden";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HideError {
    #[error("{0} is not a PCI device on this host")]
    Missing(PciAddress),
    #[error("{0} is not a display device (class VGA/3D/display): only a GPU's DRM node is hidden")]
    NotDisplay(PciAddress),
    #[error("{name} passes no display device: nothing to hide")]
    NoGpu { name: String },
    #[error(
        "{0} is the host's only GPU with a driver: hiding it leaves the desktop nothing to run on"
    )]
    OnlyGpu(PciAddress),
    #[error("the desktop shows on {address} ({why}) and no other GPU ({kept}) has a display connected: hiding it would leave no screen")]
    DesktopGpu {
        address: PciAddress,
        why: String,
        kept: String,
    },
}

/// The files `--apply` writes, and what they hide and keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HidePlan {
    pub hidden: Vec<PciAddress>,
    pub kept: Vec<PciAddress>,
    /// Host paths (not under the root) and their new contents.
    pub files: Vec<(PathBuf, String)>,
}

/// Plans hiding `targets` (on top of the GPUs the rule file already hides).
pub(crate) fn plan(root: &HostRoot, targets: &[PciAddress]) -> Result<HidePlan, HideError> {
    let mut hidden = hidden_addresses(root);
    for &a in targets {
        let dev = pci::read_device(root, a).ok_or(HideError::Missing(a))?;
        if !dev.is_display() {
            return Err(HideError::NotDisplay(a));
        }
        if !hidden.contains(&a) {
            hidden.push(a);
        }
    }
    hidden.sort();
    let kept: Vec<PciDevice> = pci::list_devices(root)
        .into_iter()
        .filter(|d| d.is_display() && !hidden.contains(&d.address))
        .filter(|d| d.driver.as_deref().is_some_and(|drv| drv != "vfio-pci"))
        .collect();
    for &a in targets {
        refuse_desktop_gpu(root, a, &kept)?;
    }
    let kept: Vec<PciAddress> = kept.iter().map(|d| d.address).collect();
    let files = vec![
        (PathBuf::from(RULE_FILE), rule_text(&hidden, &kept)),
        (PathBuf::from(ENV_FILE), env_text(&kept)),
    ];
    Ok(HidePlan {
        hidden,
        kept,
        files,
    })
}

/// The desktop shows on a GPU with a display connected (the boot VGA
/// stands in where no connector can be read, as for NVIDIA without
/// modeset): such a GPU may be hidden only when a kept GPU shows too.
fn refuse_desktop_gpu(root: &HostRoot, a: PciAddress, kept: &[PciDevice]) -> Result<(), HideError> {
    if kept.is_empty() {
        return Err(HideError::OnlyGpu(a));
    }
    if kept
        .iter()
        .any(|d| !connected_outputs(root, d.address).is_empty())
    {
        return Ok(());
    }
    let outputs = connected_outputs(root, a);
    let boot = pci::read_device(root, a).is_some_and(|d| d.boot_vga == Some(true));
    let why = match (outputs.is_empty(), boot) {
        (false, _) => format!("a display is connected to it ({})", outputs.join(", ")),
        (true, true) => "it is the boot VGA".to_string(),
        (true, false) => return Ok(()),
    };
    Err(HideError::DesktopGpu {
        address: a,
        why,
        kept: kept
            .iter()
            .map(|d| d.address.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// `/dev/dri/vmrun-keep-DDDD-BB-SS.F` without the link's `/dev/`.
fn keep_link(a: PciAddress) -> String {
    format!("dri/vmrun-keep-{}", a.to_string().replace(':', "-"))
}

/// The udev rule: each hidden GPU's card node (KERNEL card*, not renderD*)
/// matched by its PCI parent, and a colon-free link for each kept card.
pub(crate) fn rule_text(hidden: &[PciAddress], kept: &[PciAddress]) -> String {
    let mut s = format!(
        "{MARKER}: compositors leave these GPUs' card nodes alone.\n\
         # Their render nodes stay usable for offload. Undo: vmrun host hide-gpu --undo --apply\n"
    );
    for a in hidden {
        s.push_str(&format!(
            "SUBSYSTEM==\"drm\", KERNEL==\"card[0-9]*\", KERNELS==\"{a}\", ENV{{ID_SEAT}}=\"{SEAT}\", TAG-=\"seat\", TAG-=\"master-of-seat\", TAG+=\"mutter-device-ignore\"\n"
        ));
    }
    for a in kept {
        s.push_str(&format!(
            "SUBSYSTEM==\"drm\", KERNEL==\"card[0-9]*\", KERNELS==\"{a}\", SYMLINK+=\"{}\"\n",
            keep_link(*a)
        ));
    }
    s
}

/// The device lists of KWin, wlroots and aquamarine: the kept cards.
pub(crate) fn env_text(kept: &[PciAddress]) -> String {
    let list = kept
        .iter()
        .map(|a| format!("/dev/{}", keep_link(*a)))
        .collect::<Vec<_>>()
        .join(":");
    format!(
        "{MARKER}: the GPUs compositors may open (the others are hidden).\n\
         KWIN_DRM_DEVICES={list}\nWLR_DRM_DEVICES={list}\nAQ_DRM_DEVICES={list}\n"
    )
}

/// Whether the file at `path` (under the root) is one hide-gpu wrote.
pub(crate) fn is_ours(path: &std::path::Path) -> bool {
    fs::read_to_string(path).is_ok_and(|t| t.starts_with(MARKER))
}

/// The GPUs the rule file under `root` hides now.
pub(crate) fn hidden_addresses(root: &HostRoot) -> Vec<PciAddress> {
    let text = fs::read_to_string(root.path(RULE_FILE)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("ENV{ID_SEAT}"))
        .filter_map(|l| {
            let rest = l.split("KERNELS==\"").nth(1)?;
            rest.split('"').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sysfs::write;
    use crate::testing::Machine;

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn the_rule_hides_the_card_node_only_and_links_the_kept_card() {
        let text = rule_text(&[addr("0000:01:00.0")], &[addr("0000:00:02.0")]);
        let hide = text.lines().find(|l| l.contains("01:00.0")).unwrap();
        for want in [
            "KERNEL==\"card[0-9]*\"",
            "KERNELS==\"0000:01:00.0\"",
            "ENV{ID_SEAT}=\"seat-vmrun-hidden\"",
            "TAG-=\"master-of-seat\"",
            "TAG-=\"seat\"",
            "TAG+=\"mutter-device-ignore\"",
        ] {
            assert!(hide.contains(want), "{want} missing from {hide}");
        }
        assert!(!text.contains("renderD"));
        assert!(
            text.contains("KERNELS==\"0000:00:02.0\", SYMLINK+=\"dri/vmrun-keep-0000-00-02.0\"")
        );
        let env = env_text(&[addr("0000:00:02.0"), addr("0000:03:00.0")]);
        let list = "/dev/dri/vmrun-keep-0000-00-02.0:/dev/dri/vmrun-keep-0000-03-00.0";
        for var in ["KWIN_DRM_DEVICES", "WLR_DRM_DEVICES", "AQ_DRM_DEVICES"] {
            assert!(env.contains(&format!("{var}={list}\n")), "{env}");
        }
    }

    #[test]
    fn a_secondary_gpu_is_hidden_and_the_rule_file_is_read_back() {
        let host = Machine::IntelNvidiaLaptop.build();
        let root = host.root();
        let p = plan(&root, &[addr("0000:01:00.0")]).unwrap();
        assert_eq!(p.hidden, [addr("0000:01:00.0")]);
        assert_eq!(p.kept, [addr("0000:00:02.0")]);
        assert!(hidden_addresses(&root).is_empty());
        write(host.path(), RULE_FILE, &p.files[0].1);
        assert_eq!(hidden_addresses(&root), [addr("0000:01:00.0")]);
        // Planning again keeps it, with nothing new.
        assert_eq!(plan(&root, &[]).unwrap().files, p.files);
    }

    #[test]
    fn the_only_gpu_a_non_gpu_and_the_desktop_gpu_are_refused() {
        let single = Machine::SingleGpu.build();
        let root = single.root();
        assert_eq!(
            plan(&root, &[addr("0000:01:00.0")]),
            Err(HideError::OnlyGpu(addr("0000:01:00.0")))
        );
        assert_eq!(
            plan(&root, &[addr("0000:01:00.1")]),
            Err(HideError::NotDisplay(addr("0000:01:00.1")))
        );
        let laptop = Machine::IntelNvidiaLaptop.build();
        let root = laptop.root();
        let err = plan(&root, &[addr("0000:00:02.0")]).unwrap_err();
        assert!(
            matches!(&err, HideError::DesktopGpu { address, .. } if *address == addr("0000:00:02.0")),
            "{err}"
        );
        assert!(err.to_string().contains("0000:01:00.0"), "{err}");
    }
}
