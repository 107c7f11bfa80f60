#!/bin/sh
# PID 1 of the PV domU (initramfs: busybox, fio, mke2fs, e2fsck): xen-blkfront on /dev/xvda,
# then by default fio write + verify (crc32c), mkfs.ext4 + e2fsck -fn, verified writes and reads
# at several offsets (checked against what was written, after dropping caches), then poweroff;
# with lab_idle on the command line it loads nothing and idles; with lab_loop it writes and
# verifies in a loop until shut down or destroyed (for xl save/restore, a daemon restart, a
# resize; lab_fs adds ext4 on xvdb, grown online); with lab_bench=ROUNDS:SECS it runs fio on xvda, xvdb and xvdc in turn (domu-compare).
# Prints DOMU: lines on hvc0 (xenconsoled logs them in dom0).
export PATH=/bin   # /sbin/poweroff is for the kernel (below); ours is busybox's
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
ln -s /proc/mounts /etc/mtab
echo "DOMU: booted, uptime $(cat /proc/uptime)"
# xl shutdown: the kernel runs /sbin/poweroff (orderly_poweroff), which sends PID 1 SIGUSR2; a
# trap runs between two commands, so every wait below is short.
shutdown_req() { echo "DOMU: shutdown requested${n:+ at loop $n}"; sync; echo "DOMU: powering off"; poweroff -f; }
trap shutdown_req USR2
# lab_idle (record-toolstack, domu-qdisk-save): no frontend drivers, just stay up
if grep -q lab_idle /proc/cmdline; then
  echo "DOMU: idle"
  while :; do sleep 1; done
fi
insmod /lib/modules/xen-blkfront.ko
for i in $(seq 1 20); do [ -b /dev/xvda ] && break; sleep 1; done
[ -b /dev/xvda ] || { echo "DOMU: NO /dev/xvda"; ls /sys/block; poweroff -f; }
echo "DOMU: xvda size $(cat /sys/block/xvda/size) sectors"
# fio write then verify (crc32c in every block) of SIZE at OFFSET on /dev/DEV, O_DIRECT, QD8,
# random offsets, blocks of 4-128 KiB; 0 when every block read back as written
fio_verify() { # dev offset size name
  fio --name="$4" --filename="/dev/$1" --offset="$2" --size="$3" --direct=1 --ioengine=libaio --iodepth=8 \
      --rw=randwrite --bsrange=4k-128k --verify=crc32c --verify_fatal=1 --output-format=terse --terse-version=3 \
      >/tmp/fio.out 2>&1 && return 0
  grep -v '^3;' /tmp/fio.out | head -5 | sed 's/^/DOMU: fio| /'; return 1
}
# lab_bench=R:S (domu-compare): xvda, xvdb and xvdc (dom0 gives each its backend), R rounds of
# the jobs, each S seconds on each disk in turn, the first disk changing each round; one line
# "DOMU: BENCH round job disk KiB/s" per run, then "DOMU: BENCH_DONE".
bench=$(sed -n 's/.*lab_bench=\([0-9]*\):\([0-9]*\).*/\1 \2/p' /proc/cmdline)
if [ -n "$bench" ]; then
  set -- $bench; rounds=$1 secs=$2
  for i in $(seq 1 30); do [ -b /dev/xvdb ] && [ -b /dev/xvdc ] && break; sleep 1; done
  [ -b /dev/xvdb ] && [ -b /dev/xvdc ] || { echo "DOMU: BENCH_NO_DISKS $(ls /sys/block)"; poweroff -f; }
  echo "DOMU: bench $rounds rounds x ${secs}s on xvda xvdb xvdc"
  for r in $(seq 1 "$rounds"); do
    case $((r % 3)) in 1) order="xvda xvdb xvdc";; 2) order="xvdb xvdc xvda";; 0) order="xvdc xvda xvdb";; esac
    for j in randread-4k-qd1:randread:4k:1 randread-4k-qd16:randread:4k:16 read-1M-qd8:read:1M:8 write-1M-qd8:write:1M:8; do
      IFS=: read -r name rw bs qd <<EOF
$j
EOF
      for d in $order; do
        if fio --name=b --filename=/dev/$d --direct=1 --ioengine=libaio --rw=$rw --bs=$bs --iodepth=$qd --size=256M \
               --runtime="$secs" --time_based --output-format=terse --terse-version=3 >/tmp/fio.out 2>&1; then
          case $rw in *write*) f=48;; *) f=7;; esac
          echo "DOMU: BENCH $r $name $d $(cut -d';' -f$f /tmp/fio.out)"
        else
          echo "DOMU: BENCH_FIO_FAILED $r $name $d"; head -5 /tmp/fio.out
        fi
      done
    done
  done
  echo "DOMU: BENCH_DONE"; sync; poweroff -f
fi
# lab_loop (domu-xl, domu-xl-live): round n writes 256 KiB of new data at 2 + n%8 MiB (fsync:
# acknowledged), then reads back every slot written so far, after dropping caches, and compares
# each with its last acknowledged write (what fio cannot: a stale block passes its crc); then a
# fio write + verify of 2 MiB at 12 + 2*(n%2) MiB. "DOMU: loop N" after each round, the size
# when it changes; LOOP_* lines for any error.
# lab_fs (with lab_loop, domu-xl-live): ext4 on xvdb, mounted at /mnt, a 1 MiB file on it; when
# xvdb grows, resize2fs grows the mounted file system (online), a file larger than the old free
# space is written, both files read back (after dropping caches), then e2fsck -fn unmounted and
# mounted again: "DOMU: RESIZE2FS_OK ..." or RESIZE2FS_FAILED.
fs_kib() { set -- $(df -k /mnt | tail -1); echo "$2"; }     # the file system's size, KiB
fs_avail() { set -- $(df -k /mnt | tail -1); echo "$4"; }   # its free space, KiB
fs_setup() {
  for m in crc16 crc32c_generic mbcache jbd2 ext4; do
    insmod /lib/modules/$m.ko 2>/tmp/insmod.out || { echo "DOMU: FS_FAILED insmod $m: $(cat /tmp/insmod.out)"; return 1; }
  done
  for i in $(seq 1 20); do [ -b /dev/xvdb ] && break; sleep 1; done
  [ -b /dev/xvdb ] || { echo "DOMU: FS_FAILED no /dev/xvdb"; return 1; }
  mkdir -p /mnt
  if ! { mkfs.ext4 -q -F /dev/xvdb >/tmp/mkfs.out 2>&1 && mount -t ext4 /dev/xvdb /mnt; }; then
    tail -3 /tmp/mkfs.out | sed 's/^/DOMU: fs| /'; echo "DOMU: FS_FAILED mkfs/mount xvdb"; return 1
  fi
  dd if=/dev/urandom of=/mnt/a bs=64k count=16 conv=fsync 2>/dev/null; md5sum < /mnt/a > /tmp/a.md5
  fs_size=$(cat /sys/block/xvdb/size)
  echo "DOMU: FS_MOUNTED xvdb $fs_size sectors, ext4 $(fs_kib) KiB"
}
fs_grow() { # xvdb grew: resize2fs online, then use the new space and check
  local k0 k1 mib
  k0=$(fs_kib); mib=$(( $(fs_avail) / 1024 + 2 ))   # more than the old file system had free
  resize2fs /dev/xvdb >/tmp/rs.out 2>&1 || { tail -3 /tmp/rs.out | sed 's/^/DOMU: fs| /'; echo "DOMU: RESIZE2FS_FAILED resize2fs"; return 1; }
  k1=$(fs_kib)
  [ "$k1" -gt "$k0" ] || { echo "DOMU: RESIZE2FS_FAILED still $k1 KiB"; return 1; }
  dd if=/dev/urandom of=/tmp/b bs=1M count=$mib 2>/dev/null
  dd if=/tmp/b of=/mnt/b bs=1M conv=fsync 2>/dev/null || { echo "DOMU: RESIZE2FS_FAILED writing $mib MiB"; return 1; }
  echo 3 > /proc/sys/vm/drop_caches
  [ "$(md5sum < /mnt/a)" = "$(cat /tmp/a.md5)" ] && [ "$(md5sum < /mnt/b)" = "$(md5sum < /tmp/b)" ] \
    || { echo "DOMU: RESIZE2FS_FAILED a file read back different"; return 1; }
  rm -f /tmp/b
  umount /mnt && e2fsck -fn /dev/xvdb >/tmp/fsck.out 2>&1 && mount -t ext4 /dev/xvdb /mnt \
    || { tail -4 /tmp/fsck.out | sed 's/^/DOMU: fs| /'; echo "DOMU: RESIZE2FS_FAILED e2fsck"; return 1; }
  echo "DOMU: RESIZE2FS_OK online $k0 -> $k1 KiB, $mib MiB written in the new space, files verified, e2fsck -fn clean"
}
if grep -q lab_loop /proc/cmdline; then
  n=0; size=$(cat /sys/block/xvda/size); fs=
  grep -q lab_fs /proc/cmdline && fs_setup && fs=1
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
    fio_verify xvda $((12 + 2 * (n % 2)))M 2M loop$n || echo "DOMU: LOOP_FIO_VERIFY_FAILED in round $n"
    n=$((n + 1)); echo "DOMU: loop $n"
    now=$(cat /sys/block/xvda/size)
    [ "$now" != "$size" ] && { echo "DOMU: size $size -> $now"; size=$now; }
    if [ -n "$fs" ] && [ "$(cat /sys/block/xvdb/size)" != "$fs_size" ]; then
      echo "DOMU: xvdb size $fs_size -> $(cat /sys/block/xvdb/size)"; fs_size=$(cat /sys/block/xvdb/size); fs_grow
    fi
  done
fi
echo "DOMU: first bytes: $(dd if=/dev/xvda bs=16 count=1 2>/dev/null)"
# fio over the first 32 MiB but the first MiB (the signature above), then a file system over the
# whole disk; the verified writes below come after (they overwrite parts of it)
fio_verify xvda 1M 31M verify && echo "DOMU: FIO_VERIFY_OK 31 MiB written and verified (crc32c)" || echo "DOMU: FIO_VERIFY_FAILED"
if mkfs.ext4 -q -F /dev/xvda >/tmp/mkfs.out 2>&1 && e2fsck -fn /dev/xvda >/tmp/fsck.out 2>&1; then
  echo "DOMU: FS_OK mkfs.ext4 + e2fsck -fn clean: $(grep -a 'files' /tmp/fsck.out | tail -1)"
else
  cat /tmp/mkfs.out /tmp/fsck.out 2>/dev/null | tail -8 | sed 's/^/DOMU: fs| /'; echo "DOMU: FS_FAILED"
fi
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
