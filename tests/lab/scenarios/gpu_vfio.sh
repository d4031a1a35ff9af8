# gpu topology. The GPU pair's starting point on the "host", the move of both
# functions to vfio-pci, a nested QEMU taking them, and the way back.
. "$LAB_LIB"
VGA=0000:00:0a.0
HDA=0000:00:0a.1

for d in $VGA $HDA; do
	k=$(echo "$d" | tr ':.' '__')
	lab_str "id_$k" "$(cat "$(pci_dev $d)/vendor"):$(cat "$(pci_dev $d)/device")"
	lab_str "class_$k" "$(cat "$(pci_dev $d)/class")"
	lab_str "driver_boot_$k" "$(pci_driver $d)"
done
lab_num boot_vga "$(cat "$(pci_dev $VGA)/boot_vga")"
lab_num vga_group "$(pci_group $VGA)"
lab_num hda_group "$(pci_group $HDA)"
lab_list group_members $(pci_group_members $VGA)

# The freshly built vmrun runs here (it may print nothing yet).
if [ -n "$VMRUN" ]; then
	"$VMRUN" --help >/tmp/vmrun-help 2>&1
	lab_num vmrun_help_exit $?
	lab_str vmrun_help "$(head -c 2000 /tmp/vmrun-help)"
fi

# The host's drivers, loaded by hand: no udev runs in the guest.
modprobe bochs
modprobe snd-hda-intel
lab_wait 10 test -e "$(pci_dev $HDA)/driver"
lab_str vga_driver_host "$(pci_driver $VGA)"
lab_str hda_driver_host "$(pci_driver $HDA)"
lab_bool dri_card0 test -e /dev/dri/card0

# To vfio-pci: unbind, set driver_override, then drivers_probe, which makes the
# PCI core honour driver_override.
modprobe vfio-pci
t0=$(lab_ms)
for d in $VGA $HDA; do
	echo "$d" >"$(pci_dev $d)/driver/unbind"
	echo vfio-pci >"$(pci_dev $d)/driver_override"
	echo "$d" >/sys/bus/pci/drivers_probe
done
lab_num to_vfio_ms $(($(lab_ms) - t0))
lab_str vga_driver_vfio "$(pci_driver $VGA)"
lab_str hda_driver_vfio "$(pci_driver $HDA)"
GROUP=$(pci_group $VGA)
lab_bool vfio_group_node test -c "/dev/vfio/$GROUP"

# A nested QEMU takes both functions. Every guest page is DMA-mapped through
# the emulated IOMMU: keep its memory small, and wait on its QMP socket.
qemu-system-x86_64 -accel tcg -m 64 -S -nodefaults -display none \
	-device vfio-pci,host=$VGA,x-vga=on,multifunction=on \
	-device vfio-pci,host=$HDA \
	-qmp unix:/tmp/q.sock,server=on,wait=off >/tmp/nested.log 2>&1 &
qpid=$!
lab_json nested "$(python3 "$LAB_SCENARIO_DIR/qmp_query_pci.py" /tmp/q.sock $qpid 120)"
wait $qpid
lab_num nested_exit $?
lab_str nested_log "$(cat /tmp/nested.log)"

# Back to the host drivers: clear driver_override (a lone newline), unbind
# from vfio-pci, probe again.
t0=$(lab_ms)
for d in $VGA $HDA; do
	echo >"$(pci_dev $d)/driver_override"
	echo "$d" >"$(pci_dev $d)/driver/unbind"
	echo "$d" >/sys/bus/pci/drivers_probe
done
lab_num restore_ms $(($(lab_ms) - t0))
lab_wait 10 test -e "$(pci_dev $HDA)/driver"
lab_str vga_driver_restored "$(pci_driver $VGA)"
lab_str hda_driver_restored "$(pci_driver $HDA)"
lab_str driver_override_restored "$(cat "$(pci_dev $VGA)/driver_override")"
