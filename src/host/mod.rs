//! The read side of the host: sysfs, /dev, /proc, QEMU's own answers. Nothing
//! here writes; all writes live in `prepare`.

pub(crate) mod block;
pub(crate) mod cpu;
pub(crate) mod cpuset;
pub(crate) mod display;
pub(crate) mod file_kind;
pub(crate) mod held;
pub(crate) mod inventory;
pub(crate) mod iommu;
pub(crate) mod pci;
pub(crate) mod pci_ids;
pub(crate) mod procs;
pub mod qemu;
pub mod root;
pub mod usb;

pub use root::HostRoot;
