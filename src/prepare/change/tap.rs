//! A bridged VM's tap (`plan::network`): made persistent for QEMU's uid
//! with `ip tuntap add ... user UID group GID`, given the host-side MAC,
//! put on the bridge and brought up; deleted after the run. QEMU attaches
//! with `-netdev tap,ifname=` (TUNSETIFF on /dev/net/tun), which the tun
//! driver allows a persistent tap's owner or group without CAP_NET_ADMIN.
//! Deleting the tap also takes it off the bridge.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{StepReport, Undo};
use crate::plan::network::BridgeTap;
use crate::prepare::journal::{Journal, JournalError, Step};
use crate::prepare::Host;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The journal step: vmrun made the tap `ifname`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTap {
    pub ifname: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The command names the tap and the bridge.
    #[error("making the VM's tap: `{command}` failed: {output}")]
    Command { command: String, output: String },
}

fn ip(args: &[&str]) -> Vec<String> {
    std::iter::once("ip")
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

/// Makes `tap` for `owner` (uid, gid; `None`: QEMU runs as root) and puts
/// it on its bridge, journaled first.
pub fn create(
    host: &Host,
    journal: &mut Journal,
    tap: &BridgeTap,
    owner: Option<(u32, u32)>,
) -> Result<(), TapError> {
    journal.record(&Step::CreateTap(CreateTap {
        ifname: tap.ifname.clone(),
    }))?;
    let name = tap.ifname.as_str();
    let (uid, gid) = owner.map(|(u, g)| (u.to_string(), g.to_string())).unzip();
    let mut add = vec!["tuntap", "add", "dev", name, "mode", "tap"];
    if let (Some(uid), Some(gid)) = (&uid, &gid) {
        add.extend(["user", uid.as_str(), "group", gid.as_str()]);
    }
    let commands = [
        ip(&add),
        ip(&["link", "set", "dev", name, "address", &tap.mac]),
        ip(&["link", "set", "dev", name, "master", &tap.bridge]),
        ip(&["link", "set", "dev", name, "up"]),
    ];
    for argv in commands {
        let failed = |output: String| TapError::Command {
            command: argv.join(" "),
            output,
        };
        let ran = host
            .kernel
            .run(&argv, COMMAND_TIMEOUT)
            .map_err(|e| failed(e.to_string()))?;
        if !ran.success {
            return Err(failed(ran.output));
        }
    }
    tracing::info!("tap {name} made for QEMU and put on bridge {}", tap.bridge);
    Ok(())
}

impl Undo for CreateTap {
    fn undo(&self, host: &Host) -> StepReport {
        let name = self.ifname.as_str();
        let gone = !host.root.path("/sys/class/net").join(name).exists();
        let problem = if gone {
            None
        } else {
            match host
                .kernel
                .run(&ip(&["link", "del", "dev", name]), COMMAND_TIMEOUT)
            {
                Ok(ran) if ran.success => None,
                Ok(ran) => Some(format!("`ip link del dev {name}` failed: {}", ran.output)),
                Err(e) => Some(format!("`ip link del dev {name}`: {e}")),
            }
        };
        StepReport::logged(format!("tap {name} deleted"), problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::journal::{read, undo_all};
    use crate::prepare::kernel::fake::FakeKernel;
    use crate::testing::TestHost;

    fn tap() -> BridgeTap {
        BridgeTap {
            ifname: "vmr-vm1".into(),
            bridge: "br0".into(),
            mac: "fe:54:00:01:02:03".into(),
        }
    }

    #[test]
    fn the_tap_is_journaled_made_for_qemus_uid_put_on_the_bridge_and_deleted_after() {
        let tree = TestHost::new();
        let root = tree.root();
        let kernel = FakeKernel::new(tree.path());
        let host = Host::new(&root, &kernel);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut journal = Journal::open(&path).unwrap();
        create(&host, &mut journal, &tap(), Some((61000, 61000))).unwrap();
        assert_eq!(
            *kernel.commands.borrow(),
            [
                "ip tuntap add dev vmr-vm1 mode tap user 61000 group 61000",
                "ip link set dev vmr-vm1 address fe:54:00:01:02:03",
                "ip link set dev vmr-vm1 master br0",
                "ip link set dev vmr-vm1 up",
            ]
        );
        assert_eq!(
            read(&path).unwrap().steps,
            [Step::CreateTap(CreateTap {
                ifname: "vmr-vm1".into()
            })]
        );
        // The kernel made the interface; its undo deletes it.
        std::fs::create_dir_all(tree.path().join("sys/class/net/vmr-vm1")).unwrap();
        let undone = undo_all(&path, &host);
        assert!(undone.complete(), "{undone:?}");
        assert_eq!(
            kernel.commands.borrow().last().unwrap(),
            "ip link del dev vmr-vm1"
        );
    }

    #[test]
    fn a_failed_command_names_it_and_a_tap_already_gone_needs_no_undo() {
        let tree = TestHost::new();
        let root = tree.root();
        let kernel =
            FakeKernel::new(tree.path()).failing_command("ip link set dev vmr-vm1 master br0");
        let host = Host::new(&root, &kernel);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut journal = Journal::open(&path).unwrap();
        let err = create(&host, &mut journal, &tap(), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("`ip link set dev vmr-vm1 master br0` failed"),
            "{err}"
        );
        assert_eq!(
            kernel.commands.borrow()[0],
            "ip tuntap add dev vmr-vm1 mode tap",
            "QEMU as root: no owner"
        );
        let before = kernel.commands.borrow().len();
        let undone = undo_all(&path, &host);
        assert!(undone.complete(), "{undone:?}");
        assert_eq!(
            kernel.commands.borrow().len(),
            before,
            "no interface, nothing to delete"
        );
    }
}
