#!/bin/bash
# Boot Xen 4.17 + the Linux PV dom0 under QEMU TCG (KVM cannot run Xen on these machines: see
# README.md). The initrd is the cached image with the payload cpio appended.
# Usage: boot.sh INITRD LOG   (env: TIMEOUT seconds, DOM0_EXTRA kernel args, CPU, ACCEL,
#   DISK (default $LAB/disk.img), DISK_MB (1024), DISK_AIO (native))
set -uo pipefail
LAB=${LAB:-/var/tmp/xenio-lab}
INITRD=$1 LOG=$2
TIMEOUT=${TIMEOUT:-900}
ACCEL=${ACCEL:-tcg,thread=multi}
CPU=${CPU:-qemu64,+smep}
DISK=${DISK:-$LAB/disk.img} DISK_MB=${DISK_MB:-1024} DISK_AIO=${DISK_AIO:-native}
cd "$LAB"
rm -f "$LAB/serial.sock" "$LAB/monitor.sock" "$LOG"   # (an old log would end the watcher below at once)
# dom0's real disk (/dev/vdX with serial xenio-lab-disk, see checks.sh lab_disk): a raw image on
# the host's disk, opened O_DIRECT by QEMU (cache=none), so dom0's I/O reaches the host's disk.
# Written through once (no holes: a hole reads as zeros without touching the disk) and kept
# between boots.
if [ "$(stat -c%s "$DISK" 2>/dev/null)" != $(( DISK_MB << 20 )) ]; then
  echo "boot.sh: writing the ${DISK_MB} MiB lab disk $DISK"
  dd if=/dev/urandom of="$DISK.tmp" bs=1M count="$DISK_MB" status=none && mv "$DISK.tmp" "$DISK" || exit 1
fi
# The outbox (serial xenio-lab-outbox): dom0 writes a tar archive of /tmp/outbox onto it before
# powering off, run.sh unpacks it into $LAB/outbox. Fresh every boot.
rm -f "$LAB/outbox.img"; truncate -s 64M "$LAB/outbox.img"
# serial.sock accepts input (xen-debugkey.sh); everything is logged to $LOG.
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -smp 2 -m 3072 \
  -nographic -no-reboot -display none -monitor "unix:$LAB/monitor.sock,server=on,wait=off" \
  -chardev "socket,id=ser0,path=$LAB/serial.sock,server=on,wait=off,logfile=$LOG,logappend=off" -serial chardev:ser0 \
  -drive "file=$DISK,if=none,id=labdisk,format=raw,cache=none,aio=$DISK_AIO" -device virtio-blk-pci,drive=labdisk,serial=xenio-lab-disk \
  -drive "file=$LAB/outbox.img,if=none,id=outbox,format=raw" -device virtio-blk-pci,drive=outbox,serial=xenio-lab-outbox \
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
