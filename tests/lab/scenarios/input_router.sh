# Router mode (issue 7): virtual devices on /dev/uinput, vmrun routing them
# to its proxies; see input_router.py for the steps.
. "$LAB_LIB"
export VMRUN_HOME=/tmp/vmhome
export VMRUN_RUN_DIR=/run/vmrun
export VMRUN_STATE_DIR=/tmp/vmstate
modprobe uinput
modprobe evdev
lab_bool uinput test -c /dev/uinput
lab_json router "$(python3 "$LAB_SCENARIO_DIR/input_router.py")"
for vm in r1 r2 r3; do
	lab_str "log_$vm" "$(tail -c 3000 /tmp/vmstate/$vm/vmrun.log 2>/dev/null)"
done
