//! `[takeover] desktop = "restart"`: the display manager starts again at
//! once on a GPU the host keeps. Refused when no such GPU is left for it:
//! a desktop started again on nothing (or on the GPU the VM has) does not
//! come up, and the user is left with no display.

use super::hostdev::PlannedHostdev;
use super::takeover::DmAction;
use super::Finding;
use crate::config::PciAddress;
use crate::host::display::connected_outputs;
use crate::host::pci::{self, PciDevice};
use crate::host::HostRoot;

/// The GPUs the desktop keeps: display devices not given to the VM, with a
/// driver other than vfio-pci; `address (driver)` each.
pub(crate) fn kept_gpus(root: &HostRoot, hostdevs: &[PlannedHostdev]) -> Vec<PciDevice> {
    let passed: Vec<PciAddress> = hostdevs.iter().map(|h| h.address).collect();
    pci::list_devices(root)
        .into_iter()
        .filter(|d| d.is_display() && !passed.contains(&d.address))
        .filter(|d| d.driver.as_deref().is_some_and(|drv| drv != "vfio-pci"))
        .collect()
}

/// Why the desktop can't restart on what is left, if it can't.
pub(crate) fn check(
    root: &HostRoot,
    hostdevs: &[PlannedHostdev],
    dm: &DmAction,
    findings: &mut Vec<Finding>,
) {
    let fix = "set [takeover] desktop = \"stop\" (the desktop is down while the VM runs), or give the desktop a GPU of its own";
    let taken: Vec<&PciDevice> = hostdevs
        .iter()
        .filter_map(|h| h.device.as_ref())
        .filter(|d| d.is_display())
        .collect();
    let kept = kept_gpus(root, hostdevs);
    let names = |ds: &[&PciDevice]| {
        ds.iter()
            .map(|d| d.address.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if kept.is_empty() {
        findings.push(
            Finding::error(
                "takeover",
                format!(
                    "desktop = \"restart\" needs a GPU the host keeps for the desktop, and {} is the host's only GPU with a driver",
                    names(&taken)
                ),
            )
            .fix(fix),
        );
        return;
    }
    // The desktop shows on a GPU with a display connected; the firmware's
    // boot VGA stands in for it where no connector can be read (NVIDIA
    // without modeset has no DRM connectors in sysfs).
    let kept_shows = kept
        .iter()
        .any(|d| !connected_outputs(root, d.address).is_empty());
    for d in &taken {
        let outputs = connected_outputs(root, d.address);
        let why = match (outputs.is_empty(), d.boot_vga == Some(true)) {
            (false, _) => format!("a display is connected to it ({})", outputs.join(", ")),
            (true, true) => "it is the boot VGA".to_string(),
            (true, false) => continue,
        };
        if !kept_shows {
            let kept_refs: Vec<&PciDevice> = kept.iter().collect();
            findings.push(
                Finding::error(
                    "takeover",
                    format!(
                        "desktop = \"restart\": the desktop shows on {} ({why}) and no GPU the host keeps ({}) has a display connected",
                        d.address,
                        names(&kept_refs)
                    ),
                )
                .fix(fix),
            );
        }
    }
    if let DmAction::None { why } = dm {
        findings.push(Finding::warning(
            "takeover",
            format!("desktop = \"restart\", but there is no display manager to start again: {why}"),
        ));
    }
}
