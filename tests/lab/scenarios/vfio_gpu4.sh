# gpu4 topology, VFIO case (f): a VM takes all four functions of the slot
# (VGA, HDA, xHCI, serial) and each goes back to its own driver, the serial
# one to the built-in 8250 "serial" driver.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"

modprobe bochs
modprobe snd-hda-intel
modprobe xhci-pci
lab_wait 10 drivers_are bochs-drm snd_hda_intel xhci_hcd serial
rec_devices host $VGA $HDA $XHCI $SERIAL

vm_cfg f1 $VGA $HDA $XHCI $SERIAL
run_vmrun f_start start f1 --detach
rec_devices f_running $VGA $HDA $XHCI $SERIAL
lab_str f_pci_ids "$(nested_pci_ids f1)"
lab_str f_qmp_err "$(cat /tmp/f1.qmp.err)"
run_vmrun f_stop stop f1
lab_bool f_back lab_wait 10 drivers_are bochs-drm snd_hda_intel xhci_hcd serial
rec_devices f_after $VGA $HDA $XHCI $SERIAL
lab_bool f_run_dir_gone test ! -e /run/vmrun/f1
lab_str f_log "$(tail -c 3000 /tmp/vmstate/f1/vmrun.log 2>/dev/null)"
