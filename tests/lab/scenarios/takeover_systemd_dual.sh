# dual topology, systemd lab (Init::Systemd, guest/systemd.sh): Xorg as
# display-manager.service with its screen on the host's own display, the
# bochs-display at 0b.0 (BusID), and the VM's VGA (0a.0) opened too, as a
# GPU screen. With [takeover] desktop = "restart":
# (a) Xorg stops, the VGA + HDA go to vfio-pci (bochs stays loaded: it
#     drives 0b.0), Xorg starts again at once holding 0b.0 only; the time
#     the desktop is gone; after `vmrun stop` the VGA is back on bochs-drm
#     and Xorg still runs;
# (b) kill -9 of the supervisor while the VM runs, then `vmrun restore`:
#     the same end.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"
. "$LAB_SCENARIO_DIR/takeover_lib.sh"

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
rec_desktop host
lab_str host_xorg_log "$(grep -E 'PCI:|GPU|Output' /run/Xorg.0.log 2>/dev/null | head -c 2000)"

# watch_desktop FILE: every 100 ms, "MS up|down" (Xorg answers on :0 or
# not) into FILE until /tmp/watch.stop appears.
watch_desktop() {
	rm -f /tmp/watch.stop "$1"
	(while [ ! -e /tmp/watch.stop ]; do
		if x_answers; then s=up; else s=down; fi
		echo "$(lab_ms) $s $(pci_driver $SECOND)" >>"$1"
		sleep 0.1
	done) &
	watcher=$!
}
# unwatch KEY FILE: the longest time the desktop was down (KEY_down_ms),
# and 0b.0's drivers seen (KEY_second).
unwatch() {
	touch /tmp/watch.stop
	wait "$watcher"
	lab_num "${1}_down_ms" "$(awk '$2 == "down" && !d { d = $1 } $2 == "up" && d { if ($1 - d > m) m = $1 - d; d = 0 } END { if (d) m = -1; print m + 0 }' "$2")"
	lab_list "${1}_second" $(cut -d' ' -f3 "$2" | sort -u)
}

# ---- (a) restart: the desktop comes back during the VM
mark "(a)"
takeover_cfg ta 'display_manager = "auto"' 'desktop = "restart"'
run_vmrun a_dry start ta --dry-run
x0=$(x_pid)
watch_desktop /tmp/a.watch
run_vmrun a_start start ta --detach
lab_wait 60 x_holds_second
unwatch a_start /tmp/a.watch
rec_devices a_running $VGA $HDA
rec_desktop a_running
lab_bool a_running_x_new test "$(x_pid)" != "$x0"
lab_str a_journal "$(cat /run/vmrun/ta/journal 2>/dev/null)"
lab_str a_running_xorg_log "$(grep -E '\(EE\)|\(WW\)|PCI:|GPU|Output|screen' /run/Xorg.0.log 2>/dev/null | tail -c 2500)"
lab_str a_running_dm_journal "$(journalctl -u lab-xorg.service --no-pager -o cat 2>&1 | tail -c 1500)"
lab_str a_pci_ids "$(nested_pci_ids ta)"
x1=$(x_pid)
run_vmrun a_stop stop ta
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices a_after $VGA $HDA
rec_desktop a_after
lab_bool a_after_x_same test "$(x_pid)" = "$x1"
lab_bool a_run_dir_gone test ! -e /run/vmrun/ta
lab_str a_log "$(tail -c 3000 /tmp/vmstate/ta/vmrun.log 2>/dev/null)"

# ---- (b) kill -9 of the supervisor, then restore
mark "(b)"
takeover_cfg tb 'display_manager = "auto"' 'desktop = "restart"'
run_vmrun b_start start tb --detach
lab_wait 60 x_holds_second
rec_devices b_running $VGA $HDA
rec_desktop b_running
"$VMRUN" status tb --json >/tmp/tb.status 2>&1
spid=$(field supervisor_pid </tmp/tb.status)
qpid=$(field qemu_pid </tmp/tb.status)
[ -n "$spid" ] && kill -9 "$spid"
lab_bool b_supervisor_ended lab_wait 30 gone "$spid"
run_vmrun b_restore restore tb
lab_bool b_qemu_stopped gone "$qpid"
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices b_restored $VGA $HDA
rec_desktop b_restored
lab_bool b_run_dir_gone test ! -e /run/vmrun/tb
mark "done"
