# Shared by the systemd dual scenarios (sourced after vfio_lib.sh and
# takeover_lib.sh): Xorg as display-manager.service with its screen on the
# bochs-display at 0b.0, running and answering; readers of what it holds.
mark() { echo "lab-scenario: $*" >/dev/console; }
SECOND=0000:00:0b.0
DM=display-manager.service

# The desktop on 0b.0: Xorg's screen there (its Device section gets a
# BusID, decimal bus@domain:device:function), the VM's VGA added as a GPU
# screen (AutoAddGPU, the default), and its unit waiting for 0b.0's card,
# not for card0 (the VM's VGA, gone while the VM runs).
sed -i '/Driver "modesetting"/a\	BusID "PCI:0@0:11:0"' /etc/X11/xorg.conf.d/20-lab.conf
lab_str host_xorg_conf "$(cat /etc/X11/xorg.conf.d/20-lab.conf)"
mkdir -p /etc/systemd/system/lab-xorg.service.d
cat >/etc/systemd/system/lab-xorg.service.d/dual.conf <<EOF
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/udevadm wait --timeout=60 /dev/dri/by-path/pci-$SECOND-card
EOF
systemctl daemon-reload
systemctl restart $DM

# x_pid: the running Xorg's pid.
x_pid() { pidof Xorg | cut -d' ' -f1; }
# x_devices: the PCI devices whose DRM nodes Xorg holds, sorted.
x_devices() {
	q=$(x_pid)
	[ -n "$q" ] || return 0
	for f in /proc/$q/fd/*; do
		t=$(readlink "$f")
		case "$t" in /dev/dri/*) basename "$(readlink -f "/sys/class/drm/${t#/dev/dri/}/device")" ;; esac
	done | sort -u
}
x_answers() { DISPLAY=:0 xdpyinfo >/dev/null 2>&1; }
x_holds_second() { x_devices | grep -qx $SECOND && x_answers; }
lab_wait 60 x_holds_second
rec_desktop() {
	lab_str "${1}_dm" "$(systemctl is-active $DM)"
	lab_list "${1}_x_devices" $(x_devices)
	lab_bool "${1}_x_answers" x_answers
	lab_str "${1}_second" "$(pci_driver $SECOND)"
	lab_bool "${1}_bochs" loaded bochs
}
