//! Fake host trees for the setup tests (`host::pci::fake` underneath): the
//! four machines the issue names, with `/proc/cpuinfo`, `/proc/cmdline`,
//! `/proc/meminfo`, `/dev/kvm`, the kernel's module lists, input devices
//! and the PCI devices by IOMMU group.

use std::fs;
use std::path::Path;

pub use crate::host::pci::fake::{add_device, set_attr, write};

#[derive(Debug, Clone, Copy)]
pub enum Fixture {
    /// Intel CPU, i915 boot iGPU, an NVIDIA RTX 3050 Mobile (3D controller)
    /// + HDMI audio behind a root port in one group.
    IntelNvidiaLaptop,
    /// Ryzen, an RX 6800 as boot GPU and an RX 580 (Polaris, no reset) as
    /// the second GPU, both on amdgpu; no amd_iommu= (on by default).
    AmdTwoGpus,
    /// Intel, one NVIDIA RTX 3060 (boot VGA) + audio; intel_iommu=on iommu=pt.
    SingleGpu,
    /// Intel, the IOMMU off: no groups, no intel_iommu= on the command line.
    IommuOff,
}

const RELEASE: &str = "6.1.0-26-amd64";

fn cpuinfo(vendor: &str, flag: &str, cores: u32, threads: u32) -> String {
    (0..cores * threads)
        .map(|n| {
            format!(
                "processor\t: {n}\nvendor_id\t: {vendor}\nphysical id\t: 0\nsiblings\t: {}\ncore id\t\t: {}\ncpu cores\t: {cores}\nflags\t\t: fpu {flag} lm\n\n",
                cores * threads,
                n % cores
            )
        })
        .collect()
}

fn common(root: &Path, cpu: String, cmdline: &str, mem_gib: u64) {
    write(root, "/proc/cpuinfo", &cpu);
    write(
        root,
        "/proc/cmdline",
        &format!("BOOT_IMAGE=/vmlinuz-{RELEASE} root=/dev/nvme0n1p2 ro {cmdline}\n"),
    );
    let kb = mem_gib * 1024 * 1024;
    write(
        root,
        "/proc/meminfo",
        &format!(
            "MemTotal: {kb} kB\nMemFree: {} kB\nMemAvailable: {} kB\n",
            kb / 2,
            kb * 3 / 4
        ),
    );
    write(root, "/proc/sys/kernel/osrelease", &format!("{RELEASE}\n"));
    write(root, "/dev/kvm", "");
    write(
        root,
        &format!("/lib/modules/{RELEASE}/modules.dep"),
        "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko\n",
    );
    write(
        root,
        "/dev/input/by-id/usb-Logitech_USB_Keyboard-event-kbd",
        "",
    );
    write(
        root,
        "/dev/input/by-id/usb-Logitech_USB_Optical_Mouse-event-mouse",
        "",
    );
    write(
        root,
        "/dev/input/by-id/usb-Logitech_USB_Optical_Mouse-mouse",
        "",
    );
    for (kb, free) in [(2048, 0), (1048576, 2)] {
        let dir = format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB");
        write(root, &format!("{dir}/nr_hugepages"), &format!("{free}\n"));
        write(root, &format!("{dir}/free_hugepages"), &format!("{free}\n"));
    }
}

/// A validated VM `vm1` from config text (its file would be `/cfg/vms/vm1.toml`).
pub fn vm(text: &str) -> crate::config::VmConfig {
    crate::config::load_str("vm1", Path::new("/cfg/vms/vm1.toml"), text)
        .unwrap_or_else(|e| panic!("{}", crate::config::render(&e)))
}

/// Builds `fixture` in a new temporary directory.
pub fn build(fixture: Fixture) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    match fixture {
        Fixture::IntelNvidiaLaptop => {
            common(
                root,
                cpuinfo("GenuineIntel", "vmx", 4, 2),
                "intel_iommu=on quiet",
                16,
            );
            add_device(
                root,
                "0000:00:00.0",
                (0x8086, 0x9a14),
                0x060000,
                None,
                Some(0),
            );
            add_device(
                root,
                "0000:00:02.0",
                (0x8086, 0x9a49),
                0x030000,
                Some("i915"),
                Some(1),
            );
            set_attr(root, "0000:00:02.0", "boot_vga", "1");
            add_device(
                root,
                "0000:00:01.0",
                (0x8086, 0x9a09),
                0x060400,
                Some("pcieport"),
                Some(2),
            );
            add_device(
                root,
                "0000:01:00.0",
                (0x10de, 0x25a1),
                0x030200,
                Some("nvidia"),
                Some(2),
            );
            add_device(
                root,
                "0000:01:00.1",
                (0x10de, 0x2291),
                0x040300,
                Some("snd_hda_intel"),
                Some(2),
            );
            set_attr(root, "0000:01:00.0", "reset_method", "flr bus");
            add_device(
                root,
                "0000:00:1f.3",
                (0x8086, 0xa0c8),
                0x040380,
                Some("snd_hda_intel"),
                Some(3),
            );
        }
        Fixture::AmdTwoGpus => {
            common(
                root,
                cpuinfo("AuthenticAMD", "svm", 8, 2),
                "quiet splash",
                32,
            );
            add_device(
                root,
                "0000:00:00.0",
                (0x1022, 0x1480),
                0x060000,
                None,
                Some(0),
            );
            add_device(
                root,
                "0000:0a:00.0",
                (0x1002, 0x73bf),
                0x030000,
                Some("amdgpu"),
                Some(14),
            );
            add_device(
                root,
                "0000:0a:00.1",
                (0x1002, 0xab28),
                0x040300,
                Some("snd_hda_intel"),
                Some(14),
            );
            set_attr(root, "0000:0a:00.0", "boot_vga", "1");
            set_attr(root, "0000:0a:00.0", "reset_method", "bus");
            add_device(
                root,
                "0000:0b:00.0",
                (0x1002, 0x67df),
                0x030000,
                Some("amdgpu"),
                Some(15),
            );
            add_device(
                root,
                "0000:0b:00.1",
                (0x1002, 0xaaf0),
                0x040300,
                Some("snd_hda_intel"),
                Some(15),
            );
            set_attr(root, "0000:0b:00.0", "boot_vga", "0");
            set_attr(root, "0000:0b:00.0", "reset_method", "");
            add_device(
                root,
                "0000:0c:00.0",
                (0x1022, 0x149c),
                0x0c0330,
                Some("xhci_hcd"),
                Some(16),
            );
        }
        Fixture::SingleGpu => {
            common(
                root,
                cpuinfo("GenuineIntel", "vmx", 6, 2),
                "intel_iommu=on iommu=pt",
                32,
            );
            add_device(
                root,
                "0000:00:00.0",
                (0x8086, 0x4660),
                0x060000,
                None,
                Some(0),
            );
            add_device(
                root,
                "0000:01:00.0",
                (0x10de, 0x2503),
                0x030000,
                Some("nvidia"),
                Some(12),
            );
            add_device(
                root,
                "0000:01:00.1",
                (0x10de, 0x228e),
                0x040300,
                Some("snd_hda_intel"),
                Some(12),
            );
            set_attr(root, "0000:01:00.0", "boot_vga", "1");
            set_attr(root, "0000:01:00.0", "reset_method", "flr bus");
        }
        Fixture::IommuOff => {
            common(root, cpuinfo("GenuineIntel", "vmx", 4, 1), "quiet", 16);
            add_device(
                root,
                "0000:00:02.0",
                (0x8086, 0x3e92),
                0x030000,
                Some("i915"),
                None,
            );
            set_attr(root, "0000:00:02.0", "boot_vga", "1");
            add_device(
                root,
                "0000:01:00.0",
                (0x10de, 0x1f82),
                0x030000,
                Some("nouveau"),
                None,
            );
            add_device(
                root,
                "0000:01:00.1",
                (0x10de, 0x10fa),
                0x040300,
                Some("snd_hda_intel"),
                None,
            );
            set_attr(root, "0000:01:00.0", "boot_vga", "0");
            fs::create_dir_all(root.join("sys/kernel")).unwrap();
        }
    }
    dir
}
