# Helpers for lab scenarios (busybox sh). A scenario sources "$LAB_LIB" and
# records facts with lab_str / lab_num / lab_bool / lab_json; they are written
# to $LAB_SCRATCH/result.json as one JSON object when the scenario exits, so
# the host-side test can assert on them (and print them when it fails).

_LAB_FIELDS=/tmp/lab-fields.$$
: >"$_LAB_FIELDS"

# JSON string literal of $1.
lab_quote() {
	printf '%s' "$1" | awk 'BEGIN { ORS = ""; printf "\"" }
		{ if (NR > 1) printf "\\n"
		  gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r")
		  print }
		END { printf "\"" }'
}

# lab_json KEY RAW_JSON: record an already-encoded JSON value.
lab_json() { printf '%s: %s\n' "$(lab_quote "$1")" "$2" >>"$_LAB_FIELDS"; }
# lab_str KEY VALUE
lab_str() { lab_json "$1" "$(lab_quote "$2")"; }
# lab_num KEY NUMBER (records null if it is not a number)
lab_num() {
	case "$2" in
	'' | *[!0-9-]*) lab_json "$1" null ;;
	*) lab_json "$1" "$2" ;;
	esac
}
# lab_bool KEY COMMAND...: true if COMMAND succeeds.
lab_bool() {
	k=$1
	shift
	if "$@"; then lab_json "$k" true; else lab_json "$k" false; fi
}
# lab_list KEY WORD...: a JSON array of strings.
lab_list() {
	k=$1
	shift
	out=
	for w in "$@"; do out="$out${out:+, }$(lab_quote "$w")"; done
	lab_json "$k" "[$out]"
}

# This busybox runs its own applets before PATH; the scenarios mean the host's
# kmod, which is what vmrun will meet on a real host.
modprobe() { /sbin/modprobe "$@"; }

# Small sysfs readers.
pci_dev() { echo "/sys/bus/pci/devices/$1"; }
pci_driver() {
	if [ -e "$(pci_dev "$1")/driver" ]; then basename "$(readlink "$(pci_dev "$1")/driver")"; else echo none; fi
}
pci_group() { basename "$(readlink "$(pci_dev "$1")/iommu_group")"; }
pci_group_members() { ls "$(pci_dev "$1")/iommu_group/devices" | tr '\n' ' '; }

# lab_wait SECONDS COMMAND...: poll COMMAND every 0.1 s until it succeeds.
lab_wait() {
	n=$(($1 * 10))
	shift
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		n=$((n - 1))
		sleep 0.1
	done
	return 1
}

# Milliseconds since boot, for timing steps inside the guest.
lab_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

_lab_finish() {
	{
		echo "{"
		sed '$!s/$/,/' "$_LAB_FIELDS"
		echo "}"
	} >"$LAB_SCRATCH/result.json.tmp" && mv "$LAB_SCRATCH/result.json.tmp" "$LAB_SCRATCH/result.json"
}
trap _lab_finish EXIT
