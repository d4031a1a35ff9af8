//! The gaming VM's extras on the command line: Looking Glass's shared
//! memory (with the SPICE agent channel its client uses), the host's USB
//! devices and the host's SMBIOS strings.

use super::argv::Argv;
use super::opts::Opts;
use crate::plan::usb::UsbMatch;
use crate::plan::Plan;

/// `ivshmem-plain` over a `memory-backend-file`: the guest sees the file's
/// pages as BAR2 of a PCI device 1af4:1110 (docs/specs/ivshmem-spec.rst),
/// the client on the host maps the same file.
///
/// QEMU opens `mem-path` itself with plain open(2) (`file_ram_open`, not
/// `qemu_open`: no `/dev/fdset`), as its own uid: the file is the client
/// user's with QEMU's group and mode 0660, made before QEMU starts, so the
/// group bits let QEMU in. It opens without O_CREAT when the file exists,
/// so /dev/shm's sticky-bit `protected_regular` check does not apply, and
/// `size` equals the file's size (QEMU refuses a file larger than `size`).
pub(crate) fn looking_glass(a: &mut Argv, plan: &Plan) {
    let Some(lg) = &plan.looking_glass else {
        return;
    };
    a.opt(
        "-object",
        Opts::new("memory-backend-file")
            .set("id", "lg")
            .set("mem-path", &lg.path)
            .set("size", lg.size.to_string())
            .switch("share", true),
    );
    a.opt(
        "-device",
        Opts::new("ivshmem-plain")
            .set("id", "lg-shm")
            .set("memdev", "lg"),
    );
    if lg.spice {
        // The SPICE agent's port (`com.redhat.spice.0`), over which the
        // client's clipboard travels; keyboard and mouse go over SPICE's
        // inputs channel to QEMU's PS/2 devices.
        a.opt(
            "-device",
            Opts::new("virtio-serial-pci").set("id", "lg-serial"),
        );
        a.opt(
            "-chardev",
            Opts::new("spicevmc")
                .set("id", "vdagent")
                .set("name", "vdagent"),
        );
        a.opt(
            "-device",
            Opts::new("virtserialport")
                .set("chardev", "vdagent")
                .set("name", "com.redhat.spice.0"),
        );
    }
}

/// `-smbios type=N,field=value,...`, each value escaped by `Opts` (QEMU's
/// option parser takes `,,` for a comma inside a value).
pub(crate) fn smbios(a: &mut Argv, plan: &Plan) {
    for table in &plan.smbios {
        let mut o = Opts::empty().set("type", table.kind.to_string());
        for (field, value) in &table.fields {
            o = o.set(field, value);
        }
        a.opt("-smbios", o);
    }
}

/// One `usb-host` per `[[usb]]` on the xHCI (`display` adds it), matched
/// by ids or by host port, never by bus address (`hostaddr`): QEMU's
/// host-libusb polls the host's devices and opens any that matches a
/// `usb-host` without one, so the device is taken again after an unplug
/// and replug, and a device missing at start is taken when it appears.
pub(crate) fn usb(a: &mut Argv, plan: &Plan) {
    for u in &plan.usb {
        a.opt("-device", usb_host(&u.id, &u.matcher));
    }
}

/// `usb-host`'s properties for `m` (the same on QEMU 7.2 and 10.0):
/// `vendorid`/`productid` numbers (QEMU parses `0x` hex), `hostbus` and
/// `hostport`, the port path without the bus (`4.2`).
fn usb_host(id: &str, m: &UsbMatch) -> Opts {
    let mut o = Opts::new("usb-host")
        .set("id", id)
        .set("bus", super::devices::XHCI_BUS);
    if let Some(ids) = m.ids {
        o = o
            .set("vendorid", format!("0x{:04x}", ids.vendor))
            .set("productid", format!("0x{:04x}", ids.product));
    }
    if let Some(p) = &m.port {
        o = o
            .set("hostbus", p.bus.to_string())
            .set("hostport", p.path());
    }
    o
}

/// The same device as QMP `device_add`'s arguments, for `vmrun usb
/// attach`: JSON numbers for the uint32 properties (QMP checks types).
pub fn usb_host_qmp(id: &str, m: &UsbMatch) -> serde_json::Map<String, serde_json::Value> {
    let mut o = serde_json::Map::new();
    o.insert("driver".into(), "usb-host".into());
    o.insert("id".into(), id.into());
    o.insert("bus".into(), super::devices::XHCI_BUS.into());
    if let Some(ids) = m.ids {
        o.insert("vendorid".into(), ids.vendor.into());
        o.insert("productid".into(), ids.product.into());
    }
    if let Some(p) = &m.port {
        o.insert("hostbus".into(), p.bus.into());
        o.insert("hostport".into(), p.path().into());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_host_matches_by_ids_or_port_on_the_command_line_and_over_qmp() {
        let ids = UsbMatch {
            ids: Some("046d:c52b".parse().unwrap()),
            port: None,
        };
        let both = UsbMatch {
            ids: Some("045e:028e".parse().unwrap()),
            port: Some("1-1.4".parse().unwrap()),
        };
        let line = |id, m| {
            std::ffi::OsString::from(usb_host(id, m))
                .into_string()
                .unwrap()
        };
        assert_eq!(
            line("usb-046d-c52b", &ids),
            "usb-host,id=usb-046d-c52b,bus=xhci.0,vendorid=0x046d,productid=0xc52b"
        );
        assert_eq!(
            line("usb-045e-028e-1", &both),
            "usb-host,id=usb-045e-028e-1,bus=xhci.0,vendorid=0x045e,productid=0x028e,hostbus=1,hostport=1.4"
        );
        let qmp = serde_json::Value::Object(usb_host_qmp("usb-045e-028e-1", &both));
        assert_eq!(
            qmp,
            serde_json::json!({"driver": "usb-host", "id": "usb-045e-028e-1", "bus": "xhci.0",
                "vendorid": 0x045e, "productid": 0x028e, "hostbus": 1, "hostport": "1.4"})
        );
    }
}
