//! QEMU: the command line for a plan, and the processes that run a VM.

pub(crate) mod argv;
mod audio;
pub(crate) mod devices;
pub(crate) mod exec_as;
mod gaming;
pub(crate) mod handoff;
pub(crate) mod open_as;
pub(crate) mod opts;
pub(crate) mod process;
pub(crate) mod swtpm;

pub use argv::{build_argv, build_argv_with, build_run_argv, QmpListener};
pub use gaming::usb_host_qmp;
pub use handoff::FdPlan;
