# uefi firmware, gpu topology, takeover (a): the console on the firmware's
# efi-framebuffer (fbcon), no GPU driver loaded. Takeover unbinds fbcon and
# the framebuffer, binds VGA + HDA to vfio-pci, the nested QEMU takes them;
# after stop the framebuffer and the console are bound again.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"
. "$LAB_SCENARIO_DIR/takeover_lib.sh"

modprobe snd-hda-intel
lab_wait 10 drivers_are none snd_hda_intel
rec_devices host $VGA $HDA
rec_display host

takeover_cfg ta
run_vmrun a_dry start ta --dry-run
run_vmrun a_start start ta --detach
rec_devices a_running $VGA $HDA
rec_display a_running
# Since Linux 6.0 vfio-pci removes the firmware framebuffer of a VGA it
# takes (aperture_remove_conflicting_pci_devices): the device itself goes.
lab_bool a_running_efifb_device test -e /sys/bus/platform/devices/efi-framebuffer.0
lab_str a_pci_ids "$(nested_pci_ids ta)"
lab_str a_journal "$(cat /run/vmrun/ta/journal 2>/dev/null)"
run_vmrun a_stop stop ta
lab_wait 10 drivers_are none snd_hda_intel
rec_devices a_after $VGA $HDA
rec_display a_after
lab_str a_proc_fb "$(cat /proc/fb)"
lab_bool a_run_dir_gone test ! -e /run/vmrun/ta
lab_str a_log "$(tail -c 3000 /tmp/vmstate/ta/*.log 2>/dev/null)"
# For the failure message: what the kernel said about the framebuffer.
lab_str a_dmesg "$(dmesg | grep -i -e efifb -e fbcon -e efi-framebuffer -e 'frame buffer' | tail -n 20)"
lab_str a_platform "$(ls /sys/bus/platform/devices | tr '\n' ' ')"
