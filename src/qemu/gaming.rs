//! The gaming VM's extras on the command line: Looking Glass's shared
//! memory (with the SPICE agent channel its client uses) and the host's
//! SMBIOS strings.

use super::argv::Argv;
use super::opts::Opts;
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
