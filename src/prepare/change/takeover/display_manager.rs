//! Takeover's display manager: stopped by its unit (a `StopUnit` step) or
//! by the `stop` command configured for it; undo runs its `start` command.
//! With `desktop = "restart"` it is started again once the GPU is bound to
//! vfio-pci (a `RestartDesktop` step), on the GPUs the host kept.

use serde::{Deserialize, Serialize};

use super::units::stop_unit;
use super::{run_ok, systemctl, undo_run, TakeoverError, UNIT_TIMEOUT};
use crate::config::Desktop;
use crate::plan::takeover::{DmAction, TakeoverPlan};
use crate::prepare::change::{StepReport, Undo};
use crate::prepare::journal::{Journal, Step};
use crate::prepare::Host;

/// The journal step: the display manager stopped by its configured `stop`
/// command; `start` brings it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopCommand {
    pub stop: Vec<String>,
    pub start: Vec<String>,
}

/// Stops the display manager as the plan decided.
pub fn stop_display_manager(
    host: &Host,
    journal: &mut Journal,
    dm: &DmAction,
) -> Result<(), TakeoverError> {
    match dm {
        DmAction::Unit { unit, .. } => stop_unit(host, journal, None, unit),
        DmAction::Commands { stop, start } => {
            journal.record(&Step::StopCommand(StopCommand {
                stop: stop.clone(),
                start: start.clone(),
            }))?;
            run_ok(host, stop, UNIT_TIMEOUT)?;
            tracing::info!("takeover: ran `{}`", stop.join(" "));
            Ok(())
        }
        DmAction::None { why } => {
            tracing::info!("takeover: {why}");
            Ok(())
        }
    }
}

impl Undo for StopCommand {
    fn undo(&self, host: &Host) -> StepReport {
        if self.start.is_empty() {
            return StepReport::logged(
                "the display manager: no start command configured, left stopped".into(),
                None,
            );
        }
        StepReport::logged(
            format!("display manager started again (`{}`)", self.start.join(" ")),
            undo_run(host, &self.start, UNIT_TIMEOUT),
        )
    }
}

/// The journal step: the display manager started again while the VM runs
/// (`desktop = "restart"`) with `start`. Undo leaves it running: the
/// stop's own undo, replayed later, finds it running (`systemctl start` of
/// an active unit does nothing; a configured `start` must allow the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartDesktop {
    pub start: Vec<String>,
}

/// With `desktop = "restart"`, starts the display manager again now that
/// the GPU is vfio-pci's. A failed start is a warning, not a failed VM
/// start: the teardown starts it again after the VM.
pub fn restart_display_manager(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    if plan.desktop != Desktop::Restart {
        return Ok(());
    }
    let start = match &plan.display_manager {
        DmAction::Unit { unit, .. } => systemctl(None, &["start", unit]),
        DmAction::Commands { start, .. } if !start.is_empty() => start.clone(),
        DmAction::Commands { .. } | DmAction::None { .. } => {
            tracing::warn!("takeover: desktop = \"restart\", but no display manager to start");
            return Ok(());
        }
    };
    journal.record(&Step::RestartDesktop(RestartDesktop {
        start: start.clone(),
    }))?;
    match run_ok(host, &start, UNIT_TIMEOUT) {
        Ok(()) => tracing::info!(
            "takeover: display manager started again on {} (`{}`)",
            plan.desktop_gpus.join(", "),
            start.join(" ")
        ),
        Err(e) => tracing::warn!("takeover: the desktop did not start again: {e}"),
    }
    Ok(())
}

impl Undo for RestartDesktop {
    fn undo(&self, _host: &Host) -> StepReport {
        StepReport::logged(
            format!(
                "the display manager started again for the VM (`{}`) is left running",
                self.start.join(" ")
            ),
            None,
        )
    }
}
