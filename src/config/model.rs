//! The validated VM description: what the rest of vmrun consumes. Each type
//! lives with its TOML section in `section/`; this is their index.

pub use super::section::audio::{Audio, AudioBackend, AudioModel};
pub use super::section::cpu::{Cpu, Topology};
pub use super::section::disk::{Aio, Cache, Disk, DiskFormat, DiskInterface, DiskMedia};
pub use super::section::display::{Display, Secondary};
pub use super::section::firmware::{Firmware, FirmwareFiles, FirmwareKind};
pub use super::section::hostdev::{Hostdev, HostdevSelector};
pub use super::section::input::{Input, InputMode, QemuToggle, Toggle, ToggleError};
pub use super::section::looking_glass::{LgDevice, LookingGlass, Resolution};
pub use super::section::memory::HugePageSize;
pub use super::section::network::{
    MacAddress, MacAddressError, Network, NetworkMode, PortForward, PortForwardError, Protocol,
};
pub use super::section::qemu::{Accel, QemuSettings, QemuUser};
pub use super::section::smbios::Smbios;
pub use super::section::takeover::{Desktop, DisplayManager, Takeover, UnloadModules};
pub use super::section::usb::{Usb, UsbIds, UsbPort, UsbSelector, UsbSelectorError};
pub use super::vm::VmConfig;
