#!/bin/bash
# The lab's checks, run in dom0 by dom0-init.sh once the toolstack is up. Prints "PLAN <names>"
# and one "RESULT <name>: OK|FAILED ..." line per check; each check runs in its own shell
# under a timeout, its log is shown when it fails, and whatever it started is stopped after it.
# Every xenio process here runs with --platform xen: /dev/xen/{gntdev,gntalloc,evtchn} and the
# real xenstored.
export PATH=/lab/bin:/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
X=/lab/bin/xenio
export NO_COLOR=1
[ -r /lab/env ] && . /lab/env     # knobs from run.sh (CMP_ROUNDS, CMP_SECS, CMP_VARIANT)
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "LAB[$(up)s]: $*"; }
die() { echo "FAIL: $*"; exit 1; }
info() { echo "INFO $*"; }
since() { awk -v a="$(up)" -v b="$1" 'BEGIN{printf "%.1f", a-b}'; }

devid_of() { # xvdb -> 51728
  local l=${1#xvd}; echo $(( 202 * 256 + ($(printf '%d' "'$l") - 97) * 16 ))
}

# --- xenio blkback, attached as a toolstack would (xenio blkback --create-device)
bb_start() { # vdev image [frontend-domid] [extra blkback args...]; waits for backend InitWait
  local vdev=$1 img=$2 fe=${3:-0}; shift 3 2>/dev/null || shift $#
  local devid; devid=$(devid_of "$vdev")
  RUST_LOG=${RUST_LOG:-info} setsid "$X" blkback --platform xen --frontend "$fe" --create-device --backend-type xenio \
    --disk "format=raw,vdev=$vdev,access=rw,target=$img" "$@" >>"/tmp/bb-$vdev.log" 2>&1 </dev/null &
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

# the same image through xenio blkback, kernel blkback (loop) and QEMU qdisk, one boot
qdisk_up() {
  [ -s /run/xen/qemu-dom0.pid ] && return 0
  /usr/libexec/xen-qemu-system-i386 -xen-domid 0 -xen-attach -name dom0 -nographic -M xenpv -daemonize \
    -monitor /dev/null -serial /dev/null -parallel /dev/null -pidfile /run/xen/qemu-dom0.pid || die "dom0 QEMU"
  xenstore-write /local/domain/0/image/device-model-pid "$(cat /run/xen/qemu-dom0.pid)"
}
c_compare() {
  blkfront_load 0 2 32 1          # xen-blkfront's defaults, for every backend
  truncate -s 256M /tmp/cmp.img
  qdisk_up
  bb_start xvdf /tmp/cmp.img 0; wait_dev xvdf
  setsid -w xl block-attach 0 "format=raw,vdev=xvdg,access=rw,target=/tmp/cmp.img" </dev/null || die "xl block-attach (kernel blkback)"
  wait_dev xvdg 60
  setsid -w xl block-attach 0 "format=raw,vdev=xvdh,access=rw,backendtype=qdisk,target=/tmp/cmp.img" </dev/null || die "xl block-attach (qdisk)"
  wait_dev xvdh 60
  local devs="xenio:xvdf kernel:xvdg qdisk:xvdh"
  if [ -n "${CMP_VARIANT:-}" ]; then   # a second xenio configuration, e.g. CMP_VARIANT="--sync-io"
    bb_start xvdi /tmp/cmp.img 0 $CMP_VARIANT; wait_dev xvdi; devs="$devs xenio2:xvdi"
    info "xenio2 is xenio blkback $CMP_VARIANT"
  fi
  local jobs="write-1M-qd8:write:1M:8 read-1M-qd8:read:1M:8 randread-4k-qd1:randread:4k:1 randread-4k-qd16:randread:4k:16"
  local rounds=${CMP_ROUNDS:-3} secs=${CMP_SECS:-3}
  : > /tmp/cmp.txt
  for r in $(seq 1 "$rounds"); do
    for j in $jobs; do
      IFS=: read -r name rw bs qd <<<"$j"
      for d in $devs; do
        fio --name=c --filename=/dev/${d#*:} --direct=1 --ioengine=libaio --rw=$rw --bs=$bs --iodepth=$qd \
            --runtime="$secs" --time_based --size=256M --output-format=terse --terse-version=3 >/tmp/fio.out 2>&1 \
          || { cat /tmp/fio.out; die "fio $name on $d"; }
        bw=$(awk -F';' -v rw=$rw '{print (rw ~ /write/) ? $48 : $7}' /tmp/fio.out)
        echo "$r $name ${d%%:*} $bw" >> /tmp/cmp.txt
      done
    done
  done
  # KiB/s per backend and round -> for each xenio variant: ratio to kernel and to qdisk,
  # the ratio of the means and min-max of the per-round ratios
  awk '{bw[$2" "$3" "$1]=$4; names[$2]=1; rounds[$1]=1; if ($3 ~ /^xenio/) xs[$3]=1}
       END { for (n in names) for (x in xs) {
         sx=0; sk=0; sq=0; lo1=1e9; hi1=0; lo2=1e9; hi2=0; c=0
         for (r in rounds) { v=bw[n" "x" "r]; k=bw[n" kernel "r]; q=bw[n" qdisk "r]; c++
           sx+=v; sk+=k; sq+=q
           if (k>0) { a=v/k; if(a<lo1)lo1=a; if(a>hi1)hi1=a }
           if (q>0) { b=v/q; if(b<lo2)lo2=b; if(b>hi2)hi2=b } }
         printf "RATIO %-17s %-6s %7.1f MiB/s  kernel %7.1f  qdisk %7.1f  /kernel %.2f (%.2f-%.2f)  /qdisk %.2f (%.2f-%.2f)\n",
           n, x, sx/c/1024, sk/c/1024, sq/c/1024, (sk>0?sx/sk:0), lo1, hi1, (sq>0?sx/sq:0), lo2, hi2 } }' /tmp/cmp.txt | sort
  setsid -w xl block-detach 0 xvdg </dev/null || die "xl block-detach xvdg"
  setsid -w xl block-detach 0 xvdh </dev/null || die "xl block-detach xvdh"
  bb_stop xvdf
  [ -n "${CMP_VARIANT:-}" ] && bb_stop xvdi
  echo "SUMMARY fio, $rounds rounds x ${secs}s per job and backend (ratios in the RATIO lines)"
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
  for i in $(seq 1 150); do grep -q 'DOMU: done' "$log" 2>/dev/null && break; xl domid domu >/dev/null 2>&1 || break; sleep 1; done
  xl domid domu >/dev/null 2>&1 && xl destroy domu
  tr -d '\r' < "$log" | grep DOMU: | sed 's/^/  domU| /'
  grep -q XVDA_RW_OK "$log" || die "the domU did not verify its disk"
  bb_stop xvda "$d"
  dd if=/tmp/domu.img bs=512 skip=8 count=1 2>/dev/null | head -c 15 | grep -q hello-from-domU || die "dom0 does not see the domU's write"
  echo "SUMMARY PV domU $d: xen-blkfront on xenio blkback, verified writes, dom0 sees them"
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

# net-xfront runs first: dom0's xen-netfront, once loaded by net-kfront, cannot be unloaded again.
ALL="bb-o0 bb-o4 bb-fs compare xfront-kback xfront-xback domu-xenio net-xfront net-kfront"
# Generous: TCG on a busy 2-vCPU host is slow (bb-o4 takes 50-60 s when the host is loaded).
timeout_of() { case $1 in compare) echo 420;; domu-xenio|bb-fs|bb-o4) echo 240;; net-kfront|net-xfront) echo 180;; *) echo 150;; esac; }

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
  xl network-list 0 2>/dev/null | awk 'NR>1{print $1}' | while read -r v; do
    echo "cleanup: xl network-detach 0 $v"; timeout 30 setsid -w xl network-detach 0 "$v" </dev/null
  done
  xenstore-rm /local/domain/0/device/vif 2>/dev/null; xenstore-rm /local/domain/0/backend/vif 2>/dev/null
  ip netns del guest 2>/dev/null; ip link del xtap0 2>/dev/null
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
