# Shared by the vfio_*.sh scenarios (sourced after "$LAB_LIB"): VM configs
# for the nested QEMU, and small readers of vmrun's answers and of sysfs.
VGA=0000:00:0a.0
HDA=0000:00:0a.1
XHCI=0000:00:0a.2
SERIAL=0000:00:0a.3

# vmrun finds NAME.toml under $VMRUN_HOME/vms; run and state dirs stay in
# the guest's tmpfs.
export VMRUN_HOME=/tmp/vmhome
export VMRUN_RUN_DIR=/run/vmrun
export VMRUN_STATE_DIR=/tmp/vmstate
mkdir -p "$VMRUN_HOME/vms"

# vm_cfg NAME ADDRESS...: a nested VM taking these PCI functions. Small
# memory (every guest page is DMA-mapped through the emulated IOMMU), no
# firmware OS: it ignores ACPI powerdown, so a stop escalates to quit after
# the short timeout (exit 5, forced stop).
vm_cfg() {
	f="$VMRUN_HOME/vms/$1.toml"
	shift
	cat >"$f" <<-EOF
		memory = "64M"
		[cpu]
		cores = 1
		[firmware]
		type = "bios"
		[network]
		mode = "none"
		[display]
		mode = "none"
		[shutdown]
		timeout = "1s"
		[qemu]
		accel = "tcg"
	EOF
	for a in "$@"; do
		printf '[[hostdev]]\naddress = "%s"\n' "$a" >>"$f"
		[ "$a" = "$VGA" ] && echo 'x_vga = true' >>"$f"
	done
	return 0
}

# field KEY: a top-level field of the JSON object on stdin ("" if absent).
field() {
	python3 -c 'import json, sys
try:
    v = json.load(sys.stdin).get(sys.argv[1])
except Exception:
    v = None
print("" if v is None else str(v).lower() if isinstance(v, bool) else v)' "$1"
}

# vm_state NAME: the "state" of `vmrun status NAME --json`.
vm_state() { "$VMRUN" status "$1" --json 2>/dev/null | field state; }
vm_is() { [ "$(vm_state "$1")" = "$2" ]; }

# pci_ids: "vendor:device" of every function in the `query-pci` answer on
# stdin (bridges' buses included), sorted, one line.
pci_ids() {
	python3 -c 'import json, sys
def walk(devs):
    for d in devs:
        yield "%04x:%04x" % (d["id"]["vendor"], d["id"]["device"])
        yield from walk(d.get("pci_bridge", {}).get("devices", []))
try:
    buses = json.load(sys.stdin)
    print(" ".join(sorted(set(i for b in buses for i in walk(b["devices"])))))
except Exception as e:
    print("unreadable: %s" % e)'
}

# nested_pci_ids NAME: pci_ids of VM NAME's query-pci once the lab VGA
# (1234:1111) shows, or after 60 s: QEMU lists the functions behind a root
# port only after the guest firmware has numbered its secondary bus, which
# takes a while under nested TCG. QMP errors go to /tmp/NAME.qmp.err.
nested_pci_ids() {
	i=0
	while :; do
		ids=$("$VMRUN" qmp "$1" query-pci 2>"/tmp/$1.qmp.err" | pci_ids)
		case "$ids" in *1234:1111*) break ;; esac
		i=$((i + 1))
		[ $i -ge 120 ] && break
		sleep 0.5
	done
	echo "$ids"
}

alive() { [ -n "$1" ] && ! gone "$1"; }

pci_override() { cat "$(pci_dev "$1")/driver_override"; }

# gone PID: the process is dead, or a zombie nobody reaped yet whose threads
# have all exited (a leader shows Z while QEMU's other threads still close
# its files, the VFIO group among them).
gone() {
	[ ! -e "/proc/$1" ] ||
		[ "$(awk '/^State:/ { s = $2 } /^Threads:/ { t = $2 } END { print s t }' "/proc/$1/status" 2>/dev/null)" = Z1 ]
}

# rec_devices PREFIX ADDRESS...: the driver and driver_override of each
# function as PREFIX_driver_F / PREFIX_override_F (F = the function digit).
rec_devices() {
	p=$1
	shift
	for a in "$@"; do
		fn=${a##*.}
		lab_str "${p}_driver_$fn" "$(pci_driver "$a")"
		lab_str "${p}_override_$fn" "$(pci_override "$a")"
	done
}

# wait_drivers SECONDS DRIVER_0A0 DRIVER_0A1 ...: until each function has
# the given driver (probes may finish asynchronously).
drivers_are() {
	i=0
	for want in "$@"; do
		[ "$(pci_driver 0000:00:0a.$i)" = "$want" ] || return 1
		i=$((i + 1))
	done
}

# run_vmrun KEY ARGS...: runs vmrun, records KEY_exit and KEY_out (the first
# 3000 bytes of stdout+stderr). Sets $k (busybox sh has no locals: callers
# keep their own names elsewhere).
run_vmrun() {
	k=$1
	shift
	"$VMRUN" "$@" >"/tmp/$k.out" 2>&1
	lab_num "${k}_exit" $?
	lab_str "${k}_out" "$(head -c 3000 "/tmp/$k.out")"
}
