//! Reading and validating a VM's TOML file. Pure: no host access beyond
//! reading the file and checking that the files it names exist.

pub mod collect;
pub mod model;
pub mod types;
pub mod wire;

pub use model::*;
pub use types::{ByteSize, Duration, PciAddress, PciIds, VmName};
