//! One module per TOML section, as the file has them: each holds the section's
//! wire struct (the TOML as written: every key optional, unknown keys refused),
//! its validated model, the `check` from one to the other, and their tests.
//! Leaf enums (`Display`, `Cache`, ...) serve both sides. `string_or` reads
//! the keys that take a string or something richer.

pub(crate) mod audio;
pub(crate) mod cpu;
pub(crate) mod disk;
pub(crate) mod display;
pub(crate) mod firmware;
pub(crate) mod hostdev;
pub(crate) mod input;
pub(crate) mod looking_glass;
pub(crate) mod memory;
pub(crate) mod network;
pub(crate) mod power;
pub(crate) mod qemu;
pub(crate) mod shutdown;
pub(crate) mod smbios;
pub(crate) mod string_or;
pub(crate) mod takeover;
pub(crate) mod tpm;
pub(crate) mod usb;
