#!/bin/bash
# Boot Xen 4.17 + the Linux PV dom0 under QEMU TCG (KVM cannot run Xen on these machines: see
# README.md). The initrd is the cached image with the payload cpio appended.
# Usage: boot.sh INITRD LOG   (env: TIMEOUT seconds, DOM0_EXTRA kernel args, CPU, ACCEL)
set -uo pipefail
LAB=${LAB:-/var/tmp/xenio-lab}
INITRD=$1 LOG=$2
TIMEOUT=${TIMEOUT:-900}
ACCEL=${ACCEL:-tcg,thread=multi}
CPU=${CPU:-qemu64,+smep}
cd "$LAB"
rm -f "$LAB/serial.sock" "$LAB/monitor.sock" "$LOG"   # (an old log would end the watcher below at once)
# serial.sock accepts input (xen-debugkey.sh); everything is logged to $LOG.
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -smp 2 -m 3072 \
  -nographic -no-reboot -display none -monitor "unix:$LAB/monitor.sock,server=on,wait=off" \
  -chardev "socket,id=ser0,path=$LAB/serial.sock,server=on,wait=off,logfile=$LOG,logappend=off" -serial chardev:ser0 \
  -kernel xen -append "console=com1 com1=115200 dom0_mem=1536M,max:1536M dom0_max_vcpus=2 loglvl=all guest_loglvl=all" \
  -initrd "vmlinuz console=hvc0 rdinit=/lab/dom0-init.sh quiet loglevel=4 ${DOM0_EXTRA:-},$INITRD" </dev/null &
qpid=$!
echo "$qpid" > "$LAB/qemu.pid"
# dom0 ends with "LAB-END" and a sysrq reboot (Xen then resets the machine, and -no-reboot
# makes QEMU exit). Should that not happen within 20 s, stop QEMU from here.
( while kill -0 "$qpid" 2>/dev/null; do
    if grep -aq 'LAB-END' "$LOG" 2>/dev/null; then
      sleep 20; kill -0 "$qpid" 2>/dev/null && { echo "boot.sh: dom0 finished but QEMU still runs: stopping it"; kill "$qpid"; }
      break
    fi
    sleep 2
  done ) &
wpid=$!
wait "$qpid"; rc=$?
kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null
rm -f "$LAB/qemu.pid"
exit $rc
