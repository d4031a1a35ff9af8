//! The validated VM description: what the rest of vmrun consumes. Every value
//! here has passed the checks in `validate.rs`; paths are absolute.

use std::path::PathBuf;

use serde::Serialize;

use super::types::{ByteSize, Duration, PciAddress, PciIds, VmName};

/// A VM as described by its TOML file, validated.
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
    pub input: Option<Input>,
    pub takeover: Option<Takeover>,
    pub shutdown_timeout: Duration,
    pub qemu: QemuSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cpu {
    /// `-cpu` model; `host` by default.
    pub model: String,
    pub topology: Topology,
    /// Extra `-cpu` flags, `+name` / `-name` / `name=value` as written.
    pub features: Vec<String>,
    /// Host CPU per vCPU, in vCPU order; empty means no pinning.
    pub pin: Vec<u32>,
    pub hide_hypervisor: bool,
    /// `hv-vendor-id`, at most 12 characters.
    pub vendor_id: Option<String>,
    pub hyperv: bool,
}

/// The guest's CPU topology; `vcpus()` is their product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub sockets: u32,
    /// `None` when not written: then `dies` is left out of `-smp`.
    pub dies: Option<u32>,
    pub cores: u32,
    pub threads: u32,
}

impl Topology {
    pub fn vcpus(&self) -> u32 {
        self.sockets * self.dies.unwrap_or(1) * self.cores * self.threads
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HugePageSize {
    #[serde(rename = "2M")]
    Size2M,
    #[serde(rename = "1G")]
    Size1G,
}

impl HugePageSize {
    pub fn size(self) -> ByteSize {
        match self {
            Self::Size2M => ByteSize::from_bytes(2 * ByteSize::MIB),
            Self::Size1G => ByteSize::from_bytes(ByteSize::GIB),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareKind {
    Uefi,
    Bios,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Firmware {
    pub kind: FirmwareKind,
    /// Tri-state as in libvirt: `None` accepts firmware with or without it.
    pub secure_boot: Option<bool>,
    /// Explicit firmware image; skips descriptor matching.
    pub code: Option<PathBuf>,
    /// Explicit VARS template; the VM gets its own copy in its state dir.
    pub vars: Option<PathBuf>,
}

/// How a `[[hostdev]]` names its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostdevSelector {
    Address(PciAddress),
    /// The `index`th device (in address order) with these ids.
    Ids {
        ids: PciIds,
        index: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hostdev {
    pub selector: HostdevSelector,
    pub x_vga: bool,
    pub romfile: Option<PathBuf>,
    pub rombar: Option<bool>,
    /// `None`: on for function 0 when the config also passes its siblings.
    pub multifunction: Option<bool>,
    /// When the device won't go back to its driver after the VM: remove it
    /// from the bus and rescan (seed 001's last resort).
    pub rescan_fallback: bool,
}

impl Hostdev {
    /// The device at `address`, every option at its default.
    pub fn at(address: PciAddress) -> Self {
        Self {
            selector: HostdevSelector::Address(address),
            x_vga: false,
            romfile: None,
            rombar: None,
            multifunction: None,
            rescan_fallback: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskInterface {
    Virtio,
    Scsi,
    Nvme,
    Sata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMedia {
    Disk,
    Cdrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    pub path: PathBuf,
    pub interface: DiskInterface,
    pub media: DiskMedia,
    pub format: DiskFormat,
    pub readonly: bool,
    /// QEMU `cache=` mode (none, writeback, writethrough, directsync, unsafe).
    pub cache: Option<String>,
    /// QEMU `aio=` (threads, native, io_uring).
    pub aio: Option<String>,
    pub discard: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A user-mode network port forward, `tcp:HOSTPORT:GUESTPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Forward {
    pub protocol: Protocol,
    pub host_port: u16,
    pub guest_port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum NetworkMode {
    User { forward: Vec<Forward> },
    Bridge { bridge: String },
    Tap { ifname: String },
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    pub mode: NetworkMode,
    /// `52:54:00:xx:xx:xx`; derived from the VM name when not given.
    pub mac: Option<String>,
    /// QEMU NIC device model, `virtio-net-pci` by default.
    pub model: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Display {
    None,
    Gtk,
    Spice,
    Serial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    Router,
    Qemu,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Input {
    pub keyboard: Option<PathBuf>,
    pub mouse: Option<PathBuf>,
    /// As written: a QEMU grab-toggle name (`ctrl-ctrl`) or keys joined by `+`.
    pub toggle: String,
    pub mode: InputMode,
    pub on_switch: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayManager {
    Auto,
    Unit(String),
    Commands {
        stop: Vec<String>,
        start: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnloadModules {
    Auto,
    List(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Takeover {
    pub display_manager: DisplayManager,
    pub stop_units: Vec<String>,
    pub user_units: Vec<String>,
    /// Names (`/proc/PID/comm`, globs allowed) of processes that may be
    /// stopped when they still hold the GPU; any other holder is refused.
    pub stop_processes: Vec<String>,
    pub unload_modules: UnloadModules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QemuUser {
    /// The first of vmrun/qemu/libvirt-qemu that exists, else nobody.
    Auto,
    /// Keep QEMU running as root.
    Root,
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QemuSettings {
    pub binary: PathBuf,
    pub accel: Accel,
    pub user: QemuUser,
    pub extra_args: Vec<String>,
}
