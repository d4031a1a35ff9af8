//! The catalogue of test machines: each a host a user really has, built
//! into a fresh `TestHost`. Tests start from one and add what their case
//! needs (a mount, a process, another VM's devices file). The integration
//! tests (the `testing` feature) run the binary against `FixtureDesktop`.
//!
//! Two checked-in trees hold what is data rather than devices: Debian's and
//! Fedora's firmware descriptors (`Tree`).

use std::path::{Path, PathBuf};

use super::host::{Class, Cpu, Input, Pci, TestHost, Usb};
use super::sysfs;
use crate::host::HostRoot;

/// Vendor and device ids that tests name besides the machines.
pub mod ids {
    /// NVIDIA GeForce RTX 3050 (GA106), its HDMI audio is 10de:228e.
    pub const RTX_3050: (u16, u16) = (0x10de, 0x2507);
    /// The laptop RTX 3050 Mobile (GA107), its audio is 10de:2291.
    pub const RTX_3050_MOBILE: (u16, u16) = (0x10de, 0x25a1);

    /// QEMU's `-vga std` (bochs-drm), and its `ich9-intel-hda`.
    pub const BOCHS_VGA: (u16, u16) = (0x1234, 0x1111);
    pub const ICH9_HDA: (u16, u16) = (0x8086, 0x2668);
}

use ids::*;

/// The checked-in trees: files copied from distributions, not devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// `tests/fixtures/host`: Debian 12's firmware descriptors with
    /// placeholder images and a hand-written pci.ids extract; the data half
    /// of `Machine::FixtureDesktop`.
    DebianFirmware,
    /// `tests/fixtures/host-fedora`: Fedora's firmware descriptors.
    FedoraFirmware,
}

impl Tree {
    /// The tree's directory in this checkout.
    pub fn path(self) -> PathBuf {
        let dir = match self {
            Tree::DebianFirmware => "tests/fixtures/host",
            Tree::FedoraFirmware => "tests/fixtures/host-fedora",
        };
        Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
    }

    /// A `HostRoot` reading the tree.
    pub fn root(self) -> HostRoot {
        HostRoot::new(self.path())
    }

    /// A writable copy, symlinks kept, for a test that changes the host.
    pub fn copy(self) -> TestHost {
        let host = TestHost::new();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(self.path().join("."))
            .arg(host.path())
            .status()
            .unwrap();
        assert!(status.success(), "cp -a {:?}: {status}", self.path());
        host
    }
}

/// The named machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// Intel CPU, i915 boot iGPU, an NVIDIA RTX 3050 Mobile (3D controller)
    /// + HDMI audio behind a root port in one group (2).
    IntelNvidiaLaptop,
    /// Ryzen, an RX 6800 as boot GPU and an RX 580 (Polaris, no reset) as
    /// the second GPU, both on amdgpu; no amd_iommu= (on by default).
    AmdTwoGpus,
    /// Intel, one NVIDIA RTX 3060 (boot VGA) + audio; intel_iommu=on iommu=pt.
    SingleGpu,
    /// Intel, the IOMMU off: no groups, no intel_iommu= on the command line.
    IommuOff,
    /// A desktop without ACS on its root port: an RTX 3050 (`nvidia`, not
    /// the boot GPU) + audio (`snd_hda_intel`) share group 12 with the root
    /// port; the host bridge and SMBus sit in group 0. No CPU or /proc files.
    NvidiaDesktop,
    /// `NvidiaDesktop` plus a Samsung NVMe (group 15) with `nvme0n1`
    /// partitions 1 and 2 (`NVME`).
    NvidiaDesktopWithNvme,
    /// What the CLI tests and goldens run against: `Tree::DebianFirmware`
    /// plus an RTX 3050 + audio on
    /// nvidia (group 12), the RX 6800 + audio boot GPU (group 14), a
    /// four-function RX 7900 XTX (group 20), a USB controller on vfio-pci
    /// held by VM `nas` (group 16), five USB input devices, /etc/passwd with
    /// libvirt-qemu and the disks of the example VMs.
    FixtureDesktop,
    /// The lab's single-GPU guest desktop: QEMU's bochs VGA (`BOCHS_GPU`,
    /// bochs-drm, boot VGA, card0, fbcon on vtcon1) + ich9 audio in group 3.
    BochsDesktop,
    /// The lab's `dual` topology: `BochsDesktop` plus the host's own
    /// display, a bochs-display (`BOCHS_DISPLAY`, bochs-drm too, card1,
    /// not the boot VGA) alone in group 4; a display on each.
    BochsDual,
}

/// The GPU of the NVIDIA machines.
pub const NVIDIA_GPU: &str = "0000:01:00.0";
/// Its HDMI audio function.
pub const NVIDIA_AUDIO: &str = "0000:01:00.1";
/// The NVMe controller of `NvidiaDesktopWithNvme`.
pub const NVME: &str = "0000:02:00.0";
/// The bochs VGA of `BochsDesktop`.
pub const BOCHS_GPU: &str = "0000:00:0a.0";
/// The ich9 audio of `BochsDesktop`.
pub const BOCHS_AUDIO: &str = "0000:00:0a.1";
/// The host's display GPU of `BochsDual`.
pub const BOCHS_DISPLAY: &str = "0000:00:0b.0";

impl Machine {
    /// The four hosts `vmrun host check` and `vmrun init` are tried on.
    pub const SETUP: [Machine; 4] = [
        Machine::IntelNvidiaLaptop,
        Machine::AmdTwoGpus,
        Machine::SingleGpu,
        Machine::IommuOff,
    ];

    /// Builds the machine in a new temporary directory.
    pub fn build(self) -> TestHost {
        match self {
            Machine::IntelNvidiaLaptop => desktop(Cpu::intel(4, 2), "intel_iommu=on quiet", 16)
                .pci(host_bridge((0x8086, 0x9a14)))
                .pci(
                    Pci::vga("00:02.0", (0x8086, 0x9a49))
                        .driver("i915")
                        .group(1)
                        .boot_vga(true),
                )
                .pci(
                    Pci::new("00:1f.3", (0x8086, 0xa0c8), Class::ChipsetAudio)
                        .driver("snd_hda_intel")
                        .group(3),
                )
                .pci(root_port("00:01.0", (0x8086, 0x9a09), 2))
                .pci(
                    Pci::new(NVIDIA_GPU, RTX_3050_MOBILE, Class::Display3d)
                        .driver("nvidia")
                        .group(2)
                        .reset_method("flr bus"),
                )
                .pci(hda(NVIDIA_AUDIO, (0x10de, 0x2291), 2)),
            Machine::AmdTwoGpus => desktop(Cpu::amd(8, 2), "quiet splash", 32)
                .pci(host_bridge((0x1022, 0x1480)))
                .pci(
                    amdgpu("0a:00.0", (0x1002, 0x73bf), 14)
                        .boot_vga(true)
                        .reset_method("bus"),
                )
                .pci(hda("0a:00.1", (0x1002, 0xab28), 14))
                .pci(
                    amdgpu("0b:00.0", (0x1002, 0x67df), 15)
                        .boot_vga(false)
                        .reset_method(""),
                )
                .pci(hda("0b:00.1", (0x1002, 0xaaf0), 15))
                .pci(
                    Pci::new("0c:00.0", (0x1022, 0x149c), Class::Usb)
                        .driver("xhci_hcd")
                        .group(16),
                ),
            Machine::SingleGpu => desktop(Cpu::intel(6, 2), "intel_iommu=on iommu=pt", 32)
                .pci(host_bridge((0x8086, 0x4660)))
                .pci(
                    Pci::vga(NVIDIA_GPU, (0x10de, 0x2503))
                        .driver("nvidia")
                        .group(12)
                        .boot_vga(true)
                        .reset_method("flr bus"),
                )
                .pci(hda(NVIDIA_AUDIO, (0x10de, 0x228e), 12)),
            Machine::IommuOff => desktop(Cpu::intel(4, 1), "quiet", 16)
                .pci(
                    Pci::vga("00:02.0", (0x8086, 0x3e92))
                        .driver("i915")
                        .boot_vga(true),
                )
                .pci(
                    Pci::vga(NVIDIA_GPU, (0x10de, 0x1f82))
                        .driver("nouveau")
                        .boot_vga(false),
                )
                .pci(Pci::audio(NVIDIA_AUDIO, (0x10de, 0x10fa)).driver("snd_hda_intel"))
                .dir("/sys/kernel"),
            Machine::NvidiaDesktop => TestHost::new()
                .pci(host_bridge((0x8086, 1)))
                .pci(Pci::new("00:1f.4", (0x8086, 2), Class::Smbus).group(0))
                .pci(root_port("00:01.0", (0x8086, 0x4c01), 12))
                .pci(
                    Pci::vga(NVIDIA_GPU, RTX_3050)
                        .driver("nvidia")
                        .group(12)
                        .boot_vga(false)
                        .reset_method("flr bus"),
                )
                .pci(hda(NVIDIA_AUDIO, (0x10de, 0x228e), 12)),
            Machine::NvidiaDesktopWithNvme => Machine::NvidiaDesktop
                .build()
                .pci(
                    Pci::new(NVME, (0x144d, 0xa808), Class::Nvme)
                        .driver("nvme")
                        .group(15)
                        .reset_method("flr"),
                )
                .disk(NVME, "nvme0n1", &["nvme0n1p1", "nvme0n1p2"]),
            Machine::FixtureDesktop => fixture_desktop(),
            Machine::BochsDesktop => {
                let host = TestHost::new();
                add_bochs_boot_gpu(host.path(), BOCHS_GPU);
                host.pci(hda(BOCHS_AUDIO, ICH9_HDA, 3))
            }
            Machine::BochsDual => {
                let host = Machine::BochsDesktop.build();
                Pci::vga(BOCHS_DISPLAY, BOCHS_VGA)
                    .driver("bochs-drm")
                    .group(4)
                    .boot_vga(false)
                    .create(host.path());
                sysfs::add_drm(host.path(), BOCHS_DISPLAY, &["card1"]);
                // bochs-drm's one virtual connector reports a display.
                for (addr, card) in [(BOCHS_GPU, "card0"), (BOCHS_DISPLAY, "card1")] {
                    let status =
                        format!("/sys/bus/pci/devices/{addr}/drm/{card}/{card}-Virtual-1/status");
                    sysfs::write(host.path(), &status, "connected\n");
                }
                host
            }
        }
    }
}

fn fixture_desktop() -> TestHost {
    // Every function names its vendor as board maker (subsystem device 0);
    // the GPUs reset by bus, every other function by FLR.
    let function = |addr: &str, ids: (u16, u16), class: Class, driver: &str| {
        let reset = if class == Class::Vga { "bus" } else { "flr" };
        Pci::new(addr, ids, class)
            .subsystem((ids.0, 0))
            .driver(driver)
            .reset_method(reset)
    };
    let gpu = |addr, ids, driver| function(addr, ids, Class::Vga, driver);
    let hda = |addr, ids| function(addr, ids, Class::Audio, "snd_hda_intel");
    let host_bridge = Pci::new("00:00.0", (0x8086, 0x4c43), Class::HostBridge)
        .subsystem((0x8086, 0))
        .reset_method("flr");
    let renesas_usb = Pci::new("05:00.0", (0x1912, 0x0014), Class::Usb)
        .subsystem((0x1912, 0x0014))
        .driver("vfio-pci")
        .attr("driver_override", "vfio-pci")
        .reset_method("bus");
    let host = Tree::DebianFirmware
        .copy()
        .pci(host_bridge.group(0))
        .pci(function("00:01.0", (0x8086, 0x4c01), Class::RootPort, "pcieport").group(1))
        .pci(function("00:1c.0", (0x8086, 0x7ab8), Class::RootPort, "pcieport").group(13))
        .pci(gpu("01:00.0", RTX_3050, "nvidia").group(12).boot_vga(false))
        .pci(hda("01:00.1", (0x10de, 0x228e)).group(12))
        .pci(
            gpu("03:00.0", (0x1002, 0x73bf), "amdgpu")
                .group(14)
                .boot_vga(true),
        )
        .pci(hda("03:00.1", (0x1002, 0xab28)).group(14))
        .pci(renesas_usb.group(16))
        .held_by("nas", &["05:00.0"])
        .pci(
            gpu("0b:00.0", (0x1002, 0x744c), "amdgpu")
                .group(20)
                .boot_vga(false),
        )
        .pci(hda("0b:00.1", (0x1002, 0xab30)).group(20))
        .pci(function("0b:00.2", (0x1002, 0x7446), Class::Usb, "xhci_hcd").group(20))
        .pci(function("0b:00.3", (0x1002, 0x7444), Class::SerialBus, "serial").group(20))
        // An AMD CPU's USB controller alone at function 3: nothing at 0e:00.0.
        .pci(
            Pci::new("0e:00.3", (0x1022, 0x149c), Class::Usb)
                .subsystem((0x1022, 0x148c))
                .driver("xhci_hcd")
                .reset_method("pm")
                .group(24),
        );
    fixture_desktop_input(host)
        .kvm()
        .file(
            "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_Plus_1TB_S4EWNX0R123456",
            "",
        )
        .file("/etc/passwd", PASSWD)
        // The desktop's session: logind's seat0 names its user, whose
        // PipeWire serves its own and PulseAudio clients.
        .file("/run/systemd/seats/seat0", "ACTIVE=2\nACTIVE_UID=65534\n")
        .socket("/run/user/65534/pipewire-0")
        .socket("/run/user/65534/pulse/native")
        .file("/etc/machine-id", "5e3c1f0a9b7d4e2c8a6b1d0f3e5c7a9b\n")
        .dmi(FIXTURE_DMI)
        .file("/var/lib/vmrun/headless/disk.qcow2", "")
        .file("/var/lib/vmrun/win11/disk.qcow2", "")
        .file("/var/lib/vmrun/win11/Win11.iso", "")
        // A LAN bridge, for `[network] mode = "bridge"`.
        .dir("/sys/class/net/br0/bridge")
}

/// The fixture desktop's `/sys/class/dmi/id` (an MSI B550 board), for
/// `[smbios] host = true`: a comma in a value, a field left empty.
const FIXTURE_DMI: &[(&str, &str)] = &[
    ("bios_vendor", "American Megatrends International, LLC."),
    ("bios_version", "1.C0"),
    ("bios_date", "05/23/2024"),
    ("bios_release", "5.17"),
    ("sys_vendor", "Micro-Star International Co., Ltd."),
    ("product_name", "MS-7C91"),
    ("product_version", "2.0"),
    ("product_sku", "To be filled by O.E.M."),
    ("product_family", ""),
    ("board_vendor", "Micro-Star International Co., Ltd."),
    ("board_name", "MAG B550 TOMAHAWK (MS-7C91)"),
    ("board_version", "2.0"),
];

trait Dmi {
    fn dmi(self, fields: &[(&str, &str)]) -> Self;
}

impl Dmi for TestHost {
    /// The kernel's dmi-id files, each value and a newline.
    fn dmi(self, fields: &[(&str, &str)]) -> Self {
        fields.iter().fold(self, |h, (name, value)| {
            h.file(&format!("/sys/class/dmi/id/{name}"), &format!("{value}\n"))
        })
    }
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
libvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin
";

/// The fixture desktop's USB keyboards and mice, eventN on USB port N,
/// and udev's links to them.
fn fixture_desktop_input(host: TestHost) -> TestHost {
    let usb = |n: u32, name: &str, ids| {
        Input::new(name, ids, &format!("usb-0000:00:14.0-{n}/input0")).on_usb(&format!("1-{n}"))
    };
    let keyboard = |n, name, ids| usb(n, name, ids).keys(KEYBOARD_KEYS);
    let optical = usb(3, "Logitech USB Optical Mouse", (0x046d, 0xc077)).keys("70000 0 0 0 0");
    let g502 = usb(5, "Logitech G502 HERO", (0x046d, 0xc08b)).keys("ff0000 0 0 0 0");
    let by_id = |name: &str| format!("/dev/input/by-id/usb-{name}");
    fixture_desktop_usb(host)
        .input(2, keyboard(2, "Logitech USB Keyboard", (0x046d, 0xc31c)))
        .input(3, optical.rel("903"))
        .input(4, keyboard(4, "Corsair K70 RGB", (0x1b1c, 0x1b13)))
        .input(5, g502.rel("1943"))
        .input(
            6,
            // The mouse's second interface (macro keys), on its device.
            keyboard(6, "Logitech G502 HERO Keyboard", (0x046d, 0xc08b)).on_usb("1-5"),
        )
        .symlink(&by_id("Logitech_USB_Keyboard-event-kbd"), "../event2")
        .symlink(
            "/dev/input/by-path/pci-0000:00:14.0-usb-0:2:1.0-event-kbd",
            "../event2",
        )
        .symlink(
            &by_id("Logitech_USB_Optical_Mouse-event-mouse"),
            "../event3",
        )
        .symlink(&by_id("Corsair_K70-event-kbd"), "../event4")
        .symlink(&by_id("Logitech_G502-event-mouse"), "../event5")
        .symlink(&by_id("Logitech_G502-if01-event-kbd"), "../event6")
}

/// The fixture desktop's USB devices on bus 1: the keyboards and mice of
/// its evdev nodes (port N for eventN), a Unifying receiver, and a hub
/// with two identical game pads.
fn fixture_desktop_usb(host: TestHost) -> TestHost {
    const HID_MOUSE: (u8, u8, u8) = (0x03, 0x01, 0x02);
    const HID: (u8, u8, u8) = (0x03, 0x00, 0x00);
    const XINPUT: (u8, u8, u8) = (0xff, 0x5d, 0x01);
    host.usb(Usb::hub("1-1", (0x05e3, 0x0610), 2).product("GenesysLogic", "USB2.1 Hub"))
        .usb(Usb::new("1-1.3", (0x045e, 0x028e), 7).interfaces(&[XINPUT]))
        .usb(Usb::new("1-1.4", (0x045e, 0x028e), 8).interfaces(&[XINPUT]))
        .usb(Usb::keyboard("1-2", (0x046d, 0xc31c), 3).product("Logitech", "USB Keyboard"))
        .usb(Usb::new("1-3", (0x046d, 0xc077), 4).interfaces(&[HID_MOUSE]))
        .usb(Usb::keyboard("1-4", (0x1b1c, 0x1b13), 5).product("Corsair", "K70 RGB"))
        .usb(Usb::new("1-5", (0x046d, 0xc08b), 6).interfaces(&[HID_MOUSE, HID]))
        .usb(
            Usb::new("1-7", (0x046d, 0xc52b), 9)
                .interfaces(&[(0x03, 0x01, 0x01), HID_MOUSE, HID])
                .product("Logitech", "USB Receiver"),
        )
}

/// A USB keyboard's `capabilities/key` (Linux 6.1): the full keyboard.
pub const KEYBOARD_KEYS: &str = "1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe";

/// What every setup machine has besides its PCI devices: CPU, kernel
/// command line, memory, /dev/kvm, vfio-pci as a module, a USB keyboard and
/// mouse, and 1 GiB pages (two free) next to no 2 MiB ones.
fn desktop(cpu: Cpu, cmdline: &str, memory_gib: u64) -> TestHost {
    TestHost::new()
        .cpu(cpu)
        .cmdline(cmdline)
        .memory_gib(memory_gib)
        .kvm()
        .vfio_module()
        .usb_keyboard_and_mouse()
        .hugepages(2048, 0)
        .hugepages(1048576, 2)
}

/// Host bridges sit alone in group 0.
fn host_bridge(ids: (u16, u16)) -> Pci {
    Pci::new("00:00.0", ids, Class::HostBridge).group(0)
}

fn root_port(address: &str, ids: (u16, u16), group: u32) -> Pci {
    Pci::new(address, ids, Class::RootPort)
        .driver("pcieport")
        .group(group)
}

fn hda(address: &str, ids: (u16, u16), group: u32) -> Pci {
    Pci::audio(address, ids)
        .driver("snd_hda_intel")
        .group(group)
}

fn amdgpu(address: &str, ids: (u16, u16), group: u32) -> Pci {
    Pci::vga(address, ids).driver("amdgpu").group(group)
}

/// The bochs VGA at `addr` as the lab guest boots it: bochs-drm (module
/// bochs, with two helpers) with card0, boot VGA, group 3, fbcon bound on
/// vtcon1.
fn add_bochs_boot_gpu(root: &Path, addr: &str) {
    Pci::vga(addr, BOCHS_VGA)
        .driver("bochs-drm")
        .group(3)
        .boot_vga(true)
        .create(root);
    sysfs::add_drm(root, addr, &["card0"]);
    sysfs::add_module(root, "bochs", &[]);
    sysfs::add_module(root, "drm_kms_helper", &["bochs"]);
    sysfs::add_module(root, "drm", &["bochs", "drm_kms_helper"]);
    sysfs::set_driver_module(root, "bochs-drm", "bochs");
    sysfs::add_vtcon(root, 0, "(S) dummy device", false);
    sysfs::add_vtcon(root, 1, "(M) frame buffer device", true);
}
