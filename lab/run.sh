#!/bin/bash
# The Xen lab, end to end: host tools, the hypervisor and kernel (cached), the dom0 image
# (cached), xenio built in release mode, a payload cpio with xenio and the checks, one boot of
# Xen + dom0 under QEMU TCG, and the verdict: every RESULT line, "N passed, M failed", exit 0
# only when every planned check passed. A check that never reported (crash, hang, timeout)
# counts as failed; on any failure the tail of the serial log is printed.
#
#   bash lab/run.sh                 everything (about 13-18 min on a busy host with a cached image)
#   CHECKS="bb-fs compare" bash lab/run.sh    only some checks (names: see checks.sh)
#   LAB=/some/dir  TIMEOUT=720  DOM0_EXTRA=labdebug=1  XENIO_BIN=/path/xenio
#   EXAMPLE_BIN=/path/checksum_backend   knobs
#   CMP_ROUNDS=2 CMP_SECS=3 CMP_VARIANT="--sync-io" CMP_MEDIA="disk tmpfs"   the block
#                                   comparison: rounds, seconds per fio job, a second xenio
#                                   blkback configuration, the media (default: the virtio disk)
#   NET_ROUNDS=3 NET_SECS=3         the network comparison (net-compare): rounds, seconds per test
#   NET_XENIO_B=/path/xenio         net-compare: a second xenio binary in every round too
#                                   (backend "xenio-b"; RATIO lines xenio/xenio-b as well)
#   DX_PERSISTENT=0                 domu-xl/domu-xl-live: the daemon without persistent grants (on by default)
#   DCMP_ROUNDS=2 DCMP_SECS=3       domu-compare: rounds, seconds per fio job and disk
#   BXL_PERSISTENT=1 BXL_ROUNDS=3   backendd-xl with persistent grants on (1) or off (0), and
#                                   rounds of busy-disk detach, each timed
#   DISK_MB=1024 DISK_AIO=native    the lab's virtio disk (boot.sh)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export LAB=${LAB:-/var/tmp/xenio-lab}
export TIMEOUT=${TIMEOUT:-2400}
mkdir -p "$LAB"
t0=$(date +%s)
# One lab run at a time per $LAB (several CI runs may share this machine and its cache).
exec 9>"$LAB/lock"
if ! flock -n 9; then
  echo "==> waiting for another lab run using $LAB (up to 30 min)"
  flock -w 1800 9 || { echo "RESULT lab-setup: FAILED (another lab run held $LAB/lock for 30 min)"; echo "0 passed, 1 failed"; exit 1; }
fi
stamp() { echo "==> [$(( $(date +%s) - t0 ))s] $*"; }
LOG="$LAB/serial.log"
cleanup() {
  if [ -s "$LAB/qemu.pid" ]; then kill "$(cat "$LAB/qemu.pid")" 2>/dev/null; sleep 1; kill -9 "$(cat "$LAB/qemu.pid")" 2>/dev/null; fi
  [ -n "${bootpid:-}" ] && kill "$bootpid" 2>/dev/null
  rm -f "$LAB/qemu.pid"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

fail_early() { echo "RESULT lab-setup: FAILED ($*)"; echo "0 passed, 1 failed"; exit 1; }

stamp "fetch (hypervisor, kernel, host tools)"
timeout 900 bash "$HERE/fetch.sh" || fail_early "fetch.sh"
stamp "dom0 image"
timeout 900 bash "$HERE/image.sh" || fail_early "image.sh"
stamp "xenio (cargo build --release)"
# where cargo puts the binaries: CARGO_TARGET_DIR when set (relative to the workspace), else target/
TARGET_DIR=${CARGO_TARGET_DIR:-target}; case $TARGET_DIR in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR";; esac
if [ -z "${XENIO_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -p xenio --locked 2>&1 | tail -n 3) || fail_early "cargo build"
  XENIO_BIN="$TARGET_DIR/release/xenio"
fi
[ -x "$XENIO_BIN" ] || fail_early "no xenio binary at $XENIO_BIN"
# The vendor example that check example-blk runs as its own program
if [ -z "${EXAMPLE_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -p xenio-blkback --example checksum_backend --locked 2>&1 | tail -n 3) \
    || fail_early "cargo build --example checksum_backend"
  EXAMPLE_BIN="$TARGET_DIR/release/examples/checksum_backend"
fi

stamp "payload (xenio, checks)"
P="$LAB/payload"; rm -rf "$P"; mkdir -p "$P/lab/bin"
cp "$XENIO_BIN" "$P/lab/bin/xenio"; strip "$P/lab/bin/xenio" 2>/dev/null || true
# net-compare's second xenio (another netback in the same rounds: backend "xenio-b")
[ -n "${NET_XENIO_B:-}" ] && { cp "$NET_XENIO_B" "$P/lab/bin/xenio-b" && strip "$P/lab/bin/xenio-b" 2>/dev/null || true; }
if [ -x "$EXAMPLE_BIN" ]; then cp "$EXAMPLE_BIN" "$P/lab/bin/checksum_backend"; strip "$P/lab/bin/checksum_backend" 2>/dev/null || true; fi
cp "$HERE/dom0-init.sh" "$HERE/checks.sh" "$P/lab/"; chmod +x "$P/lab/"*.sh
cp "$ROOT/tools/hotplug/block-xenio" "$P/lab/block-xenio"   # check backendd-xl installs it
cp "$ROOT/tools/hotplug/vif-xenio" "$P/lab/vif-xenio"       # check vif-xl installs it
cp "$ROOT/tools/device-model/xenio-device-model" "$P/lab/xenio-device-model"   # check domu-qdisk installs it
echo "${CHECKS:-}" > "$P/lab/checks.only"
# Check qcow2-fs's images, made here: dom0's image has no qemu-utils. A 128 MiB qcow2 base whose
# first MiB is 0x5a (qemu-io) and an empty overlay over it (its backing file named relative).
if command -v qemu-img >/dev/null && command -v qemu-io >/dev/null; then
  mkdir -p "$P/lab/qcow2"
  (cd "$P/lab/qcow2" && qemu-img create -q -f qcow2 base.qcow2 128M && qemu-io -f qcow2 -c "write -P 0x5a 0 1M" base.qcow2 >/dev/null \
    && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2) || echo "qcow2-fs: making its images failed (the check will say so)"
else
  echo "qcow2-fs: no qemu-img/qemu-io on this host (Debian package qemu-utils): the check will fail"
fi
# Knobs of checks.sh that travel into dom0
for v in CMP_ROUNDS CMP_SECS CMP_VARIANT CMP_MEDIA DCMP_ROUNDS DCMP_SECS NET_ROUNDS NET_SECS DX_PERSISTENT BXL_PERSISTENT BXL_ROUNDS; do [ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}"; done > "$P/lab/env"
(cd "$P" && find . | cpio -o -H newc -R 0:0 --quiet) > "$LAB/payload.cpio"
# One initrd: the cached image, then the payload (Linux unpacks concatenated cpio archives
# in order; later files win).
cat "$LAB/dom0-rootfs.cpio" "$LAB/payload.cpio" > "$LAB/boot.cpio"

stamp "boot Xen + dom0 under QEMU TCG (timeout ${TIMEOUT}s)"
labtimeout=$(( TIMEOUT - 90 ))
DOM0_EXTRA="labtimeout=$labtimeout ${DOM0_EXTRA:-}" bash "$HERE/boot.sh" "$LAB/boot.cpio" "$LOG" &
bootpid=$!
wait $bootpid; qrc=$?; bootpid=
stamp "QEMU exited rc=$qrc"
tr -d '\r' < "$LOG" > "$LAB/serial.txt" 2>/dev/null || : > "$LAB/serial.txt"
# Files dom0 put in its outbox (recordings): a tar archive at the start of outbox.img
rm -rf "$LAB/outbox"; mkdir -p "$LAB/outbox"
if tar -tf "$LAB/outbox.img" >/dev/null 2>&1; then
  tar -C "$LAB/outbox" -xf "$LAB/outbox.img" && echo "outbox: $(find "$LAB/outbox" -type f | wc -l) files in $LAB/outbox"
fi
# record-toolstack's recordings stay in $LAB/recordings until the next such run, with their
# readable versions (lab/recordings/trim.py) in $LAB/recordings/trimmed
if [ -d "$LAB/outbox/recordings" ]; then
  rm -rf "$LAB/recordings"; cp -a "$LAB/outbox/recordings" "$LAB/recordings"
  python3 "$HERE/recordings/trim.py" "$LAB/recordings" "$LAB/recordings/trimmed" >/dev/null \
    && echo "recordings: $LAB/recordings (trimmed: $LAB/recordings/trimmed)" || echo "recordings: $LAB/recordings (trim.py failed)"
fi
grep -a -E '^(LAB\[|RESULT|PLAN|INFO|RATIO)' "$LAB/serial.txt" | grep -v '^RESULT' 
echo "---- results"
plan=$(grep -a '^PLAN ' "$LAB/serial.txt" | tail -1 | cut -d' ' -f2-)
pass=0; failn=0
grep -a '^RESULT ' "$LAB/serial.txt" > "$LAB/results.txt" || true
# qcow2-fs left the overlay it wrote in the outbox when dom0 had no qemu-img: check it here,
# over the base it was made on; a dirty image fails the check.
if [ -s "$LAB/outbox/qcow2-fs/overlay.qcow2" ]; then
  cp "$P/lab/qcow2/base.qcow2" "$LAB/outbox/qcow2-fs/"
  if out=$(qemu-img check "$LAB/outbox/qcow2-fs/overlay.qcow2" 2>&1); then
    echo "INFO qcow2-fs: qemu-img check on the host: $(echo "$out" | grep -m1 -E 'No errors|clusters')"
  else
    echo "$out" | tail -n 8
    echo "RESULT qcow2-fs: FAILED (qemu-img check on the host of the overlay dom0 wrote)" >> "$LAB/results.txt"
  fi
fi
while read -r line; do
  echo "$line"
  case "$line" in *": OK"*) pass=$((pass+1));; *) failn=$((failn+1));; esac
done < "$LAB/results.txt"
if [ -z "$plan" ]; then
  echo "RESULT lab-boot: FAILED (no PLAN line: dom0 never ran the checks; QEMU rc=$qrc)"; failn=$((failn+1))
fi
for c in $plan; do
  grep -q "^RESULT $c: " "$LAB/results.txt" || { echo "RESULT $c: FAILED (no result: timeout or crash; QEMU rc=$qrc)"; failn=$((failn+1)); }
done
# The names of the failed checks (for a retry of just those; empty: everything failed)
{ grep -v ': OK' "$LAB/results.txt" | sed -n 's/^RESULT \([^:]*\):.*/\1/p'
  for c in $plan; do grep -q "^RESULT $c: " "$LAB/results.txt" || echo "$c"; done; } | sort -u | tr '\n' ' ' > "$LAB/failed.txt"
[ -z "$plan" ] && : > "$LAB/failed.txt"
if [ $failn -gt 0 ]; then
  echo "---- serial log tail ($LOG)"; tail -n 60 "$LAB/serial.txt"
fi
echo "lab time $(( $(date +%s) - t0 )) s"
echo "$pass passed, $failn failed"
[ $failn = 0 ] && [ $pass -gt 0 ]
