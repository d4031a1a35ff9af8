//! The guest's QEMU command line: machine, emulated IOMMU, topology, firmware.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Which devices the guest sees, i.e. which "host" the scenario stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// A GPU and its audio function: VGA at 00:0a.0 (multifunction) and
    /// intel-hda at 00:0a.1, one IOMMU group.
    #[default]
    Gpu,
    /// A four-function GPU like the RX 7900 XTX: `Gpu` plus qemu-xhci at
    /// 00:0a.2 and pci-serial at 00:0a.3, all in one group.
    Gpu4,
    /// `Gpu` plus a second display device (bochs-display at 00:0b.0, its own
    /// group) that stays with the host.
    Dual,
    /// `Gpu` plus a USB keyboard (QEMU's usb-kbd, 0627:0001) on a qemu-xhci
    /// at 00:0b.0: a USB device of the lab host's own that a nested VM
    /// takes with `[[usb]]`.
    Usb,
}

/// The guest's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// SeaBIOS: the VGA's legacy text console.
    #[default]
    Bios,
    /// OVMF: the guest gets an efi-framebuffer, the single-GPU host's case.
    Uefi,
}

/// A topology or firmware name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{given}`; expected one of: {expected}")]
pub struct UnknownName {
    kind: &'static str,
    given: String,
    expected: &'static str,
}

impl UnknownName {
    pub(crate) fn new(kind: &'static str, given: &str, expected: &'static str) -> UnknownName {
        UnknownName {
            kind,
            given: given.into(),
            expected,
        }
    }
}

impl FromStr for Topology {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gpu" => Ok(Topology::Gpu),
            "gpu4" => Ok(Topology::Gpu4),
            "dual" => Ok(Topology::Dual),
            "usb" => Ok(Topology::Usb),
            _ => Err(UnknownName {
                kind: "topology",
                given: s.into(),
                expected: "gpu, gpu4, dual, usb",
            }),
        }
    }
}

impl FromStr for Firmware {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bios" => Ok(Firmware::Bios),
            "uefi" => Ok(Firmware::Uefi),
            _ => Err(UnknownName {
                kind: "firmware",
                given: s.into(),
                expected: "bios, uefi",
            }),
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Topology::Gpu => "gpu",
            Topology::Gpu4 => "gpu4",
            Topology::Dual => "dual",
            Topology::Usb => "usb",
        })
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        })
    }
}

impl Topology {
    /// QEMU arguments for this topology's devices.
    pub fn device_args(self) -> Vec<String> {
        let mut args: Vec<&str> = vec![
            // The "GPU": 1234:1111, class 0300, driven by bochs-drm, boot_vga = 1.
            "-device",
            "VGA,bus=pcie.0,addr=0a.0,multifunction=on",
            // Its "HDMI audio": 8086:2668, snd_hda_intel. Same slot, no ACS:
            // same IOMMU group, like a real GPU's audio function.
            "-device",
            "intel-hda,bus=pcie.0,addr=0a.1",
            "-device",
            "hda-duplex,audiodev=snd0",
            "-audiodev",
            "none,id=snd0",
        ];
        match self {
            Topology::Gpu => {}
            Topology::Gpu4 => args.extend([
                "-device",
                "qemu-xhci,bus=pcie.0,addr=0a.2",
                "-chardev",
                "null,id=gpuserial",
                "-device",
                "pci-serial,bus=pcie.0,addr=0a.3,chardev=gpuserial",
            ]),
            // bochs-display has no VGA class, so 0a.0 keeps boot_vga.
            Topology::Dual => args.extend(["-device", "bochs-display,bus=pcie.0,addr=0b.0"]),
            Topology::Usb => args.extend([
                "-device",
                "qemu-xhci,bus=pcie.0,addr=0b.0,id=labxhci",
                "-device",
                "usb-kbd,bus=labxhci.0",
            ]),
        }
        args.into_iter().map(String::from).collect()
    }
}

/// OVMF files (Debian's `ovmf` package).
#[derive(Debug, Clone)]
pub struct Ovmf {
    /// Read-only firmware code.
    pub code: PathBuf,
    /// The variable store template, copied per run.
    pub vars: PathBuf,
}

impl Ovmf {
    /// The 4M build, else the 2M one.
    pub fn find() -> Option<Ovmf> {
        [
            ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
            ("OVMF_CODE.fd", "OVMF_VARS.fd"),
        ]
        .into_iter()
        .map(|(code, vars)| Ovmf {
            code: Path::new("/usr/share/OVMF").join(code),
            vars: Path::new("/usr/share/OVMF").join(vars),
        })
        .find(|o| o.code.is_file() && o.vars.is_file())
    }
}

/// Everything one guest boot needs.
#[derive(Debug, Clone)]
pub struct BootConfig<'a> {
    /// bzImage.
    pub kernel: &'a Path,
    /// initramfs.
    pub initramfs: &'a Path,
    /// Shared read-write as 9p tag `scratch`.
    pub scratch: &'a Path,
    /// Devices.
    pub topology: Topology,
    /// OVMF code and the run's own copy of the variable store, for UEFI.
    pub uefi: Option<(&'a Path, &'a Path)>,
    /// Guest RAM.
    pub memory_mib: u32,
}

/// The full QEMU argument list (without the program).
pub fn qemu_args(cfg: &BootConfig<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&[
        // Nested KVM hangs on these machines; TCG is slower but works.
        "-accel",
        "tcg",
        // intremap=on needs the split irqchip; caching-mode=on is what QEMU
        // demands before it lets vfio-pci devices sit behind the vIOMMU.
        "-machine",
        "q35,kernel-irqchip=split",
        "-device",
        "intel-iommu,intremap=on,caching-mode=on",
        "-m",
    ]);
    push(&[&cfg.memory_mib.to_string()]);
    push(&[
        "-smp",
        "2",
        // No default VGA, NIC or monitor: the topology is all the guest has.
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        // no_timer_check: under TCG on a loaded host the IO-APIC timer check
        // can fail and panic the guest at boot ("timer doesn't work through
        // Interrupt-remapped IO-APIC"), seen once in a full suite run.
        "-append",
        "console=ttyS0 intel_iommu=on no_timer_check panic=-1 quiet",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]);
    let mut scratch =
        OsString::from("local,mount_tag=scratch,security_model=none,multidevs=remap,path=");
    scratch.push(cfg.scratch);
    args.extend(["-virtfs".into(), scratch]);
    args.extend([
        "-kernel".into(),
        cfg.kernel.into(),
        "-initrd".into(),
        cfg.initramfs.into(),
    ]);
    if let Some((code, vars)) = cfg.uefi {
        let mut code_drive = OsString::from("if=pflash,format=raw,unit=0,readonly=on,file=");
        code_drive.push(code);
        let mut vars_drive = OsString::from("if=pflash,format=raw,unit=1,file=");
        vars_drive.push(vars);
        args.extend(["-drive".into(), code_drive, "-drive".into(), vars_drive]);
    }
    args.extend(cfg.topology.device_args().into_iter().map(OsString::from));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_names_round_trip() {
        for t in [Topology::Gpu, Topology::Gpu4, Topology::Dual, Topology::Usb] {
            assert_eq!(t.to_string().parse::<Topology>(), Ok(t));
        }
    }

    #[test]
    fn unknown_topology_is_an_error() {
        assert!("gpu3".parse::<Topology>().is_err());
    }

    #[test]
    fn gpu4_puts_four_functions_in_slot_0a() {
        let args = Topology::Gpu4.device_args().join(" ");
        for f in ["0a.0", "0a.1", "0a.2", "0a.3"] {
            assert!(args.contains(&format!("addr={f}")), "{f} missing in {args}");
        }
    }

    #[test]
    fn uefi_adds_two_pflash_drives() {
        let cfg = BootConfig {
            kernel: Path::new("/k"),
            initramfs: Path::new("/i"),
            scratch: Path::new("/s"),
            topology: Topology::Gpu,
            uefi: Some((Path::new("/code"), Path::new("/s/vars"))),
            memory_mib: 1024,
        };
        let args: Vec<String> = qemu_args(&cfg)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let drives: Vec<&String> = args.iter().filter(|a| a.starts_with("if=pflash")).collect();

        assert_eq!(drives.len(), 2);
        assert!(drives[0].contains("readonly=on,file=/code"));
    }
}
