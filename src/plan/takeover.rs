//! What `[takeover]` means on this host: which display manager, consoles,
//! framebuffer and modules stand between the desktop and the GPU, found by
//! reading the host (never assumed). Plain data: `--dry-run` prints it,
//! `prepare::takeover` acts on it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::hostdev::PlannedHostdev;
use super::module_keep;
use crate::config::{Desktop, DisplayManager, PciAddress, Takeover, UnloadModules};
use crate::host::display::{self, Framebuffer, VtConsole};
use crate::host::{procs, HostRoot};

/// How the display manager is stopped and started again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DmAction {
    /// A systemd unit, and where its name came from.
    Unit { unit: String, why: String },
    /// The configured commands.
    Commands {
        stop: Vec<String>,
        start: Vec<String>,
    },
    /// Nothing to stop, and why.
    None { why: String },
}

/// A GPU function of the VM and the device nodes through which the host
/// uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TakeoverGpu {
    pub address: PciAddress,
    pub driver: Option<String>,
    /// `/dev/dri/cardN`, `/dev/dri/renderDN`, `/dev/nvidiaN`.
    pub nodes: Vec<PathBuf>,
    /// NVIDIA drives it: every `/dev/nvidia*` node counts (nvidiactl and
    /// nvidia-uvm pin the modules too).
    pub nvidia: bool,
}

impl TakeoverGpu {
    pub fn holds(&self, path: &Path) -> bool {
        self.nodes.iter().any(|n| n == path)
            || (self.nvidia && path.to_str().is_some_and(|p| p.starts_with("/dev/nvidia")))
    }
}

/// Everything takeover will do, in order, with what was detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TakeoverPlan {
    pub display_manager: DmAction,
    pub units: Vec<String>,
    pub user_units: Vec<String>,
    pub stop_processes: Vec<String>,
    pub gpus: Vec<TakeoverGpu>,
    /// `comm (pid N, /dev/dri/card0)` for each process holding a GPU now.
    pub holders: Vec<String>,
    /// The vtconsoles bound to a framebuffer, to unbind.
    pub vtconsoles: Vec<VtConsole>,
    /// The firmware framebuffers bound now; those `on_gpu` are unbound.
    pub framebuffers: Vec<Framebuffer>,
    /// Unloaded in this order (each with `modprobe -r`).
    pub modules: Vec<String>,
    /// Modules only those use, which `modprobe -r` takes along.
    pub helpers: Vec<String>,
    /// Where the module list came from.
    pub modules_why: String,
    /// The GPU driver modules left loaded because the host keeps another
    /// device they drive, one line each.
    pub kept: Vec<String>,
    /// `restart`: the display manager starts again once the GPU is bound
    /// to vfio-pci, on `desktop_gpus`.
    pub desktop: Desktop,
    /// The GPUs the host keeps for its desktop, `address (driver)`.
    pub desktop_gpus: Vec<String>,
}

/// Any process whose `comm` matches one of `patterns` (globs).
pub(crate) fn matches_any(patterns: &[String], comm: &str) -> bool {
    patterns.iter().any(|p| {
        // comm is the first 15 bytes of the executable's name.
        let short: String = p.chars().take(15).collect();
        glob::Pattern::new(p).is_ok_and(|g| g.matches(comm))
            || glob::Pattern::new(&short).is_ok_and(|g| g.matches(comm))
    })
}

/// The graphical login session vmrun itself runs in, as `N (wayland)`:
/// `session-N.scope` in `/proc/self/cgroup`, and systemd-logind's
/// `/run/systemd/sessions/N` saying `TYPE=x11` or `TYPE=wayland`.
/// Stopping the display manager ends that session and every process in
/// its scope, vmrun included, half way through the takeover.
pub(crate) fn graphical_session(root: &HostRoot) -> Option<String> {
    let cgroup = std::fs::read_to_string(root.path("/proc/self/cgroup")).ok()?;
    let id = cgroup.lines().find_map(|l| {
        let scope = l.rsplit('/').next()?;
        scope.strip_prefix("session-")?.strip_suffix(".scope")
    })?;
    let info = std::fs::read_to_string(root.path(format!("/run/systemd/sessions/{id}"))).ok()?;
    let kind = info.lines().find_map(|l| l.strip_prefix("TYPE="))?;
    matches!(kind, "x11" | "wayland" | "mir").then(|| format!("{id} ({kind})"))
}

/// The error finding for a takeover started from the desktop it stops.
pub(crate) fn session_finding(root: &HostRoot) -> Option<super::Finding> {
    let session = graphical_session(root)?;
    Some(
        super::Finding::error(
            "takeover",
            format!("vmrun runs inside graphical session {session}: stopping the display manager ends that session and vmrun with it, half way through"),
        )
        .fix("start the VM outside the desktop: `systemctl start vmrun@NAME` (docs/systemd.md), or from a text console or SSH"),
    )
}

/// Plans the takeover of the GPUs among `hostdevs`.
pub(crate) fn plan(
    t: &Takeover,
    hostdevs: &[PlannedHostdev],
    root: &HostRoot,
    findings: &mut Vec<super::Finding>,
) -> TakeoverPlan {
    let display_manager = match &t.display_manager {
        DisplayManager::Auto => match display::display_manager_unit(root) {
            Some(unit) => DmAction::Unit {
                unit,
                why: format!("{} points to it", display::DISPLAY_MANAGER_LINK),
            },
            None => DmAction::None {
                why: format!(
                    "no {} (no display manager enabled)",
                    display::DISPLAY_MANAGER_LINK
                ),
            },
        },
        DisplayManager::Unit(u) => DmAction::Unit {
            unit: u.clone(),
            why: "configured".into(),
        },
        DisplayManager::Commands { stop, start } => DmAction::Commands {
            stop: stop.clone(),
            start: start.clone(),
        },
    };
    let devices: Vec<_> = hostdevs
        .iter()
        .filter_map(|h| h.device.as_ref())
        .filter(|d| d.is_display())
        .collect();
    let mut gpus: Vec<TakeoverGpu> = devices
        .iter()
        .map(|d| {
            let nodes = procs::GpuNodes::of(root, d);
            TakeoverGpu {
                address: d.address,
                driver: d.driver.clone(),
                nodes: nodes.exact,
                nvidia: d.driver.as_deref() == Some("nvidia") || nodes.any_nvidia,
            }
        })
        .collect();
    let vtconsoles = display::vtconsoles(root)
        .into_iter()
        .filter(|v| v.bound && v.on_framebuffer())
        .collect();
    let framebuffers = devices
        .iter()
        .flat_map(|d| display::framebuffers(root, d.address, d.boot_vga == Some(true)))
        .fold(Vec::<Framebuffer>::new(), |mut acc, fb| {
            match acc.iter_mut().find(|f| f.device == fb.device) {
                Some(f) if !f.on_gpu && fb.on_gpu => *f = fb,
                Some(_) => {}
                None => acc.push(fb),
            }
            acc
        });
    let passed: Vec<PciAddress> = hostdevs.iter().map(|h| h.address).collect();
    let (modules, modules_why, kept) = match &t.unload_modules {
        UnloadModules::List(list) => (list.clone(), "configured".to_string(), Vec::new()),
        UnloadModules::Auto => module_keep::auto(root, &devices, &passed),
    };
    let loaded: Vec<String> = modules
        .iter()
        .filter(|m| display::module_loaded(root, m))
        .cloned()
        .collect();
    let helpers = display::unused_after(root, &loaded);
    for g in &mut gpus {
        // With its module staying loaded, unbinding one NVIDIA GPU waits
        // only for the opens of that GPU (nv_pci_remove waits on the
        // device's usage count: its /dev/nvidiaN and DRM nodes), not for
        // every /dev/nvidia* user; with the minor unknown, any may be it.
        let stays = display::driver_module(root, g.address).is_some_and(|m| !modules.contains(&m));
        let minor_known = g
            .nodes
            .iter()
            .any(|n| n.to_string_lossy().starts_with("/dev/nvidia"));
        if stays && minor_known {
            g.nvidia = false;
        }
    }
    let scan = procs::holders(root, |p| gpus.iter().any(|g| g.holds(p)));
    let holders = procs::by_process(&scan.holders);
    if t.desktop == Desktop::Restart {
        super::desktop_restart::check(root, hostdevs, &display_manager, findings);
    }
    if matches!(t.unload_modules, UnloadModules::List(_)) {
        let all: Vec<String> = loaded.iter().chain(&helpers).cloned().collect();
        module_keep::refuse_stranding(root, &all, &passed, findings);
    }
    TakeoverPlan {
        display_manager,
        units: t.stop_units.clone(),
        user_units: t.user_units.clone(),
        stop_processes: t.stop_processes.clone(),
        gpus,
        holders,
        vtconsoles,
        framebuffers,
        modules,
        helpers,
        modules_why,
        kept,
        desktop: t.desktop,
        desktop_gpus: super::desktop_restart::kept_gpus(root, hostdevs)
            .iter()
            .map(|d| {
                format!(
                    "{} ({})",
                    d.address,
                    d.driver.as_deref().unwrap_or_default()
                )
            })
            .collect(),
    }
}

impl TakeoverPlan {
    /// The steps, in order, one line each, for `--dry-run`.
    pub fn describe(&self, root: &HostRoot) -> Vec<String> {
        let mut out = Vec::new();
        out.push(match &self.display_manager {
            DmAction::Unit { unit, why } => {
                format!("stop the display manager {unit} ({why}), wait until it is gone")
            }
            DmAction::Commands { stop, start } => format!(
                "stop the display manager with `{}` (started again with `{}`)",
                stop.join(" "),
                if start.is_empty() {
                    "nothing".to_string()
                } else {
                    start.join(" ")
                }
            ),
            DmAction::None { why } => format!("no display manager to stop: {why}"),
        });
        for u in &self.units {
            out.push(format!("stop unit {u} if active"));
        }
        for u in &self.user_units {
            out.push(format!("stop the active user units matching {u}"));
        }
        let gpus: Vec<String> = self
            .gpus
            .iter()
            .map(|g| {
                let mut nodes: Vec<String> =
                    g.nodes.iter().map(|n| n.display().to_string()).collect();
                if g.nvidia {
                    nodes.push("/dev/nvidia*".into());
                }
                format!(
                    "{} ({})",
                    g.address,
                    if nodes.is_empty() {
                        "no device nodes".into()
                    } else {
                        nodes.join(", ")
                    }
                )
            })
            .collect();
        if gpus.is_empty() {
            out.push("no display device of the VM is on this host: nothing holds it".into());
        } else {
            out.push(format!(
                "wait for the GPU's holders to go: {}; holding now: {}",
                gpus.join(", "),
                if self.holders.is_empty() {
                    "none".into()
                } else {
                    self.holders.join(", ")
                }
            ));
        }
        out.push(if self.stop_processes.is_empty() {
            "refuse (and undo) if any process still holds it".into()
        } else {
            format!(
                "stop those still holding it named {}; refuse (and undo) for any other",
                self.stop_processes.join(", ")
            )
        });
        if self.vtconsoles.is_empty() {
            out.push("no vtconsole is bound to a framebuffer".into());
        }
        for v in &self.vtconsoles {
            out.push(format!("unbind vtcon{} ({})", v.index, v.name));
        }
        if self.framebuffers.iter().all(|f| !f.on_gpu) {
            out.push("no firmware framebuffer on the GPU".into());
        }
        for f in &self.framebuffers {
            out.push(match f.on_gpu {
                true => format!(
                    "unbind {} from {} ({}: {})",
                    f.device, f.driver, f.kind, f.why
                ),
                false => format!("leave {} ({}): {}", f.device, f.kind, f.why),
            });
        }
        out.extend(self.kept.iter().cloned());
        if self.modules.is_empty() {
            out.push(format!("no module to unload ({})", self.modules_why));
        }
        for m in &self.modules {
            let state = if display::module_loaded(root, m) {
                ""
            } else {
                " (not loaded now)"
            };
            out.push(format!("modprobe -r {m}{state}"));
        }
        if !self.modules.is_empty() {
            out.push(format!("  order: {}", self.modules_why));
        }
        if !self.helpers.is_empty() {
            out.push(format!(
                "  which also unloads the now-unused {}",
                self.helpers.join(", ")
            ));
        }
        out.push("then bind to vfio-pci".into());
        if self.desktop == Desktop::Restart {
            out.push(format!(
                "start the display manager again at once (desktop = \"restart\"), on {}",
                if self.desktop_gpus.is_empty() {
                    "no GPU: refused".to_string()
                } else {
                    self.desktop_gpus.join(", ")
                }
            ));
            out.push("after the VM, all of it in reverse; the desktop keeps running".into());
        } else {
            out.push("after the VM, all of it in reverse".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::machines::BOCHS_GPU as GPU;
    use crate::testing::machines::{NVIDIA_AUDIO, NVIDIA_GPU};
    use crate::testing::{Machine, Pci, TestHost};

    fn planned(root: &HostRoot, addr: &str) -> PlannedHostdev {
        crate::plan::hostdev::fake::planned(root, addr, true)
    }

    fn takeover(dm: DisplayManager) -> Takeover {
        Takeover {
            display_manager: dm,
            stop_units: vec![],
            user_units: vec![],
            stop_processes: vec!["gpuhold".into()],
            unload_modules: UnloadModules::Auto,
            desktop: Default::default(),
        }
    }

    /// The lab's bochs case, with Xorg holding card0.
    fn bochs_host() -> TestHost {
        Machine::BochsDesktop
            .build()
            .process(400, "Xorg", &["/dev/dri/card0"])
    }

    #[test]
    fn bochs_host_plans_every_step() {
        let host = bochs_host();
        let root = host.root();
        let t = plan(
            &takeover(DisplayManager::Auto),
            &[planned(&root, GPU)],
            &root,
            &mut Vec::new(),
        );
        assert!(matches!(t.display_manager, DmAction::None { .. }));
        assert_eq!(t.holders, ["Xorg (pid 400, /dev/dri/card0)"]);
        assert_eq!(
            t.vtconsoles.iter().map(|v| v.index).collect::<Vec<_>>(),
            [1]
        );
        assert!(t.framebuffers.is_empty());
        assert_eq!(t.modules, ["bochs"]);
        assert_eq!(t.helpers, ["drm_kms_helper", "drm"]);
        let text = t.describe(&root).join("\n");
        for want in [
            "unbind vtcon1",
            "modprobe -r bochs",
            "Xorg (pid 400",
            "gpuhold",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
    }

    /// `auto` on two GPUs sharing one driver module: the module stays for
    /// the GPU the host keeps, an explicit list naming it is refused.
    fn shared_module(host: TestHost, gpu: &str, module: &str, other: &str) {
        let root = host.root();
        let hostdevs = [planned(&root, gpu)];
        let mut findings = Vec::new();
        let t = plan(
            &takeover(DisplayManager::Auto),
            &hostdevs,
            &root,
            &mut findings,
        );
        assert!(findings.is_empty(), "{findings:?}");
        assert!(t.modules.is_empty(), "{:?}", t.modules);
        assert!(
            t.kept[0].contains(&format!("leave {module} loaded")),
            "{:?}",
            t.kept
        );
        assert!(t.kept[0].contains(other), "{:?}", t.kept);
        let mut list = takeover(DisplayManager::Auto);
        list.unload_modules = UnloadModules::List(vec![module.into()]);
        plan(&list, &hostdevs, &root, &mut findings);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].message.contains(other), "{}", findings[0]);
    }

    #[test]
    fn amdgpu_driving_the_host_gpu_too_stays_loaded() {
        let host = Machine::AmdTwoGpus
            .build()
            .module("amdgpu", &[])
            .driver_module("amdgpu", "amdgpu");
        shared_module(host, "0000:0b:00.0", "amdgpu", "0000:0a:00.0 (amdgpu)");
    }

    #[test]
    fn nvidia_driving_a_second_card_stays_loaded_with_its_holders() {
        let host = Machine::NvidiaDesktop
            .build()
            .pci(
                Pci::vga("0000:02:00.0", crate::testing::machines::ids::RTX_3050)
                    .driver("nvidia")
                    .group(13)
                    .boot_vga(true),
            )
            .module("nvidia", &["nvidia_modeset", "nvidia_uvm"])
            .module("nvidia_modeset", &["nvidia_drm"])
            .module("nvidia_uvm", &[])
            .module("nvidia_drm", &[])
            .driver_module("nvidia", "nvidia");
        shared_module(host, NVIDIA_GPU, "nvidia", "0000:02:00.0 (nvidia)");
    }

    /// The same modules on one NVIDIA card: unloaded in holder order.
    #[test]
    fn nvidia_modules_of_a_single_card_unload_in_holder_order() {
        let host = Machine::NvidiaDesktop
            .build()
            .module("nvidia", &["nvidia_modeset", "nvidia_uvm"])
            .module("nvidia_modeset", &["nvidia_drm"])
            .module("nvidia_uvm", &[])
            .module("nvidia_drm", &[])
            .driver_module("nvidia", "nvidia");
        let root = host.root();
        let mut findings = Vec::new();
        let t = plan(
            &takeover(DisplayManager::Auto),
            &[planned(&root, NVIDIA_GPU), planned(&root, NVIDIA_AUDIO)],
            &root,
            &mut findings,
        );
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(
            t.modules,
            ["nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia"]
        );
        assert!(t.kept.is_empty());
    }

    #[test]
    fn a_start_from_inside_a_graphical_session_is_refused() {
        let host = TestHost::new()
            .file(
                "/proc/self/cgroup",
                "0::/user.slice/user-1000.slice/session-3.scope\n",
            )
            .file(
                "/run/systemd/sessions/3",
                "UID=1000\nTYPE=wayland\nCLASS=user\n",
            );
        let root = host.root();
        let f = session_finding(&root).expect("refused");
        assert!(f.to_string().contains("session 3 (wayland)"), "{f}");
        // An SSH or text-console login is a tty session: stopping the
        // display manager leaves it alone.
        let host = host.file("/run/systemd/sessions/3", "UID=1000\nTYPE=tty\n");
        assert!(session_finding(&root).is_none());
        let _host = host.file(
            "/proc/self/cgroup",
            "0::/system.slice/system-vmrun.slice/vmrun@win11.service\n",
        );
        assert!(graphical_session(&root).is_none());
    }

    #[test]
    fn an_nvidia_gpu_counts_every_nvidia_node() {
        let g = TakeoverGpu {
            address: GPU.parse().unwrap(),
            driver: Some("nvidia".into()),
            nodes: vec![],
            nvidia: true,
        };
        assert!(g.holds(Path::new("/dev/nvidiactl")));
        assert!(g.holds(Path::new("/dev/nvidia-uvm")));
        assert!(!g.holds(Path::new("/dev/dri/card1")));
    }

    #[test]
    fn process_names_match_globs_and_the_15_byte_comm() {
        let p = vec!["nvidia-persistenced".to_string(), "sun*".to_string()];
        assert!(matches_any(&p, "nvidia-persiste"));
        assert!(matches_any(&p, "sunshine"));
        assert!(!matches_any(&p, "Xorg"));
    }
}
