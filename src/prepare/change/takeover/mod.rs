//! Single-GPU takeover, the host side of `[takeover]`: stop the display
//! manager and units, the processes still holding the GPU, unbind the
//! framebuffer consoles and the firmware framebuffer, unload the GPU
//! driver's modules. Each step is journaled before it is made; the VFIO
//! bind follows. `teardown::takeover` undoes them.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::journal::{Journal, JournalError, ModuleDevice, Step};
use super::sysfs::{Ran, WriteError};
use super::Host;
use crate::host::display;
use crate::host::procs;
use crate::plan::takeover::{matches_any, DmAction, TakeoverPlan};

/// `systemctl stop` of a display manager waits for its session to end.
pub const UNIT_TIMEOUT: Duration = Duration::from_secs(90);
/// `modprobe -r` of a GPU driver.
pub const MODULE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the GPU's holders get to exit after the display manager and
/// units stopped (compositors and Xwayland go after the session).
const SETTLE: Duration = Duration::from_secs(if cfg!(test) { 0 } else { 10 });
/// SIGTERM to SIGKILL for a holder named in `stop_processes`.
const TERM_GRACE: Duration = Duration::from_secs(if cfg!(test) { 0 } else { 5 });

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

/// `systemctl [--user -M USER@] VERB UNIT...`.
pub fn systemctl(user: Option<&str>, verb: &[&str]) -> Vec<String> {
    let mut argv = vec!["systemctl".to_string()];
    if let Some(u) = user {
        argv.extend(["--user".to_string(), "-M".into(), format!("{u}@")]);
    }
    argv.extend(verb.iter().map(|s| s.to_string()));
    argv
}

fn unit_active(host: &Host, user: Option<&str>, unit: &str) -> bool {
    host.kernel
        .run(
            &systemctl(user, &["is-active", "--quiet", unit]),
            UNIT_TIMEOUT,
        )
        .is_ok_and(|r| r.success)
}

fn stop_unit(
    host: &Host,
    journal: &mut Journal,
    user: Option<&str>,
    unit: &str,
) -> Result<(), TakeoverError> {
    if !unit_active(host, user, unit) {
        tracing::info!("takeover: {unit} is not active");
        return Ok(());
    }
    journal.record(&Step::StopUnit {
        unit: unit.to_string(),
        user: user.map(str::to_owned),
    })?;
    // `systemctl stop` returns when the stop job is done: the unit's
    // processes have exited or been killed (systemd.kill(5)).
    run_ok(host, &systemctl(user, &["stop", unit]), UNIT_TIMEOUT)?;
    if unit_active(host, user, unit) {
        return Err(TakeoverError::Stuck {
            what: unit.to_string(),
            after: UNIT_TIMEOUT,
        });
    }
    tracing::info!("takeover: stopped {unit}");
    Ok(())
}

/// The users with a running systemd user manager (`/run/user/UID`).
fn session_users(host: &Host) -> Vec<String> {
    let mut users: Vec<String> = std::fs::read_dir(host.root.path("/run/user"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|uid| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
        })
        .map(|u| u.name)
        .collect();
    users.sort();
    users
}

fn stop_user_units(
    host: &Host,
    journal: &mut Journal,
    patterns: &[String],
) -> Result<(), TakeoverError> {
    if patterns.is_empty() {
        return Ok(());
    }
    for user in session_users(host) {
        let mut argv = systemctl(
            Some(&user),
            &["list-units", "--state=active", "--plain", "--no-legend"],
        );
        argv.extend(patterns.iter().cloned());
        let Ok(ran) = host.kernel.run(&argv, UNIT_TIMEOUT) else {
            continue;
        };
        for unit in ran
            .output
            .lines()
            .filter_map(|l| l.split_whitespace().next())
        {
            stop_unit(host, journal, Some(&user), unit)?;
        }
    }
    Ok(())
}

fn stop_display_manager(
    host: &Host,
    journal: &mut Journal,
    dm: &DmAction,
) -> Result<(), TakeoverError> {
    match dm {
        DmAction::Unit { unit, .. } => stop_unit(host, journal, None, unit),
        DmAction::Commands { stop, start } => {
            journal.record(&Step::StopCommand {
                stop: stop.clone(),
                start: start.clone(),
            })?;
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

fn holders(host: &Host, plan: &TakeoverPlan) -> Vec<procs::Holder> {
    let own = std::process::id();
    procs::holders(host.root, |p| plan.gpus.iter().any(|g| g.holds(p)))
        .holders
        .into_iter()
        .filter(|h| h.pid != own)
        .collect()
}

fn alive(host: &Host, pid: u32) -> bool {
    // A zombie (state Z) has let go of its files.
    match std::fs::read_to_string(host.root.path(format!("/proc/{pid}/stat"))) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => host.root.path(format!("/proc/{pid}")).exists(),
    }
}

fn wait_gone(host: &Host, pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(host, pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Waits for the GPU's holders to exit, stops those named in
/// `stop_processes`, and refuses, naming them, if others remain.
fn stop_holders(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    let deadline = Instant::now() + SETTLE;
    let mut left = holders(host, plan);
    while left
        .iter()
        .any(|h| !matches_any(&plan.stop_processes, &h.comm))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        left = holders(host, plan);
    }
    let (ours, others): (Vec<_>, Vec<_>) = left
        .into_iter()
        .partition(|h| matches_any(&plan.stop_processes, &h.comm));
    if !others.is_empty() {
        let mut names: Vec<String> = others
            .iter()
            .map(|h| format!("{} (pid {}, {})", h.comm, h.pid, h.path.display()))
            .collect();
        names.dedup();
        return Err(TakeoverError::Held {
            holders: names.join(", "),
        });
    }
    let mut done: Vec<u32> = Vec::new();
    for h in ours {
        if done.contains(&h.pid) {
            continue;
        }
        done.push(h.pid);
        journal.record(&Step::StopProcess {
            pid: h.pid,
            comm: h.comm.clone(),
        })?;
        let _ = host.kernel.signal(h.pid, Signal::SIGTERM);
        if !wait_gone(host, h.pid, TERM_GRACE) {
            let _ = host.kernel.signal(h.pid, Signal::SIGKILL);
            if !wait_gone(host, h.pid, TERM_GRACE) {
                return Err(TakeoverError::Stuck {
                    what: format!("{} (pid {})", h.comm, h.pid),
                    after: TERM_GRACE * 2,
                });
            }
        }
        tracing::info!("takeover: stopped {} (pid {})", h.comm, h.pid);
    }
    Ok(())
}

fn unbind_consoles(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    let now = display::vtconsoles(host.root);
    for v in &plan.vtconsoles {
        if !now.iter().any(|n| n.index == v.index && n.bound) {
            continue;
        }
        journal.record(&Step::UnbindVtcon {
            index: v.index,
            name: v.name.clone(),
        })?;
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
    for f in plan.framebuffers.iter().filter(|f| f.on_gpu) {
        let drv = host
            .root
            .path(format!("/sys/bus/platform/drivers/{}", f.driver));
        if !drv.join(&f.device).exists() {
            continue;
        }
        let gpu = plan.gpus.first().map(|g| g.address);
        let Some(gpu) = gpu else { continue };
        journal.record(&Step::UnbindFramebuffer {
            driver: f.driver.clone(),
            device: f.device.clone(),
            gpu,
        })?;
        host.kernel.write(&drv.join("unbind"), &f.device)?;
        tracing::info!("takeover: unbound {} from {}", f.device, f.driver);
    }
    Ok(())
}

fn unload_modules(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    for module in &plan.modules {
        if !display::module_loaded(host.root, module) {
            continue;
        }
        let devices = plan
            .gpus
            .iter()
            .filter(|g| display::driver_module(host.root, g.address).as_deref() == Some(module))
            .filter_map(|g| {
                Some(ModuleDevice {
                    address: g.address,
                    driver: host.driver_of(g.address)?,
                })
            })
            .collect();
        journal.record(&Step::UnloadModule {
            module: module.clone(),
            devices,
        })?;
        let argv = ["modprobe", "-r", module.as_str()].map(String::from);
        run_ok(host, &argv, MODULE_TIMEOUT)?;
        tracing::info!("takeover: unloaded {module}");
    }
    // `modprobe -r` removes dependencies only when they are unused at the
    // moment it reaches them (kmod tries them in modules.dep order), so a
    // helper held by another helper stays: unload what is left unused.
    for helper in &plan.helpers {
        let refcnt =
            std::fs::read_to_string(host.root.path(format!("/sys/module/{helper}/refcnt")));
        if !refcnt.is_ok_and(|r| r.trim() == "0") {
            continue;
        }
        journal.record(&Step::UnloadModule {
            module: helper.clone(),
            devices: vec![],
        })?;
        let argv = ["modprobe", "-r", helper.as_str()].map(String::from);
        match run_ok(host, &argv, MODULE_TIMEOUT) {
            Ok(()) => tracing::info!("takeover: unloaded the now-unused {helper}"),
            // A helper left loaded holds no GPU: not worth undoing for.
            Err(e) => tracing::warn!("takeover: {e}"),
        }
    }
    Ok(())
}

/// Releases the GPU from the host display, journaling each step first.
pub fn release(
    host: &Host,
    journal: &mut Journal,
    plan: &TakeoverPlan,
) -> Result<(), TakeoverError> {
    stop_display_manager(host, journal, &plan.display_manager)?;
    for unit in &plan.units {
        stop_unit(host, journal, None, unit)?;
    }
    stop_user_units(host, journal, &plan.user_units)?;
    stop_holders(host, journal, plan)?;
    unbind_consoles(host, journal, plan)?;
    unload_modules(host, journal, plan)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::config::{DisplayManager, Takeover, UnloadModules};
    use crate::host::display::fake::*;
    use crate::host::pci::fake::{add_device, add_process, set_attr};
    use crate::host::HostRoot;
    use crate::plan::hostdev::fake::planned;
    use crate::prepare::fake_kernel::FakeKernel;
    use crate::prepare::sysfs::Kernel;
    use crate::prepare::{journal, vfio};
    use crate::teardown;

    const GPU: &str = "0000:00:0a.0";
    const HDA: &str = "0000:00:0a.1";

    /// bochs-drm on the boot GPU with fbcon on its framebuffer, gdm
    /// (pid 400, Xorg) and a tool (pid 500) holding card0.
    fn bochs_host() -> (tempfile::TempDir, FakeKernel) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        bochs_desktop(p, GPU);
        add_device(
            p,
            HDA,
            (0x8086, 0x2668),
            0x040300,
            Some("snd_hda_intel"),
            Some(3),
        );
        add_process(p, 400, "Xorg", &["/dev/dri/card0"]);
        add_process(p, 500, "gpuhold", &["/dev/dri/card0"]);
        let kernel = FakeKernel::new(p)
            .native(GPU, "bochs-drm")
            .native(HDA, "snd_hda_intel")
            .driver_module("bochs-drm", "bochs")
            .unit("gdm.service", &[400]);
        kernel.modprobe("vfio-pci").unwrap();
        (dir, kernel)
    }

    fn takeover_plan(root: &HostRoot, stop_processes: &[&str]) -> TakeoverPlan {
        let t = Takeover {
            display_manager: DisplayManager::Unit("gdm.service".into()),
            stop_units: vec![],
            user_units: vec![],
            stop_processes: stop_processes.iter().map(|s| s.to_string()).collect(),
            unload_modules: UnloadModules::Auto,
        };
        crate::plan::takeover::plan(
            &t,
            &[planned(root, GPU, true), planned(root, HDA, false)],
            root,
        )
    }

    fn bound(p: &Path, index: u32) -> String {
        fs::read_to_string(p.join(format!("sys/class/vtconsole/vtcon{index}/bind")))
            .unwrap()
            .trim()
            .to_string()
    }

    fn gdm_active(k: &FakeKernel) -> bool {
        k.units.borrow()["gdm.service"]
    }

    #[test]
    fn release_bind_then_replay_brings_the_desktop_back() {
        let (dir, kernel) = bochs_host();
        let p = dir.path();
        let root = HostRoot::new(p);
        let host = Host {
            root: &root,
            kernel: &kernel,
        };
        let plan = takeover_plan(&root, &["gpuhold"]);
        let path = p.join("journal");
        let mut j = Journal::open(&path).unwrap();

        release(&host, &mut j, &plan).unwrap();
        assert!(!gdm_active(&kernel));
        assert!(!p.join("proc/400").exists() && !p.join("proc/500").exists());
        assert_eq!(bound(p, 1), "0");
        for m in ["bochs", "drm_kms_helper", "drm"] {
            assert!(!display::module_loaded(&root, m), "{m} still loaded");
        }
        assert_eq!(host.driver_of(GPU.parse().unwrap()), None);
        for a in [GPU, HDA] {
            vfio::bind(&host, &mut j, a.parse().unwrap(), false).unwrap();
        }

        let report = teardown::replay(&path, &host);
        assert!(report.complete(), "{report:?}");
        assert_eq!(
            host.driver_of(GPU.parse().unwrap()).as_deref(),
            Some("bochs-drm")
        );
        assert_eq!(
            host.driver_of(HDA.parse().unwrap()).as_deref(),
            Some("snd_hda_intel")
        );
        assert!(display::module_loaded(&root, "bochs"));
        assert!(p
            .join(format!("sys/bus/pci/devices/{GPU}/drm/card0"))
            .exists());
        assert_eq!(bound(p, 1), "1");
        assert!(gdm_active(&kernel));
        assert!(report
            .steps
            .iter()
            .any(|s| s.what.contains("gpuhold (pid 500) was stopped")));
        let cmds = kernel.commands.borrow().join("\n");
        let order = [
            "systemctl stop gdm.service",
            "kill -SIGTERM 500",
            "modprobe -r bochs",
            "modprobe bochs",
            "systemctl start gdm.service",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|c| {
                cmds.find(c)
                    .unwrap_or_else(|| panic!("{c} not run:\n{cmds}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{cmds}");
    }

    #[test]
    fn an_unlisted_holder_is_refused_by_name_and_rolled_back() {
        let (dir, kernel) = bochs_host();
        let root = HostRoot::new(dir.path());
        let host = Host {
            root: &root,
            kernel: &kernel,
        };
        let plan = takeover_plan(&root, &[]);
        let path = dir.path().join("journal");
        let mut j = Journal::open(&path).unwrap();
        let err = release(&host, &mut j, &plan).unwrap_err();
        assert!(
            matches!(&err, TakeoverError::Held { holders } if holders.contains("gpuhold (pid 500")),
            "{err}"
        );
        assert!(!gdm_active(&kernel));
        assert!(teardown::replay(&path, &host).complete());
        assert!(gdm_active(&kernel), "the display manager must run again");
        assert_eq!(bound(dir.path(), 1), "1");
        assert!(dir.path().join("proc/500").exists());
    }

    #[test]
    fn a_module_that_wont_unload_rolls_back_everything() {
        let (dir, kernel) = bochs_host();
        let kernel = kernel.failing_command("modprobe -r bochs");
        let root = HostRoot::new(dir.path());
        let host = Host {
            root: &root,
            kernel: &kernel,
        };
        let plan = takeover_plan(&root, &["gpuhold"]);
        let path = dir.path().join("journal");
        let mut j = Journal::open(&path).unwrap();
        let err = release(&host, &mut j, &plan).unwrap_err();
        assert!(
            matches!(err, TakeoverError::Command { ref command, .. } if command == "modprobe -r bochs"),
            "{err}"
        );
        assert_eq!(bound(dir.path(), 1), "0");
        let report = teardown::replay(&path, &host);
        assert!(report.complete(), "{report:?}");
        assert_eq!(bound(dir.path(), 1), "1");
        assert!(gdm_active(&kernel));
        assert_eq!(
            host.driver_of(GPU.parse().unwrap()).as_deref(),
            Some("bochs-drm")
        );
        assert!(journal::read(&path).unwrap().is_empty());
    }

    /// Configured system units and the user units matching a pattern, in
    /// every running user manager (root's here: /run/user/0), are stopped
    /// and started again.
    #[test]
    fn units_and_user_units_are_stopped_and_started_again() {
        let (dir, kernel) = bochs_host();
        let p = dir.path();
        fs::create_dir_all(p.join("run/user/0")).unwrap();
        add_process(p, 600, "kwin_wayland", &["/dev/dri/card0"]);
        let kernel = kernel
            .unit("sunshine.service", &[])
            .unit("root@:plasma-kwin_wayland.service", &[600])
            .unit("root@:plasma-foo.service", &[])
            .unit("root@:pipewire.service", &[]);
        let root = HostRoot::new(p);
        let host = Host {
            root: &root,
            kernel: &kernel,
        };
        let mut plan = takeover_plan(&root, &["gpuhold"]);
        plan.units = vec!["sunshine.service".into(), "inactive.service".into()];
        plan.user_units = vec!["plasma-*".into()];
        let path = p.join("journal");
        let mut j = Journal::open(&path).unwrap();
        release(&host, &mut j, &plan).unwrap();
        let stopped: Vec<Step> = journal::read(&path)
            .unwrap()
            .into_iter()
            .filter(|s| matches!(s, Step::StopUnit { .. }))
            .collect();
        let unit = |u: &str, user: Option<&str>| Step::StopUnit {
            unit: u.into(),
            user: user.map(str::to_owned),
        };
        assert_eq!(
            stopped,
            [
                unit("gdm.service", None),
                unit("sunshine.service", None),
                unit("plasma-foo.service", Some("root")),
                unit("plasma-kwin_wayland.service", Some("root")),
            ]
        );
        assert!(!p.join("proc/600").exists());
        assert!(kernel.units.borrow()["root@:pipewire.service"]);
        assert!(teardown::replay(&path, &host).complete());
        for u in [
            "sunshine.service",
            "root@:plasma-kwin_wayland.service",
            "root@:plasma-foo.service",
        ] {
            assert!(kernel.units.borrow()[u], "{u} not started again");
        }
    }

    #[test]
    fn a_holder_ignoring_sigterm_gets_sigkill() {
        let (dir, kernel) = bochs_host();
        let kernel = kernel.stubborn(500);
        let root = HostRoot::new(dir.path());
        let host = Host {
            root: &root,
            kernel: &kernel,
        };
        let mut j = Journal::open(&dir.path().join("journal")).unwrap();
        release(&host, &mut j, &takeover_plan(&root, &["gpuhold"])).unwrap();
        let cmds = kernel.commands.borrow().join("\n");
        assert!(
            cmds.contains("kill -SIGTERM 500\nkill -SIGKILL 500"),
            "{cmds}"
        );
    }

    /// efifb + fbcon, no GPU driver: the framebuffer is unbound and bound
    /// again; nothing is unloaded.
    #[test]
    fn efifb_is_unbound_and_bound_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        add_device(p, GPU, (0x1234, 0x1111), 0x030000, None, Some(3));
        set_attr(
            p,
            GPU,
            "resource",
            "0x00000000c0000000 0x00000000c0ffffff 0x0000000000042208",
        );
        add_framebuffer(p, "efi-framebuffer", "efi-framebuffer.0", Some(0xc000_0000));
        add_vtcon(p, 1, "(M) frame buffer device", true);
        let kernel = FakeKernel::new(p);
        let root = HostRoot::new(p);
        let host = Host {
            root: &root,
            kernel: &kernel,
        };
        let plan = crate::plan::takeover::plan(
            &Takeover {
                display_manager: DisplayManager::Auto,
                stop_units: vec![],
                user_units: vec![],
                stop_processes: vec![],
                unload_modules: UnloadModules::Auto,
            },
            &[planned(&root, GPU, true)],
            &root,
        );
        assert!(plan.modules.is_empty());
        let path = p.join("journal");
        let mut j = Journal::open(&path).unwrap();
        release(&host, &mut j, &plan).unwrap();
        let efifb = p.join("sys/bus/platform/drivers/efi-framebuffer/efi-framebuffer.0");
        assert!(!efifb.exists());
        assert_eq!(bound(p, 1), "0");
        assert_eq!(
            journal::read(&path).unwrap(),
            [
                Step::UnbindVtcon {
                    index: 1,
                    name: "(M) frame buffer device".into()
                },
                Step::UnbindFramebuffer {
                    driver: "efi-framebuffer".into(),
                    device: "efi-framebuffer.0".into(),
                    gpu: GPU.parse().unwrap()
                }
            ]
        );
        assert!(
            kernel.commands.borrow().is_empty(),
            "no command for this host"
        );
        let report = teardown::replay(&path, &host);
        assert!(report.complete(), "{report:?}");
        assert!(efifb.exists());
        assert_eq!(bound(p, 1), "1");
    }

    #[test]
    fn a_framebuffer_the_kernel_removed_is_a_note_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        add_device(p, GPU, (0x1234, 0x1111), 0x030000, None, Some(3));
        let kernel = FakeKernel::new(p);
        let root = HostRoot::new(p);
        let host = Host {
            root: &root,
            kernel: &kernel,
        };
        let path = p.join("journal");
        let mut j = Journal::open(&path).unwrap();
        j.record(&Step::UnbindFramebuffer {
            driver: "efi-framebuffer".into(),
            device: "efi-framebuffer.0".into(),
            gpu: GPU.parse().unwrap(),
        })
        .unwrap();
        let report = teardown::replay(&path, &host);
        assert!(report.complete(), "{report:?}");
        assert!(report.steps[0].what.contains("the kernel removed it"));
        assert!(report.steps[0].problem.is_none());
    }
}
