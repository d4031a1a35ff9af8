//! Takeover's framebuffer consoles: each vtconsole bound to a framebuffer
//! on the GPU is unbound; undo binds it again, found by name.

use serde::{Deserialize, Serialize};

use super::TakeoverError;
use crate::host::display;
use crate::plan::takeover::TakeoverPlan;
use crate::prepare::change::{StepReport, Undo};
use crate::prepare::journal::{Journal, Step};
use crate::prepare::Host;

/// The journal step: `/sys/class/vtconsole/vtconN`, named `name`, unbound
/// from its framebuffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnbindVtcon {
    pub index: u32,
    pub name: String,
}

/// Unbinds the plan's vtconsoles that are still bound.
pub fn unbind_consoles(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    let now = display::vtconsoles(host.root);
    for v in &plan.vtconsoles {
        if !now.iter().any(|n| n.index == v.index && n.bound) {
            continue;
        }
        journal.record(&Step::UnbindVtcon(UnbindVtcon {
            index: v.index,
            name: v.name.clone(),
        }))?;
        // "echo 0 > bind" detaches the console driver from the VTs
        // (Documentation/driver-api/console.rst).
        host.kernel.write(
            &host
                .root
                .path(format!("/sys/class/vtconsole/vtcon{}/bind", v.index)),
            "0",
        )?;
        tracing::info!("takeover: unbound vtcon{} ({})", v.index, v.name);
    }
    Ok(())
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

impl Undo for UnbindVtcon {
    fn undo(&self, host: &Host) -> StepReport {
        let (index, name) = (self.index, &self.name);
        // fbcon unregisters its console driver when the last framebuffer
        // goes and registers it again, maybe in another slot, when one
        // comes back (fbcon.c `fbcon_fb_unregistered`/`do_fbcon_takeover`):
        // look it up by name.
        let all = display::vtconsoles(host.root);
        let found = all
            .iter()
            .find(|v| v.index == index && &v.name == name)
            .or_else(|| all.iter().find(|v| &v.name == name));
        let Some(v) = found else {
            if !any_framebuffer(host) {
                // Nothing to bind to: the firmware framebuffer is gone for
                // good (see the framebuffer step's undo) and no GPU driver
                // brought its own.
                return StepReport::logged(
                    format!("vtcon{index} ({name}) left unbound: no framebuffer is registered (the firmware's was removed by the kernel; a GPU driver with fbdev brings the text console back)"),
                    None,
                );
            }
            return StepReport::logged(
                format!("vtcon{index} ({name}) bound again"),
                Some(format!(
                    "a framebuffer is registered but no vtconsole is named {name:?}"
                )),
            );
        };
        let what = format!("vtcon{} ({name}) bound again", v.index);
        if v.bound {
            return StepReport::logged(what, None);
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
        StepReport::logged(what, problem)
    }
}
