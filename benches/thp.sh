#!/usr/bin/env bash
# Transparent huge pages of a guest's RAM by memory backend (BENCHMARKS.md,
# "Guest RAM and transparent huge pages"): starts QEMU (TCG, paused, RAM
# preallocated) once with each backend and sums the huge-page fields of its
# /proc/PID/smaps_rollup. Needs QEMU; root is not needed.
#   SIZE=1G bash benches/thp.sh
set -euo pipefail
size=${SIZE:-1G}
qemu=${QEMU:-qemu-system-x86_64}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

echo "$($qemu --version | head -1); kernel $(uname -r); $(nproc) CPUs"
echo "THP enabled: $(cat /sys/kernel/mm/transparent_hugepage/enabled)"
echo "THP shmem_enabled: $(cat /sys/kernel/mm/transparent_hugepage/shmem_enabled)"
for backend in "memory-backend-memfd,id=m,size=$size,share=on,prealloc=on" \
               "memory-backend-ram,id=m,size=$size,prealloc=on"; do
    # -daemonize returns once QEMU is initialised: RAM is preallocated then.
    cmd=("$qemu" -accel tcg -machine q35,memory-backend=m -m "$size"
         -object "$backend" -nodefaults -display none -S
         -daemonize -pidfile "$dir/pid")
    "${cmd[@]}"
    pid=$(cat "$dir/pid")
    echo
    echo "${cmd[*]}" | sed "s|$dir|\$TMP|"
    grep -E '^(Rss|AnonHugePages|ShmemPmdMapped|FilePmdMapped|Shared_Hugetlb|Private_Hugetlb):' "/proc/$pid/smaps_rollup"
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
done
