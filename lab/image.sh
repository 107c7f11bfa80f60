#!/bin/bash
# The big, cached part of the boot: a debootstrapped bookworm dom0 (Xen toolstack, QEMU for
# qdisk, fio, e2fsprogs, iperf3, ethtool, jq), the Xen and block kernel modules, a PV domU kernel + initrd (busybox, fio, e2fsprogs),
# packed as an uncompressed cpio (no gunzip under TCG). Rebuilt only when its inputs change
# (this script, vif-lab, domu-init.sh, the kernel version): their hash is kept in
# $LAB/image.key. xenio's binaries and the test scripts are NOT in it: run.sh packs them into a
# small second cpio appended at boot time (Linux unpacks concatenated archives in order).
set -euo pipefail
LAB=${LAB:-/var/tmp/xenio-lab}
HERE=$(cd "$(dirname "$0")" && pwd)
KV=$(cat "$LAB/kver")
PKGS=xen-utils-4.17,xenstore-utils,qemu-system-xen,kmod,procps,util-linux,e2fsprogs,busybox,fio,iproute2,iperf3,ethtool,jq
KEY=$(cat "$HERE/image.sh" "$HERE/vif-lab" "$HERE/domu-init.sh" "$LAB/kver" | sha256sum | cut -c1-16)
if [ -s "$LAB/dom0-rootfs.cpio" ] && [ "$(cat "$LAB/image.key" 2>/dev/null)" = "$KEY" ]; then
  echo "image: cached ($KEY, $(du -m "$LAB/dom0-rootfs.cpio" | cut -f1) MB)"; exit 0
fi
rm -f "$LAB/image.key"
# --- dom0's root filesystem (first: the domU's initramfs takes fio and e2fsprogs from it)
MIRROR=${MIRROR:-$(grep -hoE '(URIs:|deb) +https?://[^ ]+/debian/?' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}' || true)}
R="$LAB/rootfs"
if [ ! -x "$R/usr/lib/xen-4.17/bin/xl" ] || [ ! -x "$R/usr/bin/fio" ] || [ "$(cat "$LAB/rootfs.pkgs" 2>/dev/null)" != "$PKGS" ]; then
  [ -n "$MIRROR" ] || { echo "no Debian mirror found in apt sources; set MIRROR=" >&2; exit 1; }
  rm -rf "$R"
  echo "image: debootstrap bookworm ($PKGS) from $MIRROR (~2-3 min)"
  debootstrap --variant=minbase --include="$PKGS" bookworm "$R" "$MIRROR" > "$LAB/debootstrap.log" 2>&1 \
    || { tail -20 "$LAB/debootstrap.log"; exit 1; }
  echo "$PKGS" > "$LAB/rootfs.pkgs"
fi
# --- the domU's initramfs: busybox, xen-blkfront, ext4, fio, mke2fs, e2fsck and resize2fs with their shared
# libraries (from the root above), runs domu-init.sh. Debian's fio links the libraries of its
# network and RDMA engines (gluster, ceph, nbd, ibverbs, pmem: ~80 MB with theirs); the domU
# never uses those engines, so each is replaced by a stand-in with its soname that defines the
# functions fio imports from it (versions included: fio is linked BIND_NOW) and does nothing.
D="$LAB/domu-root"; rm -rf "$D"; mkdir -p "$D"/{bin,sbin,proc,sys,dev,tmp,etc,lib/modules,lib64}
cp /bin/busybox "$D/bin/busybox"
for a in sh mount insmod dd ls cat echo sleep poweroff mknod grep od head md5sum sync dmesg cmp seq tr kill wc ln; do ln -s busybox "$D/bin/$a"; done
# The kernel runs /sbin/poweroff for a PV shutdown request (xl shutdown: orderly_poweroff);
# this one asks PID 1 (domu-init.sh traps SIGUSR2) to report and power off.
printf '#!/bin/sh\nexec /bin/kill -USR2 1\n' > "$D/sbin/poweroff"; chmod +x "$D/sbin/poweroff"
cp "$LAB/k/lib/modules/$KV/kernel/drivers/block/xen-blkfront.ko" "$D/lib/modules/"
cp "$LAB/k/lib/modules/$KV/kernel/drivers/net/xen-netfront.ko" "$D/lib/modules/"
# domu-vif (lab_net in domu-init.sh): xen-netfront is above; the applets its network test uses
for a in ip ping nc mkfifo cut wc sed; do ln -sf busybox "$D/bin/$a"; done   # -f: the same applet may be linked above
# lab_fs (domu-xl-live): ext4 mounted on xvdb and grown online with resize2fs; insmod in this order
for f in lib/crc16.ko crypto/crc32c_generic.ko fs/mbcache.ko fs/jbd2/jbd2.ko fs/ext4/ext4.ko; do
  cp "$LAB/k/lib/modules/$KV/kernel/$f" "$D/lib/modules/"
done
for a in mkdir umount df rm; do ln -sf busybox "$D/bin/$a"; done
STUBS="libgfapi.so.0 libnbd.so.0 libibverbs.so.1 librdmacm.so.1 librados.so.2 librbd.so.1 libpmemblk.so.1 libpmem.so.1"
stub_lib() { # soname: the stand-in, into $D/lib
  local so=$1 real t
  real=$(readlink -f "$R/lib/x86_64-linux-gnu/$so") && [ -f "$real" ] || { echo "image: no $so in the root" >&2; return 1; }
  t=$(mktemp -d)
  # "name version" for each function fio imports that $so defines ("-": unversioned)
  readelf --dyn-syms -W "$R/usr/bin/fio" | awk '$7 == "UND" && $4 == "FUNC" {print $8}' | sed 's/ *(.*//' | sort -u > "$t/imports"
  readelf --dyn-syms -W "$real" | awk '$7 != "UND" && $4 == "FUNC" {sub(/@.*/, "", $8); print $8}' | sort -u > "$t/defs"
  awk -F@ 'NR == FNR {d[$1] = 1; next} ($1 in d) {print $1, ($2 == "" ? "-" : $2)}' "$t/defs" "$t/imports" > "$t/syms"
  awk '{print "void " $1 "(void) {}"}' "$t/syms" > "$t/stub.c"
  awk '$2 != "-" {v[$2] = v[$2] " " $1 ";"} END {for (k in v) print k " { global:" v[k] " };"}' "$t/syms" > "$t/vers"
  local vs=(); [ -s "$t/vers" ] && vs=(-Wl,--version-script="$t/vers")
  gcc -shared -fPIC -O0 -nostdlib -o "$D/lib/$so" -Wl,-soname,"$so" "${vs[@]}" "$t/stub.c" || { rm -rf "$t"; return 1; }
  rm -rf "$t"
}
for so in $STUBS; do stub_lib "$so"; done
needs() { # file: copy the libraries it needs (DT_NEEDED, recursively) from the root, stand-ins excepted
  local so f
  for so in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case " $STUBS ld-linux-x86-64.so.2 " in *" $so "*) continue;; esac
    [ -e "$D/lib/$so" ] && continue
    for f in "$R/lib/x86_64-linux-gnu/$so" "$R/usr/lib/x86_64-linux-gnu/$so" ""; do [ -e "$f" ] && break; done
    [ -n "$f" ] || { echo "image: $1 needs $so, not in the root" >&2; return 1; }
    cp -L "$f" "$D/lib/$so"; needs "$D/lib/$so" || return 1
  done
}
for b in usr/bin/fio sbin/mke2fs sbin/e2fsck sbin/resize2fs; do cp "$R/$b" "$D/bin/"; needs "$D/bin/${b##*/}"; done
cp -L "$R/lib64/ld-linux-x86-64.so.2" "$D/lib64/"
ln -s mke2fs "$D/bin/mkfs.ext4"
cp "$R/etc/mke2fs.conf" "$D/etc/" 2>/dev/null || true
cp "$HERE/domu-init.sh" "$D/init"; chmod +x "$D/init"
(cd "$D" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) > "$LAB/domu-initrd.gz"
echo "image: domU initramfs $(du -k "$LAB/domu-initrd.gz" | cut -f1) KiB ($(du -sk "$D" | cut -f1) KiB unpacked)"
# --- dom0's root filesystem, packed
rm -f "$R"/usr/sbin/policy-rc.d
rm -rf "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* \
       "$R"/usr/share/doc "$R"/usr/share/man "$R"/usr/share/locale "$R"/usr/share/info
# Kernel modules: the Xen drivers, block (loop, xen-blkfront/back, virtio_blk for the lab's
# disks) with virtio (virtio_pci), and the Xen net drivers.
M="$R/lib/modules/$KV"; rm -rf "$M"; mkdir -p "$M/kernel/drivers/net"
cp -a "$LAB/k/lib/modules/$KV/kernel/drivers/xen" "$LAB/k/lib/modules/$KV/kernel/drivers/block" \
      "$LAB/k/lib/modules/$KV/kernel/drivers/virtio" "$M/kernel/drivers/"
cp -a "$LAB/k/lib/modules/$KV/kernel/drivers/net/xen-netback" "$LAB/k/lib/modules/$KV/kernel/drivers/net/xen-netfront.ko" "$M/kernel/drivers/net/"
# ext4 (mkfs/mount/fsck checks) with what it needs, tun (TAP devices for net backends) and the
# bridge with what it needs (check vif-xl plugs the vif's TAP into one).
K="$LAB/k/lib/modules/$KV/kernel"
for f in fs/ext4/ext4.ko fs/jbd2/jbd2.ko fs/mbcache.ko lib/crc16.ko crypto/crc32c_generic.ko drivers/net/tun.ko \
         net/bridge/bridge.ko net/802/stp.ko net/llc/llc.ko; do
  mkdir -p "$M/kernel/$(dirname "$f")"; cp -a "$K/$f" "$M/kernel/$f"
done
cp "$LAB/k/lib/modules/$KV"/modules.{order,builtin,builtin.modinfo} "$M/" 2>/dev/null || true
depmod -b "$R" "$KV"
mkdir -p "$R/lab"
cp "$LAB/vmlinuz" "$R/lab/vmlinuz"
cp "$LAB/domu-initrd.gz" "$R/lab/domu-initrd.gz"
cp "$HERE/vif-lab" "$R/etc/xen/scripts/vif-lab"; chmod +x "$R/etc/xen/scripts/vif-lab"
rm -rf "$R/lab/extra" "$R/lab/dom0-init.sh"
(cd "$R" && find . -xdev | cpio -o -H newc --quiet) > "$LAB/dom0-rootfs.cpio.tmp"
mv "$LAB/dom0-rootfs.cpio.tmp" "$LAB/dom0-rootfs.cpio"
echo "$KEY" > "$LAB/image.key"
echo "image: built ($KEY, $(du -m "$LAB/dom0-rootfs.cpio" | cut -f1) MB)"
