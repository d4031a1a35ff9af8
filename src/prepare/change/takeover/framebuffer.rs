//! Takeover's firmware framebuffer (efifb, simple-framebuffer, vesafb) on
//! the GPU: unbound from its platform driver; undo binds it again where the
//! kernel still has it.

use serde::{Deserialize, Serialize};

use super::TakeoverError;
use crate::config::PciAddress;
use crate::plan::takeover::TakeoverPlan;
use crate::prepare::change::{StepReport, Undo};
use crate::prepare::journal::{Journal, Step};
use crate::prepare::Host;

/// The journal step: a firmware framebuffer on `gpu` unbound from its
/// platform driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnbindFramebuffer {
    pub driver: String,
    pub device: String,
    pub gpu: PciAddress,
}

/// Unbinds the plan's framebuffers on the GPU that are still bound.
pub fn unbind_framebuffers(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    for f in plan.framebuffers.iter().filter(|f| f.on_gpu) {
        let drv = host
            .root
            .path(format!("/sys/bus/platform/drivers/{}", f.driver));
        if !drv.join(&f.device).exists() {
            continue;
        }
        let gpu = plan.gpus.first().map(|g| g.address);
        let Some(gpu) = gpu else { continue };
        journal.record(&Step::UnbindFramebuffer(UnbindFramebuffer {
            driver: f.driver.clone(),
            device: f.device.clone(),
            gpu,
        }))?;
        host.kernel.write(&drv.join("unbind"), &f.device)?;
        tracing::info!("takeover: unbound {} from {}", f.device, f.driver);
    }
    Ok(())
}

impl Undo for UnbindFramebuffer {
    fn undo(&self, host: &Host) -> StepReport {
        let (driver, device, gpu) = (&self.driver, &self.device, self.gpu);
        let what = format!("{device} bound to {driver} again");
        if !host
            .root
            .path(format!("/sys/bus/platform/devices/{device}"))
            .exists()
        {
            // aperture_remove_conflicting_pci_devices() unregisters the
            // firmware framebuffer's platform device for good
            // (sysfb_disable) when a DRM driver, or since Linux 6.0
            // vfio-pci ("vfio/pci: Remove console drivers"), takes the VGA:
            // there is nothing left to bind.
            return StepReport::logged(
                format!("{device} not bound again: the kernel removed it when a driver took the VGA (vfio-pci or a DRM driver); it comes back only with a reboot"),
                None,
            );
        }
        if host
            .root
            .path(format!("/sys/bus/platform/devices/{device}/driver"))
            .exists()
        {
            return StepReport::logged(what, None);
        }
        if let Some(drv) = host.driver_of(gpu).filter(|d| d != "vfio-pci") {
            return StepReport::logged(
                format!("{device} left unbound: {gpu}'s driver {drv} drives the display now"),
                None,
            );
        }
        let bind = host
            .root
            .path(format!("/sys/bus/platform/drivers/{driver}/bind"));
        StepReport::logged(
            what,
            host.kernel
                .write(&bind, device)
                .err()
                .map(|e| e.to_string()),
        )
    }
}
