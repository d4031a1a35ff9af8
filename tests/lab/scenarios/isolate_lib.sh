# Shared by isolate.sh and isolate_systemd.sh (sourced after vfio_lib.sh).

# A guest that keeps its vCPU busy: a boot sector that jumps to itself,
# in a 1 MiB raw image.
SPIN=/tmp/spin.img
{
	printf '\353\376'
	dd if=/dev/zero bs=1 count=508 2>/dev/null
	printf '\125\252'
	dd if=/dev/zero bs=512 count=2047 2>/dev/null
} >$SPIN

# iso_cfg NAME ISOLATE: one vCPU on host CPU 1, the spinning disk.
iso_cfg() {
	vm_cfg "$1"
	f="$VMRUN_HOME/vms/$1.toml"
	sed -i "s/^cores = 1$/cores = 1\npin = [1]\nisolate = $2/" "$f"
	printf '[[disk]]\npath = "%s"\nformat = "raw"\n' $SPIN >>"$f"
}

# vcpu_tid NAME: QEMU's vCPU 0 thread.
vcpu_tid() {
	"$VMRUN" qmp "$1" query-cpus-fast 2>/dev/null |
		python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["thread-id"])' 2>/dev/null
}

# allowed PID: the CPUs a task may run on.
allowed() { awk '/^Cpus_allowed_list:/ { print $2 }' "/proc/$1/status"; }

# start_pids KEY NAME: starts NAME detached (KEY_start_exit, KEY_start_out)
# and sets $spid and $qpid, the supervisor's and QEMU's.
start_pids() {
	run_vmrun "$1_start" start "$2" --detach
	"$VMRUN" status "$2" --json >"/tmp/$1.status" 2>&1
	spid=$(field supervisor_pid <"/tmp/$1.status")
	qpid=$(field qemu_pid <"/tmp/$1.status")
}
