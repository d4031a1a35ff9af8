//! One module per TOML section, as the file has them: each holds the section's
//! wire struct (the TOML as written: every key optional, unknown keys refused),
//! its validated model, the `check` from one to the other, and their tests.
//! Leaf enums (`Display`, `Cache`, ...) serve both sides.

pub mod cpu;
pub mod disk;
pub mod display;
pub mod firmware;
pub mod hostdev;
pub mod input;
pub mod memory;
pub mod network;
pub mod qemu;
pub mod shutdown;
pub mod takeover;
pub mod tpm;
