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

. "$LAB_SCENARIO_DIR/systemd_dual_lib.sh"

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
