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
# lab_net=<addr/len>,<peer> (domu-vif): xen-netfront on eth0 with that address, ping the
# peer (dom0's bridge), then two listeners: port 5201 sends 4 MiB of random data (its md5
# printed first), port 5202 takes what dom0 sends until it closes (its md5 printed); then the
# domU idles until xl destroy. busybox nc quits when its stdin ends, so the receiver's stdin is
# a FIFO opened read-write (never ends).
net=$(sed -n 's/.*lab_net=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$net" ]; then
  addr=${net%%,*}; peer=${net#*,}
  insmod /lib/modules/xen-netfront.ko
  for i in $(seq 1 20); do [ -e /sys/class/net/eth0 ] && break; sleep 1; done
  [ -e /sys/class/net/eth0 ] || { echo "DOMU: NET_FAILED no eth0"; while :; do sleep 3600; done; }
  ip link set lo up; ip addr add "$addr" dev eth0; ip link set eth0 up
  echo "DOMU: eth0 $(cat /sys/class/net/eth0/address) $addr"
  ok=0
  for i in $(seq 1 30); do ping -c 1 -W 2 "$peer" >/dev/null 2>&1 && { ok=1; break; }; sleep 1; done
  [ $ok = 1 ] && echo "DOMU: PING_OK $(ping -c 3 -W 5 "$peer" 2>&1 | grep -E 'packets transmitted')" || echo "DOMU: NET_FAILED ping $peer"
  head -c 4194304 /dev/urandom > /tmp/ntx.bin
  echo "DOMU: NET_TX_MD5 $(md5sum < /tmp/ntx.bin | cut -c1-32)"
  mkfifo /tmp/nfifo
  nc -l -p 5201 < /tmp/ntx.bin & p1=$!
  nc -l -p 5202 > /tmp/nrx.bin <> /tmp/nfifo & p2=$!
  echo "DOMU: NET_LISTEN"
  wait $p1; wait $p2
  echo "DOMU: NET_RX_MD5 $(md5sum < /tmp/nrx.bin | cut -c1-32) $(wc -c < /tmp/nrx.bin) bytes"
  echo "DOMU: NET_DONE"
  while :; do sleep 3600; done
fi
sync; echo "DOMU: done"; poweroff -f
