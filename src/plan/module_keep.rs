//! Which GPU driver modules `[takeover] unload_modules` may unload: a
//! module that also drives a device the host keeps (the desktop's GPU on
//! the same amdgpu, nvidia or bochs) stays loaded, and the VFIO bind
//! unbinds the VM's device alone; an explicit list that would strand such
//! a device is refused with its name.

use crate::config::PciAddress;
use crate::host::display::{self, DrivenDevice};
use crate::host::pci::PciDevice;
use crate::host::HostRoot;

/// `unload_modules = "auto"`: the modules to unload (each after what holds
/// it), why, and one line per module left loaded for the host.
pub(crate) fn auto(
    root: &HostRoot,
    devices: &[&PciDevice],
    passed: &[PciAddress],
) -> (Vec<String>, String, Vec<String>) {
    let mut order: Vec<String> = Vec::new();
    let mut why = Vec::new();
    let mut kept = Vec::new();
    for d in devices {
        let Some(m) = display::driver_module(root, d.address) else {
            why.push(match &d.driver {
                Some(drv) => format!("{}'s driver {drv} is built in", d.address),
                None => format!("{} has no driver", d.address),
            });
            continue;
        };
        let chain = display::unload_order(root, &m);
        let others = stranded(root, &chain, passed);
        if let Some((module, devs)) = others.first() {
            // Unloading would take the host's other devices off their
            // driver too: the VFIO bind unbinds this one alone and the
            // module stays.
            kept.push(format!(
                "leave {m} loaded: {module} also drives {}, which the host keeps; {} alone is unbound from it",
                join(devs),
                d.address
            ));
            why.push(format!("{}'s driver module {m} stays loaded", d.address));
            continue;
        }
        why.push(format!(
            "{}'s driver module {m}, after what holds it (/sys/module/*/holders)",
            d.address
        ));
        for c in chain {
            if !order.contains(&c) {
                order.push(c);
            }
        }
    }
    if why.is_empty() {
        why.push("no display device of the VM is on this host".into());
    }
    (order, why.join("; "), kept)
}

/// An explicit `unload_modules` list: an error finding for each module in
/// `all` (the list's loaded modules and the helpers they free) that also
/// drives a device the host keeps.
pub(crate) fn refuse_stranding(
    root: &HostRoot,
    all: &[String],
    passed: &[PciAddress],
    findings: &mut Vec<super::Finding>,
) {
    for (module, devs) in stranded(root, all, passed) {
        findings.push(
            super::Finding::error(
                "takeover",
                format!(
                    "unload_modules would unload {module}, which also drives {}: the host would lose that device's driver while the VM runs",
                    join(&devs)
                ),
            )
            .fix(format!("remove {module} from [takeover] unload_modules, or set it to \"auto\" (which leaves a module the host still needs loaded and unbinds only the VM's devices)")),
        );
    }
}

/// Each of `modules` whose drivers drive a device not among `passed`, with
/// those devices: unloading it would leave them driverless.
fn stranded(
    root: &HostRoot,
    modules: &[String],
    passed: &[PciAddress],
) -> Vec<(String, Vec<DrivenDevice>)> {
    let passed: Vec<String> = passed.iter().map(ToString::to_string).collect();
    modules
        .iter()
        .filter_map(|m| {
            let others: Vec<DrivenDevice> = display::module_devices(root, m)
                .into_iter()
                .filter(|d| !passed.contains(&d.device))
                .collect();
            (!others.is_empty()).then(|| (m.clone(), others))
        })
        .collect()
}

fn join(devices: &[DrivenDevice]) -> String {
    devices
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
