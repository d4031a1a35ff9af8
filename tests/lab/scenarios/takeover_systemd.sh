# uefi firmware, gpu topology, systemd lab (Init::Systemd, guest/systemd.sh):
# the host root's systemd is PID 1, udev loaded bochs-drm, Xorg runs as
# display-manager.service and holds /dev/dri/card0, lab-gpu-monitor.service
# runs, and labuser's user manager runs lab-user-audio.service.
# (b) takeover with display_manager = "auto", stop_units and user_units:
#     all stopped, bochs unloaded, the nested QEMU has the VGA + HDA; after
#     `vmrun stop` all back, and the time until Xorg holds card0 again;
# (g) the same, with QEMU ending by itself (QMP quit, as when the guest
#     powers off): the time from its end until Xorg holds card0 again;
# (d) kill -9 of the supervisor while the VM runs, then `vmrun restore`;
# (e) `systemctl start vmrun@te` with docs/vmrun@.service (ExecStart ->
#     $VMRUN), then `systemctl stop vmrun@te`;
# (f) `vmrun start` from inside a graphical logind session (su with
#     XDG_SESSION_TYPE=x11, as a display manager's PAM session makes it):
#     refused, nothing changed.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"
. "$LAB_SCENARIO_DIR/takeover_lib.sh"

# Section marks on the serial console: a run killed at its timeout shows
# where it stood (the fields are written only when the script exits).
mark() { echo "lab-scenario: $*" >/dev/console; }

DM=display-manager.service
MON=lab-gpu-monitor.service
UUNIT=lab-user-audio.service
REPO=${LAB_SCENARIO_DIR%/tests/lab/scenarios}
TAKEOVER='display_manager = "auto"'
STOP_UNITS="stop_units = [\"$MON\"]"
USER_UNITS='user_units = ["lab-user-*.service"]'

# x_holds_card0: a running Xorg has /dev/dri/card0 open.
x_holds_card0() {
	for q in $(pidof Xorg); do
		ls -l "/proc/$q/fd" 2>/dev/null | grep -q ' -> /dev/dri/card0$' && return 0
	done
	return 1
}
# x_answers: the X server on :0 answers a client.
x_answers() { DISPLAY=:0 xdpyinfo >/dev/null 2>&1; }
desktop_up() { x_holds_card0 && x_answers; }
# card0_holders: the comm of every process holding /dev/dri/card0.
card0_holders() {
	for q in $(fuser /dev/dri/card0 2>/dev/null); do cat "/proc/$q/comm"; done
}
# user_unit_procs: processes in the user unit's cgroup (read from cgroupfs,
# not through the user manager vmrun talks to).
user_unit_procs() {
	d=$(find /sys/fs/cgroup/user.slice -type d -name "$UUNIT" 2>/dev/null | head -n 1)
	# cgroupfs files have size 0: read them.
	[ -n "$d" ] && grep -q . "$d/cgroup.procs"
}

# rec_units PREFIX: the display manager, the stop_units and user_units
# units, and the display server.
rec_units() {
	lab_str "${1}_dm" "$(systemctl is-active $DM)"
	lab_str "${1}_monitor" "$(systemctl is-active $MON)"
	lab_str "${1}_user_unit" "$(systemctl --user -M labuser@ is-active $UUNIT 2>/dev/null)"
	lab_bool "${1}_user_unit_procs" user_unit_procs
	lab_bool "${1}_x_card0" x_holds_card0
	lab_bool "${1}_x_answers" x_answers
}
# rec_running PREFIX NAME: the VM has the GPU.
rec_running() {
	rec_devices "$1" $VGA $HDA
	rec_display "$1"
	rec_units "$1"
	lab_str "${1}_pci_ids" "$(nested_pci_ids "$2")"
}
# rec_desktop PREFIX [NAME]: waits until the desktop is back (90 s), then
# records it all, and that VM NAME's run dir is gone.
rec_desktop() {
	lab_wait 10 drivers_are bochs-drm snd_hda_intel
	up=true
	lab_wait 90 desktop_up || up=false
	lab_json "${1}_desktop_up" $up
	rec_devices "$1" $VGA $HDA
	rec_display "$1"
	rec_units "$1"
	lab_list "${1}_card0_holders" $(card0_holders)
	[ -n "$2" ] && lab_bool "${1%_*}_run_dir_gone" test ! -e "/run/vmrun/$2"
	# Without the desktop the next sections only wait out their timeouts:
	# end here, with what is recorded so far.
	if [ $up = false ]; then
		mark "the desktop is not back ($1): giving up"
		exit 1
	fi
	return 0
}
# time_back PREFIX T0: ms from T0 until Xorg holds card0 and until it
# answers (PREFIX_card0_ms, PREFIX_answers_ms).
time_back() {
	if lab_wait 120 x_holds_card0; then
		lab_num "${1}_card0_ms" $(($(lab_ms) - $2))
	else
		lab_json "${1}_card0_ms" null
	fi
	if lab_wait 30 x_answers; then
		lab_num "${1}_answers_ms" $(($(lab_ms) - $2))
	else
		lab_json "${1}_answers_ms" null
	fi
}

# ---- the desktop host as booted
lab_str host_pid1 "$(cat /proc/1/comm)"
lab_str host_dm_link "$(readlink /etc/systemd/system/$DM)"
lab_str host_failed_units "$(systemctl --failed --plain --no-legend 2>&1)"
rec_desktop host
x0=$(pidof Xorg)

# ---- (b) takeover, run, stop
lab_num b_at_ms "$(lab_ms)"
mark "(b)"
takeover_cfg tb "$TAKEOVER" "$STOP_UNITS" "$USER_UNITS"
run_vmrun b_dry start tb --dry-run
run_vmrun b_start start tb --detach
rec_running b_running tb
lab_str b_journal "$(cat /run/vmrun/tb/journal 2>/dev/null)"
t0=$(lab_ms)
run_vmrun b_stop stop tb
lab_num b_stop_ms $(($(lab_ms) - t0))
time_back b "$t0"
rec_desktop b_after tb
lab_bool b_after_x_restarted test "$(pidof Xorg)" != "$x0"
lab_str b_log "$(tail -c 3000 /tmp/vmstate/tb/*.log 2>/dev/null)"

# ---- (g) QEMU ends by itself; the supervisor restores
lab_num g_at_ms "$(lab_ms)"
mark "(g)"
takeover_cfg tg "$TAKEOVER" "$STOP_UNITS" "$USER_UNITS"
run_vmrun g_start start tg --detach
rec_devices g_running $VGA $HDA
lab_str g_state "$(vm_state tg)"
"$VMRUN" status tg --json >/tmp/tg.status 2>&1
qpid=$(field qemu_pid </tmp/tg.status)
t0=$(lab_ms)
"$VMRUN" qmp tg quit >/tmp/g.quit 2>&1
lab_bool g_qemu_ended lab_wait 30 gone "$qpid"
lab_num g_qemu_end_ms $(($(lab_ms) - t0))
time_back g "$t0"
rec_desktop g_after tg
# The supervisor's restore, step by step with timestamps (BENCHMARKS.md).
lab_str g_log "$(grep -E 'QEMU shutdown|back to|loaded again|bound again|started again|host restored' /tmp/vmstate/tg/vmrun.log 2>/dev/null)"

# ---- (d) kill -9 of the supervisor while the VM runs, then restore
lab_num d_at_ms "$(lab_ms)"
mark "(d)"
takeover_cfg td "$TAKEOVER" "$STOP_UNITS" "$USER_UNITS"
run_vmrun d_start start td --detach
rec_devices d_running $VGA $HDA
rec_units d_running
"$VMRUN" status td --json >/tmp/td.status 2>&1
spid=$(field supervisor_pid </tmp/td.status)
qpid=$(field qemu_pid </tmp/td.status)
[ -n "$spid" ] && kill -9 "$spid"
lab_bool d_supervisor_ended lab_wait 30 gone "$spid"
lab_str d_state "$(vm_state td)"
lab_str d_crashed_dm "$(systemctl is-active $DM)"
t0=$(lab_ms)
run_vmrun d_restore restore td
lab_bool d_qemu_stopped gone "$qpid"
time_back d "$t0"
rec_desktop d_restored td

# ---- (e) systemctl start / stop vmrun@te
lab_num e_at_ms "$(lab_ms)"
mark "(e)"
sed "s|^ExecStart=/usr/local/bin/vmrun |ExecStart=$VMRUN |" "$REPO/docs/vmrun@.service" \
	>/etc/systemd/system/vmrun@.service
lab_bool e_unit_execstart grep -qx "ExecStart=$VMRUN start %i" /etc/systemd/system/vmrun@.service
mkdir -p /etc/vmrun/vms
takeover_cfg te "$TAKEOVER" "$STOP_UNITS" "$USER_UNITS"
mv "$VMRUN_HOME/vms/te.toml" /etc/vmrun/vms/te.toml
systemctl daemon-reload
systemctl start vmrun@te >/tmp/e.start 2>&1
lab_num e_start_exit $?
lab_bool e_became_running lab_wait 120 vm_is te running
lab_str e_unit_state "$(systemctl is-active vmrun@te)"
rec_running e_running te
"$VMRUN" status te --json >/tmp/te.status 2>&1
spid=$(field supervisor_pid </tmp/te.status)
qpid=$(field qemu_pid </tmp/te.status)
lab_bool e_supervisor_is_main_pid test "$spid" = "$(systemctl show -p MainPID --value vmrun@te)"
CG=/sys/fs/cgroup/system.slice/system-vmrun.slice/vmrun@te.service/cgroup.procs
lab_bool e_qemu_in_unit grep -qx "$qpid" "$CG"
t0=$(lab_ms)
systemctl stop vmrun@te >/tmp/e.stop 2>&1
lab_num e_stop_exit $?
lab_num e_stop_ms $(($(lab_ms) - t0))
lab_bool e_qemu_stopped gone "$qpid"
# Not `systemctl show -p ExecMainStatus`: an inactive unit that did not
# fail is garbage-collected, and show then reads a fresh one (status 0).
# The journal keeps vmrun's status and systemd's verdict.
lab_str e_unit_after "$(systemctl is-active vmrun@te)"
time_back e "$t0"
rec_desktop e_after te
lab_str e_journal "$(journalctl -u vmrun@te --no-pager -o cat 2>&1 | tail -c 3000)"

# ---- (f) from inside a graphical session: refused, nothing changed
lab_num f_at_ms "$(lab_ms)"
mark "(f)"
takeover_cfg tf "$TAKEOVER" "$STOP_UNITS" "$USER_UNITS"
XDG_SESSION_TYPE=x11 XDG_SESSION_CLASS=user DISPLAY=:0 /usr/bin/su root -s /bin/sh -c \
	'cat /proc/self/cgroup >/tmp/f.cgroup; loginctl show-session "$XDG_SESSION_ID" -p Type >/tmp/f.type 2>&1; exec "$VMRUN" start tf --detach' \
	>/tmp/f_start.out 2>&1
lab_num f_start_exit $?
lab_str f_start_out "$(head -c 3000 /tmp/f_start.out)"
lab_str f_cgroup "$(cat /tmp/f.cgroup)"
lab_str f_session_type "$(cat /tmp/f.type)"
lab_bool f_run_dir_absent test ! -e /run/vmrun/tf
rec_devices f_after $VGA $HDA
rec_units f_after
lab_num end_at_ms "$(lab_ms)"
mark "done"
