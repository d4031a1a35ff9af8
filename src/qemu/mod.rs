//! QEMU: the command line for a plan, and the processes that run a VM.

pub mod argv;
mod devices;
pub mod opts;
pub mod process;
pub mod swtpm;

pub use argv::{build_argv, build_argv_with, QmpListener};
