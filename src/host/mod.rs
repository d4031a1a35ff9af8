//! The read side of the host: sysfs, /dev, /proc, QEMU's own answers. Nothing
//! here writes; all writes live in `prepare`.

pub mod pci;
pub mod qemu;
pub mod root;

pub use root::HostRoot;
