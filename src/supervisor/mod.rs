//! The running VM: one loop over QEMU's exit, QMP events, signals, the
//! control socket and the stop schedule. Every way out of the loop ends in
//! the same teardown, and the outcome says which way it was.

pub mod control;
mod pin;
pub mod rundir;
mod setup;
pub mod shutdown;
pub mod state;
pub mod vmfiles;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::input::readd::Readd;
use crate::input::router::{Router, Wake as RouterWake};
use crate::plan::Plan;
use crate::prepare::{self, kernel::RealKernel, Host};
use crate::qemu::{process, swtpm};
use crate::qmp::{self, QmpClient, QmpEvent, QmpEvents};
use crate::teardown;
use control::{Reply, Request, Status};
use rundir::{Leftovers, RunDir};
use setup::Started;
use shutdown::{Action, Escalation, Step};
use state::VmState;

/// How long QEMU gets to answer `qmp_capabilities` after spawn. Commands
/// run on QEMU's main loop, after machine init, and with VFIO that init
/// maps (pins) all guest RAM for DMA: tens of seconds for a large guest,
/// more on a loaded host. A signal ends the wait at once.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
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
    #[error("a previous run of this VM left the host changed and it could not be restored: {}; fix that and run `vmrun restore NAME`", .0.join("; "))]
    StaleRestore(Vec<String>),
    #[error("{error}; {}", undo_summary(.undo))]
    Prepare {
        error: crate::prepare::PrepareError,
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
    pub fn host_left_changed(&self) -> bool {
        match self {
            Self::StaleRestore(_) => true,
            Self::Prepare { undo, .. } => !undo.complete(),
            _ => false,
        }
    }
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// The guest powered itself off (or obeyed an ACPI powerdown).
    GuestShutdown,
    /// Stopped on request, but the guest ignored ACPI: `step` ended it.
    ForcedStop { step: Step },
    /// QEMU exited without being asked (`status` as the shell shows it).
    Crashed { status: String },
    /// QEMU never got to running.
    StartFailed { reason: String },
}

/// The end of a supervised run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    pub leftovers_cleaned: bool,
    /// How the host was put back after QEMU exited.
    pub teardown: crate::teardown::Report,
}

/// Told the VM's name once the guest runs.
pub type OnRunning = Box<dyn FnOnce(&str)>;

/// How the supervisor talks to the person or script that started it.
pub struct RunOptions {
    /// Show QEMU's stderr and the serial console on the terminal.
    pub foreground: bool,
    /// Called once the guest runs (a detached start returns to its caller).
    pub on_running: Option<OnRunning>,
}

/// Runs the VM of `plan` to its end. Errors are returned only for failures
/// before QEMU was spawned; after that, every path gives a `Report`.
pub fn run(plan: &Plan, opts: RunOptions) -> Result<Report, SupervisorError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SupervisorError::Runtime)?;
    let report = runtime.block_on(supervise(plan, opts));
    // A console relay may sit in a blocking stdin read: don't wait for it.
    runtime.shutdown_background();
    report
}

async fn supervise(plan: &Plan, mut opts: RunOptions) -> Result<Report, SupervisorError> {
    let name = plan.vm.name.as_str();
    let (run_dir, leftovers) = RunDir::acquire(name, &plan.paths)?;
    report_leftovers(name, &leftovers);
    let kernel = RealKernel::default();
    let host = Host::new(&plan.root, &kernel);
    let journal = prepare::journal_path(plan);
    let mut tpm = None;
    let Started {
        qemu: (mut child, qmp_stream),
        listeners: (control, mut signals),
        input: (router, readd),
        device_locks: _device_locks,
    } = match setup::set_up(plan, &host, &journal, &mut tpm) {
        Ok(started) => started,
        Err(failure) => return Err(setup::abandon(failure, &mut tpm, &journal, &host, run_dir)),
    };
    let qemu_pid = child.id();
    let stderr_task = child
        .stderr
        .take()
        .map(|stderr| tokio::spawn(process::log_stderr(stderr)));
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
    };
    let mut events = vm.start(&mut child, qmp_stream, &mut signals).await;
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
        .run_loop(&mut child, &mut events, signals, &control)
        .await;
    vm.drain_events(&mut events).await;
    if let Some(task) = stderr_task {
        let _ = task.await;
    }
    if let Some(t) = tpm.as_mut() {
        t.stop();
    }
    // Closing the fds ends the grabs and destroys the proxies.
    vm.router = None;
    let outcome = vm.outcome(status);
    // QEMU is reaped: its devices are free to go back.
    let teardown = teardown::replay(&journal, &host);
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

struct Vm<'a> {
    plan: &'a Plan,
    state: VmState,
    started: Instant,
    qemu_pid: Option<u32>,
    qmp: Option<QmpClient>,
    stopping: Option<(Escalation, Instant)>,
    /// Whether the guest ever ran: a stop begun while starting (QMP never
    /// answered) is a failed start, not a forced stop.
    ran: bool,
    /// QEMU's SHUTDOWN event, if one came: `Some(true)` when the guest
    /// powered off, `Some(false)` for a host-side quit or signal.
    shutdown_by_guest: Option<bool>,
    router: Option<Router>,
    readd: Option<Readd>,
}

impl Vm<'_> {
    fn set_state(&mut self, next: VmState) {
        if self.state != next && self.state.can_become(next) {
            tracing::debug!("state {:?} -> {:?}", self.state, next);
            self.state = next;
            self.ran |= next == VmState::Running;
        }
    }

    /// QMP, vCPU pinning, `cont`. A QEMU that dies meanwhile is left for
    /// the loop to reap and report.
    async fn start(
        &mut self,
        child: &mut tokio::process::Child,
        qmp_stream: std::os::unix::net::UnixStream,
        signals: &mut Signals,
    ) -> Option<QmpEvents> {
        let deadline = tokio::time::Instant::now() + QMP_CONNECT_TIMEOUT;
        let socket = &self.plan.paths.qmp_socket;
        let handshake = async {
            let stream = tokio::net::UnixStream::from_std(qmp_stream).map_err(|source| {
                qmp::QmpError::Connect {
                    path: socket.clone(),
                    source,
                }
            })?;
            QmpClient::handshake(stream, socket, deadline).await
        };
        let (client, events) = tokio::select! {
            res = handshake => match res {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!("QMP: {e}");
                    self.begin_stop(Some(Duration::ZERO)).await;
                    return None;
                }
            },
            _ = child.wait() => return None,
            sig = signals.recv() => {
                tracing::info!("{sig} before QEMU answered: stopping it");
                self.begin_stop(Some(Duration::ZERO)).await;
                return None;
            }
        };
        self.qmp = Some(client.clone());
        if let Err(e) = pin::pin_vcpus(&client, &self.plan.vm.cpu.pin).await {
            tracing::warn!("vCPU pinning failed, the guest runs unpinned: {e}");
        }
        match client.cont().await {
            Ok(()) => self.set_state(VmState::Running),
            Err(e) => {
                // A QEMU left paused would hold a detached start forever.
                tracing::error!("QMP cont: {e}");
                self.begin_stop(Some(Duration::ZERO)).await;
            }
        }
        Some(events)
    }

    async fn run_loop(
        &mut self,
        child: &mut tokio::process::Child,
        events: &mut Option<QmpEvents>,
        mut signals: Signals,
        control: &UnixListener,
    ) -> std::io::Result<ExitStatus> {
        loop {
            let tick_at = self
                .stopping
                .as_ref()
                .map(|(e, at)| *at + e.next_deadline());
            tokio::select! {
                status = child.wait() => return status,
                ev = next_event(events) => match ev {
                    Some(ev) => self.on_event(&ev),
                    None => *events = None,
                },
                sig = signals.recv() => {
                    tracing::info!("{sig}: stopping the VM");
                    self.request_stop(None, self.stopping.is_some()).await;
                }
                conn = control.accept() => {
                    if let Ok((mut stream, _)) = conn {
                        self.on_control(&mut stream).await;
                    }
                }
                _ = sleep_until(tick_at), if tick_at.is_some() => self.tick().await,
                wake = router_next(&mut self.router) => {
                    if let Some(r) = self.router.as_mut() {
                        r.handle(wake);
                    }
                }
                () = readd_next(&mut self.readd) => self.readd_devices().await,
            }
        }
    }

    /// QEMU sends SHUTDOWN before it exits, but `select!` may see the exit
    /// first: the events still in flight say whether the guest powered off.
    /// The stream ends with QEMU's socket; the bound is for a QEMU whose
    /// children keep the socket open.
    async fn drain_events(&mut self, events: &mut Option<QmpEvents>) {
        let Some(stream) = events.as_mut() else {
            return;
        };
        let drain = async {
            while let Some(ev) = stream.next().await {
                self.on_event(&ev);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }

    fn on_event(&mut self, ev: &QmpEvent) {
        use qapi::qmp::Event;
        match ev.known() {
            Some(Event::SHUTDOWN { data, .. }) => {
                tracing::info!(
                    "QEMU shutdown: guest={} reason={:?}",
                    data.guest,
                    data.reason
                );
                self.shutdown_by_guest = Some(data.guest);
                self.set_state(VmState::ShuttingDown);
            }
            Some(Event::RESET { data, .. }) => {
                tracing::info!("guest reset (guest={}): the VM keeps running", data.guest);
            }
            Some(Event::POWERDOWN { .. }) => tracing::debug!("ACPI powerdown delivered"),
            Some(Event::STOP { .. }) => self.set_state(VmState::Paused),
            Some(Event::RESUME { .. }) => self.set_state(VmState::Running),
            _ => tracing::debug!("QMP event {}", ev.name()),
        }
    }

    /// Starts the stop schedule, or escalates one that runs (`force`).
    async fn request_stop(&mut self, timeout: Option<Duration>, force: bool) {
        match self.stopping.as_mut() {
            Some((escalation, at)) if force => {
                let action = escalation.escalate();
                *at = Instant::now();
                self.act(action).await;
            }
            Some(_) => {}
            // A forced stop skips the powerdown: its first step is quit.
            None if force => self.begin_stop(Some(Duration::ZERO)).await,
            None => self.begin_stop(timeout).await,
        }
    }

    async fn begin_stop(&mut self, timeout: Option<Duration>) {
        let timeout = timeout.unwrap_or(self.plan.vm.shutdown_timeout.get());
        let (escalation, first) = Escalation::begin(timeout);
        self.stopping = Some((escalation, Instant::now()));
        self.set_state(VmState::ShuttingDown);
        self.act(first).await;
    }

    async fn tick(&mut self) {
        let Some((escalation, at)) = self.stopping.as_mut() else {
            return;
        };
        let now = Instant::now();
        let action = escalation.tick(now - *at);
        *at = now;
        self.act(action).await;
    }

    async fn act(&mut self, action: Action) {
        let Action::Send(step) = action else {
            return;
        };
        let name = self.plan.vm.name.as_str();
        match step {
            Step::Powerdown => {
                tracing::info!("{name}: ACPI powerdown sent to the guest");
                if let Some(q) = &self.qmp {
                    if let Err(e) = q.system_powerdown().await {
                        tracing::warn!("system_powerdown: {e}");
                    }
                }
            }
            Step::Quit => {
                tracing::warn!("{name}: the guest did not power off in time; QMP quit");
                match &self.qmp {
                    Some(q) => {
                        if let Err(e) = q.quit().await {
                            tracing::warn!("quit: {e}");
                        }
                    }
                    None => self.signal(Signal::SIGTERM),
                }
            }
            Step::Sigterm => {
                tracing::warn!("{name}: QEMU still running after quit; SIGTERM");
                self.signal(Signal::SIGTERM);
            }
            Step::Sigkill => {
                tracing::warn!("{name}: QEMU still running after SIGTERM; SIGKILL");
                self.signal(Signal::SIGKILL);
            }
        }
    }

    /// Signals QEMU's whole process group (it may have helper children).
    fn signal(&self, sig: Signal) {
        if let Some(pid) = self.qemu_pid {
            let _ = killpg(Pid::from_raw(pid as i32), sig);
        }
    }

    async fn on_control(&mut self, stream: &mut tokio::net::UnixStream) {
        let reply = match control::read_request(stream).await {
            Some(Request::Status) => Reply::Status(Box::new(self.status().await)),
            Some(Request::Stop { timeout_ms, force }) => {
                self.request_stop(timeout_ms.map(Duration::from_millis), force)
                    .await;
                Reply::Stopping {
                    step: self
                        .stopping
                        .as_ref()
                        .map_or(Step::Powerdown, |(e, _)| e.step()),
                }
            }
            Some(Request::Input { to }) => match self.router.as_mut() {
                Some(r) => Reply::Input {
                    focus: match to {
                        Some(to) => r.switch(to),
                        None => r.side(),
                    },
                },
                None => Reply::Error {
                    message: "this VM has no [input] in router mode".into(),
                },
            },
            None => Reply::Error {
                message: "unreadable request".into(),
            },
        };
        control::write_reply(stream, &reply).await;
    }

    async fn status(&self) -> Status {
        let qmp_status = match &self.qmp {
            Some(q) => q
                .query_status()
                .await
                .ok()
                .map(|s| run_status_name(&s.status)),
            None => None,
        };
        let paths = &self.plan.paths;
        Status {
            name: self.plan.vm.name.to_string(),
            state: self.state,
            supervisor_pid: std::process::id(),
            qemu_pid: self.qemu_pid,
            uptime_s: self.started.elapsed().as_secs(),
            qmp_status,
            stopping: self.stopping.as_ref().map(|(e, _)| e.step()),
            devices: self
                .plan
                .hostdevs
                .iter()
                .map(|h| h.address.to_string())
                .collect(),
            qmp_socket: paths.qmp_ctl_socket.display().to_string(),
            console_socket: paths.console_socket.display().to_string(),
            input_focus: self.router.as_ref().map(Router::side),
        }
    }

    /// QEMU mode: a device node came back; its dead input-linux object is
    /// replaced by a new one on the same path.
    async fn readd_devices(&mut self) {
        let (Some(readd), Some(qmp)) = (self.readd.as_mut(), &self.qmp) else {
            return;
        };
        for obj in readd.replugged() {
            let del = qmp
                .execute_raw("object-del", Some(serde_json::json!({ "id": obj.id })))
                .await;
            let add = qmp.execute_raw("object-add", Some(obj.qmp_args())).await;
            match (del, add) {
                (_, Ok(_)) => tracing::info!(
                    "input: {} is back; QEMU object {} re-added",
                    obj.evdev.display(),
                    obj.id
                ),
                (del, Err(e)) => tracing::warn!(
                    "input: re-adding {} failed: {e} (object-del: {del:?})",
                    obj.id
                ),
            }
        }
    }

    fn outcome(&mut self, status: std::io::Result<ExitStatus>) -> Outcome {
        let status_text = match &status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "unknown".into(),
            },
            Err(e) => format!("could not be waited for: {e}"),
        };
        let exited_cleanly = matches!(&status, Ok(s) if s.success());
        // QEMU exits 0 after a SHUTDOWN; any other end is QEMU failing.
        let guest_off = self.shutdown_by_guest == Some(true) && exited_cleanly;
        let host_quit = self.shutdown_by_guest == Some(false) && exited_cleanly;
        let outcome = match &self.stopping {
            _ if !self.ran => Outcome::StartFailed {
                reason: format!(
                    "QEMU ended before the guest ran ({status_text}); see {}",
                    self.plan.paths.log.display()
                ),
            },
            _ if guest_off => Outcome::GuestShutdown,
            // Ended by the step we sent (quit, SIGTERM or SIGKILL).
            Some((e, _)) if e.step() != Step::Powerdown => Outcome::ForcedStop { step: e.step() },
            // Someone else's QMP `quit` (e.g. `vmrun qmp NAME quit`).
            _ if host_quit => Outcome::ForcedStop { step: Step::Quit },
            // Powered off after our powerdown, its SHUTDOWN event unseen.
            Some(_) if exited_cleanly => Outcome::GuestShutdown,
            _ => Outcome::Crashed {
                status: status_text,
            },
        };
        let final_state = match outcome {
            Outcome::Crashed { .. } | Outcome::StartFailed { .. } => VmState::Crashed,
            _ => VmState::Stopped,
        };
        self.set_state(final_state);
        outcome
    }
}

async fn next_event(events: &mut Option<QmpEvents>) -> Option<QmpEvent> {
    match events.as_mut() {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

async fn router_next(router: &mut Option<Router>) -> RouterWake {
    match router.as_mut() {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

async fn readd_next(readd: &mut Option<Readd>) {
    match readd.as_mut() {
        Some(r) => r.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Shows the serial console on the terminal in the foreground (`display =
/// "serial"`), from the first byte: connects as soon as QEMU listens.
async fn console_to_terminal(socket: std::path::PathBuf) {
    let deadline = Instant::now() + QMP_CONNECT_TIMEOUT;
    let stream = loop {
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(_) => return,
        }
    };
    let (mut read, _write) = stream.into_split();
    let _ = tokio::io::copy(&mut read, &mut tokio::io::stdout()).await;
}

/// QMP's wire name of a run state (`running`, `paused`, ...).
fn run_status_name(status: &qmp::RunStatus) -> String {
    match status {
        qmp::RunStatus::Known(state) => serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{state:?}")),
        qmp::RunStatus::Other(name) => name.clone(),
    }
}
