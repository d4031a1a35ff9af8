//! QEMU: the command line for a plan, and (later) the process itself.

pub mod argv;
mod devices;
pub mod opts;

pub use argv::build_argv;
