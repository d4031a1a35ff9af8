#!/usr/bin/python3
"""A QEMU that leaves the router's proxies alone: the real QEMU minus its
`-device virtio-input-host-pci,...` options, so the scenario can read the
proxies itself (a QEMU holding them keeps every event to itself)."""
import os
import sys

args = sys.argv[1:]
out = []
i = 0
while i < len(args):
    if args[i] == "-device" and i + 1 < len(args) and args[i + 1].startswith("virtio-input-host-pci,"):
        i += 2
        continue
    out.append(args[i])
    i += 1
os.execvp("qemu-system-x86_64", ["qemu-system-x86_64"] + out)
