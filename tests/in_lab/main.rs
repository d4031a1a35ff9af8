//! The lab's tests: TCG guests with a real kernel, an emulated IOMMU and
//! GPU, that run vmrun against a real host (tests/lab/README.md). One test
//! binary, so that its tests fill the `VMRUN_LAB_JOBS` guest slots
//! together: cargo runs test binaries one after another, and a binary of
//! one test, or the last test of each, would leave a slot idle.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod checks;
mod harness;
mod hostsetup;
mod input;
mod isolate;
mod kernel;
mod systemd;
mod takeover;
mod usb;
mod vfio;
