//! Test support shared by the unit tests: fake host trees (`TestHost`, the
//! `machines` catalogue) and validated VM configs from text. Built for
//! the unit tests and, with the `testing` feature, for the integration tests.
//! A fixture that cannot be written is a failed test: these unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod host;
pub mod machines;
pub mod sysfs;

pub use host::{Class, Input, Pci, TestHost, Usb};
pub use machines::{Machine, Tree};

/// A validated VM `vm1` from config text (its file would be `/cfg/vms/vm1.toml`).
pub fn vm(text: &str) -> crate::config::VmConfig {
    crate::config::load_str("vm1", std::path::Path::new("/cfg/vms/vm1.toml"), text)
        .unwrap_or_else(|e| panic!("{}", crate::config::render(&e)))
}

/// `vm` planned on `host` for QEMU 7.2, with vmrun as root or not and its
/// run and state dirs under `base`.
pub fn plan_on(
    host: &TestHost,
    vm: crate::config::VmConfig,
    is_root: bool,
    base: &std::path::Path,
) -> crate::plan::Plan {
    let ctx = crate::plan::PlanContext {
        root: host.root(),
        dirs: crate::plan::DirsEnv {
            is_root,
            run_base: Some(base.join("run")),
            state_base: Some(base.join("state")),
            ..Default::default()
        },
        qemu_version: Some("7.2.0".parse().unwrap()),
    };
    crate::plan::plan(vm, &ctx)
}

/// The identity a root vmrun gives a VM's QEMU, uid and gid 60600 (one of
/// `DYNAMIC_UIDS`), with no supplementary group.
pub fn per_vm_identity() -> crate::plan::QemuIdentity {
    crate::plan::QemuIdentity {
        uid: 60600,
        gid: 60600,
        groups: vec![],
        label: "vmrun-60600".into(),
        dynamic: true,
    }
}
