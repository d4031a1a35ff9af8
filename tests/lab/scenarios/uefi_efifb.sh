# uefi firmware, gpu topology: the single-GPU host's starting point, where the
# console sits on the firmware's framebuffer (as with the NVIDIA driver).
. "$LAB_LIB"
EFIFB=/sys/bus/platform/drivers/efi-framebuffer

efifb_devices() { ls "$EFIFB" 2>/dev/null | grep -v -x -e bind -e unbind -e uevent -e module; }
vtcon_names() {
	out=
	for v in /sys/class/vtconsole/vtcon*; do
		out="$out${out:+, }$(lab_quote "$(cat "$v/name")")"
	done
	echo "[$out]"
}

lab_bool efi_firmware test -d /sys/firmware/efi
lab_list efifb_bound $(efifb_devices)
lab_json vtconsoles "$(vtcon_names)"
lab_str proc_fb "$(cat /proc/fb)"
lab_num boot_vga "$(cat /sys/bus/pci/devices/0000:00:0a.0/boot_vga)"

# bochs-drm takes over the GPU and removes the firmware framebuffer.
modprobe bochs
lab_list efifb_bound_after_bochs $(efifb_devices)
lab_str proc_fb_after_bochs "$(cat /proc/fb)"
