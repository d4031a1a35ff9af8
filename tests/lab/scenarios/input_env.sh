# Shared by the input_*.sh scenarios (sourced after "$LAB_LIB"): vmrun's
# dirs in the guest's tmpfs, and the modules no udev loads here.
export VMRUN_HOME=/tmp/vmhome
export VMRUN_RUN_DIR=/run/vmrun
export VMRUN_STATE_DIR=/tmp/vmstate
modprobe uinput
modprobe evdev
