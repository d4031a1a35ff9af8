//! The read side of the host: sysfs, /dev, /proc, QEMU's own answers. Nothing
//! here writes; all writes live in `prepare`.

pub mod block;
pub mod cpu;
pub mod display;
pub mod held;
pub mod inventory;
pub mod iommu;
pub mod pci;
pub mod pci_ids;
pub mod procs;
pub mod qemu;
pub mod root;

pub use root::HostRoot;
