#!/usr/bin/env bash
# Checks the scripts of this folder against the real servers: for each NBD server, on a
# Unix socket and on TCP, start, write and read back through the URI (qemu-io), SIGKILL,
# restart on the same address, the data still there, stop, nothing left running; nbdkit's
# error switch, bad sector range and delay filter; with --ceph also the Ceph cluster
# (start, verified rbd I/O, restart-osd --kill under writes, stop, start again, destroy). Ends with
# "N passed, N failed".
#
#   bash tests/servers/selftest.sh [--ceph]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/srv-selftest.XXXXXX)
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { local what=$1; shift; if "$@" >"$work/last.out" 2>&1; then ok "$what"; else bad "$what"; sed 's/^/     /' "$work/last.out" | tail -n 5; fi; }
# qemu-io against an NBD URI: fails when the command printed a failure
qio() { local out; out=$(qemu-io -f raw "$1" -c "$2" 2>&1) || return 1; ! grep -qiE 'fail|error|mismatch' <<<"$out"; }
qio_fails() { ! qio "$@"; }
gone() { ! kill -0 "$1" 2>/dev/null; }
cleanup() {
    for d in "$work"/*/; do
        [ -s "$d/pid" ] && [ -s "$d/script" ] && "$(cat "$d/script")" stop "$d" >/dev/null 2>&1
    done
    rm -rf "$work"
}
trap cleanup EXIT

i=0
for script in qemu-nbd.sh qemu-storage-daemon.sh nbdkit.sh nbd-server.sh; do
    for transport in --unix "--tcp auto"; do
        i=$((i + 1)); d="$work/$i"; mkdir -p "$d"; echo "$here/$script" >"$d/script"
        name="$script $transport"
        # shellcheck disable=SC2086
        if ! env_out=$("$here/$script" start "$d" $transport 2>"$d/start.err"); then
            bad "$name: start"; tail -n 3 "$d/start.err"; continue
        fi
        ok "$name: start"
        uri=$(sed -n 's/^NBD_URI=//p' <<<"$env_out")
        pid=$(cat "$d/pid")
        check "$name: write + read back" bash -c "$(declare -f qio); qio '$uri' 'write -P 0x5a 65536 131072' && qio '$uri' 'read -P 0x5a 65536 131072'"
        check "$name: flush" qio "$uri" "flush"
        check "$name: kill" "$here/$script" kill "$d"
        check "$name: killed process gone" gone "$pid"
        check "$name: restart on the same URI" bash -c "'$here/$script' restart '$d' | grep -qxF 'NBD_URI=$uri'"
        check "$name: data kept across kill + restart" qio "$uri" "read -P 0x5a 65536 131072"
        pid=$(cat "$d/pid")
        check "$name: stop" "$here/$script" stop "$d"
        check "$name: stopped process gone" gone "$pid"
    done
done

# nbdkit faults
i=$((i + 1)); d="$work/$i"; mkdir -p "$d"; echo "$here/nbdkit.sh" >"$d/script"
if uri=$("$here/nbdkit.sh" start "$d" --error-rate 100% --error-switch 2>/dev/null | sed -n 's/^NBD_URI=//p'); then
    check "nbdkit error switch off: read ok" qio "$uri" "read 0 4096"
    "$here/nbdkit.sh" inject "$d"
    check "nbdkit error switch on: read fails" qio_fails "$uri" "read 0 4096"
    check "nbdkit error switch on: write fails" qio_fails "$uri" "write 0 4096"
    "$here/nbdkit.sh" heal "$d"
    check "nbdkit error switch healed: write ok" qio "$uri" "write 0 4096"
    "$here/nbdkit.sh" stop "$d" >/dev/null
else bad "nbdkit --error-switch: start"; fi

i=$((i + 1)); d="$work/$i"; mkdir -p "$d"; echo "$here/nbdkit.sh" >"$d/script"
if uri=$("$here/nbdkit.sh" start "$d" --error-range 8-15 2>/dev/null | sed -n 's/^NBD_URI=//p'); then
    check "nbdkit bad range: read of sector 8 fails" qio_fails "$uri" "read 4096 512"
    check "nbdkit bad range: write over sectors 7-8 fails" qio_fails "$uri" "write 3584 1024"
    check "nbdkit bad range: sectors 0-7 read ok" qio "$uri" "read 0 4096"
    check "nbdkit bad range: sector 16 on write ok" qio "$uri" "write 8192 4096"
    "$here/nbdkit.sh" stop "$d" >/dev/null
else bad "nbdkit --error-range: start"; fi

i=$((i + 1)); d="$work/$i"; mkdir -p "$d"; echo "$here/nbdkit.sh" >"$d/script"
if uri=$("$here/nbdkit.sh" start "$d" --plugin memory --delay-write 300ms 2>/dev/null | sed -n 's/^NBD_URI=//p'); then
    t0=$(date +%s%N); qio "$uri" "write 0 4096"; t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    if [ "$ms" -ge 300 ]; then ok "nbdkit delay filter: a write took ${ms} ms (>= 300)"; else bad "nbdkit delay filter: a write took ${ms} ms"; fi
    "$here/nbdkit.sh" stop "$d" >/dev/null
else bad "nbdkit --delay-write: start"; fi

if [ "${1:-}" = --ceph ]; then
    c="$work/ceph"
    if env_out=$("$here/ceph.sh" start "$c" --size 4G 2>"$work/ceph.err"); then
        ok "ceph: start to HEALTH_OK ($(grep -o 'HEALTH_OK.*' "$work/ceph.err"))"
        eval "$env_out"
        # fio's rbd engine: 16 MiB written sequentially with crc32c verify headers, read back
        # and verified; --verify_only re-reads the same blocks later (after an OSD SIGKILL,
        # and after the whole cluster was stopped and started again)
        fiorbd() { timeout 300 fio --name=selftest --ioengine=rbd --clientname=admin --pool="$RBD_POOL" \
            --rbdname="$RBD_IMAGE" --rw=write --bs=64k --iodepth=8 --size=16M --verify=crc32c \
            --verify_fatal=1 "$@"; }
        export CEPH_CONF
        check "ceph: fio rbd write + verify 16 MiB" fiorbd
        # a random 4 KiB write stream on 64-128 MiB while the OSD is SIGKILLed and restarted
        timeout 300 fio --name=stream --ioengine=rbd --clientname=admin --pool="$RBD_POOL" \
            --rbdname="$RBD_IMAGE" --rw=randwrite --bs=4k --iodepth=16 --offset=64M --size=64M \
            --time_based --runtime=20 >"$work/stream.out" 2>&1 &
        stream=$!
        sleep 3
        check "ceph: restart-osd --kill under a write stream" "$here/ceph.sh" restart-osd "$c" --kill
        check "ceph: the write stream saw no error" wait "$stream"
        check "ceph: verify after the OSD restart" fiorbd --verify_only
        check "ceph: stop" "$here/ceph.sh" stop "$c"
        check "ceph: start again" "$here/ceph.sh" start "$c"
        check "ceph: verify after stop + start" fiorbd --verify_only
        check "ceph: destroy" "$here/ceph.sh" destroy "$c"
    else
        bad "ceph: start"; tail -n 5 "$work/ceph.err"
        "$here/ceph.sh" stop "$c" >/dev/null 2>&1
    fi
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
