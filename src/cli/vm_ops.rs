//! Verbs for VMs that run (or ran): stop, status, list, qmp, logs.

use super::out::outln;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::StopArgs;
use crate::config::{self, VmName};
use crate::exit::Exit;
use crate::plan::{DirsEnv, VmPaths};
use crate::supervisor::control::{self, Reply, Request, Status};
use crate::supervisor::rundir::{is_running, supervisor_pid};
use crate::supervisor::shutdown::GRACE;

/// A VM's name and paths from its config's location, without validating
/// the config: a VM must stay stoppable after its file was edited.
pub(super) fn vm_paths(vm: &str) -> Result<(VmName, VmPaths), Exit> {
    let search = config::SearchEnv::from_process();
    let path = config::locate(vm, &search).map_err(|e| {
        eprint!("{}", config::render(&e));
        Exit::Usage
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let name: VmName = stem.parse().map_err(|e| {
        eprintln!("vmrun: {}: {e}", path.display());
        Exit::Usage
    })?;
    let paths = VmPaths::new(&name, &DirsEnv::from_process());
    Ok((name, paths))
}

/// A current-thread runtime; it fails only when the process is out of file
/// descriptors (epoll, eventfd), which is reported, not panicked on.
fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("vmrun: could not set up an event loop: {e}");
            Exit::VmFailed
        })
}

fn control_socket(paths: &VmPaths) -> PathBuf {
    paths.run_dir.join("control.sock")
}

pub(super) fn stop(args: &StopArgs) -> Exit {
    let (name, paths) = match vm_paths(&args.vm) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let Some(pid) = supervisor_pid(&paths) else {
        outln!("{name} is not running");
        return Exit::Ok;
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    let timeout = args.timeout.map(|d| d.get());
    let mut reply = None;
    for i in 0..args.force.max(1) {
        let request = Request::Stop {
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
            force: args.force > i,
        };
        match rt.block_on(control::call(&control_socket(&paths), &request)) {
            Ok(r) => reply = Some(r),
            Err(e) => {
                eprintln!("vmrun: {name}: {e}");
                return Exit::HostProblems;
            }
        }
    }
    if let Some(Reply::Stopping { step }) = reply {
        eprintln!("{name}: stopping ({step:?})");
    }
    // The supervisor's own schedule bounds the wait: the guest's timeout,
    // then quit, SIGTERM and SIGKILL, each with its grace, then teardown.
    let budget = timeout.unwrap_or(Duration::from_secs(600)) + GRACE * 4 + Duration::from_secs(30);
    let deadline = Instant::now() + budget;
    let began = Instant::now();
    while Instant::now() < deadline {
        // An exited supervisor may linger as a zombie until init reaps it.
        if !is_running(pid) {
            outln!("{name} stopped");
            return Exit::Ok;
        }
        // A forced stop ends in milliseconds: poll finely at first, then
        // at a pace fit for a guest taking its time to power off.
        let pause = if began.elapsed() < Duration::from_secs(1) {
            1
        } else {
            20
        };
        std::thread::sleep(Duration::from_millis(pause));
    }
    eprintln!("vmrun: {name}: the supervisor (pid {pid}) is still running after {budget:?}");
    Exit::VmFailed
}

/// `vmrun status`'s answer for a VM without a supervisor.
#[derive(Serialize)]
struct NotRunning<'a> {
    name: &'a str,
    state: &'static str,
    /// A dead supervisor's run dir is still there (cleaned at next start).
    stale_run_dir: bool,
    /// Host changes of a dead supervisor are still in place.
    needs_restore: bool,
}

pub(super) fn status(vm: &str, json: bool) -> Exit {
    let (name, paths) = match vm_paths(vm) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    if supervisor_pid(&paths).is_none() {
        let stale = paths.run_dir.exists();
        let needs_restore = !crate::prepare::journal::read(&paths.run_dir.join("journal"))
            .unwrap_or_default()
            .is_empty();
        let not = NotRunning {
            name: name.as_str(),
            state: if needs_restore {
                "needs-restore"
            } else {
                "stopped"
            },
            stale_run_dir: stale,
            needs_restore,
        };
        if json {
            outln!("{}", serde_json::to_string_pretty(&not).unwrap_or_default());
        } else {
            outln!("{name}: stopped");
            if needs_restore {
                outln!("  the host still has changes of a run that died: `vmrun restore {name}` (or the next start) gives them back");
            } else if stale {
                outln!(
                    "  a supervisor died and left {}; the next start cleans it up",
                    paths.run_dir.display()
                );
            }
        }
        return Exit::HostProblems;
    }
    match call_supervisor(&name, &paths, &Request::Status) {
        Ok(Reply::Status(st)) => {
            if json {
                outln!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            } else {
                print_status(&st);
            }
            Exit::Ok
        }
        Ok(other) => {
            eprintln!("vmrun: {name}: unexpected reply {other:?}");
            Exit::VmFailed
        }
        Err(exit) => exit,
    }
}

/// One request to a running VM's supervisor; failures are printed here.
pub(super) fn call_supervisor(
    name: &VmName,
    paths: &VmPaths,
    request: &Request,
) -> Result<Reply, Exit> {
    let rt = runtime()?;
    rt.block_on(control::call(&control_socket(paths), request))
        .map_err(|e| {
            eprintln!("vmrun: {name}: {e}");
            Exit::VmFailed
        })
}

fn print_status(st: &Status) {
    outln!("{}: {:?}", st.name, st.state);
    outln!(
        "  supervisor pid {}, QEMU pid {}",
        st.supervisor_pid,
        st.qemu_pid.map_or("-".into(), |p| p.to_string())
    );
    outln!(
        "  up {}s, QMP status {}",
        st.uptime_s,
        st.qmp_status.as_deref().unwrap_or("-")
    );
    if let Some(step) = st.stopping {
        outln!("  stopping: {step:?}");
    }
    if !st.devices.is_empty() {
        outln!("  devices: {}", st.devices.join(", "));
    }
    outln!("  QMP (vmrun qmp): {}", st.qmp_socket);
    outln!("  console (vmrun console): {}", st.console_socket);
    if let Some(side) = st.input_focus {
        outln!(
            "  keyboard and mouse: {} (vmrun input {} toggle)",
            side.name(),
            st.name
        );
    }
}

#[derive(Serialize)]
struct ListEntry {
    name: String,
    config: PathBuf,
    running: bool,
    supervisor_pid: Option<i32>,
}

pub(super) fn list(json: bool) -> Exit {
    let dirs = DirsEnv::from_process();
    let entries: Vec<ListEntry> = config::list_all(&config::SearchEnv::from_process())
        .into_iter()
        .map(|(name, config)| {
            let pid = supervisor_pid(&VmPaths::new(&name, &dirs));
            ListEntry {
                name: name.to_string(),
                config,
                running: pid.is_some(),
                supervisor_pid: pid,
            }
        })
        .collect();
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
    } else {
        for e in &entries {
            let state = if e.running { "running" } else { "stopped" };
            outln!("{:<20} {:<8} {}", e.name, state, e.config.display());
        }
    }
    Exit::Ok
}

pub(super) fn qmp(vm: &str, command: &str, arguments: Option<&str>) -> Exit {
    let (name, paths) = match vm_paths(vm) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let args = match arguments.map(serde_json::from_str::<serde_json::Value>) {
        None => None,
        Some(Ok(v)) if v.is_object() => Some(v),
        Some(_) => {
            eprintln!(
                "vmrun: the QMP arguments must be a JSON object, e.g. '{{\"id\": \"net0\"}}'"
            );
            return Exit::Usage;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    let result = rt.block_on(async {
        let (client, _events) = crate::qmp::QmpClient::connect(&paths.qmp_ctl_socket).await?;
        client.execute_raw(command, args).await
    });
    match result {
        Ok(value) => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("vmrun: {name}: {e}");
            Exit::HostProblems
        }
    }
}

pub(super) fn logs(vm: &str, console: bool, follow: bool) -> Exit {
    let (name, paths) = match vm_paths(vm) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let file = if console {
        &paths.console_log
    } else {
        &paths.log
    };
    let Ok(mut f) = std::fs::File::open(file) else {
        eprintln!("vmrun: {name} has no log yet ({})", file.display());
        return Exit::HostProblems;
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if f.read_to_end(&mut buf).is_ok() && !buf.is_empty() && !super::out::write_bytes(&buf) {
            return Exit::Ok;
        }
        if !follow {
            return Exit::Ok;
        }
        std::thread::sleep(Duration::from_millis(200));
        // A log rotated or truncated under us starts over.
        if let (Ok(pos), Ok(meta)) = (f.stream_position(), f.metadata()) {
            if meta.len() < pos {
                let _ = f.seek(SeekFrom::Start(0));
            }
        }
    }
}
