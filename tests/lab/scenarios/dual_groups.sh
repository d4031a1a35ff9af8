# dual topology: the passthrough GPU pair plus a second display device that
# stays with the host, in its own IOMMU group.
. "$LAB_LIB"
SECOND=0000:00:0b.0

lab_num vga_group "$(pci_group 0000:00:0a.0)"
lab_num hda_group "$(pci_group 0000:00:0a.1)"
lab_num second_group "$(pci_group $SECOND)"
lab_list second_group_members $(pci_group_members $SECOND)
lab_str second_class "$(cat "$(pci_dev $SECOND)/class")"
lab_num boot_vga "$(cat /sys/bus/pci/devices/0000:00:0a.0/boot_vga)"

modprobe bochs
lab_str vga_driver "$(pci_driver 0000:00:0a.0)"
lab_str second_driver "$(pci_driver $SECOND)"
