# gpu topology, host setup on a real kernel:
# - `vmrun check` sees the IOMMU groups and the lab GPU's group sibling;
#   `check NAME` passes for the whole group and fails for the VGA alone;
# - `vmrun rom dump` reads the emulated VGA's option ROM through sysfs
#   `rom`, leaves the attribute disabled, and the file works as `romfile`
#   for a nested QEMU started by vmrun;
# - `vmrun init` writes a config for this guest that `start --dry-run`
#   accepts; `host kernel-args` names the group's ids.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"

modprobe bochs
modprobe snd-hda-intel
lab_wait 10 drivers_are bochs-drm snd_hda_intel
ROM=$(pci_dev $VGA)/rom
# The kernel fails a read of `rom` (EINVAL) while the attribute is disabled.
rom_readable() { cat "$ROM" >/dev/null 2>&1; }

# json_get FILE EXPR: a Python expression over the JSON in FILE (as `j`).
json_get() {
	python3 -c 'import json, sys
try:
    j = json.load(open(sys.argv[1]))
    print(eval(sys.argv[2]))
except Exception as e:
    print("unreadable: %s" % e)' "$1" "$2"
}

# rom_facts KEY FILE: signature, PCIR vendor:device and size of a ROM file.
rom_facts() {
	python3 -c 'import struct, sys
b = open(sys.argv[1], "rb").read()
p = struct.unpack_from("<H", b, 0x18)[0]
print("%s %s %04x:%04x %d" % (b[:2].hex(), b[p:p+4].decode("latin1"),
    struct.unpack_from("<H", b, p + 4)[0], struct.unpack_from("<H", b, p + 6)[0], len(b)))' "$1" 2>&1
}

# ---- check, host only
"$VMRUN" check --json >/tmp/check.json 2>/tmp/check.err
lab_num check_exit $?
lab_str check_status "$(json_get /tmp/check.json 'j["status"]')"
lab_str check_iommu "$(json_get /tmp/check.json '[c["status"] + " " + c["message"] for c in j["checks"] if c["name"] == "iommu"][0]')"
lab_str check_gpu "$(json_get /tmp/check.json '[c["message"] for c in j["checks"] if c["name"] == "0000:00:0a.0"][0]')"
lab_str check_vfio "$(json_get /tmp/check.json '[c["status"] for c in j["checks"] if c["name"] == "vfio"][0]')"
lab_str check_err "$(head -c 2000 /tmp/check.err)"

# ---- check NAME: the whole group, and the VGA alone
vm_cfg whole $VGA $HDA
run_vmrun check_whole check whole
vm_cfg half $VGA
run_vmrun check_half check half

# ---- rom dump: the attribute starts disabled (a read fails with EINVAL)
lab_bool rom_readable_before rom_readable
run_vmrun dump rom dump $VGA -o /tmp/vga.rom
lab_str dump_facts "$(rom_facts /tmp/vga.rom)"
lab_bool rom_readable_after rom_readable
# Default output: firmware/ beside $VMRUN_HOME/vms, named by the ids.
run_vmrun dump_default rom dump $VGA
lab_str dump_default_facts "$(rom_facts "$VMRUN_HOME/firmware/1234-1111.rom")"
run_vmrun dump_again rom dump $VGA
# A device without a ROM BAR.
run_vmrun dump_hda rom dump $HDA

# ---- the dumped ROM as romfile of a nested QEMU (found in firmware/ by name)
vm_cfg romvm
cat >>"$VMRUN_HOME/vms/romvm.toml" <<-EOF2
	[[hostdev]]
	address = "$VGA"
	x_vga = true
	romfile = "1234-1111.rom"
	[[hostdev]]
	address = "$HDA"
EOF2
run_vmrun romvm_start start romvm --detach
qpid=$("$VMRUN" status romvm --json 2>/dev/null | field qemu_pid)
lab_str romvm_cmdline "$(tr '\0' ' ' <"/proc/$qpid/cmdline" 2>/dev/null)"
lab_str romvm_pci_ids "$(nested_pci_ids romvm)"
run_vmrun romvm_stop stop romvm
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices after_romvm $VGA $HDA

# ---- init on this guest, validated by a dry-run; kernel-args for it
run_vmrun init init labinit --template linux
lab_str init_file "$(cat "$VMRUN_HOME/vms/labinit.toml")"
run_vmrun init_dry start labinit --dry-run
run_vmrun kargs host kernel-args whole
