//! Takeover's steps against the fake kernel: release, bind, then the
//! journal undone.

use std::fs;
use std::path::Path;

use super::*;
use crate::config::{DisplayManager, PciAddress, Takeover, UnloadModules};
use crate::host::display;
use crate::host::HostRoot;
use crate::plan::hostdev::fake::planned;
use crate::prepare::change::vfio;
use crate::prepare::journal::{self, Step};
use crate::prepare::kernel::fake::FakeKernel;
use crate::prepare::kernel::{Kernel, Timings};
use crate::testing::machines::ids::BOCHS_VGA;
use crate::testing::machines::{BOCHS_AUDIO, BOCHS_DISPLAY, BOCHS_GPU};
use crate::testing::{Machine, Pci, TestHost};
use framebuffer::UnbindFramebuffer;
use units::StopUnit;
use vtconsoles::UnbindVtcon;

const GPU: &str = BOCHS_GPU;
const HDA: &str = BOCHS_AUDIO;

/// bochs-drm on the boot GPU with fbcon on its framebuffer, gdm
/// (pid 400, Xorg) and a tool (pid 500) holding card0.
fn bochs_host() -> (TestHost, FakeKernel) {
    let dir = Machine::BochsDesktop
        .build()
        .process(400, "Xorg", &["/dev/dri/card0"])
        .process(500, "gpuhold", &["/dev/dri/card0"]);
    let kernel = FakeKernel::new(dir.path())
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
        desktop: Default::default(),
    };
    crate::plan::takeover::plan(
        &t,
        &[planned(root, GPU, true), planned(root, HDA, false)],
        root,
        &mut Vec::new(),
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
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
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

    let report = journal::undo_all(&path, &host);
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
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
    let plan = takeover_plan(&root, &[]);
    let path = dir.path().join("journal");
    let mut j = Journal::open(&path).unwrap();
    let err = release(&host, &mut j, &plan).unwrap_err();
    assert!(
        matches!(&err, TakeoverError::Held { holders } if holders.contains("gpuhold (pid 500")),
        "{err}"
    );
    assert!(!gdm_active(&kernel));
    assert!(journal::undo_all(&path, &host).complete());
    assert!(gdm_active(&kernel), "the display manager must run again");
    assert_eq!(bound(dir.path(), 1), "1");
    assert!(dir.path().join("proc/500").exists());
}

#[test]
fn a_module_that_wont_unload_rolls_back_everything() {
    let (dir, kernel) = bochs_host();
    let kernel = kernel.failing_command("modprobe -r bochs");
    let root = HostRoot::new(dir.path());
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
    let plan = takeover_plan(&root, &["gpuhold"]);
    let path = dir.path().join("journal");
    let mut j = Journal::open(&path).unwrap();
    let err = release(&host, &mut j, &plan).unwrap_err();
    assert!(
        matches!(err, TakeoverError::Command { ref command, .. } if command == "modprobe -r bochs"),
        "{err}"
    );
    assert_eq!(bound(dir.path(), 1), "0");
    let report = journal::undo_all(&path, &host);
    assert!(report.complete(), "{report:?}");
    assert_eq!(bound(dir.path(), 1), "1");
    assert!(gdm_active(&kernel));
    assert_eq!(
        host.driver_of(GPU.parse().unwrap()).as_deref(),
        Some("bochs-drm")
    );
}

/// Configured system units and the user units matching a pattern, in
/// every running user manager (root's here: /run/user/0), are stopped
/// and started again.
#[test]
fn units_and_user_units_are_stopped_and_started_again() {
    let (dir, kernel) = bochs_host();
    let dir = dir
        .dir("/run/user/0")
        .process(600, "kwin_wayland", &["/dev/dri/card0"]);
    let p = dir.path();
    let kernel = kernel
        .unit("sunshine.service", &[])
        .unit("root@:plasma-kwin_wayland.service", &[600])
        .unit("root@:plasma-foo.service", &[])
        .unit("root@:pipewire.service", &[]);
    let root = HostRoot::new(p);
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
    let mut plan = takeover_plan(&root, &["gpuhold"]);
    plan.units = vec!["sunshine.service".into(), "inactive.service".into()];
    plan.user_units = vec!["plasma-*".into()];
    let path = p.join("journal");
    let mut j = Journal::open(&path).unwrap();
    release(&host, &mut j, &plan).unwrap();
    let stopped: Vec<Step> = journal::read(&path)
        .unwrap()
        .steps
        .into_iter()
        .filter(|s| matches!(s, Step::StopUnit(_)))
        .collect();
    let unit = |u: &str, user: Option<&str>| {
        Step::StopUnit(StopUnit {
            unit: u.into(),
            user: user.map(str::to_owned),
        })
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
    assert!(journal::undo_all(&path, &host).complete());
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
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
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
    let dir = TestHost::new()
        .pci(Pci::vga(GPU, BOCHS_VGA).group(3).attr(
            "resource",
            "0x00000000c0000000 0x00000000c0ffffff 0x0000000000042208",
        ))
        .framebuffer("efi-framebuffer", "efi-framebuffer.0", Some(0xc000_0000))
        .vtcon(1, "(M) frame buffer device", true);
    let p = dir.path();
    let kernel = FakeKernel::new(p);
    let root = HostRoot::new(p);
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
    let plan = crate::plan::takeover::plan(
        &Takeover {
            display_manager: DisplayManager::Auto,
            stop_units: vec![],
            user_units: vec![],
            stop_processes: vec![],
            unload_modules: UnloadModules::Auto,
            desktop: Default::default(),
        },
        &[planned(&root, GPU, true)],
        &root,
        &mut Vec::new(),
    );
    assert!(plan.modules.is_empty());
    let path = p.join("journal");
    let mut j = Journal::open(&path).unwrap();
    release(&host, &mut j, &plan).unwrap();
    let efifb = p.join("sys/bus/platform/drivers/efi-framebuffer/efi-framebuffer.0");
    assert!(!efifb.exists());
    assert_eq!(bound(p, 1), "0");
    assert_eq!(
        journal::read(&path).unwrap().steps,
        [
            Step::UnbindVtcon(UnbindVtcon {
                index: 1,
                name: "(M) frame buffer device".into()
            }),
            Step::UnbindFramebuffer(UnbindFramebuffer {
                driver: "efi-framebuffer".into(),
                device: "efi-framebuffer.0".into(),
                gpu: GPU.parse().unwrap()
            })
        ]
    );
    assert!(
        kernel.commands.borrow().is_empty(),
        "no command for this host"
    );
    let report = journal::undo_all(&path, &host);
    assert!(report.complete(), "{report:?}");
    assert!(efifb.exists());
    assert_eq!(bound(p, 1), "1");
}

#[test]
fn a_framebuffer_the_kernel_removed_is_a_note_not_a_failure() {
    let dir = TestHost::new().pci(Pci::vga(GPU, BOCHS_VGA).group(3));
    let p = dir.path();
    let kernel = FakeKernel::new(p);
    let root = HostRoot::new(p);
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
    let path = p.join("journal");
    let mut j = Journal::open(&path).unwrap();
    j.record(&Step::UnbindFramebuffer(UnbindFramebuffer {
        driver: "efi-framebuffer".into(),
        device: "efi-framebuffer.0".into(),
        gpu: GPU.parse().unwrap(),
    }))
    .unwrap();
    let report = journal::undo_all(&path, &host);
    assert!(report.complete(), "{report:?}");
    assert!(report.steps[0].what.contains("the kernel removed it"));
    assert!(report.steps[0].problem.is_none());
}

/// The lab's dual host: bochs drives the VM's GPU and the host's display
/// (0b.0); gdm's Xorg (pid 400) holds both cards.
fn dual_host() -> (TestHost, FakeKernel) {
    let dir =
        Machine::BochsDual
            .build()
            .process(400, "Xorg", &["/dev/dri/card0", "/dev/dri/card1"]);
    let kernel = FakeKernel::new(dir.path())
        .native(GPU, "bochs-drm")
        .native(BOCHS_DISPLAY, "bochs-drm")
        .native(HDA, "snd_hda_intel")
        .driver_module("bochs-drm", "bochs")
        .unit("gdm.service", &[400]);
    kernel.modprobe("vfio-pci").unwrap();
    (dir, kernel)
}

/// The lab's dual host: bochs drives the VM's GPU and the host's own
/// display (0b.0). `auto` leaves bochs loaded, the VFIO bind unbinds the
/// VM's GPU alone, and 0b.0 keeps bochs-drm and its card throughout.
#[test]
fn a_module_the_host_still_needs_stays_loaded() {
    let (dir, kernel) = dual_host();
    let p = dir.path();
    let root = HostRoot::new(p);
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
    let plan = takeover_plan(&root, &[]);
    assert!(plan.modules.is_empty(), "{:?}", plan.modules);
    assert!(plan.helpers.is_empty(), "{:?}", plan.helpers);
    let text = plan.describe(&root).join("\n");
    assert!(
        text.contains("leave bochs loaded: bochs also drives 0000:00:0b.0 (bochs-drm), which the host keeps; 0000:00:0a.0 alone is unbound from it"),
        "{text}"
    );
    let path = p.join("journal");
    let mut j = Journal::open(&path).unwrap();
    release(&host, &mut j, &plan).unwrap();
    for a in [GPU, HDA] {
        vfio::bind(&host, &mut j, a.parse().unwrap(), false).unwrap();
    }
    let display: PciAddress = BOCHS_DISPLAY.parse().unwrap();
    assert_eq!(host.driver_of(display).as_deref(), Some("bochs-drm"));
    assert!(display::module_loaded(&root, "bochs"));
    assert!(p
        .join(format!("sys/bus/pci/devices/{BOCHS_DISPLAY}/drm/card1"))
        .exists());
    let cmds = kernel.commands.borrow().join("\n");
    assert!(!cmds.contains("modprobe -r"), "{cmds}");

    let report = journal::undo_all(&path, &host);
    assert!(report.complete(), "{report:?}");
    assert_eq!(
        host.driver_of(GPU.parse().unwrap()).as_deref(),
        Some("bochs-drm")
    );
    assert_eq!(host.driver_of(display).as_deref(), Some("bochs-drm"));
    assert!(gdm_active(&kernel));
}

/// An explicit list that unloads a module the host still needs is refused
/// before any change, naming the device it would strand.
#[test]
fn an_unload_list_that_strands_a_host_device_is_refused() {
    let dir = Machine::BochsDual.build();
    let root = HostRoot::new(dir.path());
    let t = Takeover {
        display_manager: DisplayManager::Auto,
        stop_units: vec![],
        user_units: vec![],
        stop_processes: vec![],
        unload_modules: UnloadModules::List(vec!["bochs".into()]),
        desktop: Default::default(),
    };
    let mut findings = Vec::new();
    crate::plan::takeover::plan(
        &t,
        &[planned(&root, GPU, true), planned(&root, HDA, false)],
        &root,
        &mut findings,
    );
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = findings[0].to_string();
    assert!(
        f.contains("would unload bochs, which also drives 0000:00:0b.0 (bochs-drm)"),
        "{f}"
    );
    assert_eq!(findings[0].severity, crate::plan::Severity::Error);
}

/// Two NVIDIA cards, the VM takes 01:00.0 (minor 0) and the host keeps
/// 02:00.0 (minor 1), so nvidia stays loaded: nvidia-persistenced
/// (nvidiactl + both cards), a CUDA daemon and a game on the VM's card,
/// and a tool on the host's card only.
fn nvidia_two_cards() -> (TestHost, FakeKernel) {
    use crate::testing::machines::{ids::RTX_3050, NVIDIA_AUDIO, NVIDIA_GPU};
    let other = "0000:02:00.0";
    let info = |minor: u32| format!("Model: RTX 3050\nDevice Minor: {minor}\n");
    let dir = Machine::NvidiaDesktop
        .build()
        .pci(
            Pci::vga(other, RTX_3050)
                .driver("nvidia")
                .group(13)
                .boot_vga(true),
        )
        .module("nvidia", &[])
        .driver_module("nvidia", "nvidia")
        .file(
            &format!("/proc/driver/nvidia/gpus/{NVIDIA_GPU}/information"),
            &info(0),
        )
        .file(
            &format!("/proc/driver/nvidia/gpus/{other}/information"),
            &info(1),
        )
        .process(
            700,
            "nvidia-persistenced",
            &["/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia1"],
        )
        .process(
            710,
            "cudad",
            &["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"],
        )
        .process(
            720,
            "game",
            &["/dev/nvidia0", "/dev/nvidia0", "/dev/nvidiactl"],
        )
        .process(730, "blender", &["/dev/nvidiactl", "/dev/nvidia1"]);
    let kernel = FakeKernel::new(dir.path())
        .native(NVIDIA_GPU, "nvidia")
        .native(other, "nvidia")
        .native(NVIDIA_AUDIO, "snd_hda_intel")
        .driver_module("nvidia", "nvidia");
    kernel.modprobe("vfio-pci").unwrap();
    (dir, kernel)
}

fn nvidia_plan(root: &HostRoot, stop_processes: &[&str]) -> TakeoverPlan {
    use crate::testing::machines::{NVIDIA_AUDIO, NVIDIA_GPU};
    let t = Takeover {
        display_manager: DisplayManager::Auto,
        stop_units: vec![],
        user_units: vec![],
        stop_processes: stop_processes.iter().map(|s| s.to_string()).collect(),
        unload_modules: UnloadModules::Auto,
        desktop: Default::default(),
    };
    plan_without_findings(root, &t, &[NVIDIA_GPU, NVIDIA_AUDIO])
}

#[test]
fn holders_that_are_not_the_desktop_are_refused_by_name_and_pid() {
    let (dir, kernel) = nvidia_two_cards();
    let root = HostRoot::new(dir.path());
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
    let plan = nvidia_plan(&root, &["nvidia-persistenced"]);
    assert!(plan.modules.is_empty(), "{:?}", plan.modules);
    // Each process once, with the VM card's nodes it holds; the tool on
    // the host's card alone is no holder.
    assert_eq!(
        plan.holders,
        [
            "nvidia-persistenced (pid 700, /dev/nvidia0)",
            "cudad (pid 710, /dev/nvidia0)",
            "game (pid 720, /dev/nvidia0)",
        ]
    );
    let path = dir.path().join("journal");
    let mut j = Journal::open(&path).unwrap();
    let err = release(&host, &mut j, &plan).unwrap_err();
    let TakeoverError::Held { holders } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        holders,
        "cudad (pid 710, /dev/nvidia0), game (pid 720, /dev/nvidia0)"
    );
    // Refused before anything is stopped: not even the allowed one.
    assert!(kernel
        .commands
        .borrow()
        .iter()
        .all(|c| !c.starts_with("kill")));
    assert!(journal::read(&path).unwrap().steps.is_empty());
}

#[test]
fn only_the_holders_named_in_stop_processes_are_stopped() {
    let (dir, kernel) = nvidia_two_cards();
    let root = HostRoot::new(dir.path());
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
    let plan = nvidia_plan(&root, &["nvidia-persistenced", "cudad", "game"]);
    let path = dir.path().join("journal");
    let mut j = Journal::open(&path).unwrap();
    release(&host, &mut j, &plan).unwrap();
    let cmds = kernel.commands.borrow().join("\n");
    assert_eq!(
        cmds,
        "kill -SIGTERM 700\nkill -SIGTERM 710\nkill -SIGTERM 720"
    );
    assert!(dir.path().join("proc/730").exists(), "blender must be left");
    assert!(display::module_loaded(&root, "nvidia"));
}

fn restart_takeover() -> Takeover {
    Takeover {
        display_manager: DisplayManager::Unit("gdm.service".into()),
        stop_units: vec![],
        user_units: vec![],
        stop_processes: vec![],
        unload_modules: UnloadModules::Auto,
        desktop: crate::config::Desktop::Restart,
    }
}

fn restart_plan(root: &HostRoot) -> TakeoverPlan {
    plan_without_findings(root, &restart_takeover(), &[GPU, HDA])
}

/// The plan of `t` for the functions `addrs` (the first the VGA), which
/// must find nothing to refuse.
fn plan_without_findings(root: &HostRoot, t: &Takeover, addrs: &[&str]) -> TakeoverPlan {
    let hostdevs: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| planned(root, a, i == 0))
        .collect();
    let mut findings = Vec::new();
    let plan = crate::plan::takeover::plan(t, &hostdevs, root, &mut findings);
    assert!(findings.is_empty(), "{findings:?}");
    plan
}

/// `desktop = "restart"` on the dual host: gdm stops, the VM's GPU goes to
/// vfio-pci, gdm starts again at once (journaled after the binds, so the
/// teardown meets it first and leaves it running); after the VM the GPU
/// is back on bochs-drm and gdm still runs.
#[test]
fn restart_starts_the_desktop_again_after_the_bind_and_leaves_it_running() {
    let (dir, kernel) = dual_host();
    let p = dir.path();
    let root = HostRoot::new(p);
    let host = Host::new(&root, &kernel).with_timings(Timings::NONE);
    let plan = restart_plan(&root);
    assert_eq!(plan.desktop_gpus, ["0000:00:0b.0 (bochs-drm)"]);
    let text = plan.describe(&root).join("\n");
    assert!(
        text.contains("start the display manager again at once (desktop = \"restart\"), on 0000:00:0b.0 (bochs-drm)"),
        "{text}"
    );
    let path = p.join("journal");
    let mut j = Journal::open(&path).unwrap();
    release(&host, &mut j, &plan).unwrap();
    assert!(!gdm_active(&kernel));
    for a in [GPU, HDA] {
        vfio::bind(&host, &mut j, a.parse().unwrap(), false).unwrap();
    }
    display_manager::restart_display_manager(&host, &mut j, &plan).unwrap();
    assert!(gdm_active(&kernel), "the desktop must run during the VM");
    let steps = journal::read(&path).unwrap().steps;
    assert!(
        matches!(steps.last(), Some(Step::RestartDesktop(r)) if r.start == ["systemctl", "start", "gdm.service"]),
        "{steps:?}"
    );

    let report = journal::undo_all(&path, &host);
    assert!(report.complete(), "{report:?}");
    assert!(gdm_active(&kernel));
    assert!(
        report.steps[0].what.contains("is left running"),
        "{report:?}"
    );
    assert_eq!(
        host.driver_of(GPU.parse().unwrap()).as_deref(),
        Some("bochs-drm")
    );
    let cmds = kernel.commands.borrow().join("\n");
    let order = ["systemctl stop gdm.service", "systemctl start gdm.service"];
    let at: Vec<usize> = order.iter().map(|c| cmds.find(c).unwrap()).collect();
    assert!(at[0] < at[1], "{cmds}");
    assert_eq!(
        cmds.matches("systemctl stop gdm.service").count(),
        1,
        "{cmds}"
    );
}

/// `restart` for the host's only GPU is refused before any change.
#[test]
fn restart_of_the_only_gpu_is_refused() {
    let dir = Machine::BochsDesktop.build();
    let root = HostRoot::new(dir.path());
    let t = restart_takeover();
    let mut findings = Vec::new();
    crate::plan::takeover::plan(&t, &[planned(&root, GPU, true)], &root, &mut findings);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].message.contains(
            "needs a GPU the host keeps for the desktop, and 0000:00:0a.0 is the host's only GPU"
        ),
        "{}",
        findings[0]
    );
}

/// The desktop shows on the boot VGA the VM takes (a display connected to
/// it), the other GPU has none connected: refused, naming the connector.
#[test]
fn restart_when_the_desktop_shows_on_the_taken_gpu_is_refused() {
    let dir = Machine::BochsDual
        .build()
        .file(
            &format!("/sys/bus/pci/devices/{GPU}/drm/card0/card0-Virtual-1/status"),
            "connected\n",
        )
        .file(
            &format!("/sys/bus/pci/devices/{BOCHS_DISPLAY}/drm/card1/card1-Virtual-1/status"),
            "disconnected\n",
        );
    let root = HostRoot::new(dir.path());
    let t = restart_takeover();
    let mut findings = Vec::new();
    crate::plan::takeover::plan(&t, &[planned(&root, GPU, true)], &root, &mut findings);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].message.contains("the desktop shows on 0000:00:0a.0 (a display is connected to it (Virtual-1)) and no GPU the host keeps (0000:00:0b.0) has a display connected"),
        "{}",
        findings[0]
    );
    // With a display on the kept GPU too, it may restart there.
    let _dir = dir.file(
        &format!("/sys/bus/pci/devices/{BOCHS_DISPLAY}/drm/card1/card1-Virtual-1/status"),
        "connected\n",
    );
    let mut findings = Vec::new();
    crate::plan::takeover::plan(&t, &[planned(&root, GPU, true)], &root, &mut findings);
    assert!(findings.is_empty(), "{findings:?}");
}
