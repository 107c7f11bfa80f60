#!/usr/bin/env bash
# Installs, with apt, what the test servers in this folder need and is missing.
#
#   bash tests/servers/install.sh            nbd: nbdkit (+ its python plugin, for nbdkit-badrange.py),
#                                            nbd-server, libnbd-bin (nbdinfo), libnbd-dev, fio
#   bash tests/servers/install.sh ceph       the one-node Ceph cluster (mon, mgr, osd, rbd, librbd-dev)
#   bash tests/servers/install.sh all        both
#
# It never removes a package: every install is simulated first (apt-get -s) and refused when
# the simulation would remove anything, then run with --no-remove. qemu-nbd and
# qemu-storage-daemon come from qemu-utils, which this machine image ships as a
# bookworm-backports build (10.0.x); it is only checked for, never installed or upgraded here
# (bookworm's own 7.2 qemu-utils lacks qemu-storage-daemon, and installing qemu-block-extra
# from bookworm would pull a mismatched qemu).
set -euo pipefail

what=${1:-nbd}
nbd_pkgs=(nbdkit nbdkit-plugin-python nbd-server libnbd-bin libnbd-dev fio)
ceph_pkgs=(ceph-mon ceph-mgr ceph-osd ceph-common librbd-dev)
case "$what" in
    nbd) pkgs=("${nbd_pkgs[@]}") ;;
    ceph) pkgs=("${ceph_pkgs[@]}") ;;
    all) pkgs=("${nbd_pkgs[@]}" "${ceph_pkgs[@]}") ;;
    *) echo "usage: $0 [nbd|ceph|all]" >&2; exit 2 ;;
esac

for tool in qemu-img qemu-nbd qemu-storage-daemon; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool: it comes from qemu-utils (>= 8.0 for qemu-storage-daemon); not installed by this script" >&2
        exit 1
    }
done

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "ok: ${pkgs[*]} already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (run as root)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
sim=$(apt-get install -s --no-remove --no-install-recommends "${missing[@]}")
if grep -q '^Remv ' <<<"$sim"; then
    echo "refused: installing ${missing[*]} would remove:" >&2
    grep '^Remv ' <<<"$sim" >&2
    exit 1
fi
apt-get install -y -qq --no-remove --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
