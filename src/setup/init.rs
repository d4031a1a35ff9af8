//! `vmrun init`: a first, commented `vms/NAME.toml` for this host: the GPU
//! with every other member of its IOMMU group, a CPU topology that mirrors
//! the host's and leaves it cores, half the RAM, UEFI with Secure Boot and
//! a TPM for Windows, the keyboard and mouse found in /dev/input/by-id,
//! and `[takeover]` when the GPU is the host's boot GPU. Pure apart from
//! reading the host; the result always passes the config validator.

use std::fmt::Write as _;
use std::fs;

use crate::config::{ByteSize, PciAddress, VmName};
use crate::host::cpu::{self, CpuVendor};
use crate::host::pci::{self, PciDevice};
use crate::host::{iommu, HostRoot};

/// What kind of guest the file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Template {
    Windows,
    Linux,
    Headless,
}

/// Which GPU the VM gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GpuChoice {
    None,
    /// A secondary GPU if there is one, else the only one (with takeover).
    Auto,
    Address(PciAddress),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InitError {
    #[error("no GPU (display controller) on this host's PCI bus: use --template headless, or --gpu ADDRESS")]
    NoGpu,
    #[error("{0} is not on this host (`vmrun devices` lists what is)")]
    NoSuchDevice(PciAddress),
    #[error("{address} is a {class}, not a GPU (`vmrun devices` marks the GPUs)")]
    NotAGpu {
        address: PciAddress,
        class: &'static str,
    },
}

/// Picks the GPU for `choice`: `None` for no GPU.
pub(crate) fn pick_gpu(root: &HostRoot, choice: GpuChoice) -> Result<Option<PciDevice>, InitError> {
    match choice {
        GpuChoice::None => Ok(None),
        GpuChoice::Address(a) => {
            let dev = pci::read_device(root, a).ok_or(InitError::NoSuchDevice(a))?;
            if dev.is_display() {
                Ok(Some(dev))
            } else {
                Err(InitError::NotAGpu {
                    address: a,
                    class: pci::class_name(dev.class),
                })
            }
        }
        GpuChoice::Auto => {
            let gpus: Vec<PciDevice> = pci::list_devices(root)
                .into_iter()
                .filter(PciDevice::is_display)
                .collect();
            // A GPU the host doesn't boot on can go without stopping the desktop.
            let secondary = gpus.iter().find(|g| g.boot_vga != Some(true));
            secondary
                .or(gpus.first())
                .cloned()
                .map(Some)
                .ok_or(InitError::NoGpu)
        }
    }
}

/// The functions that go with `gpu`: its IOMMU group without bridges
/// (the kernel hands out whole groups), or its slot when the IOMMU is off.
pub(crate) fn gpu_functions(root: &HostRoot, gpu: &PciDevice) -> Vec<PciDevice> {
    let addresses = match gpu.iommu_group {
        Some(g) => iommu::group_members(root, g),
        None => pci::list_devices(root)
            .into_iter()
            .filter(|d| d.address.slot_key() == gpu.address.slot_key())
            .map(|d| d.address)
            .collect(),
    };
    addresses
        .into_iter()
        .filter_map(|a| pci::read_device(root, a))
        .filter(|d| !d.is_bridge())
        .collect()
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The first `/dev/input/by-id` entry ending in `suffix`, as a host path.
fn input_device(root: &HostRoot, suffix: &str) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(root.path("/dev/input/by-id"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .map(|n| format!("/dev/input/by-id/{n}"))
}

/// The config text for `name` on this host.
pub(crate) fn generate(
    root: &HostRoot,
    name: &VmName,
    template: Template,
    gpu: GpuChoice,
) -> Result<String, InitError> {
    let gpu = pick_gpu(root, gpu)?;
    let cpu = cpu::cpu_info(root);
    let mut t = String::new();
    let kind = match template {
        Template::Windows => "Windows",
        Template::Linux => "Linux",
        Template::Headless => "Headless Linux",
    };
    let _ = writeln!(
        t,
        "# Written by `vmrun init {name}` for this host. Check it with `vmrun check {name}`,"
    );
    let _ = writeln!(t, "# see the command line with `vmrun start {name} --dry-run`; every key is in docs/config.md.");
    let desc = match &gpu {
        Some(g) => format!("{kind} VM with the GPU at {}", g.address),
        None => format!("{kind} VM"),
    };
    let _ = writeln!(t, "description = {}", quoted(&desc));
    memory(&mut t, root, template);
    cpu_section(&mut t, cpu.as_ref(), template, gpu.is_some());
    if template == Template::Windows {
        t.push_str("\n[firmware]\ntype = \"uefi\"\nsecure_boot = true       # Windows 11: Secure Boot with Microsoft keys enrolled\n");
        t.push_str("\n[tpm]\nenabled = true           # Windows 11 wants TPM 2.0 (needs swtpm)\n");
    } else {
        t.push_str("\n[firmware]\ntype = \"uefi\"            # OVMF; secure_boot = true needs a signed boot loader\n");
    }
    if let Some(g) = &gpu {
        hostdevs(&mut t, root, g);
    }
    disks(&mut t, name, template);
    let forward = match template {
        Template::Windows => "forward = [\"tcp:3389:3389\"]   # RDP",
        _ => "forward = [\"tcp:2222:22\"]     # ssh -p 2222 localhost",
    };
    let _ = writeln!(t, "\n[network]\nmode = \"user\"\n{forward}");
    match (&gpu, template) {
        (Some(_), _) => t.push_str(
            "\n[display]\nmode = \"none\"           # the passed GPU drives the monitor\n",
        ),
        (None, Template::Windows) => t.push_str("\n[display]\nmode = \"gtk\"\n"),
        (None, _) => t.push_str("\n[display]\nmode = \"serial\"         # `vmrun console NAME`\n"),
    }
    if gpu.is_some() {
        input(&mut t, root);
    }
    if let Some(g) = gpu.as_ref().filter(|g| g.boot_vga == Some(true)) {
        let _ = writeln!(
            t,
            "\n# {} is the GPU the host boots on: vmrun stops the display manager, frees",
            g.address
        );
        t.push_str(
            "# the consoles and framebuffer and unloads its driver for the VM, and brings\n",
        );
        t.push_str("# the desktop back after. If it ever can't: `vmrun restore NAME` from SSH.\n");
        t.push_str("[takeover]\nenabled = true\ndisplay_manager = \"auto\"\n");
    }
    // Written out, so the guest keeps its identity (Windows activation
    // keys on it) if the file moves to another host or machine-id changes.
    let uuid = crate::plan::uuid::vm_uuid(root, name.as_str(), &mut Vec::new());
    let _ = writeln!(
        t,
        "\n[smbios]\nuuid = \"{uuid}\"   # the guest's system UUID; keep it for Windows activation"
    );
    let timeout = if template == Template::Windows {
        "90s"
    } else {
        "60s"
    };
    let _ = writeln!(t, "\n[shutdown]\ntimeout = \"{timeout}\"");
    Ok(t)
}

fn memory(t: &mut String, root: &HostRoot, template: Template) {
    let total = cpu::meminfo_kb(root, "MemTotal").unwrap_or(8 * 1024 * 1024) * 1024;
    let floor = if template == Template::Windows { 4 } else { 1 };
    let mut gib = (total / 2 / ByteSize::GIB).max(floor);
    if template == Template::Headless {
        gib = gib.min(4);
    }
    let _ = writeln!(
        t,
        "memory = \"{gib}G\"            # half of the host's {} GiB",
        total.div_ceil(ByteSize::GIB)
    );
}

fn cpu_section(t: &mut String, cpu: Option<&cpu::CpuInfo>, template: Template, gpu: bool) {
    let (cores, threads) = cpu.map(|c| (c.cores, c.threads)).unwrap_or((2, 1));
    // The host keeps a core (two on bigger CPUs) for itself, its interrupts
    // and QEMU's own threads.
    let keep = match cores {
        0..=1 => 0,
        2..=5 => 1,
        _ => 2,
    };
    let mut vm_cores = cores - keep;
    if template == Template::Headless {
        vm_cores = vm_cores.min(2);
    }
    let _ = writeln!(t, "\n[cpu]");
    let _ = writeln!(
        t,
        "# The host has {cores} cores x {threads} threads; the VM gets {vm_cores} of them."
    );
    let _ = writeln!(t, "sockets = 1\ncores = {vm_cores}\nthreads = {threads}");
    if threads > 1 && cpu.map(|c| c.vendor) == Some(CpuVendor::Amd) {
        t.push_str("features = [\"+topoext\"]   # AMD: lets the guest see the SMT threads\n");
    }
    if template == Template::Windows {
        t.push_str("hyperv = true            # Hyper-V enlightenments for Windows\n");
    }
    if gpu {
        t.push_str("# pin = [...]            # one host CPU per vCPU, whole cores (`lscpu -e` shows siblings)\n");
    }
}

fn hostdevs(t: &mut String, root: &HostRoot, gpu: &PciDevice) {
    let functions = gpu_functions(root, gpu);
    let _ = match gpu.iommu_group {
        Some(g) => writeln!(
            t,
            "\n# IOMMU group {g}: a VM gets whole groups, so every function of it is here."
        ),
        None => writeln!(
            t,
            "\n# The IOMMU is off (`vmrun check`): these are the GPU's slot functions."
        ),
    };
    for (i, dev) in functions.iter().enumerate() {
        if i > 0 {
            t.push('\n');
        }
        let _ = writeln!(
            t,
            "[[hostdev]]\naddress = \"{}\"   # {:04x}:{:04x} {}",
            dev.address,
            dev.vendor,
            dev.device,
            pci::class_name(dev.class)
        );
        if dev.address == gpu.address {
            if dev.is_vga() {
                t.push_str("x_vga = true\n");
            }
            let _ = writeln!(
                t,
                "# romfile = \"{:04x}-{:04x}.rom\"   # `vmrun rom dump {}` writes it into firmware/",
                dev.vendor, dev.device, dev.address
            );
        }
    }
}

fn disks(t: &mut String, name: &VmName, template: Template) {
    let disk = format!("/var/lib/vmrun/{name}/disk.qcow2");
    let size = if template == Template::Windows {
        "128G"
    } else {
        "32G"
    };
    let _ = writeln!(t, "\n[[disk]]\npath = {}", quoted(&disk));
    let _ = writeln!(t, "# create it: qemu-img create -f qcow2 {disk} {size}");
    if template == Template::Windows {
        t.push_str("cache = \"none\"\naio = \"native\"\ndiscard = true\n");
        let _ = writeln!(
            t,
            "\n# The installer (and virtio-win.iso for the virtio disk driver):\n# [[disk]]\n# path = \"/var/lib/vmrun/{name}/Win11.iso\"\n# media = \"cdrom\""
        );
    }
}

fn input(t: &mut String, root: &HostRoot) {
    let kbd = input_device(root, "-event-kbd");
    let mouse = input_device(root, "-event-mouse");
    if kbd.is_none() && mouse.is_none() {
        t.push_str("\n# No keyboard or mouse in /dev/input/by-id; add an [input] section for evdev passthrough.\n");
        return;
    }
    t.push_str("\n# The host's keyboard and mouse, switched between host and guest with both Ctrl keys.\n[input]\n");
    if let Some(k) = kbd {
        let _ = writeln!(t, "keyboard = {}", quoted(&k));
    }
    if let Some(m) = mouse {
        let _ = writeln!(t, "mouse = {}", quoted(&m));
    }
    t.push_str("toggle = \"ctrl-ctrl\"\nmode = \"qemu\"\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, VmConfig};
    use crate::testing::Machine;
    use std::path::Path;

    fn init(fixture: Machine, template: Template, gpu: GpuChoice) -> (String, VmConfig) {
        let host = fixture.build();
        let name: VmName = "vm1".parse().unwrap();
        let text = generate(&host.root(), &name, template, gpu).unwrap();
        let vm =
            config::load_str("vm1", Path::new("/cfg/vms/vm1.toml"), &text).unwrap_or_else(|e| {
                panic!(
                    "{fixture:?}/{template:?} does not validate:\n{}\n{text}",
                    config::render(&e)
                )
            });
        (text, vm)
    }

    fn addresses(vm: &VmConfig) -> Vec<String> {
        vm.hostdevs
            .iter()
            .map(|h| match h.selector {
                config::HostdevSelector::Address(a) => a.to_string(),
                config::HostdevSelector::Ids { .. } => "ids".into(),
            })
            .collect()
    }

    #[test]
    fn init_writes_the_derived_uuid_explicitly() {
        let (_, vm) = init(Machine::SETUP[0], Template::Windows, GpuChoice::Auto);
        let host = Machine::SETUP[0].build();
        let derived = crate::plan::uuid::vm_uuid(&host.root(), "vm1", &mut Vec::new());
        assert_eq!(vm.smbios.uuid, Some(derived));
    }

    #[test]
    fn every_fixture_and_template_validates() {
        for fixture in Machine::SETUP {
            for template in [Template::Windows, Template::Linux] {
                init(fixture, template, GpuChoice::Auto);
            }
            init(fixture, Template::Headless, GpuChoice::None);
        }
    }

    #[test]
    fn the_laptop_gets_the_nvidia_gpu_and_its_audio_without_the_root_port() {
        let (text, vm) = init(
            Machine::IntelNvidiaLaptop,
            Template::Windows,
            GpuChoice::Auto,
        );
        assert_eq!(addresses(&vm), ["0000:01:00.0", "0000:01:00.1"]);
        assert!(!vm.hostdevs[0].x_vga, "a 3D controller is not VGA");
        assert!(vm.takeover.is_none());
        assert_eq!((vm.cpu.topology.cores, vm.cpu.topology.threads), (3, 2));
        assert!(vm.tpm && vm.firmware.secure_boot == Some(true) && vm.cpu.hyperv);
        assert_eq!(vm.memory.bytes(), 8 * ByteSize::GIB);
        let input = vm.input.expect("input");
        assert!(input
            .keyboard
            .unwrap()
            .ends_with("usb-Logitech_USB_Keyboard-event-kbd"));
        assert!(input
            .mouse
            .unwrap()
            .ends_with("usb-Logitech_USB_Optical_Mouse-event-mouse"));
        assert!(text.contains("IOMMU group 2"), "{text}");
    }

    #[test]
    fn the_amd_desktop_gets_the_second_gpu_with_topoext() {
        let (_, vm) = init(Machine::AmdTwoGpus, Template::Linux, GpuChoice::Auto);
        assert_eq!(addresses(&vm), ["0000:0b:00.0", "0000:0b:00.1"]);
        assert!(vm.hostdevs[0].x_vga);
        assert!(vm.takeover.is_none());
        assert_eq!(vm.cpu.topology.cores, 6);
        assert_eq!(vm.cpu.features, ["+topoext"]);
        assert!(!vm.tpm);
    }

    #[test]
    fn the_single_gpu_desktop_gets_takeover() {
        let (_, vm) = init(Machine::SingleGpu, Template::Windows, GpuChoice::Auto);
        assert_eq!(addresses(&vm), ["0000:01:00.0", "0000:01:00.1"]);
        assert!(vm.takeover.is_some());
    }

    #[test]
    fn with_the_iommu_off_the_slot_functions_are_used() {
        let (text, vm) = init(Machine::IommuOff, Template::Linux, GpuChoice::Auto);
        assert_eq!(addresses(&vm), ["0000:01:00.0", "0000:01:00.1"]);
        assert!(text.contains("The IOMMU is off"));
    }

    #[test]
    fn headless_has_no_gpu_and_a_serial_console() {
        let (_, vm) = init(Machine::SingleGpu, Template::Headless, GpuChoice::None);
        assert!(vm.hostdevs.is_empty() && vm.input.is_none() && vm.takeover.is_none());
        assert_eq!(vm.display, config::Display::Serial);
        assert!(vm.cpu.topology.cores <= 2);
    }

    #[test]
    fn a_named_device_must_be_a_gpu_on_this_host() {
        let host = Machine::AmdTwoGpus.build();
        let root = host.root();
        let name: VmName = "x".parse().unwrap();
        let audio = GpuChoice::Address("0b:00.1".parse().unwrap());
        assert!(matches!(
            generate(&root, &name, Template::Linux, audio),
            Err(InitError::NotAGpu { .. })
        ));
        let missing = GpuChoice::Address("0f:00.0".parse().unwrap());
        assert!(matches!(
            generate(&root, &name, Template::Linux, missing),
            Err(InitError::NoSuchDevice(_))
        ));
        let boot = GpuChoice::Address("0a:00.0".parse().unwrap());
        let text = generate(&root, &name, Template::Linux, boot).unwrap();
        assert!(text.contains("[takeover]"));
    }
}
