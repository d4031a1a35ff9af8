//! `[[usb]]` on this host: the device behind each entry, what QEMU's
//! `usb-host` is told to match so that it takes the device again after an
//! unplug and replug, and what must not go to the guest (a hub, the
//! host's last keyboard).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::finding::Finding;
use crate::config::{Input, Usb, UsbIds, UsbPort, UsbSelector};
use crate::host::usb::{self as host_usb, HostUsb};
use crate::host::HostRoot;

/// What QEMU's `usb-host` matches on. It polls the host's devices and
/// opens the first one that matches every property given (host-libusb's
/// `usb_host_auto_check`), so a device matched by ids or by port, never
/// by its bus address, is taken again when it comes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsbMatch {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_string")]
    pub ids: Option<UsbIds>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_string")]
    pub port: Option<UsbPort>,
}

fn opt_string<T: std::fmt::Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

impl UsbMatch {
    /// What a `usb-host` of a running QEMU matches, read back from its
    /// properties; `None` for one that matches on neither ids nor port (a
    /// bus address only: a replugged device has a new address, so it is
    /// never that device's again).
    pub(crate) fn of_qemu(d: &crate::qmp::UsbHost) -> Option<Self> {
        let ids = (d.vendor != 0 || d.product != 0).then_some(UsbIds {
            vendor: d.vendor,
            product: d.product,
        });
        let port = match d.hostport.as_str() {
            "" => None,
            path => Some(format!("{}-{path}", d.hostbus).parse().ok()?),
        };
        (ids.is_some() || port.is_some()).then_some(Self { ids, port })
    }

    /// Whether QEMU's `usb-host` with these properties opens `d`: the
    /// vendor and product, the port, or both (ids pinned to a port when
    /// several devices share them), as its filter compares them.
    pub(crate) fn takes(&self, d: &HostUsb) -> bool {
        self.ids.as_ref().is_none_or(|ids| *ids == d.ids)
            && self.port.as_ref().is_none_or(|port| *port == d.port)
    }
}

/// One `[[usb]]` planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsbPlan {
    /// QEMU's device id, from the selector: the same on every run, so
    /// `vmrun usb NAME detach SEL` finds it.
    pub id: String,
    pub selector: UsbSelector,
    pub optional: bool,
    pub matcher: UsbMatch,
    /// The device plugged in now; `None` when missing.
    pub found: Option<HostUsb>,
}

impl UsbPlan {
    /// The node QEMU's uid must open (libusb opens usbfs read-write).
    pub fn node(&self) -> Option<PathBuf> {
        self.found.as_ref().map(HostUsb::node)
    }
}

/// QEMU's id for the device `sel` selects: `usb-046d-c52b`,
/// `usb-046d-c52b-1` (index 1), `usb-1-4.2` (a port). QEMU ids take
/// letters, digits, `-`, `.` and `_`, and start with a letter.
pub fn device_id(sel: &UsbSelector) -> String {
    match sel {
        UsbSelector::Ids { ids, index: 0 } => format!("usb-{:04x}-{:04x}", ids.vendor, ids.product),
        UsbSelector::Ids { ids, index } => {
            format!("usb-{:04x}-{:04x}-{index}", ids.vendor, ids.product)
        }
        UsbSelector::Port(p) => format!("usb-{p}"),
    }
}

/// Finds `sel` among `all`: the matcher for QEMU and the device now.
/// Ids that several plugged devices share add the found one's port,
/// since QEMU would take whichever it meets first.
pub fn resolve(all: &[HostUsb], sel: &UsbSelector) -> (UsbMatch, Option<HostUsb>) {
    let matches = host_usb::find(all, sel);
    match sel {
        UsbSelector::Ids { ids, index } => {
            let found = matches.get(*index as usize).map(|d| (*d).clone());
            let port = found
                .as_ref()
                .filter(|_| matches.len() > 1 || *index > 0)
                .map(|d| d.port.clone());
            let ids = Some(*ids);
            (UsbMatch { ids, port }, found)
        }
        UsbSelector::Port(p) => {
            let m = UsbMatch {
                ids: None,
                port: Some(p.clone()),
            };
            (m, matches.first().map(|d| (*d).clone()))
        }
    }
}

/// Plans every `[[usb]]`; `input` is `[input]`, whose keyboard must stay
/// on the host.
pub(crate) fn plan(
    usbs: &[Usb],
    input: Option<&Input>,
    root: &HostRoot,
    findings: &mut Vec<Finding>,
) -> Vec<UsbPlan> {
    let all = host_usb::list(root);
    let mut out: Vec<UsbPlan> = Vec::new();
    for u in usbs {
        let (matcher, found) = resolve(&all, &u.selector);
        let subject = format!("usb {}", u.selector);
        match &found {
            None if u.optional => findings.push(Finding::warning(
                &subject,
                "not plugged in: QEMU takes it when it appears",
            )),
            None => findings.push(
                Finding::error(&subject, "no such USB device on this host")
                    .fix("plug it in (see `lsusb`), or set `optional = true` to start without it"),
            ),
            Some(d) if d.hub => findings.push(
                Finding::error(&subject, format!("{} ({}) is a hub", d.port, d.ids))
                    .fix("give the guest the devices behind it, each with its own [[usb]]"),
            ),
            Some(d) => {
                if let Some(o) = out.iter().find(|o| o.found.as_ref() == Some(d)) {
                    findings.push(Finding::error(
                        &subject,
                        format!("{} is also selected as usb {}", d.port, o.selector),
                    ));
                }
            }
        }
        out.push(UsbPlan {
            id: device_id(&u.selector),
            selector: u.selector.clone(),
            optional: u.optional,
            matcher,
            found,
        });
    }
    let taken: Vec<&HostUsb> = out.iter().filter_map(|u| u.found.as_ref()).collect();
    findings.extend(keyboard_findings(&taken, input, root));
    out
}

/// The host must keep a keyboard: one the guest takes is gone from the
/// host until the VM stops, and with it the last way to type on the host.
/// `[input]`'s keyboard must stay too: vmrun reads it for the switch
/// hotkey, which a device in the guest can't send.
fn keyboard_findings(taken: &[&HostUsb], input: Option<&Input>, root: &HostRoot) -> Vec<Finding> {
    let mut out = Vec::new();
    let on_taken = |dev: &Path| taken.iter().find(|t| dev.starts_with(&t.sysfs)).copied();
    if let Some(path) = input.and_then(|i| i.keyboard.as_ref()) {
        if let Some(t) = evdev_device(root, path).and_then(|d| on_taken(&d)) {
            out.push(
                Finding::error(
                    format!("usb {}", t.port),
                    format!("it is [input]'s keyboard {}", path.display()),
                )
                .fix("remove this [[usb]]: [input] already gives the keyboard to the guest"),
            );
        }
    }
    let keyboards: Vec<PathBuf> = crate::input::list::list(root)
        .into_iter()
        .filter(|d| d.kind == crate::input::list::Kind::Keyboard)
        .filter_map(|d| evdev_device(root, Path::new(&d.node)))
        .collect();
    let left = keyboards.iter().filter(|k| on_taken(k).is_none()).count();
    let guest_keyboards: Vec<&HostUsb> = taken
        .iter()
        .filter(|t| t.keyboard || keyboards.iter().any(|k| k.starts_with(&t.sysfs)))
        .copied()
        .collect();
    if let (0, Some(t)) = (left, guest_keyboards.first()) {
        out.push(
            Finding::error(
                format!("usb {}", t.port),
                format!(
                    "{} ({}) is the host's last keyboard: without it, no one can type on the host while the VM runs",
                    t.port, t.ids
                ),
            )
            .fix("plug in a second keyboard for the host, or share this one with [input] (a hotkey switches it between host and guest)"),
        );
    }
    out
}

/// The sysfs device behind the evdev node `path` (a by-id link or
/// `/dev/input/eventN`), resolved.
fn evdev_device(root: &HostRoot, path: &Path) -> Option<PathBuf> {
    let node = std::fs::canonicalize(root.path(path)).ok()?;
    let event = node.file_name()?.to_str()?.to_string();
    std::fs::canonicalize(root.path(format!("/sys/class/input/{event}/device"))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::finding::Severity;
    use crate::testing::{Machine, TestHost, Usb as FakeUsb};

    fn usb(sel: &str, optional: bool) -> Usb {
        Usb {
            selector: sel.parse().unwrap(),
            optional,
        }
    }

    fn plan_on(host: &TestHost, usbs: &[Usb]) -> (Vec<UsbPlan>, Vec<Finding>) {
        let mut findings = Vec::new();
        let p = plan(usbs, None, &host.root(), &mut findings);
        (p, findings)
    }

    fn errors(f: &[Finding]) -> Vec<String> {
        f.iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| format!("{}: {}", f.subject, f.message))
            .collect()
    }

    #[test]
    fn a_device_is_taken_by_the_filter_qemu_has() {
        let d = HostUsb::test_keyboard("3-1.2", 5);
        let ids = Some("0627:0001".parse().unwrap());
        let m = |ids, port: Option<&str>| UsbMatch {
            ids,
            port: port.map(|p| p.parse().unwrap()),
        };
        assert!(m(ids, None).takes(&d));
        assert!(m(None, Some("3-1.2")).takes(&d));
        assert!(m(ids, Some("3-1.2")).takes(&d));
        // The same ids pinned to another port: the other device's.
        assert!(!m(ids, Some("3-1.3")).takes(&d));
        assert!(!m(Some("046d:c52b".parse().unwrap()), None).takes(&d));
    }

    #[test]
    fn a_running_usb_host_is_read_back_as_the_match_it_was_given() {
        let qemu = |vendor, product, hostbus, hostport: &str| crate::qmp::UsbHost {
            id: "usb-x".into(),
            vendor,
            product,
            hostbus,
            hostport: hostport.into(),
            attached: false,
        };
        for m in [
            resolve(&[], &"045e:028e".parse().unwrap()).0,
            resolve(&[], &"1-4.2".parse().unwrap()).0,
            UsbMatch {
                ids: Some("045e:028e".parse().unwrap()),
                port: Some("3-1.2".parse().unwrap()),
            },
        ] {
            let args = crate::qemu::usb_host_qmp("usb-x", &m);
            let num = |k: &str| args.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            let back = qemu(
                u16::try_from(num("vendorid")).unwrap(),
                u16::try_from(num("productid")).unwrap(),
                u8::try_from(num("hostbus")).unwrap(),
                args.get("hostport").and_then(|v| v.as_str()).unwrap_or(""),
            );
            assert_eq!(UsbMatch::of_qemu(&back), Some(m));
        }
        // A bus address only, or a port on "any bus": nothing vmrun can
        // follow across a replug.
        assert_eq!(UsbMatch::of_qemu(&qemu(0, 0, 1, "")), None);
        assert_eq!(UsbMatch::of_qemu(&qemu(0, 0, 0, "4")), None);
    }

    #[test]
    fn unique_ids_are_matched_by_ids_alone_and_a_port_by_bus_and_port() {
        let host = Machine::FixtureDesktop.build();
        let (p, f) = plan_on(&host, &[usb("046d:c52b", false), usb("1-1.3", false)]);
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(p[0].id, "usb-046d-c52b");
        assert_eq!(p[0].matcher.port, None);
        assert_eq!(p[0].node(), Some(PathBuf::from("/dev/bus/usb/001/009")));
        assert_eq!(p[1].id, "usb-1-1.3");
        assert_eq!(p[1].matcher.ids, None);
        assert_eq!(p[1].matcher.port.as_ref().unwrap().path(), "1.3");
        assert_eq!(p[1].found.as_ref().unwrap().devnum, 7);
    }

    #[test]
    fn shared_ids_pin_the_indexed_device_to_its_port() {
        let host = Machine::FixtureDesktop.build();
        let pad = |index| Usb {
            selector: UsbSelector::Ids {
                ids: "045e:028e".parse().unwrap(),
                index,
            },
            optional: false,
        };
        let (p, f) = plan_on(&host, &[pad(0), pad(1)]);
        assert!(f.is_empty(), "{f:?}");
        let ports: Vec<String> = p
            .iter()
            .map(|u| u.matcher.port.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(ports, ["1-1.3", "1-1.4"]);
        assert_eq!(
            (p[0].id.as_str(), p[1].id.as_str()),
            ("usb-045e-028e", "usb-045e-028e-1")
        );
        let (_, f) = plan_on(&host, &[pad(2)]);
        assert_eq!(
            errors(&f),
            ["usb 045e:028e index 2: no such USB device on this host"]
        );
    }

    #[test]
    fn a_missing_device_refuses_unless_optional() {
        let host = Machine::FixtureDesktop.build();
        let (p, f) = plan_on(&host, &[usb("dead:beef", false)]);
        assert_eq!(errors(&f).len(), 1);
        assert_eq!(p[0].found, None);
        let (p, f) = plan_on(&host, &[usb("9-9", true)]);
        assert!(errors(&f).is_empty());
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(p[0].node(), None);
        assert_eq!(p[0].matcher.port.as_ref().unwrap().to_string(), "9-9");
    }

    #[test]
    fn a_hub_and_a_device_selected_twice_are_refused() {
        let host = Machine::FixtureDesktop.build();
        let (_, f) = plan_on(&host, &[usb("05e3:0610", false)]);
        assert_eq!(errors(&f), ["usb 05e3:0610: 1-1 (05e3:0610) is a hub"]);
        let (_, f) = plan_on(&host, &[usb("046d:c52b", false), usb("1-7", false)]);
        assert_eq!(
            errors(&f),
            ["usb port 1-7: 1-7 is also selected as usb 046d:c52b"]
        );
    }

    #[test]
    fn the_hosts_last_keyboard_stays_with_the_host() {
        let host = Machine::FixtureDesktop.build();
        // Two keyboards: one may go.
        let (_, f) = plan_on(&host, &[usb("1-2", false)]);
        assert!(errors(&f).is_empty(), "{f:?}");
        // Both, and the G502's key node: the host has none left.
        let all = [usb("1-2", false), usb("1-4", false), usb("1-5", false)];
        let (_, f) = plan_on(&host, &all);
        assert_eq!(errors(&f).len(), 1, "{f:?}");
        assert!(errors(&f)[0].contains("the host's last keyboard"), "{f:?}");
        // A host whose only keyboard is a boot-protocol one without evdev.
        let bare = TestHost::new().usb(FakeUsb::keyboard("2-1", (0x1234, 0x5678), 2));
        let (_, f) = plan_on(&bare, &[usb("2-1", false)]);
        assert!(errors(&f)[0].contains("last keyboard"), "{f:?}");
    }

    #[test]
    fn inputs_keyboard_is_not_also_given_by_usb() {
        let host = Machine::FixtureDesktop.build();
        let text =
            "memory = \"1G\"\n[input]\nkeyboard = \"/dev/input/by-id/usb-Corsair_K70-event-kbd\"\n";
        let vm = crate::testing::vm(text);
        let mut f = Vec::new();
        plan(
            &[usb("1b1c:1b13", false)],
            vm.input.as_ref(),
            &host.root(),
            &mut f,
        );
        assert_eq!(
            errors(&f),
            ["usb 1-4: it is [input]'s keyboard /dev/input/by-id/usb-Corsair_K70-event-kbd"]
        );
    }
}
