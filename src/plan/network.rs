//! `[network] mode = "bridge"` as root: vmrun makes the VM's tap itself,
//! owned by QEMU's uid and on the bridge, instead of QEMU running the setuid
//! `qemu-bridge-helper`. An unprivileged QEMU can't use the helper (it runs
//! with no_new_privs, under which exec grants no setuid), and a tap made for
//! its uid is one it may attach to: the tun driver lets a persistent tap's
//! owner (or group) attach without CAP_NET_ADMIN (drivers/net/tun.c,
//! `tun_not_capable`). Without root, QEMU runs the helper as before.

use serde::Serialize;

use super::Finding;
use crate::config::{NetworkMode, VmConfig};
use crate::host::HostRoot;

/// The tap vmrun makes for a bridged VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeTap {
    /// The tap's name: `vmr-NAME`, or a shortened form with a hash.
    pub ifname: String,
    pub bridge: String,
    /// The tap's own (host side) MAC: the guest's with the first byte
    /// 0xfe. A Linux bridge takes the lowest MAC of its ports as its own
    /// unless one was set (net/bridge/br_stp_if.c, `br_stp_recalculate_bridge_id`);
    /// 0xfe keeps a VM's tap from changing the bridge's address, and the
    /// host's traffic with it (libvirt does the same).
    pub mac: String,
}

/// Linux's limit on an interface name, without the NUL (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
const PREFIX: &str = "vmr-";

/// The tap for `vm`, when it is bridged and vmrun runs as root; a bridge
/// that doesn't exist is an error, before any change.
pub(crate) fn plan(
    vm: &VmConfig,
    is_root: bool,
    root: &HostRoot,
    run_dir: &std::path::Path,
    findings: &mut Vec<Finding>,
) -> Option<BridgeTap> {
    let NetworkMode::Bridge { bridge } = &vm.network.mode else {
        return None;
    };
    if !is_root {
        return None;
    }
    let net = root.path("/sys/class/net");
    if !net.join(bridge).join("bridge").is_dir() {
        findings.push(
            Finding::error(
                "network.bridge",
                format!("this host has no bridge `{bridge}` (/sys/class/net/{bridge}/bridge is missing)"),
            )
            .fix("make the bridge (NetworkManager: nmcli connection add type bridge ifname BRIDGE; systemd-networkd: a .netdev with Kind=bridge), or set [network] mode = \"user\""),
        );
    }
    let ifname = tap_name(vm.name.as_str());
    // A killed run of this VM leaves its journal, whose replay deletes the
    // tap before the new one is made; anything else of that name isn't ours.
    if net.join(&ifname).exists() && !run_dir.join("journal").exists() {
        findings.push(
            Finding::error(
                "network.bridge",
                format!("the interface {ifname} vmrun would make for this VM already exists and isn't from a run of it"),
            )
            .fix(format!("delete it (ip link del {ifname}) if nothing uses it")),
        );
    }
    Some(BridgeTap {
        ifname,
        bridge: bridge.clone(),
        mac: format!("fe{}", &guest_mac(vm)[2..]),
    })
}

/// The guest NIC's MAC: the configured one, else QEMU's 52:54:00 prefix and
/// three bytes of a hash of the name, so the guest's DHCP lease survives
/// restarts.
pub(crate) fn guest_mac(vm: &VmConfig) -> String {
    if let Some(mac) = vm.network.mac {
        return mac.to_string();
    }
    let [_, x, y, z] = fnv1a(vm.name.as_str()).to_be_bytes();
    format!("52:54:00:{x:02x}:{y:02x}:{z:02x}")
}

/// FNV-1a, 32 bits: stable across runs and vmrun versions, as a MAC or a
/// tap name derived from a VM's name must be.
fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// `vmr-NAME`; a name too long for that keeps its first six characters and
/// gets four hex digits of a hash of the whole, so two long names that
/// share a beginning still get two taps.
pub(crate) fn tap_name(vm: &str) -> String {
    let whole = format!("{PREFIX}{vm}");
    if whole.len() <= IFNAME_MAX {
        return whole;
    }
    // VM names are ASCII (config::VmName), so byte slicing is safe.
    format!("{PREFIX}{}-{:04x}", &vm[..6], fnv1a(vm) & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    #[test]
    fn the_derived_guest_mac_is_stable_and_local() {
        let mac = |name: &str| {
            guest_mac(
                &crate::config::load_str(name, std::path::Path::new("/x.toml"), "memory = \"1G\"")
                    .unwrap(),
            )
        };
        assert_eq!(mac("win11"), mac("win11"));
        assert_ne!(mac("win11"), mac("win10"));
        assert!(mac("x").starts_with("52:54:00:"));
        assert_eq!(mac("x").len(), 17);
    }

    #[test]
    fn tap_names_fit_ifnamsiz_and_long_names_stay_apart() {
        assert_eq!(tap_name("win11"), "vmr-win11");
        assert_eq!(tap_name("elevenchars"), "vmr-elevenchars");
        let a = tap_name("gaming-vm-main");
        let b = tap_name("gaming-vm-spare");
        assert_eq!(a.len(), IFNAME_MAX);
        assert!(a.starts_with("vmr-gaming-"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, tap_name("gaming-vm-main"), "stable across runs");
    }

    fn bridged(bridge: &str) -> VmConfig {
        crate::testing::vm(&format!(
            "memory = \"1G\"\n[network]\nmode = \"bridge\"\nbridge = \"{bridge}\"\n"
        ))
    }

    #[test]
    fn a_bridged_vm_as_root_gets_a_tap_on_an_existing_bridge() {
        let host = TestHost::new().dir("/sys/class/net/br0/bridge");
        let run = tempfile::tempdir().unwrap();
        let mut findings = Vec::new();
        let tap = plan(
            &bridged("br0"),
            true,
            &host.root(),
            run.path(),
            &mut findings,
        )
        .expect("a tap");
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(tap.bridge, "br0");
        assert_eq!(tap.ifname, "vmr-vm1");
        assert_eq!(tap.mac, format!("fe{}", &guest_mac(&bridged("br0"))[2..]));
        let none = plan(
            &bridged("br0"),
            false,
            &host.root(),
            run.path(),
            &mut findings,
        );
        assert_eq!(none, None, "without root QEMU runs qemu-bridge-helper");
    }

    #[test]
    fn a_missing_bridge_or_a_foreign_interface_of_the_taps_name_is_an_error() {
        let vm = bridged("br9");
        let ifname = tap_name(vm.name.as_str());
        let host = TestHost::new()
            .dir("/sys/class/net/br0/bridge")
            .dir(&format!("/sys/class/net/{ifname}"));
        let run = tempfile::tempdir().unwrap();
        let mut findings = Vec::new();
        plan(&vm, true, &host.root(), run.path(), &mut findings);
        let text: Vec<String> = findings.iter().map(|f| f.message.clone()).collect();
        assert_eq!(findings.len(), 2, "{text:?}");
        assert!(text[0].contains("no bridge `br9`"), "{text:?}");
        assert!(
            text[1].contains(&format!("{ifname} vmrun would make")),
            "{text:?}"
        );
        // Left by a killed run of this VM: its journal's replay deletes it.
        std::fs::write(run.path().join("journal"), "").unwrap();
        let mut findings = Vec::new();
        plan(
            &bridged("br0"),
            true,
            &host.root(),
            run.path(),
            &mut findings,
        );
        assert!(findings.is_empty(), "{findings:?}");
    }
}
