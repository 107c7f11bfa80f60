#!/bin/sh
# PID 1 of the PV domU (busybox initramfs): xen-blkfront on /dev/xvda, verified writes and
# reads at several offsets (checked against what was written, after dropping caches), then
# poweroff; with lab_idle on the command line it loads nothing and idles; with lab_loop it
# writes and verifies in a loop until destroyed (for xl save/restore, a daemon restart, a
# resize). Prints DOMU: lines on hvc0 (xenconsoled logs them in dom0).
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
echo "DOMU: booted, uptime $(cat /proc/uptime)"
# lab_idle (record-toolstack): no frontend drivers, just stay up (for xl save/restore/destroy)
if grep -q lab_idle /proc/cmdline; then
  echo "DOMU: idle"
  while :; do sleep 3600; done
fi
insmod /lib/modules/xen-blkfront.ko
for i in $(seq 1 20); do [ -b /dev/xvda ] && break; sleep 1; done
[ -b /dev/xvda ] || { echo "DOMU: NO /dev/xvda"; ls /sys/block; poweroff -f; }
echo "DOMU: xvda size $(cat /sys/block/xvda/size) sectors"
# lab_loop (domu-xl): round n writes 256 KiB of new data at 2 + n%8 MiB (fsync: acknowledged),
# then reads back every slot written so far, after dropping caches, and compares each with
# its last acknowledged write; "DOMU: loop N" after each round, the size when it changes.
if grep -q lab_loop /proc/cmdline; then
  n=0; size=$(cat /sys/block/xvda/size)
  while :; do
    s=$((n % 8))
    dd if=/dev/urandom of=/tmp/w bs=64k count=4 2>/dev/null
    if dd if=/tmp/w of=/dev/xvda bs=64k seek=$((32 + s * 16)) conv=fsync 2>/dev/null; then
      md5sum < /tmp/w > /tmp/s$s
    else
      echo "DOMU: LOOP_IOERR writing slot $s in round $n"
    fi
    echo 3 > /proc/sys/vm/drop_caches
    for f in /tmp/s?; do
      k=${f#/tmp/s}
      R=$(dd if=/dev/xvda bs=64k skip=$((32 + k * 16)) count=4 2>/dev/null | md5sum)
      [ "$R" = "$(cat "$f")" ] || echo "DOMU: LOOP_MISMATCH slot $k in round $n"
    done
    n=$((n + 1)); echo "DOMU: loop $n"
    now=$(cat /sys/block/xvda/size)
    [ "$now" != "$size" ] && { echo "DOMU: size $size -> $now"; size=$now; }
  done
fi
echo "DOMU: first bytes: $(dd if=/dev/xvda bs=16 count=1 2>/dev/null)"
echo "hello-from-domU" | dd of=/dev/xvda bs=512 seek=8 conv=sync 2>/dev/null
ok=1
for mb in 1 7 13 29; do
  dd if=/dev/urandom of=/tmp/blk bs=64k count=16 2>/dev/null
  dd if=/tmp/blk of=/dev/xvda bs=64k seek=$((mb * 16)) conv=fsync 2>/dev/null
  echo 3 > /proc/sys/vm/drop_caches
  W=$(md5sum < /tmp/blk); R=$(dd if=/dev/xvda bs=64k skip=$((mb * 16)) count=16 2>/dev/null | md5sum)
  [ "$W" = "$R" ] || { ok=0; echo "DOMU: MISMATCH at ${mb} MiB: $W $R"; }
done
[ $ok = 1 ] && echo "DOMU: XVDA_RW_OK" || echo "DOMU: XVDA_RW_MISMATCH"
if grep -q vif /proc/cmdline; then
  insmod /lib/modules/xen-netfront.ko
  for i in $(seq 1 10); do [ -e /sys/class/net/eth0 ] && break; sleep 1; done
  [ -e /sys/class/net/eth0 ] && echo "DOMU: NETFRONT_OK eth0 mac $(cat /sys/class/net/eth0/address)" || echo "DOMU: NETFRONT_MISSING"
fi
sync; echo "DOMU: done"; poweroff -f
