# gpu4 topology: a four-function GPU (VGA, HDA, xHCI, serial) in one slot,
# like the RX 7900 XTX. Also checks that /dev/uinput can be had.
. "$LAB_LIB"

for f in 0 1 2 3; do
	lab_num "group_0a_$f" "$(pci_group 0000:00:0a.$f)"
done
lab_list group_members $(pci_group_members 0000:00:0a.0)

# The serial function is claimed at boot by the built-in 8250 "serial" driver.
lab_str serial_driver_boot "$(pci_driver 0000:00:0a.3)"
lab_str xhci_driver_boot "$(pci_driver 0000:00:0a.2)"
modprobe xhci-pci
lab_wait 10 test -e /sys/bus/pci/devices/0000:00:0a.2/driver
lab_str xhci_driver_loaded "$(pci_driver 0000:00:0a.2)"

modprobe uinput
lab_bool uinput test -c /dev/uinput
