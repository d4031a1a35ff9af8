# usb topology: the lab host's own USB keyboard (QEMU's usb-kbd, 0627:0001,
# on the xHCI at 0b.0, bus 1 port 1) taken by a nested VM with [[usb]]:
# usbhid lets go while the VM runs, the nested QEMU has it on its guest's
# bus, and it is back on usbhid after a stop and after `kill -9` of the
# supervisor and QEMU + `vmrun restore`; `vmrun usb attach/detach` at run
# time. The VM has no PCI device of the host's: the VGA stays with it.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"

DEV=/sys/bus/usb/devices/1-1
IFACE=$DEV/1-1:1.0
# evdev: the AT keyboard's event node (the host's other keyboard); usbhid:
# the USB keyboard's host driver.
modprobe evdev
modprobe xhci-pci
modprobe usbhid
lab_wait 20 test -e "$IFACE/driver"
usb_driver() { basename "$(readlink "$IFACE/driver" 2>/dev/null)" 2>/dev/null; }
usb_is() { [ "$(usb_driver)" = "$1" ]; }
# QEMU detaches usbhid when it opens the device and claims the interface
# (driver usbfs) once its guest configures it: either way, not the host's.
not_host() { ! usb_is usbhid; }
lab_str host_ids "$(cat $DEV/idVendor):$(cat $DEV/idProduct)"
lab_str host_driver "$(usb_driver)"
node() { printf '/dev/bus/usb/%03d/%03d' "$(cat $DEV/busnum)" "$(cat $DEV/devnum)"; }
owner() { stat -c %u "$(node)"; }
lab_str host_owner "$(owner)"

usb_cfg() {
	vm_cfg "$1"
	printf '[[usb]]\nids = "0627:0001"\n' >>"$VMRUN_HOME/vms/$1.toml"
}
# usb_info NAME: the nested QEMU's `info usb` once a device shows, or after 30 s.
usb_info() {
	i=0
	while :; do
		out=$("$VMRUN" qmp "$1" human-monitor-command '{"command-line": "info usb"}' 2>&1)
		case "$out" in *"QEMU USB Keyboard"*) break ;; esac
		i=$((i + 1))
		[ $i -ge 60 ] && break
		sleep 0.5
	done
	echo "$out"
}
usb_list() { "$VMRUN" usb "$1" list --json 2>&1 | tr -d '\n '; }

# ---- start, run, stop
usb_cfg u1
run_vmrun u1_dry start u1 --dry-run
run_vmrun u1_start start u1 --detach
lab_str u1_state "$(vm_state u1)"
lab_str u1_info "$(usb_info u1)"
lab_str u1_list "$(usb_list u1)"
lab_bool u1_taken lab_wait 20 not_host
"$VMRUN" status u1 --json >/tmp/u1.status 2>&1
qpid=$(field qemu_pid </tmp/u1.status)
lab_str u1_qemu_uid "$(awk '/^Uid:/ { print $2 }' /proc/$qpid/status 2>/dev/null)"
lab_str u1_owner "$(owner)"
lab_str u1_journal "$(cat /run/vmrun/u1/journal 2>/dev/null)"

# ---- run time: detach gives it back to usbhid, attach takes it again
run_vmrun u1_detach usb u1 detach 0627:0001
lab_bool u1_detached_back lab_wait 20 usb_is usbhid
lab_str u1_list_detached "$(usb_list u1)"
run_vmrun u1_attach usb u1 attach 1-1
lab_str u1_info_attached "$(usb_info u1)"
lab_bool u1_attached_taken lab_wait 20 not_host
lab_str u1_list_attached "$(usb_list u1)"

# ---- replug while the VM runs: the port disabled and enabled again (the
# hub's `disable` attribute) disconnects the keyboard and enumerates it
# anew, with a new address, so a new /dev/bus/usb node, root's. udevd runs
# for this part, as on a desktop: libusb (built with udev) learns of
# devices coming and going from udevd's events only, so without it QEMU
# never sees the replug; and it is udevd's owner and mode that the
# supervisor must not race. QEMU's usb-host (by port now) opens the new
# node once the supervisor has handed it over; QOM's `attached` says
# whether it has a host device (`info usb` lists the guest's ports, host
# device or not).
mkdir -p /run/udev
/lib/systemd/systemd-udevd --daemon
lab_bool u1_udevd lab_wait 10 test -S /run/udev/control
attached() { usb_list u1 | grep -q '"id":"usb-1-1".*"attached":true'; }
detached() { usb_list u1 | grep -q '"id":"usb-1-1".*"attached":false'; }
old_node=$(node)
PORT=/sys/bus/usb/devices/1-0:1.0/usb1-port1/disable
lab_str u1_port_attr "$(test -e $PORT && echo yes)"
echo 1 >$PORT
lab_bool u1_unplugged lab_wait 20 test ! -e $DEV
lab_bool u1_guest_lost lab_wait 20 detached
echo 0 >$PORT
lab_bool u1_replugged lab_wait 30 test -e $DEV/devnum
new_node() { [ -e $DEV/devnum ] && [ "$(node)" != "$old_node" ]; }
lab_bool u1_new_node lab_wait 10 new_node
qemu_owns() { [ "$(owner)" = "$(awk '/^Uid:/ { print $2 }' /proc/$qpid/status)" ]; }
lab_bool u1_replug_owned lab_wait 20 qemu_owns
lab_bool u1_replug_attached lab_wait 30 attached
lab_bool u1_replug_taken lab_wait 20 not_host
lab_str u1_replug_journal "$(grep -c chown-device /run/vmrun/u1/journal 2>/dev/null)"
lab_str u1_replug_node "$(node)"
lab_str u1_replug_list "$(usb_list u1)"
# replug KEY CMD...: the port off until the keyboard is gone and udev has
# seen it go (a port enabled again at once stays empty), CMD, then on until
# a new node is there and udev has processed it (KEY_replugged).
replug() {
	replug_key=$1
	shift
	old_node=$(node)
	echo 1 >$PORT
	lab_wait 20 test ! -e $DEV
	udevadm settle
	sleep 1
	"$@"
	echo 0 >$PORT
	lab_bool "${replug_key}_replugged" lab_wait 30 new_node
	udevadm settle
}
# What the supervisor hands over is what QEMU has now: detached, the
# keyboard replugged stays root's and on usbhid (the VM's [[usb]] names
# its ids, but that usb-host was detached above).
run_vmrun u1_detach2 usb u1 detach usb-1-1
lab_bool u1_detach2_back lab_wait 20 usb_is usbhid
replug u1_detached true
sleep 3
lab_str u1_detached_replug_owner "$(owner)"
lab_bool u1_detached_replug_host usb_is usbhid
# Attached while it is unplugged: the node it gets when plugged in is
# handed over, and QEMU takes it.
replug u1_away run_vmrun u1_attach_away usb u1 attach 1-1
lab_bool u1_away_owned lab_wait 20 qemu_owns
lab_bool u1_away_attached lab_wait 30 attached
lab_bool u1_away_taken lab_wait 20 not_host
udevadm control --exit

run_vmrun u1_stop stop u1
# For a failure's report: what the supervisor did.
lab_str u1_log "$(tail -c 3000 /tmp/vmstate/u1/vmrun.log)"
lab_bool u1_back lab_wait 20 usb_is usbhid
lab_str u1_after_owner "$(owner)"
lab_bool u1_run_dir_gone test ! -e /run/vmrun/u1

# ---- kill -9 of the supervisor and of QEMU: QEMU never gives usbhid back;
# `vmrun restore` does, from the journal.
usb_cfg u2
run_vmrun u2_start start u2 --detach
lab_str u2_info "$(usb_info u2)"
lab_bool u2_taken lab_wait 20 not_host
"$VMRUN" status u2 --json >/tmp/u2.status 2>&1
spid=$(field supervisor_pid </tmp/u2.status)
qpid=$(field qemu_pid </tmp/u2.status)
[ -n "$spid" ] && kill -9 "$spid"
[ -n "$qpid" ] && kill -9 "$qpid"
lab_bool u2_qemu_gone lab_wait 30 gone "$qpid"
lab_str u2_killed_driver "$(usb_driver)"
run_vmrun u2_restore restore u2
lab_bool u2_back lab_wait 20 usb_is usbhid
lab_str u2_after_owner "$(owner)"
lab_bool u2_run_dir_gone test ! -e /run/vmrun/u2
