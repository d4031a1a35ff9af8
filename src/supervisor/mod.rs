//! The running VM: one loop over QEMU's exit, QMP events, signals, the
//! control socket and the stop schedule. Every way out of the loop ends in
//! the same teardown, and the outcome says which way it was.

mod console;
pub(crate) mod control;
mod control_server;
mod event_loop;
mod inhibit;
mod isolation;
pub(crate) mod logcap;
pub(crate) mod outcome;
mod panic_guard;
mod pin;
mod qemu_stderr;
pub(crate) mod rundir;
mod setup;
pub(crate) mod shutdown;
mod spice_share;
pub(crate) mod state;
mod stop;
mod usb_replug;
pub(crate) mod vmfiles;

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use crate::plan::Plan;
use crate::prepare::{self, kernel::RealKernel, Host};
use crate::qemu::{process, swtpm};
use crate::ratelimit::RateLimit;
use crate::teardown;
use console::console_to_terminal;
use control_server::ControlServer;
use event_loop::Vm;
use rundir::{Leftovers, RunDir};
use setup::Started;
use shutdown::Step;
use state::VmState;

/// How long QEMU gets to answer `qmp_capabilities` after spawn. Commands
/// run on QEMU's main loop, after machine init, and with VFIO that init
/// maps (pins) all guest RAM for DMA: tens of seconds for a large guest,
/// more on a loaded host. A signal ends the wait at once.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub(crate) enum SupervisorError {
    #[error(transparent)]
    RunDir(#[from] rundir::RunDirError),
    #[error(transparent)]
    VmFile(#[from] vmfiles::VmFileError),
    #[error(transparent)]
    Swtpm(#[from] swtpm::SwtpmError),
    #[error(transparent)]
    Spawn(#[from] process::SpawnError),
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("could not set up the tokio runtime or signal handlers: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("a previous run of this VM left the host changed and it could not be restored: {}; fix that and run `vmrun restore {vm}`", problems.join("; "))]
    StaleRestore { vm: String, problems: Vec<String> },
    #[error("{error}; {}", undo_summary(.undo))]
    Prepare {
        error: crate::prepare::PrepareError,
        undo: crate::teardown::Report,
    },
    /// A later setup step (swtpm, spawn...) failed after the host was
    /// changed, and the undo did not put everything back.
    #[error("{error}; {}", undo_summary(.undo))]
    NotUndone {
        error: Box<SupervisorError>,
        undo: crate::teardown::Report,
    },
}

fn undo_summary(undo: &crate::teardown::Report) -> String {
    if undo.complete() {
        "everything already changed was undone".into()
    } else {
        let problems: Vec<String> = undo.problems().collect();
        format!("NOT everything could be undone: {}", problems.join("; "))
    }
}

impl SupervisorError {
    /// Whether the host was left changed (the error needs `vmrun restore`).
    pub(crate) fn host_left_changed(&self) -> bool {
        match self {
            Self::StaleRestore { .. } => true,
            // The old QEMU still holds the devices its journal changed.
            Self::RunDir(rundir::RunDirError::QemuSurvived { .. }) => true,
            Self::Prepare { undo, .. } | Self::NotUndone { undo, .. } => !undo.complete(),
            _ => false,
        }
    }
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Outcome {
    /// The guest powered itself off (or obeyed an ACPI powerdown).
    GuestShutdown,
    /// Stopped on request, but the guest ignored ACPI: `step` ended it.
    ForcedStop { step: Step },
    /// QEMU exited without being asked (`status` as the shell shows it).
    Crashed { status: String },
    /// QEMU never got to running.
    StartFailed { reason: String },
    /// vmrun's supervisor panicked (a bug): QEMU was killed and the host
    /// put back on the way out (`panic_guard`).
    SupervisorFailed,
}

/// The end of a supervised run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub outcome: Outcome,
    pub leftovers_cleaned: bool,
    /// How the host was put back after QEMU exited.
    pub teardown: crate::teardown::Report,
}

/// Told the VM's name once the guest runs.
pub(crate) type OnRunning = Box<dyn FnOnce(&str)>;

/// How the supervisor talks to the person or script that started it.
pub(crate) struct RunOptions {
    /// Show QEMU's stderr and the serial console on the terminal.
    pub foreground: bool,
    /// Called once the guest runs (a detached start returns to its caller).
    pub on_running: Option<OnRunning>,
}

/// Runs the VM of `plan` to its end. Errors are returned only for failures
/// before QEMU was spawned; after that, every path gives a `Report`.
pub(crate) fn run(plan: &Plan, opts: RunOptions) -> Result<Report, SupervisorError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The blocking pool serves only a console.log rotation (logcap):
        // its thread goes soon after. A killed supervisor whose leader is
        // a zombie while another thread still exits looks alive to
        // `rundir::is_running`; one thread keeps that window shut.
        .thread_keep_alive(Duration::from_secs(1))
        .build()
        .map_err(SupervisorError::Runtime)?;
    let after_panic = RefCell::new(None);
    let report = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(supervise(plan, opts, &after_panic))
    }));
    // A console relay may sit in a blocking stdin read: don't wait for it.
    runtime.shutdown_background();
    // The panic is printed; the exit status says whether the host is back.
    report.unwrap_or_else(|_| {
        Ok(Report {
            outcome: Outcome::SupervisorFailed,
            leftovers_cleaned: false,
            teardown: after_panic.into_inner().unwrap_or_default(),
        })
    })
}

async fn supervise(
    plan: &Plan,
    mut opts: RunOptions,
    after_panic: &RefCell<Option<teardown::Report>>,
) -> Result<Report, SupervisorError> {
    let name = plan.vm.name.as_str();
    let (run_dir, leftovers) = RunDir::acquire(name, &plan.paths)?;
    report_leftovers(name, &leftovers);
    if let Err(e) = run_dir.record_config(&plan.vm.source) {
        tracing::warn!("{name}: `vmrun list` will not show its config: {e}");
    }
    let kernel = RealKernel::default();
    let host = Host::new(&plan.root, &kernel);
    let journal = prepare::journal_path(plan);
    let mut tpm = None;
    let mut undo_on_panic = panic_guard::UndoOnPanic {
        journal: &journal,
        host: &host,
        qemu_pid: None,
        report: after_panic,
    };
    let Started {
        qemu: (mut child, qmp_stream),
        listeners: (control, mut signals),
        input: (router, readd),
        device_locks: _device_locks,
    } = match setup::set_up(plan, &host, &journal, &mut tpm) {
        Ok(started) => started,
        Err(failure) => {
            setup::remove_spice_dir(&plan.paths);
            return Err(setup::abandon(failure, &mut tpm, &journal, &host, run_dir));
        }
    };
    let qemu_pid = child.id();
    undo_on_panic.qemu_pid = qemu_pid;
    let stderr_task = child
        .stderr
        .take()
        .map(|stderr| tokio::spawn(qemu_stderr::log_stderr(stderr)));
    let console_cap = AbortOnDrop(tokio::spawn(logcap::watch_console_log(
        plan.paths.console_log.clone(),
    )));
    let mut control = ControlServer::start(control, control_server::LIMITS);
    if opts.foreground && plan.vm.display == crate::config::Display::Serial {
        tokio::spawn(console_to_terminal(plan.paths.console_socket.clone()));
    }

    let mut vm = Vm {
        plan,
        state: VmState::Starting,
        started: Instant::now(),
        qemu_pid,
        qmp: None,
        stopping: None,
        ran: false,
        shutdown_by_guest: None,
        router,
        readd,
        event_log: RateLimit::new(
            event_loop::EVENT_LOG_BURST,
            event_loop::EVENT_LOG_PER_SECOND,
        ),
    };
    let mut events = vm
        .start(&mut child, qmp_stream, &mut signals, &mut control)
        .await;
    if vm.state == VmState::Running {
        tracing::info!("{name} is running");
        if let Some(r) = vm.router.as_mut() {
            r.activate();
        }
        if let Some(notify) = opts.on_running.take() {
            notify(name);
        }
    }
    let status = vm
        .run_loop(&mut child, &mut events, signals, &mut control)
        .await;
    // QEMU is gone: the keyboard and mouse go back now, not after the
    // waits below (closing the fds ends the grabs and the proxies).
    vm.router = None;
    // Clients from now on find the socket closed, not a loop gone deaf;
    // a stop's reply, given just before QEMU exited, still goes out.
    control.close().await;
    drop(console_cap);
    vm.drain_events(&mut events).await;
    if let Some(task) = stderr_task {
        let _ = task.await;
    }
    if let Some(t) = tpm.as_mut() {
        t.stop();
    }
    let outcome = vm.outcome(status);
    // QEMU is reaped: its devices are free to go back.
    let teardown = teardown::replay(&journal, &host);
    setup::remove_spice_dir(&plan.paths);
    run_dir.finish((!teardown.complete()).then_some(journal.as_path()));
    Ok(Report {
        outcome,
        leftovers_cleaned: leftovers != Leftovers::default(),
        teardown,
    })
}

fn report_leftovers(name: &str, leftovers: &Leftovers) {
    if let Some(pid) = leftovers.killed_qemu {
        tracing::warn!("{name}: a QEMU (pid {pid}) was still running from a supervisor that died; it was stopped");
    } else if leftovers.stale_files {
        tracing::info!("{name}: removed a stale run dir left by a supervisor that died");
    }
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SIGINT, SIGTERM and SIGHUP all mean "stop the VM properly".
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}
