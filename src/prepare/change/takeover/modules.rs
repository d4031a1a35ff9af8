//! Takeover's GPU driver modules: unloaded (`modprobe -r`), then the
//! helpers left unused; undo loads each again and checks its GPUs came
//! back to their drivers.

use serde::{Deserialize, Serialize};

use super::{run_ok, undo_run, TakeoverError, MODULE_TIMEOUT};
use crate::config::PciAddress;
use crate::host::display;
use crate::plan::takeover::TakeoverPlan;
use crate::prepare::change::{StepReport, Undo};
use crate::prepare::journal::{Journal, Step};
use crate::prepare::Host;

/// The journal step: a module unloaded; `devices` were bound to its
/// drivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadModule {
    pub module: String,
    pub devices: Vec<ModuleDevice>,
}

/// A PCI function and the driver it had from an unloaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleDevice {
    pub address: PciAddress,
    pub driver: String,
}

/// Unloads the plan's modules, then the helpers they leave unused.
pub fn unload_modules(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    for module in &plan.modules {
        if !display::module_loaded(host.root, module) {
            continue;
        }
        let devices = plan
            .gpus
            .iter()
            .filter(|g| display::driver_module(host.root, g.address).as_deref() == Some(module))
            .filter_map(|g| {
                Some(ModuleDevice {
                    address: g.address,
                    driver: host.driver_of(g.address)?,
                })
            })
            .collect();
        journal.record(&Step::UnloadModule(UnloadModule {
            module: module.clone(),
            devices,
        }))?;
        let argv = ["modprobe", "-r", module.as_str()].map(String::from);
        run_ok(host, &argv, MODULE_TIMEOUT)?;
        tracing::info!("takeover: unloaded {module}");
    }
    // `modprobe -r` removes dependencies only when they are unused at the
    // moment it reaches them (kmod tries them in modules.dep order), so a
    // helper held by another helper stays: unload what is left unused.
    for helper in &plan.helpers {
        let refcnt =
            std::fs::read_to_string(host.root.path(format!("/sys/module/{helper}/refcnt")));
        if !refcnt.is_ok_and(|r| r.trim() == "0") {
            continue;
        }
        journal.record(&Step::UnloadModule(UnloadModule {
            module: helper.clone(),
            devices: vec![],
        }))?;
        let argv = ["modprobe", "-r", helper.as_str()].map(String::from);
        match run_ok(host, &argv, MODULE_TIMEOUT) {
            Ok(()) => tracing::info!("takeover: unloaded the now-unused {helper}"),
            // A helper left loaded holds no GPU: not worth undoing for.
            Err(e) => tracing::warn!("takeover: {e}"),
        }
    }
    Ok(())
}

impl Undo for UnloadModule {
    fn undo(&self, host: &Host) -> StepReport {
        let (module, devices) = (&self.module, &self.devices);
        let argv = ["modprobe", module.as_str()].map(String::from);
        let mut problems: Vec<String> = undo_run(host, &argv, MODULE_TIMEOUT).into_iter().collect();
        for d in devices {
            let want = Some(d.driver.as_str());
            if host.wait_driver(d.address, |now| now == want).as_deref() == want {
                continue;
            }
            // Loading the module probes unbound devices; one whose
            // driver_override was still set when it loaded needs a probe
            // now.
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
        StepReport::logged(
            if on.is_empty() {
                format!("{module} loaded again")
            } else {
                format!("{module} loaded again, {}", on.join(", "))
            },
            (!problems.is_empty()).then(|| problems.join("; ")),
        )
    }
}
