//! Verbs for VMs that run (or ran): stop, status, list, qmp, logs.

use super::out::outln;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::target::{known_vm, with_run_dirs};
use super::StopArgs;
use crate::config::{self, VmName};
use crate::exit::Exit;
use crate::plan::VmPaths;
use crate::supervisor::control::{self, Reply, Request, Status};
use crate::supervisor::rundir::{is_running, recorded_config, supervisor_pid};
use crate::supervisor::shutdown::GRACE;

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
    let (name, paths) = match known_vm(&args.vm) {
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
            // An earlier `--force` already ended QEMU: the supervisor is
            // tearing down (its socket closed) or gone.
            Err(e) if i > 0 && (e.not_listening() || !is_running(pid)) => break,
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

/// `vmrun status`'s answer while a supervisor sets up, before it serves
/// `control.sock` (it replays a dead run's journal and starts swtpm first;
/// bind(2) makes the socket file before listen(2), so a connect in between
/// is refused).
#[derive(Serialize)]
struct Starting<'a> {
    name: &'a str,
    state: &'static str,
    supervisor_pid: i32,
}

pub(super) fn status(vm: &str, json: bool) -> Exit {
    let (name, paths) = match known_vm(vm) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let Some(pid) = supervisor_pid(&paths) else {
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
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    match rt.block_on(control::call(&control_socket(&paths), &Request::Status)) {
        Err(e) if e.not_listening() => {
            if json {
                let starting = Starting {
                    name: name.as_str(),
                    state: "starting",
                    supervisor_pid: pid,
                };
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&starting).unwrap_or_default()
                );
            } else {
                outln!("{name}: starting (supervisor pid {pid})");
            }
            Exit::Ok
        }
        Err(e) => {
            eprintln!("vmrun: {name}: {e}");
            Exit::VmFailed
        }
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
    if let Some(client) = &st.looking_glass_client {
        outln!("  Looking Glass client: {}", super::shell::line(client));
    }
    if let Some(iso) = &st.isolation {
        outln!(
            "  vCPUs on CPUs {}, QEMU's other threads on {}",
            iso.pinned,
            if iso.emulator_cpus.is_empty() {
                "any"
            } else {
                &iso.emulator_cpus
            }
        );
        if let Some(host) = &iso.host_cpus {
            outln!(
                "  isolated: the host keeps to CPUs {host} ({}; workqueues {}, {} IRQs); vmrun and QEMU in {}",
                iso.confined.join(", "),
                if iso.workqueue_mask_before.is_some() { "moved" } else { "as they were" },
                iso.irqs,
                iso.cgroup.as_deref().unwrap_or("?")
            );
        }
        for g in &iso.governor {
            outln!("  governor set (CPU: before): {g}");
        }
    }
}

#[derive(Serialize)]
struct ListEntry {
    name: String,
    /// The file it runs from or would start from; unknown for a VM whose
    /// supervisor recorded none and whose name the search doesn't find.
    config: Option<PathBuf>,
    running: bool,
    supervisor_pid: Option<i32>,
}

/// Every running VM, whatever file it was started from, then every config
/// the search finds that is not running.
pub(super) fn list(json: bool) -> Exit {
    let dirs = match super::process_dirs() {
        Ok(dirs) => dirs,
        Err(exit) => return exit,
    };
    let configs = config::list_all(&config::SearchEnv::from_process());
    let searched = |name: &VmName| {
        configs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, path)| path.clone())
    };
    let mut entries: Vec<ListEntry> = with_run_dirs(&dirs)
        .into_iter()
        .filter_map(|(name, paths)| {
            let pid = supervisor_pid(&paths)?;
            Some(ListEntry {
                config: recorded_config(&paths.run_dir).or_else(|| searched(&name)),
                name: name.to_string(),
                running: true,
                supervisor_pid: Some(pid),
            })
        })
        .collect();
    for (name, config) in &configs {
        if !entries.iter().any(|e| e.name == name.as_str()) {
            entries.push(ListEntry {
                name: name.to_string(),
                config: Some(config.clone()),
                running: false,
                supervisor_pid: None,
            });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&entries).unwrap_or_default()
        );
    } else {
        for e in &entries {
            let state = if e.running { "running" } else { "stopped" };
            let config = e
                .config
                .as_ref()
                .map_or_else(|| "-".to_string(), |c| c.display().to_string());
            outln!("{:<20} {:<8} {config}", e.name, state);
        }
    }
    Exit::Ok
}

pub(super) fn qmp(vm: &str, command: &str, arguments: Option<&str>) -> Exit {
    let (name, paths) = match known_vm(vm) {
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
    let (name, paths) = match known_vm(vm) {
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
