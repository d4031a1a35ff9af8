# [cpu] isolate on the cgroup v2 path (no systemd): the guest's 2 CPUs,
# cgroup v2 laid out as systemd lays it out (init.scope, system.slice,
# user.slice, the scenario in a session scope), a busy load in the slices,
# a nested VM whose one vCPU is pinned to CPU 1 with `isolate`: while it
# runs the slices keep to CPU 0, QEMU and the supervisor sit in
# vmrun.slice/NAME, the vCPU thread on CPU 1 and QEMU's other threads on
# CPU 0; everything as before after `vmrun stop`, and after a `kill -9` of
# the supervisor and `vmrun restore`. Then the benchmark: the vCPU
# thread's run-queue delay and involuntary switches over 5 s, isolate off
# and on, under the same load.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"
. "$LAB_SCENARIO_DIR/isolate_lib.sh"

CG=/sys/fs/cgroup
mkdir -p $CG
mount -t cgroup2 none $CG
lab_str cpus_online "$(cat /sys/devices/system/cpu/online)"
lab_str controllers "$(cat $CG/cgroup.controllers)"

# systemd's layout; every process that can move leaves the root (kernel
# threads can't: EINVAL).
for d in init.scope system.slice system.slice/load.service user.slice \
	user.slice/user-0.slice user.slice/user-0.slice/session-1.scope; do
	mkdir -p "$CG/$d"
done
for p in $(cat $CG/cgroup.procs); do
	if [ "$p" = 1 ]; then t=init.scope; else t=system.slice/load.service; fi
	echo "$p" >"$CG/$t/cgroup.procs" 2>/dev/null
done
SESSION=$CG/user.slice/user-0.slice/session-1.scope
echo $$ >"$SESSION/cgroup.procs"
# A task in each slice, free to run on either CPU; they spin only for the
# benchmark (two spinners on the lab's 2 TCG CPUs slow every step ~3x).
# Each spins while /tmp/spin exists.
load() { while :; do if [ -e /tmp/spin ]; then :; else sleep 0.2; fi; done; }
load &
LOAD_USER=$!
sh -c "echo \$\$ >$CG/system.slice/load.service/cgroup.procs; exec sh -c 'while :; do if [ -e /tmp/spin ]; then :; else sleep 0.2; fi; done'" &
LOAD_SYS=$!
progress() { echo "$(lab_ms) ms: $*"; }
progress set up
lab_str shell_cgroup "$(cat /proc/self/cgroup)"

# snap: what isolation changes, for before/after.
snap() {
	echo "subtree: $(cat $CG/cgroup.subtree_control)"
	echo "top: $(ls -d $CG/*/ | tr '\n' ' ')"
	for c in init.scope system.slice user.slice; do
		echo "$c cpus: $(cat $CG/$c/cpuset.cpus 2>/dev/null || echo none)"
	done
	echo "loads: $(grep Cpus_allowed_list /proc/$LOAD_USER/status) $(grep Cpus_allowed_list /proc/$LOAD_SYS/status)"
	echo "load cgroups: $(cat /proc/$LOAD_USER/cgroup) $(cat /proc/$LOAD_SYS/cgroup)"
	echo "wq: $(cat /sys/devices/virtual/workqueue/cpumask)"
	for i in /proc/irq/*/smp_affinity_list; do echo "$i $(cat "$i")"; done
}
snap >/tmp/before
lab_str before "$(cat /tmp/before)"

# ---- (a) start with isolate, look, stop
progress a
iso_cfg iso true
start_pids a iso
lab_str a_state "$(field state </tmp/a.status)"
lab_str a_journal "$(cat /run/vmrun/iso/journal 2>/dev/null)"
for c in init.scope system.slice user.slice; do
	lab_str "a_${c%.*}_cpus" "$(cat $CG/$c/cpuset.cpus 2>/dev/null)"
	lab_str "a_${c%.*}_effective" "$(cat $CG/$c/cpuset.cpus.effective 2>/dev/null)"
done
lab_str a_load_user_allowed "$(allowed $LOAD_USER)"
lab_str a_load_sys_allowed "$(allowed $LOAD_SYS)"
lab_str a_supervisor_cgroup "$(cat /proc/$spid/cgroup 2>/dev/null)"
lab_str a_qemu_cgroup "$(cat /proc/$qpid/cgroup 2>/dev/null)"
lab_str a_slice_effective "$(cat $CG/vmrun.slice/cpuset.cpus.effective 2>/dev/null)"
tid=$(vcpu_tid iso)
lab_str a_vcpu_allowed "$(allowed "$tid")"
others=
for t in $(ls /proc/$qpid/task); do
	[ "$t" = "$tid" ] || others="$others $(allowed "$t")"
done
lab_str a_qemu_other_threads "$(echo $others | tr ' ' '\n' | sort -u | tr '\n' ' ')"
lab_str a_wq "$(cat /sys/devices/virtual/workqueue/cpumask)"
lab_str a_status_isolation "$("$VMRUN" status iso --json 2>/dev/null | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin).get("isolation")))')"
run_vmrun a_stop stop iso
lab_bool a_run_dir_gone test ! -e /run/vmrun/iso
snap >/tmp/a.after
lab_str a_after_diff "$(diff /tmp/before /tmp/a.after)"

# ---- (b) kill -9 of the supervisor while it runs, then restore
progress b
start_pids b iso
lab_str b_user_cpus "$(cat $CG/user.slice/cpuset.cpus 2>/dev/null)"
[ -n "$spid" ] && kill -9 "$spid"
lab_bool b_supervisor_ended lab_wait 30 gone "$spid"
lab_str b_state "$(vm_state iso)"
run_vmrun b_restore restore iso
lab_bool b_qemu_stopped lab_wait 10 gone "$qpid"
lab_bool b_run_dir_gone test ! -e /run/vmrun/iso
snap >/tmp/b.after
lab_str b_after_diff "$(diff /tmp/before /tmp/b.after)"

# ---- the benchmark: isolate off, then on; 5 s of the busy vCPU each.
# schedstat: time on CPU, time waiting on a run queue (ns), timeslices.
bench() {
	k=$1
	iso_cfg "$k" "$2"
	"$VMRUN" start "$k" --detach >"/tmp/$k.start" 2>&1
	lab_num "${k}_start_exit" $?
	qpid=$("$VMRUN" status "$k" --json 2>/dev/null | field qemu_pid)
	tid=$(vcpu_tid "$k")
	sleep 2
	s=/proc/$qpid/task/$tid
	w0=$(awk '{ print $2 }' $s/schedstat)
	n0=$(awk '/^nonvoluntary_ctxt_switches/ { print $2 }' $s/status)
	r0=$(awk '{ print $1 }' $s/schedstat)
	sleep 5
	w1=$(awk '{ print $2 }' $s/schedstat)
	n1=$(awk '/^nonvoluntary_ctxt_switches/ { print $2 }' $s/status)
	r1=$(awk '{ print $1 }' $s/schedstat)
	lab_num "${k}_wait_us" $(((w1 - w0) / 1000))
	lab_num "${k}_run_us" $(((r1 - r0) / 1000))
	lab_num "${k}_nonvoluntary" $((n1 - n0))
	lab_str "${k}_vcpu_allowed" "$(allowed "$tid")"
	"$VMRUN" stop "$k" >/dev/null 2>&1
}
touch /tmp/spin
progress bench off
bench off false
progress bench on
bench on true
rm /tmp/spin
progress done
snap >/tmp/c.after
lab_str bench_after_diff "$(diff /tmp/before /tmp/c.after)"
kill $LOAD_USER $LOAD_SYS
