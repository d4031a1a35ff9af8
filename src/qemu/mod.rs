//! QEMU: the command line for a plan, and the processes that run a VM.

pub(crate) mod argv;
mod devices;
pub(crate) mod opts;
pub(crate) mod process;
pub(crate) mod swtpm;

pub use argv::{build_argv, build_argv_with, QmpListener};
