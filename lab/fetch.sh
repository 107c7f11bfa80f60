#!/bin/bash
# Host tools, then the Xen hypervisor and the Debian kernel extracted into $LAB (nothing
# touches the host's /boot). Skipped when $LAB already has them (delete $LAB/kver to refetch).
set -euo pipefail
LAB=${LAB:-/var/tmp/xenio-lab}
mkdir -p "$LAB/debs" && cd "$LAB"
need=()
for p in qemu-system-x86 debootstrap cpio busybox-static kmod e2fsprogs; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null \
    || { apt-get update -qq && apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null; }
fi
if [ -s kver ] && [ -s xen ] && [ -s vmlinuz ] && [ -d "k/lib/modules/$(cat kver)" ]; then
  echo "fetch: cached (xen $(stat -c%s xen) bytes, kernel $(cat kver))"; exit 0
fi
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$KPKG" ] || { apt-get update -qq; KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}'); }
(cd debs && rm -f ./*.deb && apt-get download xen-hypervisor-4.17-amd64 "$KPKG" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
rm -rf x k && mkdir -p x k
dpkg -x debs/xen-hypervisor-4.17-amd64_*.deb x
dpkg -x debs/"$KPKG"_*.deb k
zcat x/boot/xen-4.17-amd64.gz > xen        # ELF32 multiboot image: QEMU -kernel accepts it
KV=$(ls k/lib/modules)
cp k/boot/vmlinuz-"$KV" vmlinuz
depmod -b k "$KV"                           # the .deb ships no modules.dep
echo "$KV" > kver
echo "fetched: xen=$(stat -c%s xen) bytes, kernel $KV"
