//! Single-GPU takeover, the host side of `[takeover]`: stop the display
//! manager and units, the processes still holding the GPU, unbind the
//! framebuffer consoles and the firmware framebuffer, unload the GPU
//! driver's modules. One module per step, each with its journal step and
//! its undo; each step is journaled before it is made. The VFIO bind
//! follows.

pub mod display_manager;
pub mod framebuffer;
pub mod holders;
pub mod modules;
pub mod units;
pub mod vtconsoles;

#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::plan::takeover::TakeoverPlan;
use crate::prepare::journal::{Journal, JournalError};
use crate::prepare::kernel::{Ran, WriteError};
use crate::prepare::Host;

/// `systemctl stop` of a display manager waits for its session to end.
const UNIT_TIMEOUT: Duration = Duration::from_secs(90);
/// `modprobe -r` of a GPU driver.
const MODULE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("the GPU is still held by {holders}: add them to [takeover] stop_processes (or their units to stop_units) to have them stopped")]
    Held { holders: String },
    #[error("{what} did not stop within {after:?}")]
    Stuck { what: String, after: Duration },
}

fn run(host: &Host, argv: &[String], timeout: Duration) -> Result<Ran, TakeoverError> {
    host.kernel
        .run(argv, timeout)
        .map_err(|e| TakeoverError::Command {
            command: argv.join(" "),
            output: e.to_string(),
        })
}

fn run_ok(host: &Host, argv: &[String], timeout: Duration) -> Result<(), TakeoverError> {
    let ran = run(host, argv, timeout)?;
    match ran.success {
        true => Ok(()),
        false => Err(TakeoverError::Command {
            command: argv.join(" "),
            output: ran.output,
        }),
    }
}

/// Runs an undo's command: the problem, if it failed.
fn undo_run(host: &Host, argv: &[String], timeout: Duration) -> Option<String> {
    match host.kernel.run(argv, timeout) {
        Ok(r) if r.success => None,
        Ok(r) => Some(format!("`{}` failed: {}", argv.join(" "), r.output)),
        Err(e) => Some(format!("`{}`: {e}", argv.join(" "))),
    }
}

/// `systemctl [--user -M USER@] VERB UNIT...`.
fn systemctl(user: Option<&str>, verb: &[&str]) -> Vec<String> {
    let mut argv = vec!["systemctl".to_string()];
    if let Some(u) = user {
        argv.extend(["--user".to_string(), "-M".into(), format!("{u}@")]);
    }
    argv.extend(verb.iter().map(|s| s.to_string()));
    argv
}

/// Releases the GPU from the host display, journaling each step first.
pub fn release(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    display_manager::stop_display_manager(host, journal, &plan.display_manager)?;
    for unit in &plan.units {
        units::stop_unit(host, journal, None, unit)?;
    }
    units::stop_user_units(host, journal, &plan.user_units)?;
    holders::stop_holders(host, journal, plan)?;
    vtconsoles::unbind_consoles(host, journal, plan)?;
    framebuffer::unbind_framebuffers(host, journal, plan)?;
    modules::unload_modules(host, journal, plan)
}
