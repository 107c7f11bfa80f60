#!/bin/bash
# Host tools, then the Xen hypervisor and the Debian kernel extracted into $LAB (nothing
# touches the host's /boot). Skipped when $LAB already has them (delete $LAB/kver to refetch).
set -euo pipefail
LAB=${LAB:-/var/tmp/xenio-lab}
mkdir -p "$LAB/debs" && cd "$LAB"
export DEBIAN_FRONTEND=noninteractive
apt_install() { # packages...: one apt-get install (an apt-get update and a second try on failure)
  apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "$@" >/dev/null \
    || { apt-get update -qq && apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "$@" >/dev/null; }
}
installed_version() { dpkg-query -W -f '${db:Status-Status} ${Version}\n' "$1" 2>/dev/null | awk '$1 == "installed" {print $2}' || true; }
need=()
for p in debootstrap cpio busybox-static kmod e2fsprogs gcc binutils; do   # gcc, readelf: image.sh's stand-ins for fio's libraries
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
[ ${#need[@]} -gt 0 ] && { echo "installing ${need[*]}"; apt_install "${need[@]}"; }

# QEMU (qemu-system-x86) without undoing qemu-utils. .ci/run installs qemu-utils (qemu-img,
# qemu-nbd: the block benchmark) before the lab runs, and the machine may already carry a
# newer build of it (bookworm-backports: qemu-utils 10.x Breaks qemu-system-common << 8.0), so
# a plain `apt-get install qemu-system-x86` (7.2 from bookworm) would REMOVE qemu-utils. The
# two are installed at the same version: qemu-system-x86 at exactly the installed qemu-utils'
# version, from the release that has it (bookworm-backports for a ~bpo build; its source is
# added when missing: priority 100, it changes nothing else). Only when no release has that
# version are both installed together, in one command, at the default release's version.
utils_before=$(installed_version qemu-utils)
if [ -z "$(installed_version qemu-system-x86)" ]; then
  if [ -z "$utils_before" ]; then
    echo "installing qemu-system-x86 (no qemu-utils installed)"
    apt_install qemu-system-x86
  else
    V=$utils_before target=()
    if [[ $V == *~bpo* ]]; then
      . /etc/os-release
      target=(-t "$VERSION_CODENAME-backports")
      if ! apt-cache policy 2>/dev/null | grep -q " $VERSION_CODENAME-backports/main "; then
        mirror=$(grep -hoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}' || true)
        echo "adding $VERSION_CODENAME-backports (${mirror:=http://deb.debian.org/debian}) to apt's sources: qemu-utils $V comes from there"
        printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
          "$mirror" "$VERSION_CODENAME" > /etc/apt/sources.list.d/xenio-lab-backports.sources
        apt-get update -qq
      fi
    fi
    if apt-cache madison qemu-system-x86 | grep -qF "| $V |" \
       || { apt-get update -qq; apt-cache madison qemu-system-x86 | grep -qF "| $V |"; }; then
      echo "installing qemu-system-x86=$V ${target[*]} (the installed qemu-utils' version)"
      apt_install "${target[@]}" "qemu-system-x86=$V"
    else
      W=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
      echo "WARNING: no release has qemu-system-x86 $V (the installed qemu-utils' version):"
      echo "WARNING: installing qemu-system-x86 and qemu-utils $W together (qemu-utils $V -> $W)"
      apt_install --allow-downgrades "qemu-system-x86=$W" "qemu-utils=$W"
    fi
  fi
fi
# Loudly, whatever happened above: what was installed before the lab must still work.
if [ -n "$utils_before" ]; then
  if [ -z "$(installed_version qemu-utils)" ] || ! qemu-img --version >/dev/null 2>&1 || ! qemu-nbd --version >/dev/null 2>&1; then
    echo "fetch.sh: ERROR: qemu-utils ($utils_before) was installed before the lab and qemu-img/qemu-nbd are gone now" >&2
    dpkg -l 'qemu*' 2>/dev/null | grep -E '^[a-z]{2} ' >&2
    exit 1
  fi
  echo "fetch: qemu-system-x86 $(installed_version qemu-system-x86), qemu-utils $(installed_version qemu-utils) (qemu-img, qemu-nbd work)"
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
