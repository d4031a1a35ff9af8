# Smallest scenario: proves the guest boots, the chroot works and results come back.
. "$LAB_LIB"
lab_str kernel "$(uname -r)"
lab_str topology "$LAB_TOPOLOGY"
lab_bool writable_root touch /etc/lab-was-here
lab_bool modules_bound test -e "/lib/modules/$(uname -r)/modules.dep"
lab_list pci_devices $(ls /sys/bus/pci/devices)
