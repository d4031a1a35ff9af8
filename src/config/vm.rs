//! The whole file: its top-level keys (`description`, `machine`) and one
//! entry per section, checked section by section into a `VmConfig`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::checker::{parts, Checker, S};
use super::error::{Problem, ProblemKind as K};
use super::section::audio::{self, Audio, WireAudio};
use super::section::cpu::{self, Cpu, WireCpu};
use super::section::disk::{self, Disk, WireDisk};
use super::section::display::{self, Display, Secondary, WireDisplay};
use super::section::firmware::{self, Firmware, WireFirmware};
use super::section::hostdev::{self, Hostdev, WireHostdev};
use super::section::input::{self, Input, WireInput};
use super::section::looking_glass::{self, LookingGlass, WireLookingGlass};
use super::section::memory::{self, HugePageSize, WireMemory};
use super::section::network::{self, Network, WireNetwork};
use super::section::power::{self, WirePower};
use super::section::qemu::{self, QemuSettings, WireQemu};
use super::section::shutdown::{self, WireShutdown};
use super::section::smbios::{self, Smbios, WireSmbios};
use super::section::takeover::{self, Takeover, WireTakeover};
use super::section::tpm::{self, WireTpm};
use super::section::usb::{self, Usb, WireUsb};
use super::types::{ByteSize, Duration, VmName};

/// The file as written. Every key may be left out (an `Option`, or
/// `serde(default)` where absent means empty or off), so that any subset of
/// a file deserializes (the error collector in `collect.rs`
/// relies on it) and a missing required key gets a message of our own. Values a semantic check
/// may complain about are `Spanned`, so the complaint can point at them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireVm {
    description: Option<String>,
    memory: S<WireMemory>,
    machine: S<String>,
    cpu: S<WireCpu>,
    firmware: S<WireFirmware>,
    #[serde(default)]
    tpm: WireTpm,
    #[serde(default)]
    hostdev: Vec<Spanned<WireHostdev>>,
    #[serde(default)]
    disk: Vec<Spanned<WireDisk>>,
    network: S<WireNetwork>,
    #[serde(default)]
    display: WireDisplay,
    input: S<WireInput>,
    looking_glass: S<WireLookingGlass>,
    audio: S<WireAudio>,
    #[serde(default)]
    smbios: WireSmbios,
    takeover: S<WireTakeover>,
    #[serde(default)]
    shutdown: WireShutdown,
    #[serde(default)]
    power: WirePower,
    #[serde(default)]
    qemu: WireQemu,
    #[serde(default)]
    usb: Vec<Spanned<WireUsb>>,
}

/// A VM as described by its TOML file, validated; paths are absolute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmConfig {
    pub name: VmName,
    /// The file it was read from.
    pub source: PathBuf,
    pub description: Option<String>,
    pub memory: ByteSize,
    /// `q35` (default), `pc`, or a versioned type such as `pc-q35-7.2`.
    pub machine: String,
    pub cpu: Cpu,
    pub hugepages: Option<HugePageSize>,
    pub firmware: Firmware,
    pub tpm: bool,
    pub hostdevs: Vec<Hostdev>,
    pub disks: Vec<Disk>,
    pub network: Network,
    pub display: Display,
    /// `[display] secondary`: an emulated card beside an `x_vga` GPU.
    pub secondary_display: Option<Secondary>,
    pub looking_glass: Option<LookingGlass>,
    /// `[audio]`; `None`: no sound card.
    pub audio: Option<Audio>,
    pub smbios: Smbios,
    pub input: Option<Input>,
    pub takeover: Option<Takeover>,
    pub shutdown_timeout: Duration,
    /// `[power] inhibit_sleep`, resolved: a logind sleep inhibitor is held
    /// while the VM runs.
    pub inhibit_sleep: bool,
    pub qemu: QemuSettings,
    /// `[[usb]]`: host USB devices for the guest.
    pub usb: Vec<Usb>,
}

/// Where the file is and how to ask whether a file exists (injected so tests
/// need no real files).
pub(crate) struct Context<'a> {
    pub name: VmName,
    /// Absolute path of the config file.
    pub source: PathBuf,
    pub exists: &'a dyn Fn(&Path) -> bool,
}

/// Checks `wire` and builds the model, or returns every problem found.
pub(crate) fn validate(wire: WireVm, cx: &Context<'_>) -> Result<VmConfig, Vec<Problem>> {
    let dir = cx.source.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut v = Checker::new(dir, cx.exists);
    let (memory, hugepages) = memory::check(wire.memory, &mut v);
    let machine = machine(wire.machine, &mut v);
    let qemu = qemu::check(wire.qemu, &mut v);
    let cpu = cpu::check(wire.cpu, qemu.accel, &mut v);
    let firmware = firmware::check(wire.firmware, &mut v);
    let hostdevs = hostdev::check(wire.hostdev, &mut v);
    let disks = disk::check(wire.disk, &mut v);
    let network = network::check(wire.network, &mut v);
    let (display, secondary_display) = display::check(wire.display, &hostdevs, &mut v);
    let looking_glass = looking_glass::check(wire.looking_glass, &mut v);
    let spice = display == Display::Spice || looking_glass.as_ref().is_some_and(|l| l.spice);
    let audio = audio::check(wire.audio, spice, &mut v);
    let smbios = smbios::check(wire.smbios, &mut v);
    let input = input::check(wire.input, &mut v);
    let takeover = takeover::check(wire.takeover, !hostdevs.is_empty(), &mut v);
    let shutdown_timeout = shutdown::check(wire.shutdown, &mut v);
    let usb = usb::check(wire.usb, &mut v);
    let inhibit_sleep = power::check(wire.power, !hostdevs.is_empty());
    let (Some(memory), false) = (memory, v.has_problems()) else {
        return Err(v.into_problems());
    };
    Ok(VmConfig {
        name: cx.name.clone(),
        source: cx.source.clone(),
        description: wire.description,
        memory,
        machine,
        cpu,
        hugepages,
        firmware,
        tpm: tpm::check(wire.tpm),
        hostdevs,
        disks,
        network,
        display,
        secondary_display,
        looking_glass,
        audio,
        smbios,
        input,
        takeover,
        shutdown_timeout,
        inhibit_sleep,
        qemu,
        usb,
    })
}

/// `q35`, `pc`, or a versioned `pc-q35-*` / `pc-i440fx-*`.
fn machine(m: S<String>, v: &mut Checker<'_>) -> String {
    let Some((span, m)) = m.map(parts) else {
        return "q35".into();
    };
    let ok = m == "q35"
        || m == "pc"
        || ["pc-q35-", "pc-i440fx-"]
            .iter()
            .any(|p| m.len() > p.len() && m.starts_with(p));
    if !ok {
        v.err("machine", span, K::BadMachine(m.clone()));
    }
    m
}

/// Validation of TOML snippets, for the sections' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    use super::{validate, Context, VmConfig, WireVm};
    use crate::config::error::ProblemKind;

    /// Validates `memory = "4G"` plus `rest`; files exist unless their path
    /// contains `missing`.
    pub(crate) fn check(rest: &str) -> Result<VmConfig, Vec<ProblemKind>> {
        check_with(&format!("memory = \"4G\"\n{rest}"), &|p: &Path| {
            !p.to_string_lossy().contains("missing")
        })
    }

    /// Validates `text` as `/cfg/vms/t.toml`.
    pub(crate) fn check_with(
        text: &str,
        exists: &dyn Fn(&Path) -> bool,
    ) -> Result<VmConfig, Vec<ProblemKind>> {
        let wire: WireVm = toml::from_str(text).expect("test TOML deserializes");
        let cx = Context {
            name: "t".parse().expect("valid name"),
            source: PathBuf::from("/cfg/vms/t.toml"),
            exists,
        };
        validate(wire, &cx).map_err(|ps| ps.into_iter().map(|p| p.kind).collect())
    }

    /// The problems of `memory = "4G"` plus `rest`; none when it is valid.
    pub(crate) fn errors(rest: &str) -> Vec<ProblemKind> {
        check(rest).err().unwrap_or_default()
    }

    /// Asserts that each `(rest, want)` gives exactly the problems `want`:
    /// one row per rule a section checks.
    pub(crate) fn assert_problems(cases: &[(&str, &[ProblemKind])]) {
        for (rest, want) in cases {
            assert_eq!(errors(rest), *want, "{rest}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{check, errors};
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = check("").expect("valid");
        assert_eq!(c.machine, "q35");
        assert_eq!(c.cpu.model, "host");
        assert_eq!(c.cpu.topology.vcpus(), 1);
        assert!(c.input.is_none() && c.takeover.is_none());
    }

    #[test]
    fn machine_types() {
        assert!(check("machine = \"pc-q35-8.2\"\n").is_ok());
        assert!(check("machine = \"pc\"\n").is_ok());
        assert_eq!(
            errors("machine = \"pc-q35-\"\n"),
            [K::BadMachine("pc-q35-".into())]
        );
    }
}
