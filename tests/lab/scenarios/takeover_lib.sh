# Shared by the takeover_*.sh scenarios (sourced after vfio_lib.sh): the
# single-GPU host's display stack and readers of it.
EFIFB=/sys/bus/platform/drivers/efi-framebuffer

# The host's own display-manager alias (if it has one) is not the lab's:
# `auto` must find none here. The systemd lab's is its own (systemd.sh).
[ "$LAB_INIT" = systemd ] || rm -f /etc/systemd/system/display-manager.service

# takeover_cfg NAME EXTRA...: vm_cfg NAME VGA HDA plus a [takeover] table
# with the given extra lines.
takeover_cfg() {
	n=$1
	shift
	vm_cfg "$n" $VGA $HDA
	printf '[takeover]\nenabled = true\n' >>"$VMRUN_HOME/vms/$n.toml"
	for line in "$@"; do echo "$line" >>"$VMRUN_HOME/vms/$n.toml"; done
}

vtcon_bind() { cat /sys/class/vtconsole/vtcon1/bind 2>/dev/null; }
loaded() { [ -e "/sys/module/$1/refcnt" ]; }

# rec_display PREFIX: vtcon1's bind, efifb, the DRM node, the drm modules.
rec_display() {
	lab_str "${1}_vtcon1" "$(vtcon_bind)"
	lab_bool "${1}_efifb" test -e "$EFIFB/efi-framebuffer.0"
	lab_bool "${1}_card0" test -e /dev/dri/card0
	lab_list "${1}_modules" $(for m in bochs drm_vram_helper drm_ttm_helper ttm drm_kms_helper drm; do loaded $m && echo $m; done)
}
