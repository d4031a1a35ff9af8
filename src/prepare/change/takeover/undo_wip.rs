//! Undoing takeover's steps: modules reloaded and their GPUs probed, the
//! firmware framebuffer bound again where the kernel still has it, the
//! consoles bound, units and the display manager started. Each returns a
//! report; a note that is no failure goes in `what`.

use super::StepReport;
use crate::config::PciAddress;
use crate::prepare::journal::ModuleDevice;
use crate::prepare::takeover::{systemctl, MODULE_TIMEOUT, UNIT_TIMEOUT};
use crate::prepare::Host;

fn report(what: String, problem: Option<String>) -> StepReport {
    match &problem {
        None => tracing::info!("{what}"),
        Some(p) => tracing::warn!("{what}: {p}"),
    }
    StepReport { what, problem }
}

/// Whether any framebuffer is registered (`/sys/class/graphics/fbN`).
fn any_framebuffer(host: &Host) -> bool {
    std::fs::read_dir(host.root.path("/sys/class/graphics"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("fb"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

fn run(host: &Host, argv: &[String], timeout: std::time::Duration) -> Option<String> {
    match host.kernel.run(argv, timeout) {
        Ok(r) if r.success => None,
        Ok(r) => Some(format!("`{}` failed: {}", argv.join(" "), r.output)),
        Err(e) => Some(format!("`{}`: {e}", argv.join(" "))),
    }
}

pub fn start_unit(host: &Host, unit: &str, user: Option<&str>) -> StepReport {
    let whose = user.map_or(String::new(), |u| format!(" (user {u})"));
    report(
        format!("{unit}{whose} started again"),
        run(host, &systemctl(user, &["start", unit]), UNIT_TIMEOUT),
    )
}

pub fn start_command(host: &Host, start: &[String]) -> StepReport {
    if start.is_empty() {
        return report(
            "the display manager: no start command configured, left stopped".into(),
            None,
        );
    }
    report(
        format!("display manager started again (`{}`)", start.join(" ")),
        run(host, start, UNIT_TIMEOUT),
    )
}

pub fn stopped_process(pid: u32, comm: &str) -> StepReport {
    report(
        format!("{comm} (pid {pid}) was stopped for the VM: start it again yourself if you need it (vmrun does not restart processes)"),
        None,
    )
}

pub fn bind_vtcon(host: &Host, index: u32, name: &str) -> StepReport {
    // fbcon unregisters its console driver when the last framebuffer goes
    // and registers it again, maybe in another slot, when one comes back
    // (fbcon.c `fbcon_fb_unregistered`/`do_fbcon_takeover`): look it up
    // by name.
    let all = crate::host::display::vtconsoles(host.root);
    let found = all
        .iter()
        .find(|v| v.index == index && v.name == name)
        .or_else(|| all.iter().find(|v| v.name == name));
    let Some(v) = found else {
        if !any_framebuffer(host) {
            // Nothing to bind to: the firmware framebuffer is gone for good
            // (see bind_framebuffer) and no GPU driver brought its own.
            return report(
                format!("vtcon{index} ({name}) left unbound: no framebuffer is registered (the firmware's was removed by the kernel; a GPU driver with fbdev brings the text console back)"),
                None,
            );
        }
        return report(
            format!("vtcon{index} ({name}) bound again"),
            Some(format!(
                "a framebuffer is registered but no vtconsole is named {name:?}"
            )),
        );
    };
    let what = format!("vtcon{} ({name}) bound again", v.index);
    if v.bound {
        return report(what, None);
    }
    let path = host
        .root
        .path(format!("/sys/class/vtconsole/vtcon{}/bind", v.index));
    let problem = match host.kernel.write(&path, "1") {
        Err(e) => Some(e.to_string()),
        Ok(()) if !std::fs::read_to_string(&path).is_ok_and(|b| b.trim() == "1") => {
            Some(format!("{} still reads 0", path.display()))
        }
        Ok(()) => None,
    };
    report(what, problem)
}

pub fn bind_framebuffer(host: &Host, driver: &str, device: &str, gpu: PciAddress) -> StepReport {
    let what = format!("{device} bound to {driver} again");
    if !host
        .root
        .path(format!("/sys/bus/platform/devices/{device}"))
        .exists()
    {
        // aperture_remove_conflicting_pci_devices() unregisters the
        // firmware framebuffer's platform device for good (sysfb_disable)
        // when a DRM driver, or since Linux 6.0 vfio-pci ("vfio/pci: Remove
        // console drivers"), takes the VGA: there is nothing left to bind.
        return report(
            format!("{device} not bound again: the kernel removed it when a driver took the VGA (vfio-pci or a DRM driver); it comes back only with a reboot"),
            None,
        );
    }
    if host
        .root
        .path(format!("/sys/bus/platform/devices/{device}/driver"))
        .exists()
    {
        return report(what, None);
    }
    if let Some(drv) = host.driver_of(gpu).filter(|d| d != "vfio-pci") {
        return report(
            format!("{device} left unbound: {gpu}'s driver {drv} drives the display now"),
            None,
        );
    }
    let bind = host
        .root
        .path(format!("/sys/bus/platform/drivers/{driver}/bind"));
    report(
        what,
        host.kernel
            .write(&bind, device)
            .err()
            .map(|e| e.to_string()),
    )
}

pub fn reload_module(host: &Host, module: &str, devices: &[ModuleDevice]) -> StepReport {
    let argv = ["modprobe", module].map(String::from);
    let mut problems: Vec<String> = run(host, &argv, MODULE_TIMEOUT).into_iter().collect();
    for d in devices {
        let want = Some(d.driver.as_str());
        if host.wait_driver(d.address, |now| now == want).as_deref() == want {
            continue;
        }
        // Loading the module probes unbound devices; one whose
        // driver_override was still set when it loaded needs a probe now.
        if let Err(e) = host
            .kernel
            .write(&host.sys("drivers_probe"), &d.address.to_string())
        {
            problems.push(e.to_string());
        }
        let now = host.wait_driver(d.address, |now| now == want);
        if now.as_deref() != want {
            problems.push(format!(
                "{}'s driver is {} instead of {}",
                d.address,
                now.as_deref().unwrap_or("none"),
                d.driver
            ));
        }
    }
    let on: Vec<String> = devices
        .iter()
        .map(|d| format!("{} on {}", d.address, d.driver))
        .collect();
    report(
        if on.is_empty() {
            format!("{module} loaded again")
        } else {
            format!("{module} loaded again, {}", on.join(", "))
        },
        (!problems.is_empty()).then(|| problems.join("; ")),
    )
}
