"""Wait for a QEMU's QMP socket, run query-pci, then quit it.

usage: qmp_query_pci.py SOCKET QEMU_PID TIMEOUT_SECONDS
Prints one JSON object: {"ready_ms", "devices": [{"slot", "function",
"vendor_id", "device_id", "class"}]} or {"error", ...}.
"""
import json
import os
import socket
import sys
import time


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def connect(path, pid, deadline):
    # Poll: the socket appears, then accepts, once QEMU has set up its devices.
    while time.monotonic() < deadline:
        if not alive(pid):
            raise RuntimeError("QEMU exited before its QMP socket answered")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            time.sleep(0.02)
    raise TimeoutError(f"no QMP socket at {path}")


class Qmp:
    def __init__(self, sock):
        self.file = sock.makefile("rw")
        self.greeting = self.read()

    def read(self):
        line = self.file.readline()
        if not line:
            raise EOFError("QMP connection closed")
        return json.loads(line)

    def execute(self, command):
        self.file.write(json.dumps({"execute": command}) + "\n")
        self.file.flush()
        while True:
            msg = self.read()
            if "event" in msg:
                continue
            if "error" in msg:
                raise RuntimeError(f"{command}: {msg['error']}")
            return msg["return"]


def main():
    path, pid, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    start = time.monotonic()
    out = {}
    try:
        qmp = Qmp(connect(path, pid, start + timeout))
        qmp.execute("qmp_capabilities")
        buses = qmp.execute("query-pci")
        out["ready_ms"] = int((time.monotonic() - start) * 1000)
        out["devices"] = [
            {
                "bus": bus["bus"],
                "slot": d["slot"],
                "function": d["function"],
                "vendor_id": d["id"]["vendor"],
                "device_id": d["id"]["device"],
                "class": d["class_info"]["class"],
            }
            for bus in buses
            for d in bus["devices"]
        ]
        try:
            qmp.execute("quit")
        except EOFError:
            pass
    except Exception as e:  # reported to the test, which prints it
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


main()
