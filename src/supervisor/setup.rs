//! Everything before QEMU runs, with one way out on failure: a dead run's
//! journal replayed, the UEFI vars and swtpm, the control socket and
//! signal handlers, the device locks, the input side, the host prepared,
//! QEMU spawned. Whatever step fails, `abandon` stops the swtpm, replays
//! the journal through the same `teardown::replay` as every other path, and
//! finishes the run dir.

use std::os::unix::net::UnixStream;
use std::path::Path;

use tokio::net::UnixListener;
use tokio::process::Child;

use super::rundir::RunDir;
use super::{vmfiles, Signals, SupervisorError};
use crate::config::InputMode;
use crate::input::readd::Readd;
use crate::input::router::Router;
use crate::plan::Plan;
use crate::prepare::{self, DeviceLocks, Host, PrepareError};
use crate::qemu::{process, swtpm, QmpListener};
use crate::teardown;

/// What setup made, handed to the loop.
pub(super) struct Started {
    /// QEMU, started with `-S` (no vCPU runs before the loop says `cont`),
    /// and our end of its QMP socket, already connected.
    pub qemu: (Child, UnixStream),
    /// What the loop listens to besides QEMU: `control.sock` (`vmrun
    /// status`, `stop`, `input`) and the signals.
    pub listeners: (UnixListener, Signals),
    /// Router mode's proxies and real devices, or qemu mode's re-adder.
    pub input: (Option<Router>, Option<Readd>),
    /// Held until the supervisor ends: the devices are ours until then.
    pub device_locks: DeviceLocks,
}

/// Why setup stopped, before the undo is known.
pub(super) enum SetupFailure {
    /// A dead run's journal did not fully go back; nothing of ours was done.
    Stale(Vec<String>),
    /// Claiming or changing the host failed: the undo's report goes with it.
    Prepare(PrepareError),
    Other(SupervisorError),
}

impl From<SupervisorError> for SetupFailure {
    fn from(e: SupervisorError) -> Self {
        Self::Other(e)
    }
}

/// Sets up the run of `plan` up to a spawned QEMU. A swtpm it starts is
/// left in `tpm`, so `abandon` can stop it.
pub(super) fn set_up(
    plan: &Plan,
    host: &Host,
    journal: &Path,
    tpm: &mut Option<swtpm::Swtpm>,
) -> Result<Started, SetupFailure> {
    // A dead supervisor's journal: its changes go back before ours start.
    if journal.exists() {
        tracing::warn!(
            "{}: restoring what a previous run left changed",
            plan.vm.name
        );
        let stale = teardown::replay(journal, host);
        if !stale.complete() {
            return Err(SetupFailure::Stale(stale.problems().collect()));
        }
    }
    vmfiles::ensure_vars_copy(plan).map_err(SupervisorError::from)?;
    if plan.vm.tpm {
        *tpm = Some(
            swtpm::start(&plan.paths, plan.qemu_user.as_deref()).map_err(SupervisorError::from)?,
        );
    }
    let control_path = plan.paths.run_dir.join("control.sock");
    let control = UnixListener::bind(&control_path).map_err(SupervisorError::Runtime)?;
    let signals = Signals::new().map_err(SupervisorError::Runtime)?;
    let device_locks = prepare::lock_devices(plan).map_err(SetupFailure::Prepare)?;
    // The proxies exist before QEMU, which opens them at realize; made
    // before the host is changed, so a missing uinput costs no rebind.
    let input = input_side(plan)?;
    prepare::prepare(plan, host).map_err(|e| {
        tracing::error!("preparing the host failed: {e}; undoing what was done");
        SetupFailure::Prepare(e)
    })?;
    let argv = crate::qemu::build_argv_with(plan, QmpListener::Stdin);
    let (listener, qmp_stream) =
        process::qmp_listen(&plan.paths.qmp_socket).map_err(SupervisorError::from)?;
    let child = process::spawn(plan, &argv, listener).map_err(SupervisorError::from)?;
    Ok(Started {
        qemu: (child, qmp_stream),
        listeners: (control, signals),
        input,
        device_locks,
    })
}

/// The one way out of a failed setup: the swtpm stopped, the journal
/// replayed (it holds nothing unless prepare got going), the run dir
/// removed but for a journal that did not fully go back.
pub(super) fn abandon(
    failure: SetupFailure,
    tpm: &mut Option<swtpm::Swtpm>,
    journal: &Path,
    host: &Host,
    run_dir: RunDir,
) -> SupervisorError {
    if let Some(t) = tpm.as_mut() {
        t.stop();
    }
    let undo = match &failure {
        // Replaying the dead run's journal again would fail again.
        SetupFailure::Stale(_) => None,
        _ => Some(teardown::replay(journal, host)),
    };
    let complete = undo.as_ref().is_some_and(teardown::Report::complete);
    run_dir.finish((!complete).then_some(journal));
    match failure {
        SetupFailure::Stale(problems) => SupervisorError::StaleRestore(problems),
        SetupFailure::Prepare(error) => SupervisorError::Prepare {
            error,
            undo: undo.unwrap_or_default(),
        },
        SetupFailure::Other(e) => e,
    }
}

/// Router mode's proxies and device side, or qemu mode's re-adder.
fn input_side(plan: &Plan) -> Result<(Option<Router>, Option<Readd>), SupervisorError> {
    let Some(input) = &plan.vm.input else {
        return Ok((None, None));
    };
    let links = [
        plan.paths.keyboard_proxy.clone(),
        plan.paths.mouse_proxy.clone(),
    ];
    match input.mode {
        InputMode::Router => Ok((
            Some(Router::new(plan.vm.name.as_str(), input, links)?),
            None,
        )),
        InputMode::Qemu => match Readd::new(input) {
            Some(Ok(readd)) => Ok((None, Some(readd))),
            Some(Err(error)) => Err(crate::input::InputError::Watch { error }.into()),
            None => Ok((None, None)),
        },
    }
}
