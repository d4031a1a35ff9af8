# gpu topology, vmrun itself doing VFIO:
# (a) start a VM with the GPU pair, the nested QEMU sees both, stop gives
#     them back to bochs-drm and snd_hda_intel;
# (e) a second VM asking for the same device is refused, the first runs on;
# (d) kill -9 of the first VM's QEMU: its supervisor restores the host and
#     exits 3;
# (b) a config with the VGA but not its HDA sibling is refused before any
#     change.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"

modprobe bochs
modprobe snd-hda-intel
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices host $VGA $HDA
# vmrun loads vfio-pci itself.
lab_bool vfio_loaded_before test -d /sys/bus/pci/drivers/vfio-pci

# ---- (a) start, query-pci, stop
vm_cfg a1 $VGA $HDA
t0=$(lab_ms)
run_vmrun a_start start a1 --detach
lab_num a_start_ms $(($(lab_ms) - t0))
lab_bool vfio_loaded test -d /sys/bus/pci/drivers/vfio-pci
rec_devices a_running $VGA $HDA
lab_str a_state "$(vm_state a1)"
lab_str a_pci_ids "$(nested_pci_ids a1)"
lab_str a_qmp_err "$(cat /tmp/a1.qmp.err)"
# QEMU runs as the VM's own uid, which vmrun gave the VFIO group node.
aq=$("$VMRUN" status a1 --json | field qemu_pid)
lab_str a_qemu_uid "$(awk '/^Uid:/ {print $2}' /proc/$aq/status)"
grp=$(basename "$(readlink /sys/bus/pci/devices/$VGA/iommu_group)")
lab_str a_group_owner "$(stat -c %u /dev/vfio/$grp)"
t0=$(lab_ms)
run_vmrun a_stop stop a1
lab_num a_stop_ms $(($(lab_ms) - t0))
# The supervisor is gone when stop returns: its teardown is done.
rec_devices a_after $VGA $HDA
lab_bool a_run_dir_gone test ! -e /run/vmrun/a1
lab_str a_log "$(tail -c 3000 /tmp/vmstate/a1/*.log 2>/dev/null)"

# ---- (e) e1 runs in the foreground (so the shell sees its exit code), e2
# wants the same VGA.
vm_cfg e1 $VGA $HDA
vm_cfg e2 $VGA $HDA
"$VMRUN" start e1 >/tmp/e1.out 2>&1 &
e1=$!
lab_bool e_first_running lab_wait 120 vm_is e1 running
run_vmrun e_second start e2 --detach
lab_str e_first_state "$(vm_state e1)"
rec_devices e_first $VGA $HDA
lab_bool e_second_run_dir_gone test ! -e /run/vmrun/e2
lab_bool e_first_journal test -s /run/vmrun/e1/journal

# ---- (d) kill -9 of e1's QEMU
qpid=$("$VMRUN" status e1 --json | field qemu_pid)
lab_str d_qemu_pid "$qpid"
[ -n "$qpid" ] && kill -9 "$qpid"
lab_bool d_supervisor_ended lab_wait 60 gone $e1
wait $e1
lab_num d_exit $?
lab_str d_out "$(tail -c 3000 /tmp/e1.out)"
rec_devices d_after $VGA $HDA
lab_bool d_run_dir_gone test ! -e /run/vmrun/e1

# ---- (b) the VGA without its HDA sibling
vm_cfg b1 $VGA
inits_before=$(dmesg | grep -c 'Initialized bochs-drm')
run_vmrun b_start start b1 --detach
# If it got started anyway, stop it so the journal is not left behind.
[ "$(vm_state b1)" = running ] && "$VMRUN" stop b1 >/dev/null 2>&1
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices b_after $VGA $HDA
lab_num b_vga_rebinds $(($(dmesg | grep -c 'Initialized bochs-drm') - inits_before))
lab_bool b_run_dir_gone test ! -e /run/vmrun/b1
