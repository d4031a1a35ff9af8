//! Host setup, done once per machine rather than per run: `vmrun check`
//! (every precondition, with its fix), `vmrun init` (a first config for
//! this host), the boot-time isolation (`host kernel-args`, `boot-entry`,
//! `initramfs`) and the VBIOS dump's validation. Reads go through
//! `HostRoot`; the only writes are the boot files `--apply` changes
//! (each backed up first, `backup.rs`) and the ROM file.

pub mod backup;
pub mod boot_entry;
pub mod boot_steps;
pub mod check;
pub mod check_vm;
pub mod init;
pub mod initramfs;
pub mod kernel_args;
pub mod rom;
