//! The host's display stack on a GPU, read-only: the display manager, the
//! vtconsoles bound to a framebuffer, the firmware framebuffer sitting on
//! the GPU, and the GPU driver's modules in the order they unload. What
//! `[takeover]` stops, found instead of hardcoded (`vtcon1`,
//! `efi-framebuffer.0`).

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::HostRoot;
use crate::config::PciAddress;

/// systemd's alias for the enabled display manager (`systemctl enable gdm`
/// links it to `gdm.service`).
pub(crate) const DISPLAY_MANAGER_LINK: &str = "/etc/systemd/system/display-manager.service";

/// The display manager unit `display-manager.service` points to.
pub(crate) fn display_manager_unit(root: &HostRoot) -> Option<String> {
    let target = fs::read_link(root.path(DISPLAY_MANAGER_LINK)).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// A virtual console driver slot, `/sys/class/vtconsole/vtconN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VtConsole {
    pub index: u32,
    /// Its `name`, e.g. `(M) frame buffer device` for fbcon.
    pub name: String,
    pub bound: bool,
}

impl VtConsole {
    /// fbcon names itself "frame buffer device" (drivers/video/fbdev/core/
    /// fbcon.c `fbcon_startup`); the VGA text console and the dummy console
    /// hold no framebuffer.
    pub fn on_framebuffer(&self) -> bool {
        self.name.contains("frame buffer")
    }
}

/// Every vtconsole, in index order.
pub(crate) fn vtconsoles(root: &HostRoot) -> Vec<VtConsole> {
    let dir = root.path("/sys/class/vtconsole");
    let mut out: Vec<VtConsole> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let index = name.strip_prefix("vtcon")?.parse().ok()?;
            let read = |f: &str| fs::read_to_string(e.path().join(f)).ok();
            Some(VtConsole {
                index,
                name: read("name")?.trim().to_string(),
                bound: read("bind").is_some_and(|b| b.trim() == "1"),
            })
        })
        .collect();
    out.sort_by_key(|v| v.index);
    out
}

/// The platform drivers of firmware framebuffers. simpledrm registers as
/// `simple-framebuffer` too (drivers/gpu/drm/tiny/simpledrm.c).
pub(crate) const FRAMEBUFFER_DRIVERS: [&str; 3] =
    ["efi-framebuffer", "simple-framebuffer", "vesa-framebuffer"];

/// The names firmware framebuffers give their memory in `/proc/iomem`
/// (efifb.c and vesafb.c `request_mem_region`, sysfb_simplefb.c `BOOTFB`).
const IOMEM_NAMES: [&str; 5] = ["efifb", "vesafb", "BOOTFB", "simplefb", "simpledrm"];

/// A firmware framebuffer device bound to its platform driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Framebuffer {
    /// The platform driver, one of `FRAMEBUFFER_DRIVERS`.
    pub driver: String,
    /// The platform device, e.g. `efi-framebuffer.0`.
    pub device: String,
    /// What kind it is (`efifb`, `simpledrm`, `simplefb`, `vesafb`).
    pub kind: String,
    /// Why it is taken to sit on the GPU (or not).
    pub why: String,
    pub on_gpu: bool,
}

fn driver_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_symlink()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "module")
        .collect();
    names.sort();
    names
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// The memory BARs of a PCI device: `(start, end)` from its `resource`
/// file, one `start end flags` line per BAR (drivers/pci/pci-sysfs.c).
pub(crate) fn memory_bars(root: &HostRoot, address: PciAddress) -> Vec<(usize, u64, u64)> {
    let text = fs::read_to_string(root.pci_device(&address).join("resource")).unwrap_or_default();
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let mut f = l.split_whitespace().map(parse_hex);
            let (start, end) = (f.next()??, f.next()??);
            (end > start && start != 0).then_some((i, start, end))
        })
        .collect()
}

/// Start addresses of the framebuffer regions in `/proc/iomem` (all zero
/// when read without CAP_SYS_ADMIN, and then useless).
fn iomem_framebuffers(root: &HostRoot) -> Vec<u64> {
    let text = fs::read_to_string(root.path("/proc/iomem")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (range, name) = l.trim().split_once(" : ")?;
            IOMEM_NAMES.contains(&name.trim()).then_some(())?;
            parse_hex(range.split('-').next()?)
        })
        .filter(|&a| a != 0)
        .collect()
}

fn kind_of(root: &HostRoot, driver: &str) -> &'static str {
    match driver {
        "efi-framebuffer" => "efifb",
        "vesa-framebuffer" => "vesafb",
        _ if root.path("/sys/module/simpledrm").exists() => "simpledrm",
        _ => "simplefb",
    }
}

/// The firmware framebuffers bound now, each matched to `gpu` by its
/// memory: efifb's `base` attribute or the framebuffer's region in
/// `/proc/iomem`, against the GPU's BARs. When the address can't be read,
/// a framebuffer counts as the boot VGA's (the firmware draws on that one).
pub(crate) fn framebuffers(root: &HostRoot, gpu: PciAddress, boot_vga: bool) -> Vec<Framebuffer> {
    let bars = memory_bars(root, gpu);
    let regions = iomem_framebuffers(root);
    let mut out = Vec::new();
    for driver in FRAMEBUFFER_DRIVERS {
        let dir = root.path(format!("/sys/bus/platform/drivers/{driver}"));
        for device in driver_entries(&dir) {
            let base = fs::read_to_string(dir.join(&device).join("base"))
                .ok()
                .and_then(|b| parse_hex(&b))
                .filter(|&b| b != 0);
            let addresses: Vec<u64> = base.map_or_else(|| regions.clone(), |b| vec![b]);
            let hit = addresses.iter().find_map(|&a| {
                bars.iter()
                    .find(|(_, s, e)| (*s..=*e).contains(&a))
                    .map(|(bar, _, _)| (a, *bar))
            });
            let (on_gpu, why) = match hit {
                Some((a, bar)) => (
                    true,
                    format!("its memory at {a:#x} is in {gpu}'s BAR {bar}"),
                ),
                None if addresses.is_empty() || bars.is_empty() => (
                    boot_vga,
                    format!(
                        "its memory address is unreadable; {gpu} {} the boot VGA",
                        if boot_vga { "is" } else { "is not" }
                    ),
                ),
                None => (false, format!("its memory is outside {gpu}'s BARs")),
            };
            out.push(Framebuffer {
                driver: driver.to_string(),
                kind: kind_of(root, driver).to_string(),
                device,
                why,
                on_gpu,
            });
        }
    }
    out
}

/// The connectors of `address`'s DRM card that have a display connected:
/// `/sys/bus/pci/devices/ADDR/drm/cardN/cardN-NAME/status` reads
/// `connected` (drivers/gpu/drm/drm_sysfs.c `status_show`), as `NAME`.
pub(crate) fn connected_outputs(root: &HostRoot, address: PciAddress) -> Vec<String> {
    let mut out = Vec::new();
    let drm = root.pci_device(&address).join("drm");
    for card in fs::read_dir(drm).into_iter().flatten().flatten() {
        let card_name = card.file_name().to_string_lossy().into_owned();
        if !card_name.starts_with("card") {
            continue;
        }
        for conn in fs::read_dir(card.path()).into_iter().flatten().flatten() {
            let name = conn.file_name().to_string_lossy().into_owned();
            let Some(output) = name.strip_prefix(&format!("{card_name}-")) else {
                continue;
            };
            let status = fs::read_to_string(conn.path().join("status")).unwrap_or_default();
            if status.trim() == "connected" {
                out.push(output.to_string());
            }
        }
    }
    out.sort();
    out
}

/// The kernel module behind a device's driver (`driver/module`), if it is
/// a module and not built in.
pub(crate) fn driver_module(root: &HostRoot, address: PciAddress) -> Option<String> {
    let link = fs::read_link(root.pci_device(&address).join("driver/module")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Whether `name` is a loaded module (built-in ones have no `refcnt`).
pub(crate) fn module_loaded(root: &HostRoot, name: &str) -> bool {
    root.path(format!("/sys/module/{name}/refcnt")).exists()
}

/// A device bound now to a driver of some module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct DrivenDevice {
    /// Its name on its bus: `0000:00:0b.0`, `virtio1`.
    pub device: String,
    pub driver: String,
}

impl std::fmt::Display for DrivenDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.device, self.driver)
    }
}

/// The devices the drivers of module `name` are bound to now, sorted. The
/// driver core links each driver a module registers as
/// `/sys/module/NAME/drivers/BUS:DRIVER`, and each driver's directory links
/// its bound devices by name (drivers/base/bus.c, module.c); PCI devices
/// are read from their side too (`driver/module`), which needs no driver
/// directory listing.
pub(crate) fn module_devices(root: &HostRoot, name: &str) -> Vec<DrivenDevice> {
    let mut out = Vec::new();
    let drivers = root.path(format!("/sys/module/{name}/drivers"));
    for entry in fs::read_dir(drivers).into_iter().flatten().flatten() {
        let link = entry.file_name().to_string_lossy().into_owned();
        let driver = link.split_once(':').map_or(link.as_str(), |(_, d)| d);
        for device in driver_entries(&entry.path()) {
            out.push(DrivenDevice {
                device,
                driver: driver.to_string(),
            });
        }
    }
    let devices = root.path("/sys/bus/pci/devices");
    for entry in fs::read_dir(devices).into_iter().flatten().flatten() {
        let module = fs::read_link(entry.path().join("driver/module")).ok();
        if module.as_deref().and_then(Path::file_name) != Some(std::ffi::OsStr::new(name)) {
            continue;
        }
        let Ok(driver) = fs::read_link(entry.path().join("driver")) else {
            continue;
        };
        out.push(DrivenDevice {
            device: entry.file_name().to_string_lossy().into_owned(),
            driver: driver
                .file_name()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
    }
    out.sort();
    out.dedup();
    out
}

/// The modules using `name` (`/sys/module/NAME/holders`), sorted.
pub(crate) fn module_holders(root: &HostRoot, name: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(root.path(format!("/sys/module/{name}/holders")))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// `module` and everything stacked on it, in an order that unloads: each
/// module after every module holding it (nvidia_drm before nvidia_modeset
/// before nvidia). Modules are named as in /sys/module (underscores).
pub(crate) fn unload_order(root: &HostRoot, module: &str) -> Vec<String> {
    fn visit(root: &HostRoot, m: &str, out: &mut Vec<String>, depth: usize) {
        if out.iter().any(|o| o == m) || depth > 32 {
            return;
        }
        for h in module_holders(root, m) {
            visit(root, &h, out, depth + 1);
        }
        if !out.iter().any(|o| o == m) {
            out.push(m.to_string());
        }
    }
    let mut out = Vec::new();
    visit(root, module, &mut out, 0);
    out
}

/// The modules that only `removed` use, which `modprobe -r` takes along
/// (bochs's drm_vram_helper, ttm, drm_kms_helper, drm), in removal order.
pub(crate) fn unused_after(root: &HostRoot, removed: &[String]) -> Vec<String> {
    let mut gone: Vec<String> = removed.to_vec();
    let mut helpers = Vec::new();
    let all: Vec<String> = fs::read_dir(root.path("/sys/module"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|m| module_loaded(root, m))
        .collect();
    loop {
        let next = all.iter().find(|m| {
            let holders = module_holders(root, m);
            !gone.contains(m)
                && !holders.is_empty()
                && holders.iter().all(|h| gone.contains(h))
                && holders
                    .iter()
                    .any(|h| removed.contains(h) || helpers.contains(h))
        });
        match next {
            Some(m) => {
                gone.push(m.clone());
                helpers.push(m.clone());
            }
            None => return helpers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::machines::{ids::RTX_3050, BOCHS_GPU};
    use crate::testing::{Machine, Pci, TestHost};

    const GPU: &str = "0000:01:00.0";

    /// An unbound RTX 3050 whose BAR 2 is at 0xe000000000.
    fn gpu_host() -> TestHost {
        TestHost::new().pci(Pci::vga(GPU, RTX_3050).group(1).attr(
            "resource",
            "0x00000000f6000000 0x00000000f6ffffff 0x0000000000040200\n0x0000000000000000 0x0000000000000000 0x0000000000000000\n0x000000e000000000 0x000000efffffffff 0x000000000014220c",
        ))
    }

    #[test]
    fn display_manager_comes_from_the_systemd_alias() {
        let host = TestHost::new();
        let root = host.root();
        assert_eq!(display_manager_unit(&root), None);
        let link = root.path(DISPLAY_MANAGER_LINK);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/usr/lib/systemd/system/sddm.service", &link).unwrap();
        assert_eq!(display_manager_unit(&root).as_deref(), Some("sddm.service"));
    }

    #[test]
    fn only_bound_fbcon_consoles_sit_on_a_framebuffer() {
        let host = TestHost::new()
            .vtcon(0, "(S) dummy device", false)
            .vtcon(1, "(M) frame buffer device", true)
            .vtcon(2, "(S) VGA+", true);
        let v = vtconsoles(&host.root());
        let fb: Vec<u32> = v
            .iter()
            .filter(|c| c.bound && c.on_framebuffer())
            .map(|c| c.index)
            .collect();
        assert_eq!(fb, [1]);
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn efifb_is_matched_to_the_gpu_by_its_base_address() {
        let host =
            gpu_host().framebuffer("efi-framebuffer", "efi-framebuffer.0", Some(0xe000000000));
        let fbs = framebuffers(&host.root(), GPU.parse().unwrap(), false);
        assert_eq!(fbs.len(), 1);
        assert!(fbs[0].on_gpu, "{fbs:?}");
        assert_eq!(fbs[0].kind, "efifb");
        assert!(fbs[0].why.contains("BAR 2"), "{}", fbs[0].why);
    }

    #[test]
    fn a_simple_framebuffer_elsewhere_is_not_the_gpus() {
        let host = gpu_host()
            .framebuffer("simple-framebuffer", "simple-framebuffer.0", None)
            .module("simpledrm", &[])
            .file(
                "/proc/iomem",
                "c0000000-febfffff : PCI Bus 0000:00\n  c0000000-c0ffffff : 0000:00:02.0\n    c0000000-c03e7fff : BOOTFB\n",
            );
        let fbs = framebuffers(&host.root(), GPU.parse().unwrap(), true);
        assert_eq!(fbs[0].kind, "simpledrm");
        assert!(!fbs[0].on_gpu, "{fbs:?}");
    }

    #[test]
    fn vesafb_without_a_readable_address_goes_with_the_boot_vga() {
        let host = gpu_host()
            .framebuffer("vesa-framebuffer", "vesa-framebuffer.0", None)
            // Without CAP_SYS_ADMIN /proc/iomem shows zeros.
            .file("/proc/iomem", "00000000-00000000 : vesafb\n");
        let root = host.root();
        let fbs = framebuffers(&root, GPU.parse().unwrap(), true);
        assert_eq!((fbs[0].kind.as_str(), fbs[0].on_gpu), ("vesafb", true));
        assert!(!framebuffers(&root, GPU.parse().unwrap(), false)[0].on_gpu);
    }

    #[test]
    fn nvidia_modules_unload_holders_first() {
        let host = TestHost::new()
            .module("nvidia", &["nvidia_modeset", "nvidia_uvm"])
            .module("nvidia_modeset", &["nvidia_drm"])
            .module("nvidia_uvm", &[])
            .module("nvidia_drm", &[])
            .module("drm", &["nvidia_drm", "drm_kms_helper"]);
        let root = host.root();
        assert_eq!(
            unload_order(&root, "nvidia"),
            ["nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia"]
        );
        // drm is still used by drm_kms_helper, which stays.
        assert!(unused_after(&root, &unload_order(&root, "nvidia")).is_empty());
    }

    #[test]
    fn bochs_takes_its_now_unused_helpers_along() {
        let host = TestHost::new()
            .module("bochs", &[])
            .module("drm_vram_helper", &["bochs"])
            .module("drm_ttm_helper", &["bochs", "drm_vram_helper"])
            .module("ttm", &["drm_ttm_helper", "drm_vram_helper"])
            .module("drm_kms_helper", &["bochs", "drm_vram_helper"])
            .module(
                "drm",
                &[
                    "bochs",
                    "drm_kms_helper",
                    "drm_ttm_helper",
                    "drm_vram_helper",
                    "ttm",
                ],
            )
            .module("9pnet", &["9p"]);
        let root = host.root();
        let order = unload_order(&root, "bochs");
        assert_eq!(order, ["bochs"]);
        let mut helpers = unused_after(&root, &order);
        assert_eq!(helpers.last().map(String::as_str), Some("drm"));
        helpers.sort();
        assert_eq!(
            helpers,
            [
                "drm",
                "drm_kms_helper",
                "drm_ttm_helper",
                "drm_vram_helper",
                "ttm"
            ]
        );
    }

    #[test]
    fn the_driver_module_comes_from_the_driver_link() {
        let host = Machine::BochsDesktop.build();
        let root = host.root();
        assert_eq!(
            driver_module(&root, BOCHS_GPU.parse().unwrap()).as_deref(),
            Some("bochs")
        );
        assert!(module_loaded(&root, "bochs"));
    }
}
