//! Host setup, done once per machine rather than per run: `vmrun check`
//! (every precondition, with its fix), `vmrun init` (a first config for
//! this host), the boot-time isolation (`host kernel-args`, `boot-entry`,
//! `initramfs`) and the VBIOS dump's validation. Reads go through
//! `HostRoot`; the only writes are the boot files `--apply` changes
//! (each backed up first, `backup.rs`) and the ROM file.

pub(crate) mod backup;
pub(crate) mod boot_entry;
pub(crate) mod boot_steps;
pub(crate) mod check;
pub(crate) mod check_vm;
pub(crate) mod hide_gpu;
pub(crate) mod init;
pub(crate) mod initramfs;
pub(crate) mod kernel_args;
pub(crate) mod rom;
