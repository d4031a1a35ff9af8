#!/usr/bin/env bash
# libvirt's side of the start/stop comparison in BENCHMARKS.md: the same
# headless VM as benches/start_stop.rs (SeaBIOS, q35, 128M, TCG, one vCPU,
# serial only), defined in libvirt and started/destroyed RUNS times.
# Needs root and Debian's libvirt-daemon-system; no systemd is required:
#   virtlogd -d && libvirtd -d
# Prints the median and p90 of `virsh start` (returns once the domain runs)
# and `virsh destroy`, and libvirtd's resident memory.
set -euo pipefail
runs=${RUNS:-20}
uri=qemu:///system
xml=$(mktemp)
trap 'rm -f "$xml"' EXIT
cat >"$xml" <<'XML'
<domain type='qemu'>
  <name>vmrun-bench</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <serial type='pty'/>
    <console type='pty'/>
    <memballoon model='none'/>
  </devices>
</domain>
XML
virsh -q -c "$uri" define "$xml" >/dev/null
# Warm-up: libvirt probes QEMU's capabilities on its first start.
virsh -q -c "$uri" start vmrun-bench >/dev/null
virsh -q -c "$uri" destroy vmrun-bench >/dev/null

ms() { echo $((($(date +%s%N) - $1) / 1000)); }
starts=() stops=()
for _ in $(seq "$runs"); do
	t=$(date +%s%N)
	virsh -q -c "$uri" start vmrun-bench >/dev/null
	starts+=("$(ms "$t")")
	t=$(date +%s%N)
	virsh -q -c "$uri" destroy vmrun-bench >/dev/null
	stops+=("$(ms "$t")")
done
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$(pidof libvirtd)/status")
virsh -q -c "$uri" undefine vmrun-bench >/dev/null

# stats NAME MICROSECONDS...: median and p90 in ms.
stats() {
	name=$1
	shift
	printf '%s\n' "$@" | sort -n | awk -v name="$name" '{ v[NR] = $1 }
		END { printf "%s: median %.1f ms, p90 %.1f ms (%d runs)\n", name,
			v[int((NR + 1) / 2)] / 1000, v[int(NR * 0.9 + 0.5)] / 1000, NR }'
}
stats "virsh start" "${starts[@]}"
stats "virsh destroy" "${stops[@]}"
echo "libvirtd VmRSS: $((rss / 1024)) MiB"
