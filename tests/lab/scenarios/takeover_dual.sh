# dual topology, takeover of the VM's GPU while bochs also drives the
# host's own display (the bochs-display at 0b.0):
# (a) unload_modules = "auto" leaves bochs loaded, unbinds 0a.0 alone: 0b.0
#     keeps bochs-drm and its DRM node the whole time (a watcher samples it);
#     after stop 0a.0 is back on bochs-drm;
# (b) an explicit unload_modules = ["bochs"] is refused before any change,
#     naming 0b.0;
# (c) kill -9 of the supervisor, then `vmrun restore`: the same end;
# (d) desktop = "restart": the stand-in display manager (holding both
#     cards) stops, the VGA goes to vfio-pci, it starts again at once and
#     runs through the VM and after the stop; the time it was down.
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"
. "$LAB_SCENARIO_DIR/takeover_lib.sh"
SECOND=0000:00:0b.0

cp /usr/bin/sleep /tmp/standin-dm
modprobe bochs
modprobe snd-hda-intel
# card_of ADDRESS: the device's DRM card node name, e.g. card1.
card_of() { ls "$(pci_dev "$1")/drm" 2>/dev/null | grep '^card' | head -n 1; }
has_card() { test -n "$(card_of "$1")"; }
lab_wait 10 has_card $SECOND
lab_wait 10 has_card $VGA
SECOND_CARD=$(card_of $SECOND)
VGA_CARD=$(card_of $VGA)
lab_str host_second_card "$SECOND_CARD"
cat >/tmp/dm-start <<EOF
#!/bin/sh
if [ -s /run/dm.pid ] && kill -0 "\$(cat /run/dm.pid)" 2>/dev/null; then exit 0; fi
# Opens the cards there are (the VGA's is gone while the VM has it).
if [ -e /dev/dri/$VGA_CARD ]; then
	/tmp/standin-dm 100000 </dev/dri/$VGA_CARD 3</dev/dri/$SECOND_CARD >/dev/null 2>&1 &
else
	/tmp/standin-dm 100000 </dev/dri/$SECOND_CARD >/dev/null 2>&1 &
fi
echo \$! >/run/dm.pid
echo "\$(awk '{ printf "%d", \$1 * 1000 }' /proc/uptime) start" >>/tmp/dm.times
EOF
cat >/tmp/dm-stop <<'EOF'
#!/bin/sh
[ -s /run/dm.pid ] && kill "$(cat /run/dm.pid)"
rm -f /run/dm.pid
echo "$(awk '{ printf "%d", $1 * 1000 }' /proc/uptime) stop" >>/tmp/dm.times
EOF
chmod +x /tmp/dm-start /tmp/dm-stop
/tmp/dm-start
DM='display_manager = { stop = ["/tmp/dm-stop"], start = ["/tmp/dm-start"] }'

# second_state: 0b.0's driver and whether its DRM node exists.
second_state() {
	echo "$(pci_driver $SECOND) $(test -e "/dev/dri/$SECOND_CARD" && echo node)"
}
# watch_second FILE: samples second_state every 50 ms into FILE until
# /tmp/watch.stop appears.
watch_second() {
	rm -f /tmp/watch.stop "$1"
	(while [ ! -e /tmp/watch.stop ]; do
		second_state >>"$1"
		sleep 0.05
	done) &
	watcher=$!
}
# unwatch KEY FILE: the distinct states seen, as KEY.
unwatch() {
	touch /tmp/watch.stop
	wait "$watcher"
	lab_list "$1" $(sort -u "$2" | tr ' ' '_')
}
rec_second() {
	lab_str "${1}_second" "$(second_state)"
	lab_bool "${1}_bochs" loaded bochs
}
rec_second host

# ---- (a) auto: bochs stays, 0a.0 alone goes to vfio-pci
takeover_cfg ta "$DM"
run_vmrun a_dry start ta --dry-run
watch_second /tmp/a.watch
run_vmrun a_start start ta --detach
rec_devices a_running $VGA $HDA
rec_second a_running
lab_str a_pci_ids "$(nested_pci_ids ta)"
run_vmrun a_stop stop ta
lab_wait 10 drivers_are bochs-drm snd_hda_intel
unwatch a_watch /tmp/a.watch
rec_devices a_after $VGA $HDA
rec_second a_after
lab_bool a_after_vga_card lab_wait 10 has_card $VGA
lab_bool a_after_dm test -s /run/dm.pid

# ---- (b) an explicit list that would strand 0b.0
takeover_cfg tb "$DM" 'unload_modules = ["bochs"]'
run_vmrun b_start start tb --detach
rec_devices b_after $VGA $HDA
rec_second b_after
lab_bool b_dm test -s /run/dm.pid

# ---- (c) kill -9 of the supervisor while the VM runs, then restore
takeover_cfg tc "$DM"
watch_second /tmp/c.watch
run_vmrun c_start start tc --detach
rec_devices c_running $VGA $HDA
"$VMRUN" status tc --json >/tmp/tc.status 2>&1
spid=$(field supervisor_pid </tmp/tc.status)
[ -n "$spid" ] && kill -9 "$spid"
lab_bool c_supervisor_ended lab_wait 30 gone "$spid"
run_vmrun c_restore restore tc
lab_wait 10 drivers_are bochs-drm snd_hda_intel
unwatch c_watch /tmp/c.watch
rec_devices c_restored $VGA $HDA
rec_second c_restored
lab_bool c_restored_dm test -s /run/dm.pid

# ---- (d) desktop = "restart"
# dm_holds: the running stand-in's cards, as PCI addresses.
dm_holds() {
	q=$(cat /run/dm.pid 2>/dev/null)
	[ -n "$q" ] || return 0
	for f in /proc/$q/fd/*; do
		t=$(readlink "$f")
		case "$t" in /dev/dri/*) basename "$(readlink -f "/sys/class/drm/${t#/dev/dri/}/device")" ;; esac
	done | sort -u
}
lab_list d_before_dm_holds $(dm_holds)
: >/tmp/dm.times
takeover_cfg tdr "$DM" 'desktop = "restart"'
run_vmrun d_dry start tdr --dry-run
run_vmrun d_start start tdr --detach
rec_devices d_running $VGA $HDA
rec_second d_running
lab_bool d_running_dm alive "$(cat /run/dm.pid 2>/dev/null)"
lab_list d_running_dm_holds $(dm_holds)
lab_str d_journal "$(cat /run/vmrun/tdr/journal 2>/dev/null)"
dpid=$(cat /run/dm.pid 2>/dev/null)
run_vmrun d_stop stop tdr
lab_wait 10 drivers_are bochs-drm snd_hda_intel
rec_devices d_after $VGA $HDA
rec_second d_after
lab_bool d_after_dm_same test "$(cat /run/dm.pid 2>/dev/null)" = "$dpid"
lab_bool d_after_dm alive "$dpid"
lab_str d_times "$(cat /tmp/dm.times)"
lab_num d_down_ms "$(awk '$2 == "stop" { s = $1 } $2 == "start" && s { print $1 - s; exit }' /tmp/dm.times)"
