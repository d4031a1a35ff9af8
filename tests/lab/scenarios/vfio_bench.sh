# Benchmark, not a test (BENCHMARKS.md, "VFIO bind/restore in the lab"): bind
# + verify and restore + verify of the GPU pair through vmrun's code (the
# vfio_bench example next to $VMRUN) vs the same sysfs writes by this shell.
# Rounds alternate (shell, vmrun, shell, vmrun) so drift hits both alike.
#   cargo build --release --bin vmrun --example vfio_bench
#   cargo run -p vmrun-lab -- --topology gpu --vmrun target/release/vmrun \
#       --script tests/lab/scenarios/vfio_bench.sh
. "$LAB_LIB"
. "$LAB_SCENARIO_DIR/vfio_lib.sh"
N=${VFIO_BENCH_N:-10}
BENCH="$(dirname "$VMRUN")/examples/vfio_bench"
lab_str bench "$BENCH"
lab_num n "$N"

modprobe bochs
modprobe snd-hda-intel
modprobe vfio-pci
lab_wait 10 drivers_are bochs-drm snd_hda_intel
GROUP=$(pci_group $VGA)
P=/sys/bus/pci

# Centiseconds since boot without a fork (/proc/uptime has two decimals).
now() {
	read -r up _ </proc/uptime
	cs=${up%.*}${up#*.}
}
# until_exists PATH: busy-polls (no sleep, no fork), like vmrun's first
# checks; gives up after 200000 tries.
until_exists() {
	i=0
	while [ ! -e "$1" ]; do
		i=$((i + 1))
		[ $i -gt 200000 ] && return 1
	done
	return 0
}

# What vmrun does per function, written by hand: driver_override, unbind,
# drivers_probe, then verify the driver link and the group node; back:
# override cleared, unbind from vfio-pci, drivers_probe, verify.
shell_round() {
	bind_cs=0
	restore_cs=0
	k=0
	while [ $k -lt "$N" ]; do
		now
		t=$cs
		for d in $VGA $HDA; do
			echo vfio-pci >$P/devices/$d/driver_override
			[ -e $P/devices/$d/driver ] && echo $d >$P/devices/$d/driver/unbind
			echo $d >$P/drivers_probe
			until_exists $P/drivers/vfio-pci/$d || return 1
		done
		until_exists /dev/vfio/$GROUP || return 1
		now
		bind_cs=$((bind_cs + cs - t))
		t=$cs
		for d in $HDA $VGA; do
			echo >$P/devices/$d/driver_override
			echo $d >$P/drivers/vfio-pci/unbind
			echo $d >$P/drivers_probe
		done
		until_exists $P/drivers/bochs-drm/$VGA || return 1
		until_exists $P/drivers/snd_hda_intel/$HDA || return 1
		now
		restore_cs=$((restore_cs + cs - t))
		k=$((k + 1))
	done
	echo "{\"bind_ms_total\": $((bind_cs * 10)), \"restore_ms_total\": $((restore_cs * 10))}"
}

# snd_hda_intel counts its probes in a static index and refuses the 33rd
# (SNDRV_CARDS) until the module is reloaded: each round starts afresh.
fresh_hda() {
	modprobe -r snd-hda-intel && modprobe snd-hda-intel &&
		lab_wait 10 drivers_are bochs-drm snd_hda_intel
}

for r in 1 2; do
	fresh_hda
	lab_json "shell_$r" "$(shell_round || echo '{"error": "a shell round did not verify"}')"
	fresh_hda
	lab_json "vmrun_$r" "$("$BENCH" "$N" $VGA $HDA 2>/tmp/bench.err || echo '{"error": "vfio_bench failed"}')"
	lab_str "vmrun_${r}_err" "$(cat /tmp/bench.err)"
done
rec_devices after $VGA $HDA
