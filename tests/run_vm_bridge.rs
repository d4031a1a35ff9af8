//! `[network] mode = "bridge"` for real, as root, with QEMU under a per-VM
//! uid: vmrun makes the VM's tap for that uid and puts it on the bridge,
//! QEMU attaches to it (the tap's carrier comes on only while a queue is
//! attached), and the tap is gone after a stop, and after `kill -9` +
//! `vmrun restore`. The test runs itself again in a network and mount
//! namespace of its own (`unshare`), with sysfs mounted there, so the
//! bridge it makes touches no network of the machine's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test panics on what it did not expect

mod support;

use std::path::Path;
use std::process::Command;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

/// Set in the copy of the test that runs inside the namespaces.
const INSIDE: &str = "VMRUN_TEST_IN_OWN_NETNS";
const BRIDGE: &str = "brtest0";
const TAP: &str = "vmr-bridged";

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn net(attr: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(TAP).join(attr))
        .ok()
        .map(|s| s.trim().to_string())
}

fn tap_exists() -> bool {
    Path::new("/sys/class/net").join(TAP).exists()
}

/// Runs this test again inside new network and mount namespaces, and
/// requires that it ran there and passed.
fn rerun_in_own_netns(test: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes a bridge and a tap and needs root (CI runs as root)"
    );
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        out.status.success() && said.contains(&format!("test {test} ... ok")),
        "{said}"
    );
}

#[test]
fn a_bridged_vm_gets_a_tap_of_its_own_uid_on_the_bridge_gone_after_stop_and_restore() {
    if std::env::var_os(INSIDE).is_none() {
        return rerun_in_own_netns(
            "a_bridged_vm_gets_a_tap_of_its_own_uid_on_the_bridge_gone_after_stop_and_restore",
        );
    }
    // sysfs shows the network namespace of whoever mounted it.
    sh("mount", &["-t", "sysfs", "sysfs", "/sys"]);
    sh("ip", &["link", "add", BRIDGE, "type", "bridge"]);
    sh("ip", &["link", "set", BRIDGE, "up"]);

    let w = World::new();
    w.make_world_readable();
    std::fs::write(
        w.home.join("vms/bridged.toml"),
        format!(
            "memory = \"128M\"\n[firmware]\ntype = \"bios\"\n\
             [network]\nmode = \"bridge\"\nbridge = \"{BRIDGE}\"\nmac = \"52:54:00:aa:bb:cc\"\n\
             [display]\nmode = \"serial\"\n[shutdown]\ntimeout = \"1s\"\n\
             [qemu]\naccel = \"tcg\"\nuser = \"auto\"\n"
        ),
    )
    .unwrap();

    let dry = w.run(&["start", "bridged", "--dry-run"]);
    assert_ok(&dry, "vmrun start --dry-run");
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.contains(&format!("tap={TAP}")) || dry.contains(&format!("ifname={TAP}")),
        "{dry}"
    );
    assert!(!tap_exists(), "a dry run makes nothing");

    for ending in ["stop", "kill -9 + restore"] {
        w.start_detached("bridged");
        let qemu = w.pid_in("bridged", "qemu.pid").unwrap();
        let uid = proc_id(qemu, "Uid");
        assert_ne!(uid, 0, "QEMU runs as its own uid");
        assert_eq!(net("owner").as_deref(), Some(uid.to_string().as_str()));
        let master =
            std::fs::read_link(Path::new("/sys/class/net").join(TAP).join("master")).unwrap();
        assert_eq!(master.file_name().unwrap(), BRIDGE);
        assert_eq!(net("address").as_deref(), Some("fe:54:00:aa:bb:cc"));
        // tun turns the carrier on when a queue attaches (tun_attach).
        wait_for("QEMU to attach to the tap", WAIT, || {
            (net("carrier").as_deref() == Some("1")).then_some(())
        });
        let info = w.run(&[
            "qmp",
            "bridged",
            "human-monitor-command",
            r#"{"command-line":"info network"}"#,
        ]);
        assert_ok(&info, "info network");
        assert!(
            text(&info).contains(&format!("ifname={TAP}")),
            "{}",
            text(&info)
        );

        if ending == "stop" {
            assert_ok(&w.run(&["stop", "bridged"]), "vmrun stop");
            wait_for("the run to end", WAIT, || {
                (!w.run_dir("bridged").exists()).then_some(())
            });
        } else {
            let supervisor = w.pid_in("bridged", "supervisor.pid").unwrap();
            kill(Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
            kill(Pid::from_raw(qemu), Signal::SIGKILL).unwrap();
            wait_for("QEMU to die", WAIT, || (!alive(qemu)).then_some(()));
            assert!(tap_exists(), "a persistent tap outlives a killed vmrun");
            assert_ok(&w.run(&["restore", "bridged"]), "vmrun restore");
        }
        assert!(!tap_exists(), "{ending} left the tap {TAP}");
        assert!(
            !Path::new("/sys/class/net")
                .join(BRIDGE)
                .join("brif")
                .join(TAP)
                .exists(),
            "{ending} left the bridge a port"
        );
    }
}
