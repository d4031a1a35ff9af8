# QEMU mode: input-linux on virtual devices, re-added over QMP
# after a replug; see input_qemu.py.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/input_env.sh"
lab_json qemu "$(python3 "$LAB_SCENARIO_DIR/input_qemu.py")"
lab_str log_q1 "$(tail -c 3000 /tmp/vmstate/q1/vmrun.log 2>/dev/null)"
