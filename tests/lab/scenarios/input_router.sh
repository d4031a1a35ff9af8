# Router mode: virtual devices on /dev/uinput, vmrun routing them
# to its proxies; see input_router.py for the steps.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/input_env.sh"
lab_bool uinput test -c /dev/uinput
lab_json router "$(python3 "$LAB_SCENARIO_DIR/input_router.py")"
for vm in r1 r2 r3; do
	lab_str "log_$vm" "$(tail -c 3000 /tmp/vmstate/$vm/vmrun.log 2>/dev/null)"
done
