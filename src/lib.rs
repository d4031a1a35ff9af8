//! vmrun: a standalone QEMU launcher for VFIO GPU passthrough.
//!
//! The data flows one way: `config` (pure) -> `plan` (reads the host) ->
//! `prepare` (changes the host, journaled) -> `supervisor` (QEMU + QMP) ->
//! teardown (the journal replayed backwards). See ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub(crate) mod cli;
pub mod config;
pub(crate) mod exit;
pub(crate) mod fsutil;
pub mod host;
pub(crate) mod input;
pub mod plan;
pub mod prepare;
pub mod qemu;
pub mod qmp;
pub(crate) mod ratelimit;
pub(crate) mod setup;
pub(crate) mod supervisor;
pub mod teardown;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Runs the command line `args` and returns the process exit status.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    cli::run(args)
}
