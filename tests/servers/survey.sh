#!/usr/bin/env bash
# Starts every NBD server configuration of this folder in turn, asks it with nbdinfo what it
# advertises, runs fio's nbd engine against it briefly, stops it, and prints one Markdown
# table (the one in README.md). Needs install.sh's packages.
#
#   bash tests/servers/survey.sh [FIO_SECONDS]      (default 3 s of fio per server)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-3}
work=$(mktemp -d /tmp/nbd-survey.XXXXXX)
trap 'for d in "$work"/*/; do [ -s "$d/pid" ] && "$(cat "$d/script")" stop "$d" >/dev/null 2>&1; done; rm -rf "$work"' EXIT

# label | script | start arguments | fio offset (skips a bad range)
configs=(
    "qemu-nbd raw|qemu-nbd.sh|--format raw|0"
    "qemu-nbd qcow2|qemu-nbd.sh|--format qcow2|0"
    "qemu-nbd qcow2 over a qcow2 base|qemu-nbd.sh|--format qcow2 --backing BASE|0"
    "qemu-nbd raw --shared 1|qemu-nbd.sh|--format raw --shared 1|0"
    "qemu-nbd raw --cache none --aio native|qemu-nbd.sh|--format raw --cache none --aio native|0"
    "qemu-nbd raw --readonly|qemu-nbd.sh|--format raw --readonly|ro"
    "qemu-storage-daemon raw|qemu-storage-daemon.sh|--format raw|0"
    "qemu-storage-daemon qcow2|qemu-storage-daemon.sh|--format qcow2|0"
    "qemu-storage-daemon raw --direct|qemu-storage-daemon.sh|--format raw --direct --aio native|0"
    "nbdkit file|nbdkit.sh|--plugin file|0"
    "nbdkit memory|nbdkit.sh|--plugin memory|0"
    "nbdkit file + error filter (switch off)|nbdkit.sh|--error-rate 100% --error-switch|0"
    "nbdkit file + delay filter 1ms|nbdkit.sh|--delay-read 1ms --delay-write 1ms|0"
    "nbdkit badrange.py (sectors 8-15 fail)|nbdkit.sh|--error-range 8-15|1M"
    "nbd-server|nbd-server.sh||0"
    "nbd-server --no-trim --no-fua|nbd-server.sh|--no-trim --no-fua|0"
)

base="$work/base.qcow2"
qemu-img create -q -f qcow2 "$base" 64M

printf '| server | protocol | structured | trim | flush | fua | multi_conn | zero | fast_zero | cache | df | block size min/pref/max | fio nbd 4k randrw QD16 (IOPS r+w) |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
i=0
for c in "${configs[@]}"; do
    IFS='|' read -r label script args fioofs <<<"$c"
    i=$((i + 1))
    d="$work/$i"
    mkdir -p "$d"
    echo "$here/$script" >"$d/script"
    args=${args//BASE/$base}
    # shellcheck disable=SC2086
    if ! "$here/$script" start "$d" $args >/dev/null 2>"$d/start.err"; then
        printf '| %s | start failed: %s |\n' "$label" "$(tail -n1 "$d/start.err")"
        continue
    fi
    uri=$(cat "$d/uri")
    info=$(nbdinfo --json "$uri")
    fiores="-"
    if [ "$fioofs" != ro ]; then
        fiojson=$(fio --name=probe --ioengine=nbd --uri="$uri" --rw=randrw --bs=4k --iodepth=16 \
            --size=16M --offset="$fioofs" --time_based --runtime="$secs" --output-format=json 2>/dev/null) || true
        fiores=$(printf '%s' "$fiojson" | python3 -c '
import json,sys
t=sys.stdin.read()
t=t[t.find("{"):]
try:
    j=json.loads(t)["jobs"][0]
    e=j.get("error",0)
    print("%d + %d%s" % (j["read"]["iops"], j["write"]["iops"], (" (error %d)" % e) if e else ""))
except Exception as ex:
    print("fio failed")
')
    fi
    printf '%s' "$info" | python3 -c '
import json,sys
label, fiores = sys.argv[1], sys.argv[2]
j=json.load(sys.stdin)
e=j["exports"][0]
yn=lambda k: "yes" if e.get(k) else "no"
bs="/".join(str(e[k]) for k in ("block_size_minimum","block_size_preferred","block_size_maximum")) if "block_size_minimum" in e else "none advertised"
ro=" (read-only)" if e.get("is_read_only") else ""
print("| %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (label, ro, j["protocol"], "yes" if j.get("structured") else "no",
  yn("can_trim"), yn("can_flush"), yn("can_fua"), yn("can_multi_conn"), yn("can_zero"), yn("can_fast_zero"), yn("can_cache"), yn("can_df"), bs, fiores))
' "$label" "$fiores"
    "$here/$script" stop "$d" >/dev/null 2>&1 || true
done
