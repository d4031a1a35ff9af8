//! `vmrun usb NAME list|attach SEL|detach SEL`: a running VM's host USB
//! devices, over QEMU's own QMP socket (`qmp-ctl.sock`), as `vmrun qmp`.
//! A device attached here is the same `usb-host` a `[[usb]]` gives (same
//! id, same match), so `detach` takes either kind.

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use super::args::{UsbAction, UsbArgs};
use super::out::outln;
use super::target::running_vm;
use crate::config::{UsbSelector, VmName};
use crate::exit::Exit;
use crate::host::HostRoot;
use crate::plan::usb::{device_id, resolve, UsbMatch};
use crate::plan::VmPaths;
use crate::prepare::change::device_owner::{self, NewOwner};
use crate::prepare::change::usb_driver;
use crate::prepare::journal::Journal;
use crate::prepare::kernel::RealKernel;
use crate::prepare::Host;
use crate::qmp::{QmpClient, QmpError};

/// Why a `vmrun usb` verb failed.
#[derive(Debug, thiserror::Error)]
enum UsbCliError {
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("{} ({}) is a hub: attach the devices behind it", .0.port, .0.ids)]
    Hub(Box<crate::host::usb::HostUsb>),
    #[error("QEMU's uid: {0}")]
    QemuOwner(String),
    #[error(transparent)]
    Journal(#[from] crate::prepare::journal::JournalError),
    #[error(transparent)]
    Owner(#[from] device_owner::DeviceOwnerError),
}

/// One `usb-host` of the VM, as QOM shows its properties.
#[derive(Debug, Serialize)]
struct VmUsb {
    id: String,
    /// `vvvv:pppp` when it matches by ids.
    ids: Option<String>,
    /// `BUS-PORT` when it matches by host port.
    port: Option<String>,
    /// A host device is open and on the guest's bus (`attached`); false
    /// while the device is unplugged from the host.
    attached: bool,
}

pub(super) fn usb(args: &UsbArgs) -> Exit {
    let (name, paths) = match running_vm(&args.vm) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let verb = match verb(&args.action) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vmrun: {e}");
            return Exit::Usage;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmrun: could not set up an event loop: {e}");
            return Exit::VmFailed;
        }
    };
    let result = rt.block_on(async {
        let (client, _events) = QmpClient::connect(&paths.qmp_ctl_socket).await?;
        let done: Result<(), UsbCliError> = match verb {
            Verb::Attach(sel) => attach(&client, &name, &paths, &sel).await,
            Verb::Detach(id) => {
                client
                    .execute_raw("device_del", Some(json!({ "id": id })))
                    .await?;
                outln!("{name}: detached {id}");
                Ok(())
            }
            Verb::List => {
                let list = list(&client).await?;
                let _ = super::print_listing(&list, args.json, |l| render(l));
                Ok(())
            }
        };
        done
    });
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("vmrun: {name}: {e}");
            Exit::HostProblems
        }
    }
}

enum Verb {
    List,
    Attach(UsbSelector),
    /// The device's QEMU id.
    Detach(String),
}

/// SEL read: `detach` also takes the id `list` shows (how a `[[usb]]`
/// with an `index` is named).
fn verb(action: &UsbAction) -> Result<Verb, String> {
    let parse = |sel: &str| {
        sel.parse::<UsbSelector>()
            .map_err(|e| format!("`{sel}`: {e}"))
    };
    Ok(match action {
        UsbAction::List => Verb::List,
        UsbAction::Attach { sel } => Verb::Attach(parse(sel)?),
        UsbAction::Detach { sel } if sel.starts_with("usb-") => Verb::Detach(sel.clone()),
        UsbAction::Detach { sel } => Verb::Detach(device_id(&parse(sel)?)),
    })
}

/// The VM's `usb-host` devices, as `list` shows them.
async fn list(client: &QmpClient) -> Result<Vec<VmUsb>, QmpError> {
    let hosts = client.usb_hosts().await?;
    Ok(hosts
        .into_iter()
        .map(|h| {
            let m = UsbMatch::of_qemu(&h);
            VmUsb {
                ids: m.as_ref().and_then(|m| m.ids).map(|i| i.to_string()),
                port: m.and_then(|m| m.port).map(|p| p.to_string()),
                attached: h.attached,
                id: h.id,
            }
        })
        .collect())
}

fn render(list: &[VmUsb]) -> String {
    if list.is_empty() {
        return "no USB host devices\n".into();
    }
    let mut out = String::new();
    for u in list {
        let by = [
            u.ids.as_ref().map(|i| format!("ids {i}")),
            u.port.as_ref().map(|p| format!("port {p}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" + ");
        let state = if u.attached {
            "attached"
        } else {
            "waiting for the device"
        };
        out.push_str(&format!("{:<20} {by:<32} {state}\n", u.id));
    }
    out
}

/// Gives QEMU the device `sel` names: its node handed to QEMU's uid
/// first (journaled in the VM's run, so the VM's teardown or `vmrun
/// restore` gives it back), then `device_add`. A device not plugged in is
/// added all the same: QEMU takes it when it appears, once the supervisor
/// has handed its node over (`supervisor::usb_replug`).
async fn attach(
    client: &QmpClient,
    name: &VmName,
    paths: &VmPaths,
    sel: &UsbSelector,
) -> Result<(), UsbCliError> {
    let root = HostRoot::from_env();
    let all = crate::host::usb::list(&root);
    let (matcher, found) = resolve(&all, sel);
    let id = device_id(sel);
    match &found {
        Some(d) if d.hub => return Err(UsbCliError::Hub(Box::new(d.clone()))),
        // QEMU runs as its own uid only when vmrun is root; otherwise it
        // is the caller, who needs the node's access already.
        Some(d) if nix::unistd::geteuid().is_root() => {
            let to = qemu_owner(&paths.pidfile).map_err(UsbCliError::QemuOwner)?;
            let kernel = RealKernel::default();
            let host = Host::new(&root, &kernel);
            let mut journal = Journal::open_running(&paths.run_dir.join("journal"))?;
            usb_driver::record(&mut journal, &d.port.to_string())?;
            device_owner::give(&host, &mut journal, &d.node(), to)?;
        }
        Some(_) => {}
        None => {
            outln!("{name}: {sel} is not plugged in: QEMU takes it when it appears");
        }
    }
    let args = crate::qemu::usb_host_qmp(&id, &matcher);
    client
        .execute_raw("device_add", Some(Value::Object(args)))
        .await?;
    outln!("{name}: attached {id}");
    Ok(())
}

/// The uid and gid QEMU runs as, from its `/proc/PID/status` (the real
/// ids, the first of the four on the `Uid:` and `Gid:` lines).
fn qemu_owner(pidfile: &Path) -> Result<NewOwner, String> {
    let pid =
        std::fs::read_to_string(pidfile).map_err(|e| format!("{}: {e}", pidfile.display()))?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .map_err(|e| format!("QEMU (pid {}): {e}", pid.trim()))?;
    let id = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("QEMU (pid {}): no {key} line", pid.trim()))
    };
    Ok(NewOwner {
        uid: id("Uid:")?,
        gid: id("Gid:")?,
        mode: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_says_what_each_device_matches_and_whether_it_is_there() {
        let list = [
            VmUsb {
                id: "usb-046d-c52b".into(),
                ids: Some("046d:c52b".into()),
                port: None,
                attached: true,
            },
            VmUsb {
                id: "usb-045e-028e-1".into(),
                ids: Some("045e:028e".into()),
                port: Some("1-1.4".into()),
                attached: false,
            },
        ];
        assert_eq!(
            render(&list),
            "usb-046d-c52b        ids 046d:c52b                    attached\n\
             usb-045e-028e-1      ids 045e:028e + port 1-1.4       waiting for the device\n"
        );
        assert_eq!(render(&[]), "no USB host devices\n");
    }

    #[test]
    fn detach_takes_a_selector_or_the_id_list_shows() {
        let detach = |sel: &str| match verb(&UsbAction::Detach { sel: sel.into() }) {
            Ok(Verb::Detach(id)) => id,
            _ => panic!("{sel}"),
        };
        assert_eq!(detach("045e:028e"), "usb-045e-028e");
        assert_eq!(detach("1-1.4"), "usb-1-1.4");
        assert_eq!(detach("usb-045e-028e-1"), "usb-045e-028e-1");
        assert!(verb(&UsbAction::Attach {
            sel: "usb-1-1".into()
        })
        .is_err());
    }
}
