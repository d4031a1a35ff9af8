# dual topology, systemd lab (Init::Systemd, guest/systemd.sh), with the
# VM's VGA hidden from the desktop: `vmrun host hide-gpu hv --apply` writes
# the udev rule (the card node's ID_SEAT off seat0), the display manager
# restarts once (setup), and from then Xorg holds only 0b.0 and never
# opens the VGA's card (its fds, and Xorg.0.log's device lines). A VM
# without [takeover] then takes the VGA + HDA with the same Xorg running
# and no unit stopped; after `vmrun stop` the VGA is back on bochs-drm and
# still the same Xorg runs. `--undo --apply` removes the files.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"
. "$LAB_SCENARIO_DIR/takeover_lib.sh"
. "$LAB_SCENARIO_DIR/systemd_dual_lib.sh"
RULE=/etc/udev/rules.d/72-vmrun-hide-gpu.rules

rec_desktop host
# x_added CARD: Xorg logged "Adding drm device (/dev/dri/CARD)", which it
# does for each card it probes at start (xf86platformBus.c) or adds on
# hotplug (config/udev.c device_added, after check_seat). A removal is
# logged ("removing GPU device") whether Xorg had the card or not.
x_added() { grep -qF "Adding drm device (/dev/dri/$1)" /run/Xorg.0.log; }
# The VGA's card node (its name while bochs-drm drives it).
vga_card() { ls "/sys/bus/pci/devices/$VGA/drm" 2>/dev/null | grep '^card' | head -n1; }
card=$(vga_card)
lab_str host_vga_card "$card"
# The control: before the rule, Xorg probed the VGA's card at its start.
lab_bool host_x_added_vga x_added "$card"

mark "hide"
vm_cfg hv $VGA $HDA
run_vmrun h_dry host hide-gpu hv
lab_bool h_dry_no_rule test ! -e $RULE
run_vmrun h_apply host hide-gpu hv --apply
lab_str h_rule "$(cat $RULE 2>/dev/null)"
lab_str h_seat "$(udevadm info -q property -p "/sys/bus/pci/devices/$VGA/drm/$card" | grep '^ID_SEAT=')"
lab_bool h_keep_link test -e /dev/dri/vmrun-keep-0000-00-0b.0
run_vmrun h_check_before check hv
systemctl restart $DM
lab_wait 60 x_holds_second
rec_desktop hidden
lab_str hidden_xorg_log "$(grep -E 'drm device|PCI:|GPU' /run/Xorg.0.log 2>/dev/null | head -c 2500)"
lab_bool hidden_x_added_vga x_added "$card"
run_vmrun h_check check hv

mark "start"
x0=$(x_pid)
active0=$(systemctl list-units --state=active --no-legend --plain | awk '{print $1}' | sort)
run_vmrun s_start start hv --detach
rec_devices s_running $VGA $HDA
rec_desktop s_running
lab_bool s_x_same test "$(x_pid)" = "$x0"
systemctl list-units --state=active --no-legend --plain | awk '{print $1}' | sort >/tmp/active1
# -f: unit names like -.mount can't be patterns on the command line.
# Services are what a start would stop; the HDA's .device unit (and
# sound.target with it) goes away with its unbind, stopped by nobody.
gone=$(echo "$active0" | grep -vxF -f /tmp/active1 | grep -v '^vmrun')
lab_str s_units_gone "$(echo "$gone" | tr '\n' ' ')"
lab_str s_services_gone "$(echo "$gone" | grep '\.service$' | tr '\n' ' ')"
lab_str s_journal "$(cat /run/vmrun/hv/journal 2>/dev/null)"
lab_str s_pci_ids "$(nested_pci_ids hv)"
run_vmrun s_stop stop hv
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices s_after $VGA $HDA
rec_desktop s_after
lab_bool s_after_x_same test "$(x_pid)" = "$x0"
lab_bool s_after_x_added_vga x_added "$(vga_card)"
lab_str s_after_xorg_log "$(grep -E 'drm device|GPU device' /run/Xorg.0.log 2>/dev/null | tail -c 1500)"

mark "undo"
run_vmrun u_undo host hide-gpu --undo --apply
lab_bool u_rule_gone test ! -e $RULE
lab_str u_seat "$(udevadm info -q property -p "/sys/bus/pci/devices/$VGA/drm/$(vga_card)" | grep '^ID_SEAT=')"
mark "done"
