//! Takeover's display manager: stopped by its unit (a `StopUnit` step) or
//! by the `stop` command configured for it; undo runs its `start` command.

use serde::{Deserialize, Serialize};

use super::units::stop_unit;
use super::{run_ok, undo_run, TakeoverError, UNIT_TIMEOUT};
use crate::plan::takeover::DmAction;
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
