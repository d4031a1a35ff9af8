# uefi firmware, gpu topology, systemd lab (Init::Systemd): `[cpu] isolate`
# and `[power] inhibit_sleep` under a real systemd and logind. A nested VM
# pinned to CPU 1: while it runs init.scope, system.slice and user.slice
# have AllowedCPUs=0, vmrun and QEMU are in machine.slice/vmrun-sy.scope,
# the vCPU thread is on CPU 1 and logind lists vmrun's sleep inhibitor;
# after `vmrun stop` the properties are unset again with every CPU
# effective, the scope is gone and so is the lock. Then `kill -9` of the
# supervisor: the lock goes with it, the host stays confined until
# `vmrun restore`, which stops the scope left behind.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"
. "$LAB_SCENARIO_DIR/isolate_lib.sh"

mark() { echo "lab-scenario: $*" >/dev/console; }
CG=/sys/fs/cgroup
UNITS="init.scope system.slice user.slice"

iso_cfg sy true
printf '[power]\ninhibit_sleep = true\n' >>"$VMRUN_HOME/vms/sy.toml"

allowed_cpus() {
	for u in $UNITS; do printf '%s=%s ' "$u" "$(systemctl show -p AllowedCPUs --value "$u")"; done
}
effective() {
	for u in $UNITS; do printf '%s=%s ' "$u" "$(cat $CG/$u/cpuset.cpus.effective 2>/dev/null)"; done
}
inhibitors() { systemd-inhibit --list --no-legend 2>/dev/null | grep -c vmrun; }

lab_str before_allowed "$(allowed_cpus)"
lab_str before_effective "$(effective)"

mark a
start_pids a sy
lab_str a_allowed "$(allowed_cpus)"
lab_str a_effective "$(effective)"
lab_str a_supervisor_cgroup "$(cat /proc/$spid/cgroup 2>/dev/null)"
lab_str a_qemu_cgroup "$(cat /proc/$qpid/cgroup 2>/dev/null)"
lab_str a_vcpu_allowed "$(allowed "$(vcpu_tid sy)")"
lab_num a_inhibitors "$(inhibitors)"
lab_str a_journal "$(cat /run/vmrun/sy/journal 2>/dev/null)"
run_vmrun a_stop stop sy
lab_bool a_run_dir_gone lab_wait 10 test ! -e /run/vmrun/sy
lab_str a_after_allowed "$(allowed_cpus)"
lab_str a_after_effective "$(effective)"
lab_bool a_scope_gone lab_wait 10 eval '! systemctl is-active --quiet vmrun-sy.scope'
lab_num a_after_inhibitors "$(inhibitors)"

mark b
start_pids b sy
lab_num b_inhibitors "$(inhibitors)"
[ -n "$spid" ] && kill -9 "$spid"
lab_bool b_supervisor_ended lab_wait 30 gone "$spid"
lab_bool b_lock_gone lab_wait 10 eval '[ "$(inhibitors)" = 0 ]'
lab_str b_killed_allowed "$(allowed_cpus)"
run_vmrun b_restore restore sy
lab_bool b_qemu_stopped lab_wait 10 gone "$qpid"
lab_str b_after_allowed "$(allowed_cpus)"
lab_str b_after_effective "$(effective)"
lab_bool b_scope_gone lab_wait 10 eval '! systemctl is-active --quiet vmrun-sy.scope'
mark done
