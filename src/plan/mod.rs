//! What a config means on this host: firmware, devices, paths, QEMU version.
//! The only stage that reads the host before anything is changed; it yields
//! plain data that `--dry-run` prints.

pub mod firmware;
