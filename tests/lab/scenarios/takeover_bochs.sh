# uefi firmware, gpu topology, takeover (b)-(d): bochs-drm on the boot GPU
# with fbcon on its framebuffer, a stand-in display manager (a process
# holding /dev/dri/card0, started and stopped by configured commands) and a
# second holder.
# (b) takeover stops both, unloads bochs and its now-unused helpers, binds;
#     after stop everything is back;
# (c) a module that won't unload (9p: the guest's root is a 9p mount)
#     fails the takeover half way: rolled back at once, the display manager
#     runs again;
# (d) kill -9 of vmrun after takeover, then `vmrun restore`; and an abort
#     mid-takeover (after journal step 4), then `vmrun restore`.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"
. "$LAB_SCENARIO_DIR/takeover_lib.sh"

# Copies of sleep, so that /proc/PID/comm names them.
cp /usr/bin/sleep /tmp/standin-dm
cp /usr/bin/sleep /tmp/gpuhold
cat >/tmp/dm-start <<-'EOF'
	#!/bin/sh
	# Idempotent: replaying a journal may start it when it already runs.
	if [ -s /run/dm.pid ] && kill -0 "$(cat /run/dm.pid)" 2>/dev/null; then exit 0; fi
	/tmp/standin-dm 100000 </dev/dri/card0 >/dev/null 2>&1 &
	echo $! >/run/dm.pid
EOF
cat >/tmp/dm-stop <<-'EOF'
	#!/bin/sh
	[ -s /run/dm.pid ] && kill "$(cat /run/dm.pid)"
	rm -f /run/dm.pid
EOF
chmod +x /tmp/dm-start /tmp/dm-stop

# dm_runs: the stand-in display manager is alive and holds card0.
dm_runs() {
	pid=$(cat /run/dm.pid 2>/dev/null)
	alive "$pid" && [ "$(readlink "/proc/$pid/fd/0")" = /dev/dri/card0 ]
}
start_holder() {
	/tmp/gpuhold 100000 </dev/dri/card0 >/dev/null 2>&1 &
	hold=$!
}
# rec_desktop PREFIX [NAME]: waits for the host drivers to be back, then
# records the devices, the display stack, the display manager, and that
# VM NAME's run dir is gone.
rec_desktop() {
	lab_wait 10 drivers_are bochs-drm snd_hda_intel
	lab_wait 10 test -e /dev/dri/card0
	rec_devices "$1" $VGA $HDA
	rec_display "$1"
	lab_bool "${1}_dm" dm_runs
	[ -n "$2" ] && lab_bool "${1%_*}_run_dir_gone" test ! -e "/run/vmrun/$2"
	return 0
}

modprobe bochs
modprobe snd-hda-intel
lab_wait 10 test -e /dev/dri/card0
/tmp/dm-start
start_holder
rec_desktop host
lab_bool host_holder alive $hold

DM='display_manager = { stop = ["/tmp/dm-stop"], start = ["/tmp/dm-start"] }'

# ---- (b) takeover, run, stop
takeover_cfg tb "$DM" 'stop_processes = ["gpuhold"]'
run_vmrun b_dry start tb --dry-run
run_vmrun b_start start tb --detach
rec_devices b_running $VGA $HDA
rec_display b_running
lab_bool b_running_dm dm_runs
lab_bool b_running_holder_gone gone $hold
lab_str b_pci_ids "$(nested_pci_ids tb)"
lab_str b_journal "$(cat /run/vmrun/tb/journal 2>/dev/null)"
run_vmrun b_stop stop tb
rec_desktop b_after tb
lab_str b_log "$(tail -c 4000 /tmp/vmstate/tb/*.log 2>/dev/null)"

# ---- (c) a module that won't unload
start_holder
takeover_cfg tc "$DM" 'stop_processes = ["gpuhold"]' 'unload_modules = ["bochs", "9p"]'
run_vmrun c_start start tc --detach
rec_desktop c_after tc

# ---- (d) kill -9 of the supervisor while the VM runs, then restore
start_holder
takeover_cfg td "$DM" 'stop_processes = ["gpuhold"]'
run_vmrun d_start start td --detach
rec_devices d_running $VGA $HDA
rec_display d_running
"$VMRUN" status td --json >/tmp/td.status 2>&1
spid=$(field supervisor_pid </tmp/td.status)
qpid=$(field qemu_pid </tmp/td.status)
[ -n "$spid" ] && kill -9 "$spid"
lab_bool d_supervisor_ended lab_wait 30 gone "$spid"
lab_str d_state "$(vm_state td)"
run_vmrun d_restore restore td
lab_bool d_qemu_stopped gone "$qpid"
rec_desktop d_restored td

# ---- (d2) abort right after journal step 4 is recorded (step 1 the
# display manager, 2 the holder, 3 vtcon1, 4 bochs): the console is
# unbound, bochs not yet unloaded. Restore brings the rest back.
start_holder
VMRUN_FAULT_ABORT_AT_STEP=4 "$VMRUN" start td >/tmp/d2.out 2>&1
lab_num d2_start_exit $?
rec_display d2_crashed
lab_bool d2_crashed_dm dm_runs
lab_str d2_state "$(vm_state td)"
lab_str d2_journal "$(cat /run/vmrun/td/journal 2>/dev/null)"
run_vmrun d2_restore restore td
rec_desktop d2_restored td
