//! `vmrun start NAME` (and `vmrun NAME`): plan, then supervise in the
//! foreground, or hand the supervisor to the background with `--detach`.

use super::out::{out, outln};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use super::{dry_run, logging, StartArgs};
use crate::exit::Exit;
use crate::host::HostRoot;
use crate::plan::{self, Plan, PlanContext, Severity};
use crate::supervisor::outcome::{exit_status, Ended};
use crate::supervisor::{self, Outcome, Report, RunOptions};

pub(super) fn start(args: &StartArgs) -> Exit {
    let root = if args.dry_run {
        HostRoot::from_env()
    } else {
        match HostRoot::for_changes("start") {
            Ok(root) => root,
            Err(e) => {
                eprintln!("vmrun: {e}");
                return Exit::Usage;
            }
        }
    };
    if args.detach {
        // The supervisor loads and plans the VM itself; doing it here too
        // would only delay it (a third of vmrun's start overhead).
        return detach(args);
    }
    let vm = match super::load_vm(&args.vm) {
        Ok(vm) => vm,
        Err(exit) => return exit,
    };
    if let Some(input) = &vm.input {
        // Before the plan and any grab: a hotkey the keyboard can't press
        // locks the user out of their own keyboard and mouse.
        if let Err(e) = crate::input::reach::check(input, &root) {
            eprintln!("vmrun: {}: {e}", vm.name);
            return Exit::Usage;
        }
        // on_switch never runs as root unless the config says so.
        let caller = crate::input::switch_user::Caller::from_process();
        if let Err(e) = crate::input::switch_user::resolve(input, &caller) {
            eprintln!("vmrun: {}: {e}", vm.name);
            return Exit::Usage;
        }
    }
    let dirs = match super::process_dirs() {
        Ok(dirs) => dirs,
        Err(exit) => return exit,
    };
    let ctx = PlanContext {
        root,
        dirs,
        qemu_version: args.qemu_version,
    };
    let plan = plan::plan(vm, &ctx);
    if args.dry_run {
        let argv = crate::qemu::build_argv(&plan);
        let text = if args.json {
            dry_run::render_json(&plan, &argv)
        } else {
            dry_run::render_text(&plan, &argv)
        };
        out!("{text}");
        return if plan.has_errors() {
            Exit::HostProblems
        } else {
            Exit::Ok
        };
    }
    // A detached child's stderr is forwarded by `vmrun start --detach`.
    for f in plan
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Warning)
    {
        eprintln!("{f}");
    }
    if plan.has_errors() {
        eprintln!(
            "vmrun: {} not started, nothing on the host was changed",
            plan.vm.name
        );
        return Exit::HostProblems;
    }
    supervise(&plan, args.detached_child)
}

fn supervise(plan: &Plan, detached_child: bool) -> Exit {
    if detached_child {
        // Leave the terminal's session: no SIGHUP when it closes, no
        // SIGINT from its Ctrl-C. Fails only for a group leader, which a
        // child of `vmrun start --detach` never is.
        let _ = nix::unistd::setsid();
    }
    // The log lives in the state dir: without it, a first run logs nothing.
    if let Err(e) = supervisor::rundir::create_private_dir(&plan.paths.state_dir) {
        eprintln!("vmrun: {e}");
        return Exit::HostProblems;
    }
    logging::init_vm(&plan.paths.log, !detached_child);
    // Which file a name meant depends on the search dirs: say it.
    tracing::info!("{}: using {}", plan.vm.name, plan.vm.source.display());
    let on_running: Box<dyn FnOnce(&str)> = if detached_child {
        let log = plan.paths.log.clone();
        Box::new(move |_| {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "running");
            let _ = out.flush();
            let _ = std::io::stderr().flush();
            // `vmrun start --detach` exits now and closes both pipes, and
            // its caller's terminal is no place for the supervisor: a later
            // write (a panic's message) goes to the VM's log, or nowhere.
            let target = std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .or_else(|_| std::fs::OpenOptions::new().write(true).open("/dev/null"));
            if let Ok(target) = target {
                let _ = nix::unistd::dup2_stdout(&target);
                let _ = nix::unistd::dup2_stderr(&target);
            }
        })
    } else {
        Box::new(|_| {})
    };
    let opts = RunOptions {
        foreground: !detached_child,
        on_running: Some(on_running),
    };
    let name = &plan.vm.name;
    let exit = match supervisor::run(plan, opts) {
        Ok(report) => {
            say_how_it_ended(plan, &report);
            exit_status(Ended::Vm(&report.outcome), report.teardown.complete())
        }
        Err(e) => {
            tracing::error!("{name}: {e}");
            if detached_child {
                // The log is not on a terminal: the waiting parent forwards
                // this to the person who ran `start --detach`.
                eprintln!("vmrun: {name}: {e}");
            }
            match e {
                // A config this keyboard can't serve, found when it was
                // opened, before any grab or change.
                supervisor::SupervisorError::Input(
                    crate::input::InputError::HotkeyUnreachable { .. }
                    | crate::input::InputError::SwitchUser(_),
                ) => Exit::Usage,
                _ => exit_status(Ended::BeforeQemu, !e.host_left_changed()),
            }
        }
    };
    // A detached supervisor's exit status reaches nobody: the log keeps it.
    tracing::info!("{}: vmrun exit status {}", plan.vm.name, exit.code());
    exit
}

/// Logs how the VM ended and whether the host is back.
fn say_how_it_ended(plan: &Plan, report: &Report) {
    let name = &plan.vm.name;
    match &report.outcome {
        Outcome::GuestShutdown => tracing::info!("{name} powered off"),
        Outcome::ForcedStop { step } => {
            tracing::warn!("{name} did not power off by itself; stopped by {step:?}");
        }
        Outcome::Crashed { status } => tracing::error!(
            "{name}: QEMU crashed ({status}); see {}",
            plan.paths.log.display()
        ),
        Outcome::StartFailed { reason } => {
            tracing::error!("{name} failed to start: {reason}");
        }
        Outcome::SupervisorFailed => {
            tracing::error!("{name}: vmrun's supervisor failed, QEMU was stopped")
        }
    }
    if report.teardown.complete() {
        if !report.teardown.steps.is_empty() {
            tracing::info!("{name}: host restored");
        }
    } else {
        for problem in report.teardown.problems() {
            tracing::error!("{name}: not restored: {problem}");
        }
        tracing::error!(
            "{name}: the host is not fully restored; fix the above, then `vmrun restore {name}`"
        );
    }
}

/// Starts `vmrun start VM --detached-child`, forwards its stderr (plan
/// findings, errors) and waits for its "running" line.
fn detach(args: &StartArgs) -> Exit {
    let (name, paths) = match super::target::configured_vm(&args.vm) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("vmrun: can't find my own binary to detach: {e}");
            return Exit::HostProblems;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg("start").arg(&args.vm).arg("--detached-child");
    if let Some(version) = &args.qemu_version {
        cmd.arg("--qemu-version").arg(version.to_string());
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("vmrun: could not start the supervisor: {e}");
            return Exit::HostProblems;
        }
    };
    // In a thread: a child blocked on a full stderr pipe would never print
    // "running".
    let forward = child.stderr.take().map(|err| {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
            }
        })
    });
    let ready = child
        .stdout
        .take()
        .and_then(|out| BufReader::new(out).lines().next())
        .and_then(Result::ok)
        .is_some_and(|line| line == "running");
    if ready {
        outln!(
            "{name} is running (supervisor pid {}): `vmrun status {name}`, `vmrun console {name}`, `vmrun stop {name}`",
            child.id()
        );
        return Exit::Ok;
    }
    let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(3);
    if let Some(forward) = forward {
        let _ = forward.join();
    }
    match code {
        // Config or usage errors: the child printed them, no log was written.
        2 => return Exit::Usage,
        1 => return Exit::HostProblems,
        _ => {}
    }
    eprintln!(
        "vmrun: {name} did not start; its log ({}):",
        paths.log.display()
    );
    let log = std::fs::read_to_string(&paths.log).unwrap_or_default();
    for line in log
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        eprintln!("  {line}");
    }
    Exit::VmFailed
}
