#!/bin/bash
# PID 1 of the lab's dom0 (rdinit=/lab/dom0-init.sh; it travels in the payload cpio, not in
# the cached image). Mounts, loads the Xen modules, starts the toolstack (xenstored,
# xen-init-dom0, xenconsoled), runs /lab/checks.sh (which prints PLAN and RESULT lines) under
# an overall timeout, then powers off. The host side (run.sh) counts the lines.
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "LAB[$(up)s]: $*"; }
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs -o size=1200m tmpfs /tmp
mkdir -p /run/xen /run/xenstored /var/log/xen/console /var/lib/xen /var/run/xen
# devtmpfs lacks these (udev makes them); Xen's hotplug locking.sh stats /dev/stdin and
# spins forever without it.
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
say "dom0 userspace started"
if grep -q labdebug=1 /proc/cmdline; then   # heartbeat: the busiest dom0 processes every 30 s
  ( while sleep 30; do echo "HB[$(up)s]: $(ps -eo pid,stat,pcpu,wchan:16,args | grep -vE ' \[|ps -eo' | cut -c1-90 | tr '\n' ';')"; done ) &
fi
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-blkback loop virtio_pci virtio_blk; do
  modprobe "$m" || say "modprobe $m FAILED"
done
mount -t xenfs xenfs /proc/xen
for n in evtchn gntdev gntalloc privcmd xenbus; do [ -c /dev/xen/$n ] || say "/dev/xen/$n MISSING"; done
xenstored --pid-file=/run/xen/xenstored.pid || say "xenstored FAILED"
xen-init-dom0 >/dev/null || say "xen-init-dom0 FAILED"
xenconsoled --pid-file=/run/xen/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || say "xenconsoled FAILED"
say "toolstack up: $(xl info 2>/dev/null | grep -E '^xen_version' | tr -s ' ') dom0 kernel $(uname -r), $(nproc) vcpus"
if [ -x /lab/checks.sh ]; then
  T=$(sed -n 's/.*labtimeout=\([0-9]*\).*/\1/p' /proc/cmdline)
  timeout -k 10 "${T:-600}" /lab/checks.sh </dev/null
  rc=$?; [ $rc = 124 ] || [ $rc = 137 ] && say "TIMEOUT: /lab/checks.sh still running after ${T:-600} s (killed)"
else
  say "no /lab/checks.sh in the payload"
fi
# The outbox: files the checks left in /tmp/outbox (recordings), as a tar archive on the
# virtio disk with serial xenio-lab-outbox; run.sh unpacks it on the host.
ob=$(grep -l '^xenio-lab-outbox$' /sys/block/vd*/serial 2>/dev/null | cut -d/ -f4 | head -1)
if [ -n "$ob" ] && [ -d /tmp/outbox ] && [ -n "$(ls -A /tmp/outbox)" ]; then
  tar -C /tmp/outbox -cf "/dev/$ob" . && blockdev --flushbufs "/dev/$ob" && say "outbox: $(du -sk /tmp/outbox | cut -f1) KiB on /dev/$ob"
fi
# No sync: everything is on tmpfs, and a frontend whose backend died could block it forever.
# sysrq b: immediate reboot, Xen resets the machine, QEMU (-no-reboot) exits.
say "powering off"; echo "LAB-END"; echo b > /proc/sysrq-trigger; sleep 30
