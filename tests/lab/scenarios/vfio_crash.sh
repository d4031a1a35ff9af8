# gpu topology, VFIO case (c): vmrun killed at several points of prepare and
# while the VM runs; `vmrun status` says the host needs a restore and
# `vmrun restore` gives every function its exact driver and driver_override
# back (also an override that was set before), stopping a leftover QEMU; a
# journal line it cannot read is named, not dropped.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"

modprobe bochs
modprobe snd-hda-intel
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices host $VGA $HDA

# crash_at KEY STEP: a foreground start that aborts (SIGABRT, as a kill -9
# would leave it) right after journal step STEP is recorded, before the
# change; then status and restore.
crash_at() {
	c=$1
	vm_cfg "$c" $VGA $HDA
	VMRUN_FAULT_ABORT_AT_STEP=$2 "$VMRUN" start "$c" >"/tmp/$c.start" 2>&1
	lab_num "${c}_start_exit" $?
	rec_devices "${c}_crashed" $VGA $HDA
	lab_str "${c}_journal" "$(cat "/run/vmrun/$c/journal" 2>/dev/null)"
	lab_str "${c}_state" "$(vm_state "$c")"
	run_vmrun "${c}_restore" restore "$c"
	lab_wait 10 drivers_are bochs-drm snd_hda_intel
	rec_devices "${c}_restored" $VGA $HDA
	lab_bool "${c}_run_dir_gone" test ! -e "/run/vmrun/$c"
}

# ---- aborted after step 1 (the VGA's bind recorded, not made)
crash_at c1 1

# ---- aborted after step 2 (the VGA on vfio-pci, the HDA's bind recorded);
# the HDA had a driver_override of its own before.
echo snd_hda_intel >"$(pci_dev $HDA)/driver_override"
crash_at c2 2

# ---- kill -9 of a running VM's supervisor; the VGA has an override too.
echo bochs-drm >"$(pci_dev $VGA)/driver_override"
vm_cfg c3 $VGA $HDA
run_vmrun c3_start start c3 --detach
rec_devices c3_running $VGA $HDA
"$VMRUN" status c3 --json >/tmp/c3.status 2>&1
spid=$(field supervisor_pid </tmp/c3.status)
qpid=$(field qemu_pid </tmp/c3.status)
lab_str c3_pids "$spid $qpid"
[ -n "$spid" ] && kill -9 "$spid"
lab_bool c3_supervisor_ended lab_wait 30 gone "$spid"
lab_bool c3_qemu_left_running alive "$qpid"
lab_str c3_state "$(vm_state c3)"
run_vmrun c3_restore restore c3
lab_bool c3_qemu_stopped gone "$qpid"
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices c3_restored $VGA $HDA
lab_bool c3_run_dir_gone test ! -e /run/vmrun/c3

# ---- rescan_fallback: vmrun and QEMU killed, then the HDA falls off the bus
# (as a card that failed its reset does); `vmrun restore` rescans the bus,
# then gives each function its driver and override back.
echo >"$(pci_dev $VGA)/driver_override"
echo >"$(pci_dev $HDA)/driver_override"
vm_cfg c4 $VGA $HDA
echo 'rescan_fallback = true' >>"$VMRUN_HOME/vms/c4.toml"
run_vmrun c4_start start c4 --detach
lab_str c4_journal "$(cat /run/vmrun/c4/journal 2>/dev/null)"
"$VMRUN" status c4 --json >/tmp/c4.status 2>&1
spid=$(field supervisor_pid </tmp/c4.status)
qpid=$(field qemu_pid </tmp/c4.status)
[ -n "$spid" ] && kill -9 "$spid"
[ -n "$qpid" ] && kill -9 "$qpid"
lab_bool c4_both_dead lab_wait 30 eval 'gone "$spid" && gone "$qpid"'
echo 1 >"$(pci_dev $HDA)/remove"
lab_bool c4_hda_gone test ! -e "$(pci_dev $HDA)"
run_vmrun c4_restore restore c4
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices c4_restored $VGA $HDA
lab_bool c4_run_dir_gone test ! -e /run/vmrun/c4

# ---- a damaged journal line: vmrun and QEMU killed with both functions on
# vfio-pci, then the journal's first line (the VGA's bind) damaged. restore
# names the line, gives the HDA back, keeps the journal and exits 4; once the
# line is repaired, restore gives the VGA back too.
vm_cfg c5 $VGA $HDA
run_vmrun c5_start start c5 --detach
"$VMRUN" status c5 --json >/tmp/c5.status 2>&1
spid=$(field supervisor_pid </tmp/c5.status)
qpid=$(field qemu_pid </tmp/c5.status)
[ -n "$spid" ] && kill -9 "$spid"
[ -n "$qpid" ] && kill -9 "$qpid"
lab_bool c5_both_dead lab_wait 30 eval 'gone "$spid" && gone "$qpid"'
j=/run/vmrun/c5/journal
lab_str c5_journal "$(cat "$j" 2>/dev/null)"
first=$(head -n 1 "$j")
rest=$(tail -n +2 "$j")
printf '%s\n%s\n' "${first#?}" "$rest" >"$j"
lab_str c5_state "$(vm_state c5)"
run_vmrun c5_restore restore c5
lab_wait 10 eval '[ "$(pci_driver $HDA)" = snd_hda_intel ]'
rec_devices c5_partly $VGA $HDA
lab_bool c5_journal_kept test -e "$j"
printf '%s\n%s\n' "$first" "$rest" >"$j"
run_vmrun c5_restore_again restore c5
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices c5_restored $VGA $HDA
lab_bool c5_run_dir_gone test ! -e /run/vmrun/c5
