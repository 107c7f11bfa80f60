#!/bin/bash
# The lab's checks, run in dom0 by dom0-init.sh once the toolstack is up. Prints "PLAN <names>"
# and one "RESULT <name>: OK|FAILED ..." line per check; each check runs in its own shell
# under a timeout, its log is shown when it fails, and whatever it started is stopped after it.
# Every xenio process here runs with --platform xen: /dev/xen/{gntdev,gntalloc,evtchn} and the
# real xenstored.
export PATH=/lab/bin:/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
X=/lab/bin/xenio
export NO_COLOR=1
[ -r /lab/env ] && . /lab/env     # knobs from run.sh (CMP_*, NET_*)
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "LAB[$(up)s]: $*"; }
die() { echo "FAIL: $*" >&2; exit 1; }   # (stderr: also seen when stdout is captured)
info() { echo "INFO $*"; }
since() { awk -v a="$(up)" -v b="$1" 'BEGIN{printf "%.1f", a-b}'; }

devid_of() { # xvdb -> 51728
  local l=${1#xvd}; echo $(( 202 * 256 + ($(printf '%d' "'$l") - 97) * 16 ))
}

# --- xenio blkback, attached as a toolstack would (xenio blkback --create-device)
bb_start() { # vdev image [frontend-domid] [extra blkback args...]; waits for backend InitWait (BB_FORMAT: format=, raw by default)
  local vdev=$1 img=$2 fe=${3:-0}; shift 3 2>/dev/null || shift $#
  local devid; devid=$(devid_of "$vdev")
  RUST_LOG=${RUST_LOG:-info} setsid "$X" blkback --platform xen --frontend "$fe" --create-device --backend-type xenio \
    --disk "format=${BB_FORMAT:-raw},vdev=$vdev,access=rw,target=$img" "$@" >>"/tmp/bb-$vdev.log" 2>&1 </dev/null &
  echo $! > "/tmp/bb-$vdev.pid"
  for i in $(seq 1 100); do
    st=$(xenstore-read "/local/domain/0/backend/xenio/$fe/$devid/state" 2>/dev/null)
    [ -n "$st" ] && [ "$st" -ge 2 ] && return 0
    kill -0 "$(cat /tmp/bb-$vdev.pid)" 2>/dev/null || { cat "/tmp/bb-$vdev.log"; die "xenio blkback for $vdev exited"; }
    sleep 0.2
  done
  cat "/tmp/bb-$vdev.log"; die "xenio blkback for $vdev: no InitWait in 20 s"
}
wait_dev() { # vdev [seconds]
  local t0; t0=$(up)
  for i in $(seq 1 $(( ${2:-30} * 5 ))); do [ -b "/dev/$1" ] && { info "/dev/$1 appeared after $(since "$t0") s"; return 0; }; sleep 0.2; done
  xenstore-ls -f /local/domain/0/device/vbd 2>/dev/null | head -20
  xenstore-ls -f /local/domain/0/backend/xenio 2>/dev/null | head -30
  xenstore-ls -f /local/domain/0/backend/qdisk 2>/dev/null | head -30
  [ -s /tmp/qemu-dom0.log ] && { echo "-- /tmp/qemu-dom0.log"; tail -20 /tmp/qemu-dom0.log; }
  cat "/tmp/bb-$1.log" 2>/dev/null | tail -20
  die "/dev/$1 did not appear"
}
bb_stop() { # vdev [frontend-domid]: SIGTERM = detach; the device and the store nodes must go
  local vdev=$1 fe=${2:-0} pid devid; pid=$(cat "/tmp/bb-$vdev.pid"); devid=$(devid_of "$vdev")
  kill -TERM "$pid"
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; tail -20 "/tmp/bb-$vdev.log"; die "xenio blkback for $vdev still running 20 s after SIGTERM"; }
  wait "$pid" 2>/dev/null; local rc=$?
  rm -f "/tmp/bb-$vdev.pid"
  [ $rc = 0 ] || { tail -20 "/tmp/bb-$vdev.log"; die "xenio blkback for $vdev exited with $rc"; }
  if [ "$fe" = 0 ]; then
    for i in $(seq 1 75); do [ -b "/dev/$vdev" ] || break; sleep 0.2; done
    [ -b "/dev/$vdev" ] && die "/dev/$vdev still there after detach"
  fi
  xenstore-exists "/local/domain/$fe/device/vbd/$devid" 2>/dev/null && die "frontend node left behind"
  xenstore-exists "/local/domain/0/backend/xenio/$fe/$devid" 2>/dev/null && die "backend node left behind"
  grep -a 'blkback: ' "/tmp/bb-$vdev.log" | tail -1
  return 0
}
blkfront_load() { # max_ring_page_order max_queues max_indirect_segments feature_persistent
  blkfront_unload
  modprobe xen-blkfront max_ring_page_order="$1" max_queues="$2" max_indirect_segments="$3" feature_persistent="$4" \
    || die "modprobe xen-blkfront $*"
}
blkfront_unload() { # dom0's kernel frontend would claim any device/vbd node: take it away
  for i in $(seq 1 50); do
    grep -q '^xen_blkfront ' /proc/modules || return 0
    rmmod xen-blkfront 2>/dev/null && return 0
    sleep 0.2
  done
  ls /sys/block; die "cannot unload xen-blkfront: $(rmmod xen-blkfront 2>&1)"
}
fe_key() { xenstore-read "/local/domain/0/device/vbd/$(devid_of "$1")/$2" 2>/dev/null; }
expect_eq() { [ "$2" = "$3" ] || die "$1: expected '$3', got '$2'"; }

fio_verify() { # vdev: random-offset writes of 4k..256k over the whole disk, each block checksummed and read back
  fio --name=verify --filename="/dev/$1" --direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite \
      --bsrange=4k-256k --verify=crc32c --verify_fatal=1 --do_verify=1 --size=100% \
      --randseed="${2:-1}" --output-format=terse --terse-version=3 > /tmp/fio-$1.out 2>&1 \
    || { cat /tmp/fio-$1.out; die "fio verify on /dev/$1 failed"; }
  info "fio verify /dev/$1: wrote+verified $(awk -F';' '{print int($47/1024)}' /tmp/fio-$1.out) MiB at random offsets"
}
same_as_image() { # vdev image: the whole device equals the backing file byte for byte
  echo 3 > /proc/sys/vm/drop_caches
  cmp "/dev/$1" "$2" || die "/dev/$1 differs from its image $2"
}

# ---------------------------------------------------------------- the checks
# xenio blkback serving dom0's own kernel xen-blkfront, ring order 0, one queue, persistent grants on
c_bb_o0() {
  blkfront_load 0 1 32 1
  truncate -s 64M /tmp/o0.img
  bb_start xvdb /tmp/o0.img 0; wait_dev xvdb
  expect_eq ring-page-order "$(fe_key xvdb ring-page-order)" ""
  expect_eq ring-ref-present "$( [ -n "$(fe_key xvdb ring-ref)" ] && echo yes)" yes
  expect_eq feature-persistent "$(fe_key xvdb feature-persistent)" 1
  expect_eq size "$(cat /sys/block/xvdb/size)" 131072
  fio_verify xvdb 1
  same_as_image xvdb /tmp/o0.img
  bb_stop xvdb
  echo "SUMMARY order 0, 1 queue, persistent on: fio verify + byte-equal image, detach clean"
}
# ring order 4, two queues, 256 indirect segments, persistent grants off, discard
c_bb_o4() {
  blkfront_load 4 2 256 0
  truncate -s 32M /tmp/o4.img
  bb_start xvdb /tmp/o4.img 0; wait_dev xvdb
  expect_eq ring-page-order "$(fe_key xvdb ring-page-order)" 4
  expect_eq queues "$(fe_key xvdb multi-queue-num-queues)" 2
  [ -n "$(fe_key xvdb queue-1/ring-ref15)" ] || die "no queue-1/ring-ref15"
  expect_eq feature-persistent "$(fe_key xvdb feature-persistent)" 0
  fio_verify xvdb 2
  same_as_image xvdb /tmp/o4.img
  expect_eq write_cache "$(cat /sys/block/xvdb/queue/write_cache)" "write back"
  [ "$(cat /sys/block/xvdb/queue/discard_max_bytes)" -gt 0 ] || die "no discard on /dev/xvdb"
  blkdiscard -o 1048576 -l 4194304 /dev/xvdb || die "blkdiscard failed"
  same_as_image xvdb /tmp/o4.img
  sync; dd if=/dev/urandom of=/dev/xvdb bs=64k count=16 seek=3 oflag=direct conv=fsync 2>/dev/null || die "write+fsync (flush)"
  same_as_image xvdb /tmp/o4.img
  bb_stop xvdb
  echo "SUMMARY order 4, 2 queues, 256 indirect, persistent off: fio verify, discard, flush, byte-equal image"
}
# Issue 14's example, a custom block backend in one screen of code
# (blkback/examples/checksum_backend.rs, run as its own program), serving dom0's kernel xen-blkfront:
# a block corrupted behind the checksum fails alone, its neighbours read, fio verify over the whole
# disk, SIGTERM = a clean detach (the device goes, the nodes go, exit 0).
c_example_blk() {
  [ -x /lab/bin/checksum_backend ] || die "no checksum_backend in the payload (lab/run.sh builds it)"
  blkfront_load 0 1 32 1
  RUST_LOG=info setsid /lab/bin/checksum_backend --platform xen --frontend 0 --vdev xvdb --backend-type xenio \
    --size-mib 64 --corrupt-block 10000 >>/tmp/bb-xvdb.log 2>&1 </dev/null &
  echo $! > /tmp/bb-xvdb.pid
  wait_dev xvdb
  expect_eq size "$(cat /sys/block/xvdb/size)" 131072
  dd if=/dev/xvdb of=/dev/null bs=4096 skip=10000 count=1 iflag=direct 2>/dev/null \
    && die "reading the corrupted block 10000 succeeded"
  for b in 9999 10001; do
    dd if=/dev/xvdb of=/dev/null bs=4096 skip=$b count=1 iflag=direct 2>/dev/null \
      || die "block $b failed beside the corrupted one"
  done
  info "example-blk: block 10000 (corrupted) gave EIO, blocks 9999 and 10001 read"
  fio_verify xvdb 3
  bb_stop xvdb
  echo "SUMMARY the checksum_backend example program: a corrupt block fails alone, fio verify, clean detach on SIGTERM"
}
# Issue 15: xenio as the host's disk backend. xen-blkback unloaded, block-xenio installed as the
# README says, one `xenio backendd` process; `xl block-attach` gives dom0 two disks (libxl writes
# the nodes and runs the script), both serve fio verify at once, one is detached and re-attached
# five times while the other keeps serving, `xl block-detach` of both leaves nothing, and the
# daemon exits 0 on SIGTERM.
xl_attach() { # vdev image
  timeout 60 setsid -w xl block-attach 0 "vdev=$1,access=rw,backendtype=phy,script=block-xenio,target=$2" </dev/null \
    || { tail -20 /tmp/bb-backendd.log; die "xl block-attach $1 failed"; }
}
bxl_closed() { # the backend's own figures: how long each queue took to let go of its persistent grants
  grep -a 'queue closed' /tmp/bb-backendd.log | sed 's/^.*queue closed/INFO backendd-xl: queue closed/'
}
xl_detach() { # vdev: xl returns once libxl saw Closed and ran the script; the disk and nodes go
  local t0; t0=$(up)
  timeout 60 setsid -w xl block-detach 0 "$1" </dev/null \
    || { sleep 5; bxl_closed; tail -20 /tmp/bb-backendd.log; die "xl block-detach $1 failed after $(since "$t0") s"; }
  info "xl block-detach $1: $(since "$t0") s"
  for i in $(seq 1 75); do [ -b "/dev/$1" ] || break; sleep 0.2; done
  [ -b "/dev/$1" ] && die "/dev/$1 still there after xl block-detach"
  xenstore-exists "/local/domain/0/backend/vbd/0/$(devid_of "$1")" 2>/dev/null && die "backend/vbd/0/$(devid_of "$1") left behind"
  return 0
}
c_backendd_xl() {
  [ -f /lab/block-xenio ] || die "no block-xenio in the payload (lab/run.sh copies it)"
  # Persistent grants on (BXL_PERSISTENT=0: off). Unmapped one by one, a busy disk's took
  # 3-11.5 s per queue and its close up to 16.9 s, past libxl's 10 s removal timeout; unmapped
  # with one mmap per queue (GrantWindow::release) a busy disk detaches in 1.3-3.0 s
  # (lab/README.md, "What the lab found"). BXL_ROUNDS=N adds N rounds of attach, 32 MiB of
  # random writes, timed detach of xvdb (each detach's time and the backend's own figures for
  # unmapping its persistent grants are printed as INFO lines).
  blkfront_load 0 2 32 "${BXL_PERSISTENT:-1}"
  for i in $(seq 1 50); do grep -q '^xen_blkback ' /proc/modules || break; rmmod xen-blkback 2>/dev/null; sleep 0.2; done
  grep -q '^xen_blkback ' /proc/modules && die "cannot unload xen-blkback"
  install -m 755 /lab/block-xenio /etc/xen/scripts/block-xenio
  RUST_LOG=info setsid "$X" backendd --platform xen >>/tmp/bb-backendd.log 2>&1 </dev/null &
  echo $! > /tmp/bb-backendd.pid
  sleep 1; kill -0 "$(cat /tmp/bb-backendd.pid)" 2>/dev/null || { cat /tmp/bb-backendd.log; die "xenio backendd exited"; }
  truncate -s 64M /tmp/tool-a.img; truncate -s 32M /tmp/tool-b.img
  xl_attach xvdb /tmp/tool-a.img; wait_dev xvdb
  xl_attach xvdc /tmp/tool-b.img; wait_dev xvdc
  expect_eq size-a "$(cat /sys/block/xvdb/size)" 131072
  expect_eq size-b "$(cat /sys/block/xvdc/size)" 65536
  expect_eq backendd-pids "$(pgrep -c -f 'xenio backendd')" 1
  fio_verify xvdb 5 & local fa=$!
  fio_verify xvdc 6 || die "fio verify on xvdc beside xvdb"
  wait $fa || die "fio verify on xvdb beside xvdc"
  same_as_image xvdb /tmp/tool-a.img; same_as_image xvdc /tmp/tool-b.img
  # churn: xvdc detached and re-attached five times while xvdb is read and written
  ( for r in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=/dev/xvdb bs=1M count=8 seek=$(( r * 4 )) oflag=direct 2>/dev/null || exit 1; done ) & local bg=$!
  for r in 1 2 3 4 5; do xl_detach xvdc; xl_attach xvdc /tmp/tool-b.img; wait_dev xvdc 30; done
  wait $bg || die "I/O on xvdb failed while xvdc was detached and re-attached"
  same_as_image xvdb /tmp/tool-a.img; same_as_image xvdc /tmp/tool-b.img
  info "backendd-xl: 5 detach/attach cycles of xvdc beside I/O on xvdb, both byte-equal to their images"
  xl_detach xvdb; xl_detach xvdc
  for r in $(seq 1 "${BXL_ROUNDS:-0}"); do
    xl_attach xvdb /tmp/tool-a.img; wait_dev xvdb
    fio --name=busy --filename=/dev/xvdb --direct=1 --ioengine=libaio --iodepth=32 --rw=randwrite \
        --bsrange=4k-256k --size=32M --randseed="$r" --output-format=terse >/dev/null 2>&1 || die "fio on xvdb, round $r"
    xl_detach xvdb
  done
  bxl_closed
  [ -z "$(xenstore-list /local/domain/0/backend/vbd/0 2>/dev/null)" ] || die "backend/vbd/0 not empty: $(xenstore-list /local/domain/0/backend/vbd/0)"
  local pid; pid=$(cat /tmp/bb-backendd.pid); kill -TERM "$pid"
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && { tail -20 /tmp/bb-backendd.log; die "xenio backendd still running 20 s after SIGTERM"; }
  wait "$pid"; local rc=$?; rm -f /tmp/bb-backendd.pid
  [ $rc = 0 ] || { tail -20 /tmp/bb-backendd.log; die "xenio backendd exited with $rc"; }
  echo "SUMMARY xl block-attach/detach with script=block-xenio: two disks in one xenio backendd, fio verify on both at once, 5 detach/attach cycles beside I/O, nothing left, clean exit"
}
# a file system: mkfs, mount, copy, umount, fsck; detach, re-attach, compare, fsck again
c_bb_fs() {
  blkfront_load 0 2 32 1
  modprobe ext4 || die "modprobe ext4"
  truncate -s 192M /tmp/fs.img
  bb_start xvdc /tmp/fs.img 0; wait_dev xvdc
  mkfs.ext4 -q -F /dev/xvdc || die mkfs
  mkdir -p /mnt/x; mount /dev/xvdc /mnt/x 2>&1 || die mount
  cp -a /usr/lib/xen-4.17 /usr/bin /mnt/x/ || die "copy"
  fstrim -v /mnt/x || die "fstrim (discard)"
  umount /mnt/x || die umount
  fsck.ext4 -fn /dev/xvdc >/tmp/fsck1 2>&1 || { cat /tmp/fsck1; die "fsck after copy"; }
  bb_stop xvdc
  info "detached; re-attaching"
  bb_start xvdc /tmp/fs.img 0; wait_dev xvdc
  mount /dev/xvdc /mnt/x || die "mount after re-attach"
  echo 3 > /proc/sys/vm/drop_caches
  diff -r --no-dereference /usr/lib/xen-4.17 /mnt/x/xen-4.17 || die "copied files differ after re-attach"
  diff -r --no-dereference /usr/bin /mnt/x/bin || die "copied files differ after re-attach"
  info "$(du -sm /mnt/x | cut -f1) MiB of files compare equal after detach + re-attach"
  umount /mnt/x
  fsck.ext4 -fn /dev/xvdc >/tmp/fsck2 2>&1 || { cat /tmp/fsck2; die "fsck after re-attach"; }
  bb_stop xvdc
  echo "SUMMARY mkfs.ext4, mount, copy, fstrim, umount, fsck clean; detach, re-attach, files equal, fsck clean"
}

# A qcow2 overlay over a base, both made by qemu-img on the host (run.sh ships them in
# /lab/qcow2: the base holds 0x5a in its first MiB, the overlay is empty), served with
# format=qcow2 to dom0's xen-blkfront: the base's data reads through the chain, then ext4 on it.
# The base must stay untouched; qemu-img check of the overlay runs here when dom0 has qemu-img,
# else run.sh runs it on the host on the copy this check leaves in the outbox.
c_qcow2_fs() {
  local Q=/lab/qcow2 D=/tmp/q
  [ -s $Q/base.qcow2 ] && [ -s $Q/overlay.qcow2 ] || die "no qcow2 images in /lab/qcow2 (run.sh makes them with the host's qemu-img: install qemu-utils)"
  blkfront_load 0 2 32 1
  modprobe ext4 || die "modprobe ext4"
  rm -rf $D; mkdir -p $D; cp $Q/base.qcow2 $Q/overlay.qcow2 $D/ || die "copying the images"
  local sum; sum=$(sha256sum < $D/base.qcow2)
  BB_FORMAT=qcow2 bb_start xvdd $D/overlay.qcow2 0; wait_dev xvdd
  grep -a 'serving' /tmp/bb-xvdd.log | tail -1 | sed 's/^/INFO /'
  [ "$(head -c 1048576 /dev/xvdd | tr -d '\132' | wc -c)" = 0 ] || die "the base's first MiB (0x5a) does not read through the overlay"
  mkfs.ext4 -q -F /dev/xvdd || die mkfs
  mkdir -p /mnt/x; mount /dev/xvdd /mnt/x 2>&1 || die mount
  cp -a /usr/lib/xen-4.17 /mnt/x/ || die "copy"
  umount /mnt/x || die umount
  fsck.ext4 -fn /dev/xvdd >/tmp/fsck1 2>&1 || { cat /tmp/fsck1; die "fsck after copy"; }
  BB_FORMAT=qcow2 bb_stop xvdd
  info "detached; re-attaching the overlay"
  BB_FORMAT=qcow2 bb_start xvdd $D/overlay.qcow2 0; wait_dev xvdd
  mount /dev/xvdd /mnt/x || die "mount after re-attach"
  echo 3 > /proc/sys/vm/drop_caches
  diff -r --no-dereference /usr/lib/xen-4.17 /mnt/x/xen-4.17 || die "copied files differ after re-attach"
  info "$(du -sm /mnt/x | cut -f1) MiB of files compare equal after detach + re-attach"
  umount /mnt/x
  fsck.ext4 -fn /dev/xvdd >/tmp/fsck2 2>&1 || { cat /tmp/fsck2; die "fsck after re-attach"; }
  bb_stop xvdd
  [ "$(sha256sum < $D/base.qcow2)" = "$sum" ] || die "the base image changed"
  info "overlay $(du -k $D/overlay.qcow2 | cut -f1) KiB, base unchanged"
  local how
  if command -v qemu-img >/dev/null; then
    qemu-img check $D/overlay.qcow2 >/tmp/qcheck 2>&1 || { cat /tmp/qcheck; die "qemu-img check of the overlay"; }
    how="qemu-img check clean"
  else
    mkdir -p /tmp/outbox/qcow2-fs && cp $D/overlay.qcow2 /tmp/outbox/qcow2-fs/ || die "overlay into the outbox"
    how="overlay in the outbox for qemu-img check on the host (run.sh)"
  fi
  rm -rf $D
  echo "SUMMARY qcow2 overlay over a qemu-img base: base read through, mkfs.ext4, mount, copy, umount, fsck clean; detach, re-attach, files equal, fsck clean; base unchanged; $how"
}

# The lab's real disk: a virtio disk (QEMU cache=none, aio=native on the host: boot.sh) whose
# serial is xenio-lab-disk. Prints its name (vda).
lab_disk() {
  local f; f=$(grep -l '^xenio-lab-disk$' /sys/block/vd*/serial 2>/dev/null | head -1)
  [ -n "$f" ] || return 1; echo "$f" | cut -d/ -f4
}
open_flags() { # pid path: "N fds, O_DIRECT on M" for the process's descriptors open on path
  local fd n=0 d=0 fl
  for fd in /proc/$1/fd/*; do
    [ "$(readlink "$fd" 2>/dev/null)" = "$2" ] || continue
    n=$((n + 1)); fl=$(awk '/^flags:/ {print $2}' "/proc/$1/fdinfo/${fd##*/}")
    [ $(( 8#$fl & 8#40000 )) != 0 ] && d=$((d + 1))
  done
  echo "$n fds, O_DIRECT on $d"
}

# xenio blkback, the kernel's blkback and QEMU qdisk serve one target, one boot, fio in turn
qdisk_up() { # [qemu args...]: dom0's QEMU (qdisk backend), its messages in /tmp/qemu-dom0.log
  [ -s /run/xen/qemu-dom0.pid ] && return 0
  setsid /usr/libexec/xen-qemu-system-i386 -xen-domid 0 -xen-attach -name dom0 -nographic -M xenpv \
    -monitor /dev/null -serial /dev/null -parallel /dev/null -pidfile /run/xen/qemu-dom0.pid "$@" </dev/null >>/tmp/qemu-dom0.log 2>&1 &
  for i in $(seq 1 100); do [ -s /run/xen/qemu-dom0.pid ] && break; kill -0 $! 2>/dev/null || break; sleep 0.2; done
  [ -s /run/xen/qemu-dom0.pid ] || { cat /tmp/qemu-dom0.log; die "dom0 QEMU"; }
  xenstore-write /local/domain/0/image/device-model-pid "$(cat /run/xen/qemu-dom0.pid)"
}
qdisk_down() { # stop dom0's QEMU; the disks it created itself (-device xen-disk) go with it
  local pid; pid=$(cat /run/xen/qemu-dom0.pid 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null; rm -f /run/xen/qemu-dom0.pid
  xenstore-rm /local/domain/0/image/device-model-pid 2>/dev/null
}
# Each medium: "disk" (default) is the lab's virtio disk: xenio blkback with --direct on, the
# kernel's blkback on the block device (backendtype=phy: bios, no page cache) and qdisk with
# O_DIRECT. libxl's way to that (direct-io-safe) makes QEMU ask for aio=native, which Debian's
# QEMU for Xen is built without ("aio=native was specified, but is not supported in this
# build"), so dom0's QEMU creates that qdisk itself: -drive cache=none,aio=threads -device
# xen-disk (the same xen-block backend, writing the same backend/qdisk nodes).
# "tmpfs" is a 256 MiB image in dom0's /tmp (no O_DIRECT there: xenio and qdisk go through
# the page cache, the kernel's blkback through a loop device), all three attached as before:
# CMP_MEDIA="disk tmpfs" runs both.
compare_on() { # medium
  local m=$1 tgt kspec qspec xargs=() devs jobs r j d name rw bs qd bw
  case $m in
    disk)
      tgt=/dev/$(lab_disk) || die "no lab disk (virtio, serial xenio-lab-disk): $(ls /sys/block)"
      kspec="format=raw,vdev=xvdg,access=rw,backendtype=phy,target=$tgt"
      qspec=""   # dom0's QEMU makes it: see above
      xargs=(--direct on) ;;
    tmpfs)
      truncate -s 256M /tmp/cmp.img; tgt=/tmp/cmp.img
      kspec="format=raw,vdev=xvdg,access=rw,target=$tgt"
      qspec="format=raw,vdev=xvdh,access=rw,backendtype=qdisk,target=$tgt" ;;
    *) die "unknown CMP_MEDIA entry $m" ;;
  esac
  info "$m: $tgt, $(( $(blockdev --getsize64 "$tgt" 2>/dev/null || stat -c%s "$tgt") >> 20 )) MiB"
  bb_start xvdf "$tgt" 0 "${xargs[@]}"; wait_dev xvdf
  setsid -w xl block-attach 0 "$kspec" </dev/null || die "xl block-attach (kernel blkback) $kspec"
  wait_dev xvdg 60
  if [ -n "$qspec" ]; then
    qdisk_up
    setsid -w xl block-attach 0 "$qspec" </dev/null || die "xl block-attach (qdisk) $qspec"
  else
    qdisk_down
    qdisk_up -drive "file=$tgt,if=none,id=labdisk,format=raw,cache=none,aio=threads" -device xen-disk,vdev=xvdh,drive=labdisk
  fi
  wait_dev xvdh 60
  devs="xenio:xvdf kernel:xvdg qdisk:xvdh"
  if [ -n "${CMP_VARIANT:-}" ]; then   # a second xenio configuration, e.g. CMP_VARIANT="--sync-io"
    bb_start xvdi "$tgt" 0 "${xargs[@]}" $CMP_VARIANT; wait_dev xvdi; devs="$devs xenio2:xvdi"
    info "xenio2 is xenio blkback $CMP_VARIANT"
  fi
  if [ "$m" = disk ]; then
    info "disk: xenio $(open_flags "$(cat /tmp/bb-xvdf.pid)" "$tgt"); qdisk (QEMU) $(open_flags "$(cat /run/xen/qemu-dom0.pid)" "$tgt"); kernel blkback: bios on $tgt (physical-device $(xenstore-read "/local/domain/0/backend/vbd/0/$(devid_of xvdg)/physical-device" 2>/dev/null))"
    # One device under three backends: what one writes (O_DIRECT, past fio's first 256 MiB)
    # the other two and dom0 itself read back, byte for byte.
    local at=$(( ($(blockdev --getsize64 "$tgt") >> 20) - 64 )) w o
    for w in xvdf xvdg xvdh; do
      head -c 16M /dev/urandom > /tmp/pat
      dd if=/tmp/pat of=/dev/$w bs=1M seek=$at oflag=direct conv=fsync status=none || die "dd to /dev/$w"
      for o in xvdf xvdg xvdh "${tgt#/dev/}"; do
        dd if=/dev/$o bs=1M skip=$at count=16 iflag=direct status=none | cmp -s - /tmp/pat \
          || die "16 MiB written through /dev/$w read back differently through /dev/$o"
      done
      at=$((at + 16))
    done
    info "disk: 16 MiB written through each backend read back equal through the other two and $tgt"
  fi
  jobs="write-1M-qd8:write:1M:8 read-1M-qd8:read:1M:8 randread-4k-qd1:randread:4k:1 randread-4k-qd16:randread:4k:16"
  local n order k; n=$(echo $devs | wc -w)
  for r in $(seq 1 "$CMP_R"); do
    # the backends take turns going first: round r starts with the r-th
    order=""; for k in $(seq 0 $((n - 1))); do order="$order $(echo $devs | cut -d' ' -f$(( (r - 1 + k) % n + 1 )))"; done
    for j in $jobs; do
      IFS=: read -r name rw bs qd <<<"$j"
      for d in $order; do
        fio --name=c --filename=/dev/${d#*:} --direct=1 --ioengine=libaio --rw=$rw --bs=$bs --iodepth=$qd \
            --runtime="$CMP_S" --time_based --size=256M --output-format=terse --terse-version=3 >/tmp/fio.out 2>&1 \
          || { cat /tmp/fio.out; die "fio $name on $d ($m)"; }
        bw=$(awk -F';' -v rw=$rw '{print (rw ~ /write/) ? $48 : $7}' /tmp/fio.out)
        echo "$r $m:$name ${d%%:*} $bw" >> /tmp/cmp.txt
      done
    done
  done
  setsid -w xl block-detach 0 xvdg </dev/null || die "xl block-detach xvdg"
  if [ -n "$qspec" ]; then
    setsid -w xl block-detach 0 xvdh </dev/null || die "xl block-detach xvdh"
  else
    qdisk_down
    for i in $(seq 1 75); do [ -b /dev/xvdh ] || break; sleep 0.2; done
    [ -b /dev/xvdh ] && die "/dev/xvdh still there after its QEMU stopped"
    xenstore-rm /local/domain/0/device/vbd/$(devid_of xvdh) 2>/dev/null; xenstore-rm /local/domain/0/backend/qdisk/0/$(devid_of xvdh) 2>/dev/null
  fi
  bb_stop xvdf > /tmp/bb-stop.txt; info "$m: xenio $(tail -1 /tmp/bb-stop.txt)"
  [ -n "${CMP_VARIANT:-}" ] && bb_stop xvdi
  return 0
}
cmp_ratios() { # file of "round job backend KiB/s" lines
  # KiB/s per backend and round -> for each xenio variant: ratio to kernel and to qdisk,
  # the ratio of the means and min-max of the per-round ratios
  awk '{bw[$2" "$3" "$1]=$4; names[$2]=1; rounds[$1]=1; if ($3 ~ /^xenio/) xs[$3]=1}
       END { for (n in names) for (x in xs) {
         sx=0; sk=0; sq=0; lo1=1e9; hi1=0; lo2=1e9; hi2=0; c=0
         for (r in rounds) { v=bw[n" "x" "r]; k=bw[n" kernel "r]; q=bw[n" qdisk "r]; c++
           sx+=v; sk+=k; sq+=q
           if (k>0) { a=v/k; if(a<lo1)lo1=a; if(a>hi1)hi1=a }
           if (q>0) { b=v/q; if(b<lo2)lo2=b; if(b>hi2)hi2=b } }
         printf "RATIO %-22s %-6s %7.1f MiB/s  kernel %7.1f  qdisk %7.1f  /kernel %.2f (%.2f-%.2f)  /qdisk %.2f (%.2f-%.2f)\n",
           n, x, sx/c/1024, sk/c/1024, sq/c/1024, (sk>0?sx/sk:0), lo1, hi1, (sq>0?sx/sq:0), lo2, hi2 } }' "$1" | sort
  # With CMP_VARIANT: xenio against xenio2 round by round (the same round's conditions)
  awk '$3 == "xenio" || $3 == "xenio2" {bw[$2" "$3" "$1]=$4; names[$2]=1; rounds[$1]=1}
       END { for (n in names) { line=""; c=0; s=0
         for (r = 1; (r in rounds); r++) { v=bw[n" xenio "r]; w=bw[n" xenio2 "r]
           if (v > 0 && w > 0) { line=line sprintf(" %.2f", v/w); s+=v/w; c++ } }
         if (c) printf "RATIO %-22s xenio/xenio2 per round:%s (mean %.2f)\n", n, line, s/c } }' "$1" | sort
}
c_compare() {
  blkfront_load 0 2 32 1          # xen-blkfront's defaults, for every backend
  CMP_R=${CMP_ROUNDS:-3} CMP_S=${CMP_SECS:-3}
  : > /tmp/cmp.txt
  local m; for m in ${CMP_MEDIA:-disk}; do compare_on "$m"; done
  cmp_ratios /tmp/cmp.txt
  echo "SUMMARY fio on ${CMP_MEDIA:-disk}, $CMP_R rounds x ${CMP_S}s per job and backend (ratios in the RATIO lines)"
}

# The same comparison from inside a PV domU (issue 15): one domU, three disks on the lab disk,
# one per backend, all with O_DIRECT down to it: xvda served by `xenio backendd --direct on` (a
# class of xenio's own, `backend/xenio`, its nodes written here as libxl writes a disk's: the
# kernel's xen-blkback stays loaded for xvdb and claims every backend/vbd device), xvdb by the
# kernel's xen-blkback (`xl block-attach`, phy: bios) and xvdc by QEMU qdisk (a QEMU attached to
# the domU, `-device xen-disk` with cache=none,aio=threads: see compare). domu-init.sh
# (lab_bench) runs the fio jobs in rounds, the disks in turn, the first changing each round.
# DCMP_ROUNDS, DCMP_SECS: rounds, seconds per job and disk.
c_domu_compare() {
  local tgt d i st; tgt=/dev/$(lab_disk) || die "no lab disk (virtio, serial xenio-lab-disk): $(ls /sys/block)"
  local R=${DCMP_ROUNDS:-2} S=${DCMP_SECS:-3}
  grep -q '^xen_blkback ' /proc/modules || modprobe xen-blkback || die "modprobe xen-blkback"
  RUST_LOG=info setsid "$X" backendd --platform xen --class xenio --direct on >>/tmp/bb-dcmp.log 2>&1 </dev/null &
  echo $! > /tmp/bb-dcmp.pid
  for i in $(seq 1 50); do grep -q 'serving the devices' /tmp/bb-dcmp.log && break; sleep 0.2; done
  grep -q 'serving the devices' /tmp/bb-dcmp.log || { cat /tmp/bb-dcmp.log; die "xenio backendd --class xenio did not start"; }
  cat > /tmp/dcmp.cfg <<CFG
name = "dcmp"
type = "pv"
kernel = "/lab/vmlinuz"
ramdisk = "/lab/domu-initrd.gz"
extra = "console=hvc0 quiet loglevel=4 lab_bench=$R:$S"
memory = 256
vcpus = 1
on_poweroff = "destroy"
on_crash = "destroy"
CFG
  local log; log=$(dx_log dcmp); rm -f "$log"
  timeout 120 setsid -w xl create -p /tmp/dcmp.cfg </dev/null >/tmp/xl-dcmp.log 2>&1 || { cat /tmp/xl-dcmp.log; die "xl create -p"; }
  d=$(xl domid dcmp) || die "no domid"
  # xvda: xenio backendd; both directories, each owned by its side and readable by the other
  local B=/local/domain/0/backend/xenio/$d/51712 F=/local/domain/$d/device/vbd/51712
  xenstore-write "$B/frontend" "$F" "$B/frontend-id" "$d" "$B/online" 1 "$B/params" "$tgt" "$B/mode" w \
    "$B/type" phy "$B/dev" xvda "$B/device-type" disk "$B/state" 1 || die "writing $B"
  xenstore-chmod -r "$B" n0 "r$d" || die "xenstore-chmod $B"
  xenstore-write "$F/virtual-device" 51712 "$F/device-type" disk "$F/backend" "$B" "$F/backend-id" 0 "$F/state" 1 || die "writing $F"
  xenstore-chmod -r "$F" "n$d" r0 || die "xenstore-chmod $F"
  for i in $(seq 1 100); do st=$(xenstore-read "$B/state" 2>/dev/null); [ "$st" = 2 ] && break; sleep 0.2; done
  [ "$st" = 2 ] || { tail -20 /tmp/bb-dcmp.log; die "xenio backendd did not take $B (state '$st')"; }
  # xvdb: the kernel's xen-blkback
  timeout 60 setsid -w xl block-attach dcmp "format=raw,vdev=xvdb,access=rw,backendtype=phy,target=$tgt" </dev/null || die "xl block-attach (kernel blkback)"
  # xvdc: QEMU qdisk, a QEMU of its own for the domU
  setsid /usr/libexec/xen-qemu-system-i386 -xen-domid "$d" -xen-attach -name dcmp -nographic -M xenpv \
    -monitor /dev/null -serial /dev/null -parallel /dev/null -pidfile /run/xen/qemu-dcmp.pid \
    -drive "file=$tgt,if=none,id=labdisk,format=raw,cache=none,aio=threads" -device xen-disk,vdev=xvdc,drive=labdisk \
    </dev/null >>/tmp/qemu-dcmp.log 2>&1 &
  for i in $(seq 1 150); do [ "$(xenstore-read "/local/domain/0/backend/qdisk/$d/51744/state" 2>/dev/null)" = 2 ] && break; sleep 0.2; done
  [ "$(xenstore-read "/local/domain/0/backend/qdisk/$d/51744/state" 2>/dev/null)" = 2 ] || { cat /tmp/qemu-dcmp.log; die "QEMU did not make xvdc"; }
  info "domain $d: xvda xenio backendd ($(open_flags "$(cat /tmp/bb-dcmp.pid)" "$tgt")), xvdb kernel blkback (physical-device $(xenstore-read "/local/domain/0/backend/vbd/$d/51728/physical-device" 2>/dev/null)), xvdc QEMU qdisk ($(open_flags "$(cat /run/xen/qemu-dcmp.pid)" "$tgt")), all on $tgt"
  local t0; t0=$(up)
  xl unpause dcmp || die "xl unpause"
  local wait_s=$(( R * 12 * (S + 8) + 120 ))
  for i in $(seq 1 "$wait_s"); do grep -q -E 'DOMU: (BENCH_DONE|BENCH_NO_DISKS|NO /dev/xvda)' "$log" 2>/dev/null && break; xl domid dcmp >/dev/null 2>&1 || break; sleep 1; done
  tr -d '\r' < "$log" | grep -a -E 'DOMU: (bench|BENCH_)' | grep -v 'BENCH [0-9]' | sed 's/^/  dcmp| /'
  grep -q 'DOMU: BENCH_DONE' "$log" || { tr -d '\r' < "$log" | tail -30; die "the domU did not finish its fio rounds"; }
  grep -q 'BENCH_FIO_FAILED' "$log" && { tr -d '\r' < "$log" | grep -a -A5 BENCH_FIO_FAILED | head -20; die "fio failed in the domU"; }
  info "domu-compare: $R rounds x 4 jobs x 3 disks x ${S}s in $(since "$t0") s"
  tr -d '\r' < "$log" | sed -n 's/.*DOMU: BENCH \([0-9]*\) \([^ ]*\) \(xvd[abc]\) \([0-9]*\).*/\1 domu:\2 \3 \4/p' \
    | sed 's/ xvda / xenio /; s/ xvdb / kernel /; s/ xvdc / qdisk /' > /tmp/dcmp.txt
  cmp_ratios /tmp/dcmp.txt
  for i in $(seq 1 150); do xenstore-exists "/local/domain/$d" 2>/dev/null || break; sleep 0.2; done
  xenstore-exists "/local/domain/$d" 2>/dev/null && timeout 60 setsid -w xl destroy dcmp </dev/null
  local pid; pid=$(cat /run/xen/qemu-dcmp.pid 2>/dev/null) && { kill -TERM "$pid" 2>/dev/null; for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done; kill -9 "$pid" 2>/dev/null; }
  rm -f /run/xen/qemu-dcmp.pid
  xenstore-rm "/local/domain/0/backend/xenio/$d" 2>/dev/null; xenstore-rm "/local/domain/0/backend/qdisk/$d" 2>/dev/null
  xenstore-rm "/local/domain/0/device-model/$d" 2>/dev/null
  pid=$(cat /tmp/bb-dcmp.pid); kill -TERM "$pid"
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  wait "$pid"; local rc=$?; rm -f /tmp/bb-dcmp.pid
  [ $rc = 0 ] || { tail -20 /tmp/bb-dcmp.log; die "xenio backendd exited with $rc"; }
  echo "SUMMARY fio in a PV domU on $tgt through xenio backendd, kernel blkback and QEMU qdisk, $R rounds x ${S}s per job and disk (ratios in the RATIO lines)"
}

# xenio blkfront (gntalloc) against the kernel's xen-blkback on a loop device, attached by xl
c_xfront_kback() {
  blkfront_unload
  truncate -s 64M /tmp/kb.img
  setsid -w xl block-attach 0 "format=raw,vdev=xvdd,access=rw,target=/tmp/kb.img" </dev/null || die "xl block-attach"
  "$X" blkfront --platform xen --device xvdd --writes 150 --seed 3 || die "xenio blkfront against kernel blkback"
  setsid -w xl block-detach 0 xvdd </dev/null || die "xl block-detach"
  echo "SUMMARY xl block-attach + kernel blkback (loop); xenio blkfront verified I/O, flush, discard, close"
}
# xenio blkfront against xenio blkback, both in dom0, real grants and event channels
c_xfront_xback() {
  blkfront_unload
  truncate -s 64M /tmp/xx.img
  bb_start xvde /tmp/xx.img 0
  "$X" blkfront --platform xen --device xvde --writes 150 --seed 4 || die "xenio blkfront (map, persistent)"
  bb_stop xvde
  bb_start xvde /tmp/xx.img 0 --grant-mode copy --no-persistent
  "$X" blkfront --platform xen --device xvde --writes 100 --seed 5 --ring-page-order 0 --no-persistent || die "xenio blkfront (copy, order 0)"
  bb_stop xvde
  echo "SUMMARY map+persistent+order 4, then grant copy+order 0; verified I/O, flush, discard, detach"
}
# a PV domU whose disk is served by xenio blkback in dom0: grants from another domain
domu_verified() { # console log: domu-init.sh's default mode passed all three: fio write + verify
  # (crc32c), mkfs.ext4 + e2fsck -fn clean, the dd writes read back equal
  local l=$1 ok=0
  tr -d '\r' < "$l" | grep -a -E 'DOMU: (FIO_VERIFY|FS)_OK' | sed 's/.*DOMU: /INFO domU: /'
  grep -q 'DOMU: FIO_VERIFY_OK' "$l" && grep -q 'DOMU: FS_OK' "$l" && grep -q 'DOMU: XVDA_RW_OK' "$l" && ok=1
  [ $ok = 1 ] || tr -d '\r' < "$l" | grep -a -E 'DOMU: (fio|fs)\||FAILED|MISMATCH' | head -12 >&2
  [ $ok = 1 ]
}
c_domu_xenio() {
  truncate -s 64M /tmp/domu.img
  echo "XENLAB-DISK-SIGNATURE" | dd of=/tmp/domu.img conv=notrunc 2>/dev/null
  cat > /tmp/domu.cfg <<CFG
name = "domu"
type = "pv"
kernel = "/lab/vmlinuz"
ramdisk = "/lab/domu-initrd.gz"
extra = "console=hvc0 quiet loglevel=4"
memory = 256
vcpus = 1
on_poweroff = "destroy"
on_crash = "destroy"
CFG
  setsid -w xl create -p /tmp/domu.cfg </dev/null >/tmp/xl-domu.log 2>&1 || { cat /tmp/xl-domu.log; die "xl create -p"; }
  local d; d=$(xl domid domu) || die "no domid"
  info "domU is domain $d (paused); attaching its disk with xenio blkback"
  bb_start xvda /tmp/domu.img "$d"
  xl unpause domu || die "xl unpause"
  local log=/var/log/xen/console/guest-domu.log
  for i in $(seq 1 200); do grep -q 'DOMU: done' "$log" 2>/dev/null && break; xl domid domu >/dev/null 2>&1 || break; sleep 1; done
  xl domid domu >/dev/null 2>&1 && xl destroy domu
  tr -d '\r' < "$log" | grep DOMU: | sed 's/^/  domU| /'
  domu_verified "$log" || die "the domU did not verify its disk"
  bb_stop xvda "$d"
  dd if=/tmp/domu.img bs=512 skip=8 count=1 2>/dev/null | head -c 15 | grep -q hello-from-domU || die "dom0 does not see the domU's write"
  echo "SUMMARY PV domU $d: xen-blkfront on xenio blkback, fio verify, mkfs + fsck, verified writes, dom0 sees them"
}

# A PV domU with a backendtype=qdisk disk and no QEMU (issue 15): `xenio backendd --class qdisk`
# serves the disk and `xenio device-model` (device_model_override) stands in for the QEMU libxl
# starts for such a domain (lab/recordings/README.md, "What libxl asks of a PV domain's device
# model"). xen-blkback stays loaded: it claims backend/vbd only. on_poweroff = preserve, so that
# it is `xl destroy` that ends the domain and its device model.
dq_alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
c_domu_qdisk() {
  [ -f /lab/xenio-device-model ] || die "no xenio-device-model in the payload (lab/run.sh copies it)"
  install -D -m 755 /lab/xenio-device-model /usr/local/lib/xenio/xenio-device-model
  truncate -s 64M /tmp/dq.img
  echo "XENLAB-QDISK-SIGNATURE" | dd of=/tmp/dq.img conv=notrunc 2>/dev/null
  RUST_LOG=info setsid "$X" backendd --platform xen --class qdisk >>/tmp/bb-qdisk.log 2>&1 </dev/null &
  echo $! > /tmp/bb-qdisk.pid
  local bpid; bpid=$(cat /tmp/bb-qdisk.pid)
  sleep 1; kill -0 "$bpid" 2>/dev/null || { cat /tmp/bb-qdisk.log; die "xenio backendd --class qdisk exited"; }
  cat > /tmp/dq.cfg <<CFG
name = "dq"
type = "pv"
kernel = "/lab/vmlinuz"
ramdisk = "/lab/domu-initrd.gz"
extra = "console=hvc0 quiet loglevel=4"
memory = 256
vcpus = 1
disk = [ 'vdev=xvda,access=rw,backendtype=qdisk,target=/tmp/dq.img' ]
device_model_override = "/usr/local/lib/xenio/xenio-device-model"
on_poweroff = "preserve"
on_crash = "preserve"
CFG
  local log=/var/log/xen/console/guest-dq.log; rm -f "$log"
  XENIO=$X timeout 120 setsid -w xl create /tmp/dq.cfg </dev/null >/tmp/xl-dq.log 2>&1 || { cat /tmp/xl-dq.log; tail -20 /tmp/bb-qdisk.log; cat /var/log/xen/qemu-dm-dq.log 2>/dev/null; die "xl create"; }
  local d; d=$(xl domid dq) || die "no domid"
  local dm; dm=$(xenstore-read "/local/domain/$d/image/device-model-pid") || die "no image/device-model-pid"
  tr '\0' ' ' < "/proc/$dm/cmdline" | grep -q 'xenio device-model -xen-domid' || die "the device model (pid $dm) is not xenio's: $(tr '\0' ' ' < /proc/$dm/cmdline)"
  pgrep -f "qemu-system.*-xen-domid $d( |$)" >/dev/null && die "a QEMU runs for domain $d"
  expect_eq dm-state "$(xenstore-read /local/domain/0/device-model/$d/state)" running
  info "domain $d: device model xenio (pid $dm), no QEMU; backend/qdisk/$d/51712 params $(xenstore-read /local/domain/0/backend/qdisk/$d/51712/params)"
  for i in $(seq 1 200); do grep -q 'DOMU: done' "$log" 2>/dev/null && break; dq_alive "$dm" || break; sleep 1; done
  tr -d '\r' < "$log" | grep DOMU: | sed 's/^/  domU| /'
  domu_verified "$log" || { tail -20 /tmp/bb-qdisk.log; die "the domU did not verify its disk"; }
  dq_alive "$dm" || die "the device model exited before xl destroy"
  info "backend/qdisk/$d/51712: state $(xenstore-read /local/domain/0/backend/qdisk/$d/51712/state 2>/dev/null) (preserved domain: $(xl list dq 2>/dev/null | awk 'NR==2{print $5}'))"
  timeout 60 setsid -w xl destroy dq </dev/null || die "xl destroy"
  for i in $(seq 1 50); do dq_alive "$dm" || break; sleep 0.2; done
  dq_alive "$dm" && die "the device model (pid $dm) still runs after xl destroy"
  for n in /local/domain/0/backend/qdisk/$d /local/domain/0/device-model/$d /local/domain/$d /libxl/$d; do
    xenstore-exists "$n" 2>/dev/null && die "$n left after xl destroy: $(xenstore-ls -f "$n" | head -5)"
  done
  [ -e "/var/run/xen/qmp-libxl-$d" ] && die "/var/run/xen/qmp-libxl-$d left"
  for i in $(seq 1 50); do grep -q "backend/qdisk/$d/51712: removed" /tmp/bb-qdisk.log && break; sleep 0.2; done
  grep -a "backend/qdisk/$d/51712" /tmp/bb-qdisk.log | tail -3 | sed 's/^/INFO backendd: /'
  kill -0 "$bpid" 2>/dev/null || { tail -20 /tmp/bb-qdisk.log; die "xenio backendd exited with the domain"; }
  dd if=/tmp/dq.img bs=512 skip=8 count=1 2>/dev/null | head -c 15 | grep -q hello-from-domU || die "dom0 does not see the domU's write"
  kill -TERM "$bpid"
  for i in $(seq 1 100); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$bpid" 2>/dev/null && { tail -20 /tmp/bb-qdisk.log; die "xenio backendd still running 20 s after SIGTERM"; }
  wait "$bpid"; local rc=$?; rm -f /tmp/bb-qdisk.pid
  [ $rc = 0 ] || { tail -20 /tmp/bb-qdisk.log; die "xenio backendd exited with $rc"; }
  echo "SUMMARY PV domU $d, backendtype=qdisk: xenio backendd --class qdisk + xenio device-model (no QEMU); fio verify, mkfs + fsck, verified writes, dom0 sees them; xl destroy: device model gone, no node left; backendd exits 0"
}

# The same device model across `xl save` + `xl restore` (libxl sends it nothing at save: the old
# domain's device model gets SIGHUP with the domain; restore starts a new one under the new
# domid and asks it query-chardev again), under the domU's verified write loop (lab_loop): its
# blkfront resumes on the new domain's qdisk device and every round still verifies. Then a
# second qdisk disk attached and detached (and once with --force) while the loop goes on, and
# `xl shutdown`.
dq_up() { # name [state] -> "domid dm-pid": the device model is xenio's and says running, the
  # disk's backend reached state (2, InitWait: backendd took it; 4: the domU's blkfront connected)
  local d dm i st=${2:-2}; d=$(xl domid "$1") || die "no domid for $1"
  dm=$(xenstore-read "/local/domain/$d/image/device-model-pid") || die "no image/device-model-pid for domain $d"
  tr '\0' ' ' < "/proc/$dm/cmdline" | grep -q 'xenio device-model -xen-domid' || die "the device model of domain $d (pid $dm) is not xenio's"
  expect_eq "dm-state-$d" "$(xenstore-read /local/domain/0/device-model/$d/state)" running
  for i in $(seq 1 100); do [ "$(xenstore-read /local/domain/0/backend/qdisk/$d/51712/state 2>/dev/null)" = "$st" ] && break; sleep 0.2; done
  expect_eq "backend-state-$d" "$(xenstore-read /local/domain/0/backend/qdisk/$d/51712/state 2>/dev/null)" "$st"
  echo "$d $dm"
}
dq_gone() { # domid dm-pid what (after `xl shutdown -w` the domain's monitoring xl destroys it
  # a moment later: the nodes get 30 s to go)
  local i n; for i in $(seq 1 50); do dq_alive "$2" || break; sleep 0.2; done
  dq_alive "$2" && die "the device model of domain $1 (pid $2) still runs after $3"
  for n in /local/domain/0/backend/qdisk/$1 /local/domain/0/device-model/$1 /local/domain/$1; do
    for i in $(seq 1 150); do xenstore-exists "$n" 2>/dev/null || break; sleep 0.2; done
    xenstore-exists "$n" 2>/dev/null && die "$n left after $3: $(xenstore-ls -f "$n" 2>/dev/null | head -5)"
  done
  [ -e "/var/run/xen/qmp-libxl-$1" ] && die "/var/run/xen/qmp-libxl-$1 left after $3"
  return 0
}
dq_attach() { # domid: xl block-attach of xvdb (qdisk) to dqs; its blkfront connects it
  local i
  timeout 60 setsid -w xl block-attach dqs 'vdev=xvdb,access=rw,backendtype=qdisk,target=/tmp/dqs2.img' </dev/null \
    || { tail -20 /tmp/bb-qdisk.log; die "xl block-attach to domain $1"; }
  for i in $(seq 1 150); do [ "$(xenstore-read /local/domain/0/backend/qdisk/$1/51728/state 2>/dev/null)" = 4 ] && break; sleep 0.2; done
  expect_eq "xvdb attached, backend state" "$(xenstore-read /local/domain/0/backend/qdisk/$1/51728/state 2>/dev/null)" 4
}
dq_detached() { # domid how: xvdb's nodes are gone on both sides, no error node
  local i; for i in $(seq 1 50); do xenstore-exists "/local/domain/0/backend/qdisk/$1/51728" 2>/dev/null || break; sleep 0.2; done
  xenstore-exists "/local/domain/0/backend/qdisk/$1/51728" 2>/dev/null && die "backend/qdisk/$1/51728 left after $2"
  xenstore-exists "/local/domain/$1/device/vbd/51728" 2>/dev/null && die "device/vbd/51728 of domain $1 left after $2"
  xenstore-exists "/local/domain/0/error/backend/qdisk/$1/51728" 2>/dev/null && die "an error node left for xvdb after $2"
  return 0
}
c_domu_qdisk_save() {
  [ -f /lab/xenio-device-model ] || die "no xenio-device-model in the payload (lab/run.sh copies it)"
  install -D -m 755 /lab/xenio-device-model /usr/local/lib/xenio/xenio-device-model
  truncate -s 64M /tmp/dqs.img
  RUST_LOG=info setsid "$X" backendd --platform xen --class qdisk >>/tmp/bb-qdisk.log 2>&1 </dev/null &
  echo $! > /tmp/bb-qdisk.pid
  local bpid; bpid=$(cat /tmp/bb-qdisk.pid)
  sleep 1; kill -0 "$bpid" 2>/dev/null || { cat /tmp/bb-qdisk.log; die "xenio backendd --class qdisk exited"; }
  cat > /tmp/dqs.cfg <<CFG
name = "dqs"
type = "pv"
kernel = "/lab/vmlinuz"
ramdisk = "/lab/domu-initrd.gz"
extra = "console=hvc0 quiet loglevel=4 lab_loop"
memory = 128
vcpus = 1
disk = [ 'vdev=xvda,access=rw,backendtype=qdisk,target=/tmp/dqs.img' ]
device_model_override = "/usr/local/lib/xenio/xenio-device-model"
on_poweroff = "destroy"
on_crash = "destroy"
CFG
  local log; log=$(dx_log dqs); rm -f "$log"
  local t0; t0=$(up)
  XENIO=$X timeout 120 setsid -w xl create /tmp/dqs.cfg </dev/null >/tmp/xl-dqs.log 2>&1 || { cat /tmp/xl-dqs.log; die "xl create"; }
  dx_wait dqs 'DOMU: loop 3$' 180
  local a b n0 n1; a=$(dq_up dqs 4) || exit 1
  info "created: domain ${a% *}, device model pid ${a#* }, its loop at $(dx_loops dqs) ($(since "$t0") s)"
  n0=$(dx_loops dqs); t0=$(up)
  XENIO=$X timeout 180 setsid -w xl save dqs /tmp/dqs.save </dev/null >/tmp/xl-dqs-save.log 2>&1 || { tail -20 /tmp/xl-dqs-save.log; die "xl save"; }
  dq_gone ${a% *} ${a#* } "xl save"
  XENIO=$X timeout 180 setsid -w xl restore /tmp/dqs.save </dev/null >/tmp/xl-dqs-restore.log 2>&1 || { tail -20 /tmp/xl-dqs-restore.log; cat /var/log/xen/qemu-dm-dqs.log 2>/dev/null | tail; die "xl restore"; }
  rm -f /tmp/dqs.save
  for i in $(seq 1 120); do n1=$(dx_loops dqs); [ "${n1:-0}" -ge $(( n0 + 3 )) ] && break; sleep 1; done
  [ "${n1:-0}" -ge $(( n0 + 3 )) ] || { dx_show dqs; tail -20 /tmp/bb-qdisk.log; die "the loop did not go on after restore (at $n1, saved at $n0)"; }
  b=$(dq_up dqs 4) || exit 1
  [ "${b% *}" != "${a% *}" ] || die "restored under the same domid"
  dx_clean dqs
  info "xl save at loop $n0, restore as domain ${b% *} (device model pid ${b#* }), the loop at $n1 and verifying: $(since "$t0") s"
  # a second qdisk disk attached to the running domU (its blkfront connects it) and detached,
  # then again with --force: libxl only checks that a device model runs and sends it nothing
  local d=${b% *} i; truncate -s 32M /tmp/dqs2.img; t0=$(up)
  dq_attach "$d"
  timeout 60 setsid -w xl block-detach dqs xvdb </dev/null || { tail -20 /tmp/bb-qdisk.log; die "xl block-detach from domain $d"; }
  dq_detached "$d" "xl block-detach"
  dq_attach "$d"
  timeout 60 setsid -w xl block-detach --force dqs xvdb </dev/null >/tmp/xl-dqs-force.log 2>&1 \
    || { cat /tmp/xl-dqs-force.log; tail -20 /tmp/bb-qdisk.log; die "xl block-detach --force from domain $d"; }
  dq_detached "$d" "xl block-detach --force"
  dq_alive ${b#* } || die "the device model exited at block-attach/detach"
  n1=$(dx_loops dqs)
  for i in $(seq 1 60); do [ "$(dx_loops dqs)" -ge $((n1 + 2)) ] && break; sleep 1; done
  [ "$(dx_loops dqs)" -ge $((n1 + 2)) ] || { dx_show dqs; die "the loop stopped after the block-detach --force (at $(dx_loops dqs), $n1 before)"; }
  dx_clean dqs
  info "xl block-attach (Connected) + block-detach, then again with --force, of xvdb (qdisk) on domain $d: no node left, the loop goes on ($(since "$t0") s)"
  t0=$(up)
  timeout 120 setsid -w xl shutdown -w dqs </dev/null >/tmp/xl-dqs-shutdown.log 2>&1 || { cat /tmp/xl-dqs-shutdown.log; dx_show dqs; die "xl shutdown -w dqs"; }
  dq_gone ${b% *} ${b#* } "xl shutdown"
  grep -q 'DOMU: shutdown requested' "$log" || { dx_show dqs; die "dqs went without its init seeing the shutdown request"; }
  dx_clean dqs
  info "xl shutdown: $(tr -d '\r' < "$log" | grep -a -o 'DOMU: shutdown requested.*' | tail -1), domain and device model gone in $(since "$t0") s"
  for i in $(seq 1 50); do grep -q "backend/qdisk/$d/51712: removed" /tmp/bb-qdisk.log && break; sleep 0.2; done
  kill -0 "$bpid" 2>/dev/null || { tail -20 /tmp/bb-qdisk.log; die "xenio backendd exited"; }
  kill -TERM "$bpid"
  for i in $(seq 1 100); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$bpid" 2>/dev/null && die "xenio backendd still running 20 s after SIGTERM"
  wait "$bpid"; local rc=$?; rm -f /tmp/bb-qdisk.pid
  [ $rc = 0 ] || { tail -20 /tmp/bb-qdisk.log; die "xenio backendd exited with $rc"; }
  echo "SUMMARY PV domU with a qdisk disk (xenio backendd --class qdisk + xenio device model, no QEMU) under a verified write loop: xl save + restore (domain ${a% *} -> ${b% *}, loop $n0 -> $n1, every round verified), block-attach (Connected) + block-detach and --force, xl shutdown; nothing left; exit 0"
}

# --- domUs whose disks the toolstack gives them (issue 15): one `xenio backendd`, xen-blkback
# unloaded, `disk = [... script=block-xenio ...]` in the domains' configs; nobody starts a
# process per disk. The daemon's fds, threads and gntdev mappings are counted before and after.
DX_INFLIGHT=/run/xenio-inflight
dx_daemon() { # [backendd args...]: start xenio backendd (persistent grants on; DX_PERSISTENT=0: off)
  mkdir -p "$DX_INFLIGHT"
  local pg=; [ "${DX_PERSISTENT:-1}" = 0 ] && pg=--no-persistent
  RUST_LOG=info setsid "$X" backendd --platform xen $pg --inflight-dir "$DX_INFLIGHT" "$@" \
    >>/tmp/bb-backendd.log 2>&1 </dev/null &
  echo $! > /tmp/bb-backendd.pid
  for i in $(seq 1 50); do grep -q 'serving the devices' /tmp/bb-backendd.log && return 0; sleep 0.2; done
  cat /tmp/bb-backendd.log; die "xenio backendd did not start"
}
dx_setup() { # [backendd args...]
  [ -f /lab/block-xenio ] || die "no block-xenio in the payload (lab/run.sh copies it)"
  for i in $(seq 1 50); do grep -q '^xen_blkback ' /proc/modules || break; rmmod xen-blkback 2>/dev/null; sleep 0.2; done
  grep -q '^xen_blkback ' /proc/modules && die "cannot unload xen-blkback"
  install -m 755 /lab/block-xenio /etc/xen/scripts/block-xenio
  dx_daemon "$@"
}
dx_counts() { # the daemon's open fds, threads, gntdev mappings
  local p; p=$(cat /tmp/bb-backendd.pid)
  echo "fds $(ls "/proc/$p/fd" | wc -l) threads $(ls "/proc/$p/task" | wc -l) gntdev $(grep -c /dev/xen/gntdev "/proc/$p/maps")"
}
dx_back_to() { # counts what: the daemon's counts come back to these (the device threads end within a rescan)
  local now
  for i in $(seq 1 75); do now=$(dx_counts); [ "$now" = "$1" ] && return 0; sleep 0.2; done
  ls -l "/proc/$(cat /tmp/bb-backendd.pid)/fd"; tail -20 /tmp/bb-backendd.log; die "$2: the daemon has '$now', expected '$1'"
}
dx_near() { # counts what: beside a running domU's loop, fds exactly these and threads at most 4
  # above them (the loop's io_uring starts and ends io-wq workers). The gntdev mappings are shown,
  # not bounded: the loop's own disk maps more persistent grants as fio's block sizes vary (+31
  # once in CI), which cannot be told apart from the churned disk's here. What proves that no
  # cycle leaks a mapping or a thread is the exact check after the domU's end (dx_back_to).
  local now f t F T
  read -r _ F _ T _ _ <<<"$1"
  for i in $(seq 1 75); do
    now=$(dx_counts); read -r _ f _ t _ _ <<<"$now"
    [ "$f" = "$F" ] && [ "$t" -le $((T + 4)) ] && { info "$2: the daemon has '$now' (before: '$1')"; return 0; }
    sleep 0.2
  done
  ls -l "/proc/$(cat /tmp/bb-backendd.pid)/fd"; tail -20 /tmp/bb-backendd.log; die "$2: the daemon has '$now', expected '$1' (fds exactly, threads +4 at most)"
}
dx_cfg() { # name image kernel-args [more config lines] [more disks, xl's quoted specs]
  cat <<CFG
name = "$1"
type = "pv"
kernel = "/lab/vmlinuz"
ramdisk = "/lab/domu-initrd.gz"
extra = "console=hvc0 quiet loglevel=4 $3"
memory = 128
vcpus = 1
disk = [ 'vdev=xvda,access=rw,backendtype=phy,script=block-xenio,target=$2'${5:+, $5} ]
${4:-}
on_poweroff = "destroy"
on_crash = "destroy"
CFG
}
dx_log() { echo "/var/log/xen/console/guest-$1.log"; }
dx_create() { # name image [kernel-args] [more config lines] [more disks]: xl create, not paused
  dx_cfg "$1" "$2" "${3:-}" "${4:-}" "${5:-}" > "/tmp/$1.cfg"; rm -f "$(dx_log "$1")"
  local t0; t0=$(up)
  timeout 120 setsid -w xl create "/tmp/$1.cfg" </dev/null >"/tmp/xl-$1.log" 2>&1 \
    || { cat "/tmp/xl-$1.log"; tail -20 /tmp/bb-backendd.log; die "xl create $1"; }
  info "xl create $1 (domain $(xl domid "$1")): $(since "$t0") s"
}
dx_wait() { # name regex seconds: until the domU's console shows it
  for i in $(seq 1 "$3"); do tr -d '\r' < "$(dx_log "$1")" 2>/dev/null | grep -q -E "$2" && return 0; sleep 1; done
  dx_show "$1"; tail -20 /tmp/bb-backendd.log; die "$1: no '$2' on its console in $3 s"
}
dx_show() { tr -d '\r' < "$(dx_log "$1")" 2>/dev/null | grep -a -v 'DOMU: loop' | sed "s/^/  $1| /" | tail -25; }
dx_loops() { tr -d '\r' < "$(dx_log "$1")" 2>/dev/null | sed -n 's/.*DOMU: loop \([0-9]*\).*/\1/p' | tail -1; }
dx_clean() { # name: nothing on its console that says an error (the kernel's too: loglevel 4 shows them)
  if tr -d '\r' < "$(dx_log "$1")" | grep -a -E 'MISMATCH|IOERR|FAILED|NO /dev/xvda|I/O error|blk_update_request|blkfront.*(error|fail)|xvd.*(error|fail)|BUG|Oops|Call Trace'; then
    dx_show "$1"; die "$1: errors on its console (above)"
  fi
}
dx_gone() { # domid: the domain and its disks' backend directories are gone (libxl removes
  # /local/domain/<domid> last when it destroys a domain; `xl list` takes seconds under TCG)
  for i in $(seq 1 120); do xenstore-exists "/local/domain/$1" 2>/dev/null || break; sleep 0.5; done
  xenstore-exists "/local/domain/$1" 2>/dev/null && die "domain $1 still there"
  for i in $(seq 1 50); do xenstore-exists "/local/domain/0/backend/vbd/$1" 2>/dev/null || return 0; sleep 0.2; done
  xenstore-ls -f "/local/domain/0/backend/vbd/$1"; die "backend/vbd/$1 left behind"
}
dx_backend_state() { xenstore-read "/local/domain/0/backend/vbd/$1/$2/state" 2>/dev/null; }
dx_image_has() { # image: the domU's default mode wrote hello-from-domU at sector 8
  dd if="$1" bs=512 skip=8 count=1 2>/dev/null | head -c 15 | grep -q hello-from-domU || die "dom0 does not see the domU's write in $1"
}
c_domu_xl() {
  dx_setup
  local base; base=$(dx_counts); info "domu-xl: the daemon before any domU: $base"
  truncate -s 64M /tmp/dx-a.img /tmp/dx-b.img /tmp/dx-c.img /tmp/dx-d.img
  # 1. one domU, its disk from xl create; it verifies its writes and powers itself off
  local t0 d1 d2 d; t0=$(up)
  dx_create dxa /tmp/dx-a.img; d=$(xl domid dxa)
  dx_wait dxa 'XVDA_RW_(OK|MISMATCH)|NO /dev/xvda' 180; dx_gone "$d"
  dx_show dxa | grep -E 'size|XVDA'
  domu_verified "$(dx_log dxa)" || { dx_show dxa; die "dxa did not verify its disk"; }
  dx_image_has /tmp/dx-a.img; dx_back_to "$base" "after dxa powered off"
  info "domu-xl 1: a domU's xenio disk from xl create: fio verify, mkfs + fsck, dd verified, powered itself off, nothing left: $(since "$t0") s"
  # 2. two domUs at once, each with its own disk
  t0=$(up)
  dx_create dxb /tmp/dx-b.img; d1=$(xl domid dxb)
  dx_create dxc /tmp/dx-c.img; d2=$(xl domid dxc)
  dx_wait dxb 'XVDA_RW_(OK|MISMATCH)|NO /dev/xvda' 180; dx_wait dxc 'XVDA_RW_(OK|MISMATCH)|NO /dev/xvda' 180
  dx_gone "$d1"; dx_gone "$d2"
  domu_verified "$(dx_log dxb)" || { dx_show dxb; die "dxb did not verify its disk"; }
  domu_verified "$(dx_log dxc)" || { dx_show dxc; die "dxc did not verify its disk"; }
  dx_image_has /tmp/dx-b.img; dx_image_has /tmp/dx-c.img; dx_back_to "$base" "after dxb and dxc powered off"
  info "domu-xl 2: two domUs at once ($d1, $d2), both verified: $(since "$t0") s"
  # 3. save + restore under a verified write loop: blkfront resumes on the new backend device
  dx_create dxl /tmp/dx-d.img lab_loop; d=$(xl domid dxl)
  dx_wait dxl 'DOMU: loop 3$' 180
  local n0 n1; n0=$(dx_loops dxl); t0=$(up)
  timeout 300 setsid -w xl save dxl /tmp/dxl.save </dev/null >/tmp/xl-save.log 2>&1 || { cat /tmp/xl-save.log; die "xl save"; }
  info "xl save after loop $n0: $(since "$t0") s, $(( $(stat -c %s /tmp/dxl.save) >> 20 )) MiB"
  dx_gone "$d"; dx_back_to "$base" "after xl save"
  t0=$(up)
  timeout 300 setsid -w xl restore /tmp/dxl.save </dev/null >/tmp/xl-restore.log 2>&1 || { cat /tmp/xl-restore.log; die "xl restore"; }
  rm -f /tmp/dxl.save
  local dr; dr=$(xl domid dxl) || die "no dxl after restore"
  [ "$dr" != "$d" ] || die "restored under the same domid $d"
  info "xl restore: domain $d -> $dr in $(since "$t0") s, backend/vbd/$dr/51712 state $(dx_backend_state "$dr" 51712)"
  for i in $(seq 1 120); do n1=$(dx_loops dxl); [ "${n1:-0}" -ge $(( n0 + 5 )) ] && break; sleep 1; done
  [ "${n1:-0}" -ge $(( n0 + 5 )) ] || { dx_show dxl; tail -20 /tmp/bb-backendd.log; die "the loop did not go on after restore (at $n1, saved at $n0)"; }
  expect_eq "restored backend state" "$(dx_backend_state "$dr" 51712)" 4
  dx_clean dxl
  info "domu-xl 3: xl save at loop $n0, restore as domain $dr, loop at $n1 and verifying: $(since "$t0") s"
  # 4. 20 x xl block-attach/block-detach of a second disk to the running domU
  local mid; mid=$(dx_counts); t0=$(up)
  for r in $(seq 1 20); do
    timeout 60 setsid -w xl block-attach dxl "vdev=xvdb,access=rw,backendtype=phy,script=block-xenio,target=/tmp/dx-b.img" </dev/null \
      || { tail -20 /tmp/bb-backendd.log; die "xl block-attach dxl, round $r"; }
    for i in $(seq 1 100); do [ "$(dx_backend_state "$dr" 51728)" = 4 ] && break; sleep 0.2; done
    expect_eq "xvdb backend state, round $r" "$(dx_backend_state "$dr" 51728)" 4
    timeout 60 setsid -w xl block-detach dxl xvdb </dev/null || { tail -20 /tmp/bb-backendd.log; die "xl block-detach dxl xvdb, round $r"; }
    xenstore-exists "/local/domain/0/backend/vbd/$dr/51728" 2>/dev/null && die "backend/vbd/$dr/51728 left behind, round $r"
  done
  dx_near "$mid" "after 20 block-attach/detach cycles"
  dx_clean dxl
  info "domu-xl 4: 20 block-attach/detach cycles of xvdb on domain $dr beside its loop: $(since "$t0") s"
  # 5. xl block-detach --force (libxl's destroy path: no waiting on the frontend) of xvdb
  t0=$(up)
  timeout 60 setsid -w xl block-attach dxl "vdev=xvdb,access=rw,backendtype=phy,script=block-xenio,target=/tmp/dx-b.img" </dev/null \
    || { tail -20 /tmp/bb-backendd.log; die "xl block-attach dxl (for --force)"; }
  for i in $(seq 1 100); do [ "$(dx_backend_state "$dr" 51728)" = 4 ] && break; sleep 0.2; done
  expect_eq "xvdb backend state before --force" "$(dx_backend_state "$dr" 51728)" 4
  timeout 60 setsid -w xl block-detach --force dxl xvdb </dev/null >/tmp/xl-force.log 2>&1 \
    || { cat /tmp/xl-force.log; tail -20 /tmp/bb-backendd.log; die "xl block-detach --force dxl xvdb"; }
  for i in $(seq 1 50); do xenstore-exists "/local/domain/0/backend/vbd/$dr/51728" 2>/dev/null || break; sleep 0.2; done
  xenstore-exists "/local/domain/0/backend/vbd/$dr/51728" 2>/dev/null && die "backend/vbd/$dr/51728 left after xl block-detach --force"
  xenstore-exists "/local/domain/$dr/device/vbd/51728" 2>/dev/null && die "device/vbd/51728 of domain $dr left after xl block-detach --force"
  xenstore-exists "/local/domain/0/error/backend/vbd/$dr/51728" 2>/dev/null && die "an error node left for xvdb"
  dx_near "$mid" "after xl block-detach --force"
  n1=$(dx_loops dxl)   # a round takes ~5 s under TCG
  for i in $(seq 1 60); do [ "$(dx_loops dxl)" -ge $((n1 + 2)) ] && break; sleep 1; done
  [ "$(dx_loops dxl)" -ge $((n1 + 2)) ] || { dx_show dxl; die "the loop stopped after block-detach --force (at $(dx_loops dxl), $n1 before)"; }
  dx_clean dxl
  info "domu-xl 5: xl block-detach --force of a connected xvdb: $(since "$t0") s, no node left, the loop goes on"
  # xl destroy under the loop
  n1=$(dx_loops dxl); t0=$(up)
  timeout 60 setsid -w xl destroy dxl </dev/null || die "xl destroy"
  dx_gone "$dr"; dx_back_to "$base" "after xl destroy"
  dx_clean dxl
  info "xl destroy at loop $n1: $(since "$t0") s; the daemon back to '$base'"
  grep -a "backend/vbd/$dr/51712: \(frontend went\|Removed\|Closed\|removed\)" /tmp/bb-backendd.log \
    | sed -E 's/^[0-9-]+T([0-9:.]+)Z +[A-Z]+ +[^ ]+ /INFO daemon at \1 /' | cut -c1-140
  [ -z "$(xenstore-list /local/domain/0/backend/vbd 2>/dev/null)" ] || die "backend/vbd not empty: $(xenstore-list /local/domain/0/backend/vbd)"
  [ -z "$(ls "$DX_INFLIGHT")" ] || die "in-flight records left: $(ls "$DX_INFLIGHT")"
  local pid; pid=$(cat /tmp/bb-backendd.pid); kill -TERM "$pid"
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  wait "$pid"; local rc=$?; rm -f /tmp/bb-backendd.pid
  [ $rc = 0 ] || { tail -20 /tmp/bb-backendd.log; die "xenio backendd exited with $rc"; }
  echo "SUMMARY xl create with script=block-xenio: one xenio backendd; a domU verified (fio, mkfs + fsck, dd) and powered off, two at once, xl save/restore under a verified loop, 20 block-attach/detach on a running domU, block-detach --force, xl destroy; fds/threads/gntdev maps back to '$base'"
}
# the same daemon under a domU's write loop: the images grow (the domU sees xvda's new size and
# grows the ext4 mounted on xvdb online with resize2fs), then the daemon is SIGKILLed and started
# again (--inflight-dir): the loop goes on, every write verifies
c_domu_xl_live() {
  dx_setup
  local base; base=$(dx_counts); info "domu-xl-live: the daemon before any domU: $base"
  truncate -s 32M /tmp/dx-e.img; rm -f /tmp/dx-f.img; truncate -s 16M /tmp/dx-f.img
  dx_create dxe /tmp/dx-e.img "lab_loop lab_fs" "" "'vdev=xvdb,access=rw,backendtype=phy,script=block-xenio,target=/tmp/dx-f.img'"
  local d; d=$(xl domid dxe)
  dx_wait dxe 'DOMU: loop 3$|FS_FAILED' 180
  tr -d '\r' < "$(dx_log dxe)" | grep -a -o 'DOMU: FS_.*' | sed 's/^/INFO domU: /'
  local t0 n0 n1; t0=$(up)
  truncate -s 48M /tmp/dx-e.img
  dx_wait dxe 'DOMU: size 65536 -> 98304' 60
  info "domu-xl-live: 32 -> 48 MiB seen by the domU after $(since "$t0") s"
  t0=$(up)
  truncate -s 40M /tmp/dx-f.img
  dx_wait dxe 'DOMU: RESIZE2FS_(OK|FAILED)' 180
  tr -d '\r' < "$(dx_log dxe)" | grep -a -q 'DOMU: RESIZE2FS_OK' || { dx_show dxe; die "resize2fs in the domU failed"; }
  info "domu-xl-live: xvdb 16 -> 40 MiB under a mounted ext4: $(tr -d '\r' < "$(dx_log dxe)" | grep -a -o 'RESIZE2FS_OK.*' | head -1) ($(since "$t0") s)"
  n0=$(dx_loops dxe); t0=$(up)
  kill -9 "$(cat /tmp/bb-backendd.pid)"; wait "$(cat /tmp/bb-backendd.pid)" 2>/dev/null
  info "daemon SIGKILLed at loop $n0; in-flight records: $(ls "$DX_INFLIGHT" | wc -l)"
  sleep 2
  echo "---- restarted" >> /tmp/bb-backendd.log
  dx_daemon
  for i in $(seq 1 120); do n1=$(dx_loops dxe); [ "${n1:-0}" -ge $(( n0 + 5 )) ] && break; sleep 1; done
  [ "${n1:-0}" -ge $(( n0 + 5 )) ] || { dx_show dxe; tail -20 /tmp/bb-backendd.log; die "the loop did not go on after the restart (at $n1, killed at $n0)"; }
  grep -a 'resumed' /tmp/bb-backendd.log | tail -2 | sed 's/^/INFO daemon: /'
  dx_clean dxe
  info "domu-xl-live: the loop went from $n0 to $n1 across SIGKILL + restart in $(since "$t0") s, every round verified (dd + fio crc32c)"
  # xl shutdown: the domU's kernel gets the PV shutdown request and runs /sbin/poweroff, its
  # init reports and powers off; the domain, its nodes and the daemon's device go
  t0=$(up)
  timeout 120 setsid -w xl shutdown -w dxe </dev/null >/tmp/xl-shutdown.log 2>&1 || { cat /tmp/xl-shutdown.log; dx_show dxe; die "xl shutdown -w dxe"; }
  dx_gone "$d"
  grep -q 'DOMU: shutdown requested' "$(dx_log dxe)" || { dx_show dxe; die "dxe went without its init seeing the shutdown request"; }
  dx_clean dxe
  dx_back_to "$base" "after xl shutdown"
  [ -z "$(ls "$DX_INFLIGHT")" ] || die "in-flight records left: $(ls "$DX_INFLIGHT")"
  info "domu-xl-live: xl shutdown: $(tr -d '\r' < "$(dx_log dxe)" | grep -a -o 'DOMU: shutdown requested.*' | tail -1), gone in $(since "$t0") s, no node left, the (restarted) daemon back to '$base'"
  local pid; pid=$(cat /tmp/bb-backendd.pid); kill -TERM "$pid"
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  wait "$pid"; local rc=$?; rm -f /tmp/bb-backendd.pid
  [ $rc = 0 ] || { tail -20 /tmp/bb-backendd.log; die "xenio backendd exited with $rc"; }
  echo "SUMMARY online resize seen by the domU (xvda's new size; ext4 on xvdb grown with resize2fs while mounted, fsck clean); xenio backendd SIGKILLed and restarted (--inflight-dir) under the domU's verified write loop (dd + fio verify): $n0 -> $n1 rounds, no error; xl shutdown: the domU powers off, nothing left"
}

# dom0's kernel xen-netfront against xenio netback on a TAP device. The frontend's interface
# goes into a network namespace ("guest") so that packets really cross the vif: ping, then TCP
# both ways with the bytes compared.
c_net_kfront() {
  local mac=00:16:3e:00:00:07 IF="" i
  # the kernel's xen-netback (net-xfront) would claim xenio's backend/vif node
  for i in $(seq 1 50); do grep -q '^xen_netback ' /proc/modules || break; rmmod xen-netback 2>/dev/null; sleep 0.2; done
  grep -q '^xen_netback ' /proc/modules && die "cannot unload xen-netback"
  modprobe tun || die "modprobe tun"
  modprobe xen-netfront || die "modprobe xen-netfront"
  ip tuntap add dev xtap0 mode tap || die "ip tuntap add"
  ip addr add 192.0.2.1/24 dev xtap0 && ip link set xtap0 up || die "xtap0 up"
  RUST_LOG=info setsid "$X" netback --platform xen --tap xtap0 --frontend 0 --devid 0 --create-device --mac $mac \
    >/tmp/nb.log 2>&1 </dev/null &
  echo $! > /tmp/nb.pid
  for i in $(seq 1 150); do
    IF=$(grep -l "$mac" /sys/class/net/*/address 2>/dev/null | cut -d/ -f5 | head -1)
    [ -n "$IF" ] && [ "$(xenstore-read /local/domain/0/device/vif/0/state 2>/dev/null)" = 4 ] && break
    kill -0 "$(cat /tmp/nb.pid)" 2>/dev/null || { cat /tmp/nb.log; die "xenio netback exited"; }
    sleep 0.2
  done
  [ -n "$IF" ] || { cat /tmp/nb.log; xenstore-ls -f /local/domain/0/device/vif; die "no netfront interface with mac $mac"; }
  info "kernel netfront interface $IF, frontend state $(xenstore-read /local/domain/0/device/vif/0/state)"
  ip netns add guest || die "ip netns add"
  ip link set "$IF" netns guest && ip -n guest link set lo up && ip -n guest addr add 192.0.2.2/24 dev "$IF" \
    && ip -n guest link set "$IF" up || die "configuring $IF in the guest namespace"
  ip netns exec guest busybox ping -c 3 -W 5 192.0.2.1 > /tmp/ping.log 2>&1 || { cat /tmp/ping.log; tail -20 /tmp/nb.log; die "ping over the vif"; }
  info "$(grep -E 'packets transmitted' /tmp/ping.log)"
  head -c 8M /dev/urandom > /tmp/tx.bin
  (timeout 60 busybox nc -l -p 5001 > /tmp/rx1.bin) & local l1=$!
  sleep 1
  timeout 60 ip netns exec guest bash -c 'cat /tmp/tx.bin > /dev/tcp/192.0.2.1/5001' || die "TCP frontend->backend send"
  wait $l1; cmp /tmp/tx.bin /tmp/rx1.bin || die "TCP frontend->backend: the 8 MiB differ"
  (timeout 60 ip netns exec guest busybox nc -l -p 5002 > /tmp/rx2.bin) & local l2=$!
  sleep 1
  timeout 60 bash -c 'cat /tmp/tx.bin > /dev/tcp/192.0.2.2/5002' || die "TCP backend->frontend send"
  wait $l2; cmp /tmp/tx.bin /tmp/rx2.bin || die "TCP backend->frontend: the 8 MiB differ"
  info "8 MiB over TCP each way, byte-equal"
  kill -TERM "$(cat /tmp/nb.pid)"; wait "$(cat /tmp/nb.pid)" 2>/dev/null; rm -f /tmp/nb.pid
  # The counters say whether the frontend's large segments (gso tx) and the
  # host's (gso rx) went through whole.
  info "$(grep -a 'netback: ' /tmp/nb.log | tail -1)"
  info "$(grep -a -o 'frontend takes .*' /tmp/nb.log | tail -1)"
  # xenio netback removes the directories --create-device made when it stops;
  # remove them anyway (as a toolstack's detach would) if it could not
  xenstore-rm /local/domain/0/device/vif/0 2>/dev/null; xenstore-rm /local/domain/0/backend/vif/0/0 2>/dev/null
  echo "SUMMARY kernel xen-netfront <-> xenio netback (TAP): ping, 8 MiB TCP each way verified"
}

# xenio netfront (userspace, gntalloc) against the kernel's xen-netback, attached by xl: ARP
# and ICMP echo over the vif, every reply's payload compared.
c_net_xfront() {
  local devid vif i
  for i in $(seq 1 50); do grep -q '^xen_netfront ' /proc/modules || break; rmmod xen-netfront 2>/dev/null; sleep 0.2; done
  grep -q '^xen_netfront ' /proc/modules && die "cannot unload xen-netfront"
  modprobe xen-netback || die "modprobe xen-netback"
  setsid -w xl network-attach 0 mac=00:16:3e:00:00:09 script=vif-lab </dev/null || die "xl network-attach 0"
  devid=$(xl network-list 0 | awk 'NR>1{print $1}' | tail -1)
  [ -n "$devid" ] || die "no vif in xl network-list 0"
  vif=vif0.$devid
  for i in $(seq 1 150); do [ -e "/sys/class/net/$vif" ] && break; sleep 0.2; done
  [ -e "/sys/class/net/$vif" ] || { ls /sys/class/net; die "no $vif"; }
  ip addr add 192.0.2.1/24 dev "$vif" && ip link set "$vif" up || die "configuring $vif"
  "$X" netfront --platform xen --device "$devid" --ip 192.0.2.2 --ping 192.0.2.1 --count 5 --size 1400 \
    || die "xenio netfront against kernel netback"
  setsid -w xl network-detach 0 "$devid" </dev/null || die "xl network-detach"
  echo "SUMMARY xl network-attach + kernel xen-netback; xenio netfront: ARP, 5 pings of 1400 bytes, payloads equal"
}

# dom0's kernel xen-netfront to a peer in dom0 across xenio netback (TAP) and, in the same
# boot with the rounds interleaved, across the kernel's xen-netback (xl network-attach,
# vif-lab): the same MTU (1500), the same endpoint (an iperf3 server in dom0's root namespace,
# on the backend's interface). The frontend's interface is in its own network namespace, so
# the traffic crosses the vif. Both backends claim backend/vif nodes (xenio netback has no
# class of its own), so they take turns: xen-netback is unloaded while xenio serves.
# iperf3: TCP each way, UDP with 64-byte payloads each way (received packets/s); RATIO lines
# xenio/kernel. Whether GSO is in use: the negotiated keys, ethtool on the vif, and the mean
# bytes per packet on the backend's interface during the TCP tests (GSO frames are larger
# than the MTU). Fails only when traffic does not flow or data differs.
NB_XMAC=00:16:3e:00:00:0a NB_KMAC=00:16:3e:00:00:0b NB_XDEV=2 NB_KDEV=3   # (net-kfront: devid 0)
netback_unload() {
  for i in $(seq 1 50); do grep -q '^xen_netback ' /proc/modules || return 0; rmmod xen-netback 2>/dev/null; sleep 0.2; done
  die "cannot unload xen-netback: $(rmmod xen-netback 2>&1)"
}
if_of_mac() { grep -l "$1" /sys/class/net/*/address 2>/dev/null | cut -d/ -f5 | head -1; }
if_gone() { # netns mac devid: wait until no interface (in netns) has that mac and the frontend's
  # xenbus device vif-<devid> is gone
  for i in $(seq 1 150); do
    ip netns exec "$1" grep -q "$2" /sys/class/net/*/address 2>/dev/null || [ -e "/sys/bus/xen/devices/vif-$3" ] || return 0
    sleep 0.2
  done
  die "the frontend (mac $2, vif-$3) is still there after detach: $(ls /sys/bus/xen/devices)"
}
ifstat() { # [netns] iface: rx_bytes rx_packets tx_bytes tx_packets
  local pre=(); [ $# = 2 ] && { pre=(ip netns exec "$1"); shift; }
  "${pre[@]}" sh -c "cd /sys/class/net/$1/statistics && cat rx_bytes rx_packets tx_bytes tx_packets" | tr '\n' ' '
}
guest_up() { # netns mac addr/len: move the frontend's interface (-> $IF) into netns, configure it
  IF=""
  for i in $(seq 1 150); do IF=$(if_of_mac "$2"); [ -n "$IF" ] && break; sleep 0.2; done
  [ -n "$IF" ] || die "no frontend interface with mac $2"
  ip link set "$IF" netns "$1" && ip -n "$1" link set "$IF" mtu 1500 && ip -n "$1" addr add "$3" dev "$IF" \
    && ip -n "$1" link set "$IF" up || die "configuring $IF in $1"
}
net_verify() { # netns guest-ip backend-ip: 4 MiB over TCP each way, compared
  head -c 4M /dev/urandom > /tmp/ntx.bin
  (timeout 60 busybox nc -l -p 5101 > /tmp/nrx1.bin) & local l=$!
  sleep 1
  timeout 60 ip netns exec "$1" bash -c "cat /tmp/ntx.bin > /dev/tcp/$3/5101" || die "TCP $1 -> $3 send"
  wait $l; cmp -s /tmp/ntx.bin /tmp/nrx1.bin || die "TCP frontend->backend ($1): the 4 MiB differ"
  (timeout 60 ip netns exec "$1" busybox nc -l -p 5102 > /tmp/nrx2.bin) & l=$!
  sleep 1
  timeout 60 bash -c "cat /tmp/ntx.bin > /dev/tcp/$2/5102" || die "TCP $3 -> $1 send"
  wait $l; cmp -s /tmp/ntx.bin /tmp/nrx2.bin || die "TCP backend->frontend ($1): the 4 MiB differ"
}
be_ticks() { # the CPU ticks (user + system) of the backend's threads: NB_CPU is a pid (xenio
  # netback: all its threads) or a pattern of kernel thread names (xen-netback's per-queue
  # guest-rx and dealloc kthreads; its tx side runs in softirq, which no thread is charged for)
  case $NB_CPU in
    [0-9]*) cat /proc/"$NB_CPU"/task/*/stat 2>/dev/null ;;
    *) for f in /proc/[0-9]*/stat; do grep -h -- "($NB_CPU" "$f" 2>/dev/null; done ;;
  esac | sed 's/^.*) //' | awk '{s += $12 + $13} END {print s + 0}'
}
net_tests() { # round backend netns backend-if backend-ip: the iperf3 tests, one line each into /tmp/net.txt
  local r=$1 b=$2 ns=$3 bif=$4 ip=$5 t a0 a1 v c0 c1
  for t in tcp-fe-to-be:"" tcp-be-to-fe:-R udp64-fe-to-be:"-u -l 64 -b 0" udp64-be-to-fe:"-R -u -l 64 -b 0"; do
    a0=$(ifstat "$bif"); c0=$(be_ticks)
    timeout $((NET_S + 30)) ip netns exec "$ns" iperf3 -c "$ip" -t "$NET_S" -J ${t#*:} > /tmp/iperf.json 2>&1 \
      || { tail -5 /tmp/iperf.json; die "iperf3 ${t%%:*} over $b failed"; }
    a1=$(ifstat "$bif"); c1=$(be_ticks)
    case $t in
      tcp*) v=$(jq '.end.sum_received.bits_per_second / 1e6' /tmp/iperf.json) ;;   # Mbit/s received
      udp*) v=$(jq '(.end.sum.packets - .end.sum.lost_packets) / .end.sum.seconds' /tmp/iperf.json) ;;   # packets/s received
    esac
    [ -n "$v" ] && awk -v v="$v" 'BEGIN{exit !(v > 0)}' || { head -c 600 /tmp/iperf.json; die "iperf3 ${t%%:*} over $b: nothing received"; }
    echo "$r ${t%%:*} $b $v" >> /tmp/net.txt
    [ "$r" = 1 ] && case $t in udp*) info "$b ${t%%:*} round 1: iperf3 end.sum $(jq -c '.end.sum' /tmp/iperf.json)";; esac
    # bytes per packet on the backend's interface: rx = what the frontend sent, tx = what it got
    echo "$a0 $a1" | awk -v r="$r" -v b="$b" -v t="${t%%:*}" '{rb=$5-$1; rp=$6-$2; tb=$7-$3; tp=$8-$4
      printf "%s %s %s backend-if rx %d packets %.0f B/packet, tx %d packets %.0f B/packet\n", r, b, t, rp, (rp?rb/rp:0), tp, (tp?tb/tp:0)}' >> /tmp/net-pkts.txt
    # the backend's CPU seconds per GB through its interface (ticks of 1/100 s)
    echo "$a0 $a1" | awk -v r="$r" -v b="$b" -v t="${t%%:*}" -v c=$((c1 - c0)) '{g=($5-$1+$7-$3)/1e9
      printf "%s %s %s backend threads %.2f CPU s, %.1f MB: %.1f s/GB\n", r, b, t, c/100, g*1e3, (g>0?c/100/g:0)}' >> /tmp/net-cpu.txt
  done
}
net_round_xenio() { # round (NB_BIN: another xenio binary, NB_LABEL: its name in the lines)
  local IF
  netback_unload
  RUST_LOG=info setsid "${NB_BIN:-$X}" netback --platform xen --tap xtap0 --frontend 0 --devid $NB_XDEV --create-device --mac $NB_XMAC --mtu 1500 \
    >>/tmp/nb.log 2>&1 </dev/null &
  echo $! > /tmp/nb.pid
  for i in $(seq 1 150); do
    [ "$(xenstore-read /local/domain/0/device/vif/$NB_XDEV/state 2>/dev/null)" = 4 ] && [ -n "$(if_of_mac $NB_XMAC)" ] && break
    kill -0 "$(cat /tmp/nb.pid)" 2>/dev/null || { tail -20 /tmp/nb.log; die "xenio netback exited"; }
    sleep 0.2
  done
  guest_up gx $NB_XMAC 192.0.2.2/24
  ip netns exec gx busybox ping -c 2 -W 5 192.0.2.1 >/dev/null 2>&1 || { tail -20 /tmp/nb.log; die "ping over xenio netback"; }
  if [ "$1" = 1 ]; then
    net_verify gx 192.0.2.2 192.0.2.1
    info "xenio netback: mtu frontend $(ip netns exec gx cat /sys/class/net/$IF/mtu) tap $(cat /sys/class/net/xtap0/mtu); gso keys: backend feature-gso-tcpv4=$(xenstore-read /local/domain/0/backend/vif/0/$NB_XDEV/feature-gso-tcpv4 2>/dev/null) frontend feature-gso-tcpv4=$(xenstore-read /local/domain/0/device/vif/$NB_XDEV/feature-gso-tcpv4 2>/dev/null); frontend $(ip netns exec gx ethtool -k $IF 2>/dev/null | grep -E '^tcp-segmentation-offload' | tr -d '\n')"
  fi
  NB_CPU=$(cat /tmp/nb.pid) net_tests "$1" "${NB_LABEL:-xenio}" gx xtap0 192.0.2.1
  kill -TERM "$(cat /tmp/nb.pid)"; wait "$(cat /tmp/nb.pid)" 2>/dev/null; rm -f /tmp/nb.pid
  [ "$1" = 1 ] && info "${NB_LABEL:-xenio} $(grep -a 'netback: ' /tmp/nb.log | tail -1)"
  # xenio netback removes what --create-device made when it stops (SIGTERM: Closing, the
  # frontend closes, Closed), and dom0's netfront keeps a dead vif-0 until its directory
  # goes: remove them anyway, as xl network-detach does, in case it could not
  [ "$1" = 1 ] && info "after xenio netback stopped: frontend state $(xenstore-read /local/domain/0/device/vif/$NB_XDEV/state 2>/dev/null || echo gone), backend state $(xenstore-read /local/domain/0/backend/vif/0/$NB_XDEV/state 2>/dev/null || echo gone)"
  xenstore-rm /local/domain/0/device/vif/$NB_XDEV 2>/dev/null; xenstore-rm /local/domain/0/backend/vif/0/$NB_XDEV 2>/dev/null
  if_gone gx $NB_XMAC $NB_XDEV
}
net_round_xenio_b() { NB_BIN=/lab/bin/xenio-b NB_LABEL=xenio-b net_round_xenio "$@"; }
net_round_kernel() { # round
  local devid vif IF
  modprobe xen-netback || die "modprobe xen-netback"
  devid=$NB_KDEV
  setsid -w xl -vvv network-attach 0 devid=$devid mac=$NB_KMAC script=vif-lab </dev/null >/tmp/xl-na.log 2>&1 \
    || { grep -vi debug /tmp/xl-na.log | tail -15; xenstore-ls -f /local/domain/0/backend/vif; xenstore-ls -f /local/domain/0/device/vif
         ls /sys/bus/xen/devices; dmesg | tail -15; die "xl network-attach 0"; }
  vif=vif0.$devid
  for i in $(seq 1 150); do [ -e "/sys/class/net/$vif" ] && break; sleep 0.2; done
  [ -e "/sys/class/net/$vif" ] || die "no $vif"
  ip link set "$vif" mtu 1500 && ip addr add 198.51.100.1/24 dev "$vif" && ip link set "$vif" up || die "configuring $vif"
  guest_up gk $NB_KMAC 198.51.100.2/24
  for i in $(seq 1 50); do ip netns exec gk busybox ping -c 1 -W 2 198.51.100.1 >/dev/null 2>&1 && break; sleep 0.2; done
  ip netns exec gk busybox ping -c 2 -W 5 198.51.100.1 >/dev/null 2>&1 || die "ping over kernel netback"
  [ "$1" = 1 ] && net_verify gk 198.51.100.2 198.51.100.1
  NB_CPU="$vif-" net_tests "$1" kernel gk "$vif" 198.51.100.1
  if [ "$1" = 1 ]; then
    info "kernel netback $vif: mtu frontend $(ip netns exec gk cat /sys/class/net/$IF/mtu) vif $(cat /sys/class/net/$vif/mtu); gso keys: backend feature-gso-tcpv4=$(xenstore-read /local/domain/0/backend/vif/0/$devid/feature-gso-tcpv4 2>/dev/null) frontend feature-gso-tcpv4=$(xenstore-read /local/domain/0/device/vif/$devid/feature-gso-tcpv4 2>/dev/null) queues $(xenstore-read /local/domain/0/device/vif/$devid/multi-queue-num-queues 2>/dev/null || echo 1); vif $(ethtool -k "$vif" | grep -E '^(tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload)' | tr -s ' \n' ' ')"
    info "kernel netback ethtool -S $vif (non-zero): $(ethtool -S "$vif" 2>/dev/null | awk -F: 'NR>1 && $2+0 != 0 {gsub(/ /,"",$1); printf "%s=%s ", $1, $2+0}')"
  fi
  setsid -w xl network-detach 0 "$devid" </dev/null || die "xl network-detach $devid"
  if_gone gk $NB_KMAC "$devid"
  netback_unload
}
c_net_compare() {
  NET_R=${NET_ROUNDS:-3} NET_S=${NET_SECS:-3}
  # a vif an earlier check left to dom0's netfront (its directory removed) must be gone first
  for i in $(seq 1 150); do ls /sys/bus/xen/devices 2>/dev/null | grep -q '^vif-' || break; sleep 0.2; done
  ls /sys/bus/xen/devices 2>/dev/null | grep -q '^vif-' && info "frontend vifs still there: $(ls /sys/bus/xen/devices | grep '^vif-' | tr '\n' ' ')"
  modprobe tun || die "modprobe tun"
  modprobe xen-netfront || die "modprobe xen-netfront"
  ip netns add gx && ip netns add gk && ip -n gx link set lo up && ip -n gk link set lo up || die "netns"
  ip tuntap add dev xtap0 mode tap && ip link set xtap0 mtu 1500 && ip addr add 192.0.2.1/24 dev xtap0 \
    && ip link set xtap0 up || die "xtap0"
  iperf3 -s -D -I /tmp/iperf3.pid --logfile /tmp/iperf3s.log || die "iperf3 server"
  : > /tmp/net.txt; : > /tmp/net-pkts.txt; : > /tmp/net-cpu.txt
  local r
  # NET_XENIO_B (run.sh ships it as /lab/bin/xenio-b): a second xenio binary (another
  # netback, e.g. before a change) in every round too, as backend "xenio-b"
  local b=:; [ -x /lab/bin/xenio-b ] && b=net_round_xenio_b
  for r in $(seq 1 "$NET_R"); do   # the order alternates, so neither backend always goes first
    if [ $((r % 2)) = 1 ]; then net_round_xenio "$r"; net_round_kernel "$r"; $b "$r"; else $b "$r"; net_round_kernel "$r"; net_round_xenio "$r"; fi
  done
  kill "$(cat /tmp/iperf3.pid)" 2>/dev/null
  grep -E ' tcp-' /tmp/net-pkts.txt | sed 's/^/INFO bytes per packet, round /'
  grep -E ' tcp-' /tmp/net-cpu.txt | sed 's/^/INFO backend CPU, round /'
  # median backend CPU s/GB per backend and TCP direction
  grep -E ' tcp-' /tmp/net-cpu.txt | awk '{print $2" "$3" "$(NF-1)}' | sort -k1,2 -k3n | awk '{k=$1" "$2; v[k]=v[k]" "$3; n[k]++}
    END {for (k in v) {split(substr(v[k],2), a, " "); printf "INFO backend CPU median %s %s s/GB (all: %s)\n", k, a[int((n[k]+1)/2)], substr(v[k],2)}}' | sort
  local base
  for base in kernel xenio-b; do
    awk -v base="$base" '{v[$2" "$3" "$1]=$4; names[$2]=1; rounds[$1]=1; if ($3 != "kernel") bk[$3]=1}
       END { for (n in names) for (b in bk) { if (b == base || (base != "kernel" && b != "xenio")) continue
         sx=0; sk=0; lo=1e18; hi=0; c=0
         for (r in rounds) { x=v[n" "b" "r]; k=v[n" "base" "r]; sx+=x; sk+=k; c++
           if (k>0) { a=x/k; if(a<lo)lo=a; if(a>hi)hi=a } }
         if (sk == 0) continue
         u = (n ~ /^udp/) ? "packets/s" : "Mbit/s"
         printf "RATIO net %-15s %s %9.1f %-9s %s %9.1f  /%s %.2f (%.2f-%.2f)\n", n, b, sx/c, u, base, sk/c, base, sx/sk, lo, hi } }' /tmp/net.txt | sort
  done
  echo "SUMMARY kernel xen-netfront over xenio netback vs kernel xen-netback, $NET_R interleaved rounds x ${NET_S}s per iperf3 test; 4 MiB TCP each way verified on both"
}

# Issue 17: xenio as the host's network backend, the toolstack deciding. xen-netback and
# xen-blkback unloaded, vif-xenio and block-xenio installed as the README says, one `xenio
# backendd --class vbd,vif`; `xl network-attach 0 bridge=xbr0 script=vif-xenio mac=...` (libxl
# writes the nodes and runs the script, which plugs the daemon's TAP vif0.N into the bridge
# xbr0 the check makes, 192.0.2.1/24); dom0's kernel xen-netfront interface goes into a network
# namespace: ping and 4 MiB over TCP each way to the bridge's address, compared; `xl
# network-detach` leaves backend/vif/0 empty and no TAP; three attach/detach cycles while a disk
# of the same daemon (xl block-attach, script=block-xenio) is written; the daemon exits 0 on
# SIGTERM.
VX_MAC=00:16:3e:00:00:0c VX_DEV=5
c_vif_xl() {
  [ -f /lab/vif-xenio ] || die "no vif-xenio in the payload (lab/run.sh copies it)"
  [ -f /lab/block-xenio ] || die "no block-xenio in the payload (lab/run.sh copies it)"
  netback_unload
  blkfront_load 0 2 32 0
  for i in $(seq 1 50); do grep -q '^xen_blkback ' /proc/modules || break; rmmod xen-blkback 2>/dev/null; sleep 0.2; done
  grep -q '^xen_blkback ' /proc/modules && die "cannot unload xen-blkback"
  modprobe tun || die "modprobe tun"
  modprobe bridge || die "modprobe bridge"
  modprobe xen-netfront || die "modprobe xen-netfront"
  install -m 755 /lab/vif-xenio /etc/xen/scripts/vif-xenio
  install -m 755 /lab/block-xenio /etc/xen/scripts/block-xenio
  ip link add xbr0 type bridge && ip addr add 192.0.2.1/24 dev xbr0 && ip link set xbr0 up || die "bridge xbr0"
  ip netns add gv && ip -n gv link set lo up || die "netns gv"
  RUST_LOG=info setsid "$X" backendd --platform xen --class vbd,vif >>/tmp/bb-vifd.log 2>&1 </dev/null &
  echo $! > /tmp/bb-vifd.pid
  sleep 1; kill -0 "$(cat /tmp/bb-vifd.pid)" 2>/dev/null || { cat /tmp/bb-vifd.log; die "xenio backendd exited"; }
  expect_eq backendd-pids "$(pgrep -c -f 'xenio backendd')" 1
  # the disk, written while the vif comes and goes
  truncate -s 32M /tmp/vx-disk.img
  timeout 60 setsid -w xl block-attach 0 "vdev=xvdb,access=rw,backendtype=phy,script=block-xenio,target=/tmp/vx-disk.img" </dev/null \
    || { tail -20 /tmp/bb-vifd.log; die "xl block-attach xvdb failed"; }
  wait_dev xvdb
  head -c 24M /dev/urandom > /tmp/vx-disk.bin
  ( for r in 1 2 3; do dd if=/tmp/vx-disk.bin of=/dev/xvdb bs=1M oflag=direct 2>/dev/null || exit 1; done ) & local bg=$!
  local r IF tap=vif0.$VX_DEV
  for r in 1 2 3; do
    timeout 60 setsid -w xl network-attach 0 bridge=xbr0 script=vif-xenio mac=$VX_MAC devid=$VX_DEV </dev/null >/tmp/vx-na.log 2>&1 \
      || { tail -15 /tmp/vx-na.log; tail -20 /tmp/bb-vifd.log; xenstore-ls -f /local/domain/0/backend/vif; die "xl network-attach (round $r)"; }
    [ -e /sys/class/net/$tap ] || die "no TAP $tap after xl network-attach: $(ls /sys/class/net | tr '\n' ' ')"
    ip -o link show $tap | grep -q 'master xbr0' || die "$tap not in xbr0: $(ip -o link show $tap)"
    expect_eq hotplug-status "$(xenstore-read /local/domain/0/backend/vif/0/$VX_DEV/hotplug-status 2>/dev/null)" connected
    for i in $(seq 1 150); do [ "$(xenstore-read /local/domain/0/backend/vif/0/$VX_DEV/state 2>/dev/null)" = 4 ] && break; sleep 0.2; done
    expect_eq backend-state "$(xenstore-read /local/domain/0/backend/vif/0/$VX_DEV/state 2>/dev/null)" 4
    guest_up gv $VX_MAC 192.0.2.2/24
    for i in $(seq 1 50); do ip netns exec gv busybox ping -c 1 -W 2 192.0.2.1 >/dev/null 2>&1 && break; sleep 0.2; done
    ip netns exec gv busybox ping -c 3 -W 5 192.0.2.1 > /tmp/ping.log 2>&1 || { cat /tmp/ping.log; tail -20 /tmp/bb-vifd.log; die "ping over the vif (round $r)"; }
    net_verify gv 192.0.2.2 192.0.2.1
    info "vif-xl round $r: frontend $IF in gv, TAP $tap in xbr0, $(grep -E 'packets transmitted' /tmp/ping.log), 4 MiB TCP each way byte-equal"
    timeout 60 setsid -w xl network-detach 0 $VX_DEV </dev/null || { tail -20 /tmp/bb-vifd.log; die "xl network-detach (round $r)"; }
    if_gone gv $VX_MAC $VX_DEV
    for i in $(seq 1 50); do [ -e /sys/class/net/$tap ] || break; sleep 0.2; done
    [ -e /sys/class/net/$tap ] && die "TAP $tap left after xl network-detach (round $r)"
    [ -z "$(xenstore-list /local/domain/0/backend/vif/0 2>/dev/null)" ] || die "backend/vif/0 not empty: $(xenstore-list /local/domain/0/backend/vif/0)"
    [ -z "$(xenstore-list /local/domain/0/error/backend/vif 2>/dev/null)" ] || die "an error node left: $(xenstore-ls -f /local/domain/0/error)"
  done
  wait $bg || die "writing xvdb while the vif came and went"
  cmp -n $((24 << 20)) /tmp/vx-disk.bin /dev/xvdb || die "xvdb differs from what was written"
  timeout 60 setsid -w xl block-detach 0 xvdb </dev/null || { tail -20 /tmp/bb-vifd.log; die "xl block-detach xvdb"; }
  [ -z "$(xenstore-list /local/domain/0/backend/vbd/0 2>/dev/null)" ] || die "backend/vbd/0 not empty"
  info "vifs: $(grep -a -E 'backend/vif/0/[0-9]+: (Closed|Removed|Shutdown):' /tmp/bb-vifd.log | tail -1 | cut -c1-300)"
  local pid; pid=$(cat /tmp/bb-vifd.pid); kill -TERM "$pid"
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && { tail -20 /tmp/bb-vifd.log; die "xenio backendd still running 20 s after SIGTERM"; }
  wait "$pid"; local rc=$?; rm -f /tmp/bb-vifd.pid
  [ $rc = 0 ] || { tail -20 /tmp/bb-vifd.log; die "xenio backendd exited with $rc"; }
  echo "SUMMARY xl network-attach/detach with script=vif-xenio: one xenio backendd serving a vif (TAP in a bridge) and a disk; kernel netfront ping + 4 MiB TCP each way verified, 3 attach/detach cycles beside disk writes, nothing left, clean exit"
}

# Issue 17: a PV domU whose vif and disk the toolstack gives it, both served by one `xenio
# backendd --class vbd,vif` (xen-netback and xen-blkback unloaded): `vif = ['bridge=xbr0,
# script=vif-xenio,mac=...']` in the domain's config. The domU (domu-init.sh, lab_net) verifies
# its disk, loads xen-netfront, takes 192.0.2.2/24, pings dom0's bridge (192.0.2.1), then serves
# 4 MiB of random data on port 5201 and takes 4 MiB on port 5202: dom0 fetches and sends them
# (bash /dev/tcp), both compared by md5. xl destroy under the live vif and disk: no backend
# node, no TAP, the daemon's fds/threads/gntdev mappings back to what they were before the domU.
DV_MAC=00:16:3e:00:00:0d
c_domu_vif() {
  [ -f /lab/vif-xenio ] || die "no vif-xenio in the payload (lab/run.sh copies it)"
  netback_unload
  modprobe tun || die "modprobe tun"
  modprobe bridge || die "modprobe bridge"
  install -m 755 /lab/vif-xenio /etc/xen/scripts/vif-xenio
  ip link add xbr0 type bridge && ip addr add 192.0.2.1/24 dev xbr0 && ip link set xbr0 up || die "bridge xbr0"
  dx_setup --class vbd,vif
  local base; base=$(dx_counts); info "domu-vif: the daemon before the domU: $base"
  truncate -s 32M /tmp/dv.img
  local t0 d tap; t0=$(up)
  dx_create dxv /tmp/dv.img "lab_net=192.0.2.2/24,192.0.2.1" "vif = [ 'bridge=xbr0,script=vif-xenio,mac=$DV_MAC' ]"
  d=$(xl domid dxv); tap=vif$d.0
  [ -e "/sys/class/net/$tap" ] || die "no TAP $tap after xl create: $(ls /sys/class/net | tr '\n' ' ')"
  ip -o link show "$tap" | grep -q 'master xbr0' || die "$tap not in xbr0: $(ip -o link show "$tap")"
  expect_eq hotplug-status "$(xenstore-read "/local/domain/0/backend/vif/$d/0/hotplug-status" 2>/dev/null)" connected
  dx_wait dxv 'NET_LISTEN|NET_FAILED|XVDA_RW_MISMATCH|NO /dev/xvda' 180
  grep -q XVDA_RW_OK "$(dx_log dxv)" || { dx_show dxv; die "dxv did not verify its disk"; }
  grep -q NET_FAILED "$(dx_log dxv)" && { dx_show dxv; die "dxv: its network failed"; }
  expect_eq "vif backend state" "$(xenstore-read "/local/domain/0/backend/vif/$d/0/state" 2>/dev/null)" 4
  info "domu-vif: domain $d up, disk verified, $(tr -d '\r' < "$(dx_log dxv)" | grep -a -o 'PING_OK.*'): $(since "$t0") s"
  # domU -> dom0 (port 5201), then dom0 -> domU (port 5202)
  head -c 4M /dev/urandom > /tmp/dv-tx.bin
  local t1 want got; t1=$(up)
  # (the domU says NET_LISTEN as it starts its listeners: a refused connection is tried again)
  for i in $(seq 1 10); do timeout 120 bash -c 'exec 3<>/dev/tcp/192.0.2.2/5201 && cat <&3 > /tmp/dv-rx.bin' 2>/dev/null && break; sleep 1; done
  want=$(tr -d '\r' < "$(dx_log dxv)" | sed -n 's/.*NET_TX_MD5 \([0-9a-f]*\).*/\1/p')
  got=$(md5sum < /tmp/dv-rx.bin | cut -c1-32)
  expect_eq "domU -> dom0 md5 ($(stat -c %s /tmp/dv-rx.bin) bytes)" "$got" "$want"
  local t2; t2=$(up)
  for i in $(seq 1 10); do timeout 120 bash -c 'cat /tmp/dv-tx.bin > /dev/tcp/192.0.2.2/5202' 2>/dev/null && break; sleep 1; done
  dx_wait dxv 'NET_DONE' 120
  want=$(md5sum < /tmp/dv-tx.bin | cut -c1-32)
  got=$(tr -d '\r' < "$(dx_log dxv)" | sed -n 's/.*NET_RX_MD5 \([0-9a-f]*\).*/\1/p')
  expect_eq "dom0 -> domU md5" "$got" "$want"
  info "domu-vif: 4 MiB domU -> dom0 in $(awk -v a="$t2" -v b="$t1" 'BEGIN{printf "%.1f", a-b}') s, 4 MiB dom0 -> domU in $(since "$t2") s, both byte-equal (md5); TAP $tap rx/tx bytes $(ifstat "$tap" | awk '{print $1"/"$3}')"
  dx_clean dxv
  # xl destroy under the live vif and disk
  t0=$(up)
  timeout 60 setsid -w xl destroy dxv </dev/null || die "xl destroy"
  dx_gone "$d"
  for i in $(seq 1 50); do xenstore-exists "/local/domain/0/backend/vif/$d" 2>/dev/null || break; sleep 0.2; done
  xenstore-exists "/local/domain/0/backend/vif/$d" 2>/dev/null && { xenstore-ls -f "/local/domain/0/backend/vif/$d"; die "backend/vif/$d left behind"; }
  for i in $(seq 1 50); do [ -e "/sys/class/net/$tap" ] || break; sleep 0.2; done
  [ -e "/sys/class/net/$tap" ] && die "TAP $tap left after xl destroy"
  xenstore-exists "/local/domain/0/error/backend/vif/$d" 2>/dev/null && die "an error node left: $(xenstore-ls -f "/local/domain/0/error/backend/vif/$d")"
  dx_back_to "$base" "after xl destroy"
  info "domu-vif: xl destroy: domain, backend/vif/$d, backend/vbd/$d and $tap gone, the daemon back to '$base' in $(since "$t0") s"
  local pid; pid=$(cat /tmp/bb-backendd.pid); kill -TERM "$pid"
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  wait "$pid"; local rc=$?; rm -f /tmp/bb-backendd.pid
  [ $rc = 0 ] || { tail -20 /tmp/bb-backendd.log; die "xenio backendd exited with $rc"; }
  echo "SUMMARY xl create of a PV domU with vif script=vif-xenio (bridge xbr0) and disk script=block-xenio, one xenio backendd --class vbd,vif: the domU's xen-netfront pings dom0, 4 MiB each way byte-equal; xl destroy leaves no node, no TAP; daemon back to '$base', exit 0"
}

# ---- record-toolstack: what libxl writes to the store for disks (not in the default set)
# xenstored traces every request (xenstore-control logfile/log off) into one file per step under
# /tmp/outbox/recordings (the outbox: run.sh unpacks it into $LAB/outbox, and
# lab/recordings/trim.py makes the readable versions). Linux's xen-blkback is unloaded (and
# dom0's xen-blkfront), so nothing but the toolstack and the stand-ins below touch vbd nodes:
#  * a fake backend (shell, xenstore-watch on dom0's backend dir): backend state 1 -> 2
#    (InitWait) and 5 -> 6 (Closed), nothing else; each of its writes is one xenstore-write
#    whose first node is /tool/xenio-lab/who = fake-backend (how trim.py names connections)
#  * the hotplug script /tmp/rec-hotplug: "add" writes hotplug-status = connected, "remove"
#    only the who node
#  * the domU (domu-init.sh with lab_idle): loads no frontend driver and idles
REC=/tmp/outbox/recordings
rec() { # name command...: run a command with the store traced into $REC/name.trace
  local name=$1; shift
  xenstore-control logfile "$REC/$name.trace" >/dev/null || die "xenstore-control logfile"
  xenstore-write /tool/xenio-lab/step "$name: $*"
  local t0 rc; t0=$(up)
  setsid -w "$@" </dev/null >"$REC/$name.out" 2>&1; rc=$?
  xenstore-write /tool/xenio-lab/step "$name: done, exit $rc"
  sleep 1                      # what follows at once (the fake backend, watches firing)
  xenstore-control log off >/dev/null
  # libxl's own record of dom0's configuration (its JSON "userdata"), after the step
  cat /var/lib/xen/userdata-d.0.*.libxl-json > "$REC/$name.dom0-libxl.json" 2>/dev/null || rm -f "$REC/$name.dom0-libxl.json"
  info "recorded $name: exit $rc after $(since "$t0") s, $(wc -l < "$REC/$name.trace") trace lines: $*"
  return $rc
}
rec_fake_backend() {
  xenstore-watch /local/domain/0/backend 2>/dev/null | while read -r p _; do
    case $p in */state) ;; *) continue ;; esac
    case "$(xenstore-read "$p" 2>/dev/null)" in
      1) xenstore-write /tool/xenio-lab/who fake-backend "$p" 2 ;;
      5) xenstore-write /tool/xenio-lab/who fake-backend "$p" 6 ;;
    esac
  done
}
rec_domu_cfg() { # name disk-spec [extra cfg line]
  cat <<CFG
name = "$1"
type = "pv"
kernel = "/lab/vmlinuz"
ramdisk = "/lab/domu-initrd.gz"
extra = "console=hvc0 quiet loglevel=4 lab_idle"
memory = 128
vcpus = 1
disk = [ '$2' ]
on_poweroff = "destroy"
on_crash = "destroy"
$3
CFG
}
rec_restore_userdata() {
  [ -d /tmp/rec-userdata ] || return 0
  rm -f /var/lib/xen/userdata-d.0.*; cp -a /tmp/rec-userdata/. /var/lib/xen/ 2>/dev/null; rm -rf /tmp/rec-userdata
}
c_record_toolstack() {
  mkdir -p "$REC"
  blkfront_unload
  for i in $(seq 1 50); do grep -q '^xen_blkback ' /proc/modules || break; rmmod xen-blkback 2>/dev/null; sleep 0.2; done
  grep -q '^xen_blkback ' /proc/modules && die "cannot unload xen-blkback"
  info "xen-blkback and xen-blkfront unloaded ($(modinfo -F filename xen-blkback 2>/dev/null | sed 's|.*/||'): a module)"
  info "$(xenstored --help 2>&1 | grep -E 'trace-file')"
  qdisk_down
  cat > /tmp/rec-hotplug <<'SH'
#!/bin/sh
# the recordings' hotplug script: only says the device is ready
case "$1" in
  add|online) xenstore-write /tool/xenio-lab/who "hotplug-script $1" "$XENBUS_PATH/hotplug-status" connected ;;
  *) xenstore-write /tool/xenio-lab/who "hotplug-script $1" ;;
esac
SH
  chmod +x /tmp/rec-hotplug
  cat > /tmp/rec-fake-dm <<'SH'
#!/bin/sh
# a device model that is none: says "running" where libxl waits for it, then sleeps
while [ $# -gt 0 ]; do [ "$1" = -xen-domid ] && d=$2; shift; done
echo "fake device model for domain $d" >&2
xenstore-write /tool/xenio-lab/who fake-dm "/local/domain/0/device-model/$d/state" running
exec sleep 100000
SH
  chmod +x /tmp/rec-fake-dm
  truncate -s 64M /tmp/x.img /tmp/rec-domu.img
  # libxl keeps dom0's devices in /var/lib/xen/userdata-d.0.*: a disk left there (a qdisk one
  # from 04) makes every later dom0 attach ask for a device model; put back what was there
  rm -rf /tmp/rec-userdata; mkdir -p /tmp/rec-userdata; cp -a /var/lib/xen/userdata-d.0.* /tmp/rec-userdata/ 2>/dev/null
  rec_fake_backend & local fb=$!; echo $fb > /tmp/rec-fb.pid
  sleep 1
  { xenstore-ls -f /local/domain/0; xenstore-ls -fp /libxl 2>/dev/null; } > "$REC/00-store-before.txt" 2>&1
  # dom0 attach and detach, phy (the kernel's backend class vbd; nobody serves it)
  rec 01-phy-attach xl -vvv block-attach 0 "vdev=xvdb,access=rw,backendtype=phy,script=/tmp/rec-hotplug,target=/tmp/x.img"
  xenstore-ls -fp /local/domain/0/backend/vbd > "$REC/01-phy-attach.nodes" 2>&1
  xenstore-ls -fp /local/domain/0/device/vbd >> "$REC/01-phy-attach.nodes" 2>&1
  rec 02-phy-detach xl -vvv block-detach 0 xvdb
  # qdisk: without a device model for dom0, then with one claimed (a pid that is no QEMU)
  rec 03-qdisk-attach-no-dm xl -vvv block-attach 0 "vdev=xvdc,access=rw,backendtype=qdisk,target=/tmp/x.img"
  sleep 100000 & local fakepid=$!; echo $fakepid > /tmp/rec-sleep.pid
  xenstore-write /local/domain/0/image/device-model-pid "$fakepid"
  rec 04-qdisk-attach xl -vvv block-attach 0 "vdev=xvdc,access=rw,backendtype=qdisk,target=/tmp/x.img"
  xenstore-ls -fp /local/domain/0/backend/qdisk > "$REC/04-qdisk-attach.nodes" 2>&1
  xenstore-ls -fp /local/domain/0/device/vbd >> "$REC/04-qdisk-attach.nodes" 2>&1
  rec 05-qdisk-detach xl -vvv block-detach 0 xvdc
  xenstore-rm /local/domain/0/image/device-model-pid; kill $fakepid; rm -f /tmp/rec-sleep.pid
  # a PV domU with a phy disk: create, save, restore, destroy
  rec_domu_cfg recdomu "vdev=xvda,access=rw,backendtype=phy,script=/tmp/rec-hotplug,target=/tmp/rec-domu.img" > /tmp/rec-domu.cfg
  rec 06-domu-create xl -vvv create /tmp/rec-domu.cfg || die "xl create (see $REC/06-domu-create.out)"
  local d; d=$(xl domid recdomu); info "recdomu is domain $d"
  for i in $(seq 1 60); do grep -q 'DOMU: idle' /var/log/xen/console/guest-recdomu.log 2>/dev/null && break; sleep 1; done
  grep -q 'DOMU: idle' /var/log/xen/console/guest-recdomu.log || die "the domU did not come up"
  xenstore-ls -fp "/local/domain/$d" > "$REC/06-domu-create.nodes" 2>&1
  xenstore-ls -fp "/local/domain/0/backend/vbd/$d" >> "$REC/06-domu-create.nodes" 2>&1
  xenstore-ls -fp "/libxl/$d" >> "$REC/06-domu-create.nodes" 2>&1
  rec 07-domu-save xl -vvv save recdomu /tmp/recdomu.save || info "xl save failed (see $REC/07-domu-save.out)"
  if [ -s /tmp/recdomu.save ]; then
    rec 08-domu-restore xl -vvv restore /tmp/recdomu.save || info "xl restore failed"
    d=$(xl domid recdomu 2>/dev/null) && info "restored recdomu is domain $d"
    [ -n "$d" ] && { xenstore-ls -fp "/local/domain/0/backend/vbd/$d" > "$REC/08-domu-restore.nodes" 2>&1; }
    rm -f /tmp/recdomu.save
  fi
  xl domid recdomu >/dev/null 2>&1 && rec 09-domu-destroy xl -vvv destroy recdomu
  pkill -P $fb; kill $fb 2>/dev/null; rm -f /tmp/rec-fb.pid   # (its children first: xenstore-watch and the loop)
  # a PV domU with a qdisk disk: libxl starts a QEMU for it (created paused, destroyed)
  rec_domu_cfg recq "vdev=xvda,access=rw,backendtype=qdisk,target=/tmp/rec-domu.img" > /tmp/rec-q.cfg
  rec 10-domu-qdisk-create xl -vvv create -p /tmp/rec-q.cfg || info "xl create (qdisk) failed"
  ps -eo pid,args | grep -E 'qemu-system|rec-fake-dm' | grep -v grep > "$REC/10-domu-qdisk-create.ps"
  xl domid recq >/dev/null 2>&1 && rec 11-domu-qdisk-destroy xl -vvv destroy recq
  # the same with a stand-in device model (device_model_override): does libxl need QEMU?
  rec_domu_cfg recf "vdev=xvda,access=rw,backendtype=qdisk,target=/tmp/rec-domu.img" 'device_model_override = "/tmp/rec-fake-dm"' > /tmp/rec-f.cfg
  rec 12-domu-qdisk-fake-dm-create xl -vvv create -p /tmp/rec-f.cfg || info "xl create (qdisk, fake device model) failed"
  xl domid recf >/dev/null 2>&1 && rec 13-domu-qdisk-fake-dm-destroy xl -vvv destroy recf
  { xenstore-ls -f /local/domain/0; xenstore-ls -fp /libxl 2>/dev/null; } > "$REC/99-store-after.txt" 2>&1
  xenstore-rm /tool/xenio-lab
  rec_restore_userdata
  modprobe xen-blkback || die "modprobe xen-blkback"
  echo "SUMMARY $(ls "$REC"/*.trace | wc -l) recordings in the outbox ($(du -sk "$REC" | cut -f1) KiB): lab/recordings/trim.py makes them readable"
}

# net-xfront runs first: dom0's xen-netfront, once loaded by net-kfront, cannot be unloaded again.
ALL="bb-o0 bb-o4 example-blk backendd-xl bb-fs qcow2-fs compare xfront-kback xfront-xback domu-xenio domu-xl domu-xl-live domu-qdisk domu-qdisk-save domu-compare net-xfront net-kfront net-compare vif-xl domu-vif"
# Generous: TCG on a busy 2-vCPU host is slow (bb-o4 takes 50-60 s when the host is loaded).
timeout_of() { case $1 in compare) echo $(( 240 + 300 * $(echo ${CMP_MEDIA:-disk} | wc -w) ));; domu-xenio|domu-qdisk) echo 300;; bb-fs|qcow2-fs|bb-o4) echo 240;; domu-qdisk-save) echo 480;; backendd-xl) echo $(( 420 + 60 * ${BXL_ROUNDS:-0} ));; vif-xl) echo 300;; domu-vif) echo 300;; domu-xl) echo 1200;; domu-xl-live) echo 480;; net-kfront|net-xfront) echo 180;; net-compare) if [ -x /lab/bin/xenio-b ]; then echo $(( 150 + 180 * ${NET_ROUNDS:-3} )); else echo $(( 150 + 120 * ${NET_ROUNDS:-3} )); fi;; record-toolstack) echo 600;; domu-compare) echo $(( 240 + ${DCMP_ROUNDS:-2} * 12 * (${DCMP_SECS:-3} + 8) ));; *) echo 150;; esac; }

# Whatever a check left behind (it failed or timed out half-way): a mounted file system,
# backends (SIGTERM first: that detaches the kernel's frontend cleanly), store nodes, domUs.
cleanup_after_check() {
  umount -l /mnt/x 2>/dev/null
  local f pid n d
  for f in /tmp/bb-*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f"); kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null; rm -f "$f"
  done
  for d in $(xenstore-list /local/domain/0/backend/xenio 2>/dev/null); do
    for n in $(xenstore-list "/local/domain/0/backend/xenio/$d" 2>/dev/null); do
      echo "cleanup: removing leftover device $d/$n"
      xenstore-rm "/local/domain/$d/device/vbd/$n" 2>/dev/null
    done
  done
  xenstore-rm /local/domain/0/backend/xenio 2>/dev/null
  xl block-list 0 2>/dev/null | awk 'NR>1{print $1}' | while read -r v; do
    echo "cleanup: xl block-detach 0 $v"; timeout 30 setsid -w xl block-detach 0 "$v" </dev/null
  done
  xl list 2>/dev/null | awk 'NR>2{print $1}' | while read -r d; do xl destroy "$d" 2>/dev/null; done
  if [ -e /tmp/nb.pid ]; then kill -TERM "$(cat /tmp/nb.pid)" 2>/dev/null; sleep 2; kill -9 "$(cat /tmp/nb.pid)" 2>/dev/null; rm -f /tmp/nb.pid; fi
  [ -e /tmp/nb.log ] && [ "${rc:-0}" != 0 ] && { echo "---- /tmp/nb.log"; tail -n 15 /tmp/nb.log | sed 's/^/  | /'; }
  rm -f /tmp/nb.log
  rm -rf /run/xenio-inflight   # domu-xl's daemon's records
  xl network-list 0 2>/dev/null | awk 'NR>1{print $1}' | while read -r v; do
    echo "cleanup: xl network-detach 0 $v"; timeout 30 setsid -w xl network-detach 0 "$v" </dev/null
  done
  xenstore-rm /local/domain/0/device/vif 2>/dev/null; xenstore-rm /local/domain/0/backend/vif 2>/dev/null
  if [ -s /run/xen/qemu-dcmp.pid ]; then kill "$(cat /run/xen/qemu-dcmp.pid)" 2>/dev/null; sleep 1; kill -9 "$(cat /run/xen/qemu-dcmp.pid)" 2>/dev/null; rm -f /run/xen/qemu-dcmp.pid; fi   # domu-compare's QEMU
  for f in /tmp/rec-fb.pid /tmp/rec-sleep.pid; do   # record-toolstack's stand-ins
    [ -s "$f" ] && { pkill -P "$(cat "$f")"; kill "$(cat "$f")" 2>/dev/null; rm -f "$f"; }
  done
  rec_restore_userdata
  grep -q '^xen_blkback ' /proc/modules || modprobe xen-blkback 2>/dev/null
  ip netns del guest 2>/dev/null; ip netns del gx 2>/dev/null; ip netns del gk 2>/dev/null; ip link del xtap0 2>/dev/null
  ip netns del gv 2>/dev/null; ip link del xbr0 2>/dev/null
  [ -s /tmp/iperf3.pid ] && kill "$(cat /tmp/iperf3.pid)" 2>/dev/null; rm -f /tmp/iperf3.pid
}

run_check() { # name
  local name=$1 t0 rc dt; t0=$(up)
  say "check $name (timeout $(timeout_of "$name") s)"
  timeout -k 5 "$(timeout_of "$name")" bash -c ". /lab/checks.sh; c_${name//-/_}" >"/tmp/check-$name.log" 2>&1 </dev/null
  rc=$?; dt=$(since "$t0")
  cleanup_after_check
  grep -a -E '^(INFO|RATIO) ' "/tmp/check-$name.log"
  if [ $rc = 0 ]; then
    echo "RESULT $name: OK (${dt} s) $(grep -a '^SUMMARY' "/tmp/check-$name.log" | tail -1 | cut -d' ' -f2-)"
  else
    local why="exit $rc"; [ $rc = 124 ] || [ $rc = 137 ] && why="timeout after $(timeout_of "$name") s"
    echo "RESULT $name: FAILED ($why, ${dt} s) $(grep -a '^FAIL:' "/tmp/check-$name.log" | tail -1)"
    echo "---- log of $name (tail)"; tail -n 40 "/tmp/check-$name.log" | sed 's/^/  | /'
    for f in /tmp/bb-*.log; do [ -e "$f" ] && { echo "---- $f"; tail -n 8 "$f" | sed 's/^/  | /'; rm -f "$f"; }; done
  fi
  rm -f /tmp/bb-*.log
}

main() {
  local only; only=$(cat /lab/checks.only 2>/dev/null)
  local plan=${only:-$ALL}
  echo "PLAN $plan"
  "$X" --version | sed 's/^/INFO /'
  for c in $plan; do run_check "$c"; done
}
[ "${BASH_SOURCE[0]}" = "$0" ] && main "$@"
