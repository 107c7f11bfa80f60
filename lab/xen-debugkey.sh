#!/bin/bash
# Send Xen debug keys over the serial socket of a running 30-boot.sh (e.g. when a boot seems hung).
# Usage: xen-debugkey.sh 'q'   (q: domain info, 0: dom0 vCPU registers, r: scheduler, h: help)
# Output appears in the boot log. Sends Ctrl-A x3 to give input to Xen, then Ctrl-A x3 back to dom0.
LAB=${LAB:-/var/tmp/xenio-lab}
python3 - "$LAB/serial.sock" "${1:-q}" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'\x01\x01\x01'); time.sleep(0.5)
for k in sys.argv[2]: s.sendall(k.encode()); time.sleep(1)
s.sendall(b'\x01\x01\x01'); time.sleep(0.5); s.close()
PY
