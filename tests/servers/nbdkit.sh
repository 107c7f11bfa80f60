#!/usr/bin/env bash
# nbdkit (file or memory plugin, optional error and delay filters), for tests.
#
#   nbdkit.sh start DIR [options]     start, wait for the handshake, print NBD_URI=... lines
#   nbdkit.sh stop DIR                SIGTERM (SIGKILL after 10 s)
#   nbdkit.sh kill DIR                SIGKILL at once (keeps DIR/cmd for restart)
#   nbdkit.sh restart DIR             same command line again, same address
#   nbdkit.sh uri DIR                 print the NBD_URI=... lines again
#   nbdkit.sh inject DIR | heal DIR   create / remove DIR/inject, the error filter's switch
#                                     (with --error-switch: errors only while it exists)
#
# start options:
#   --unix                 listen on DIR/nbd.sock (the default when --tcp is not given)
#   --tcp PORT|auto        listen on 127.0.0.1:PORT instead (nbdkit takes -U or -p, not both)
#   --plugin file|memory   (default file)
#   --image FILE           file plugin: export FILE (default: create DIR/disk.raw)
#   --size SIZE            size of a created image, or of the memory disk (default 64M)
#   --export NAME          export name (default "disk"; nbdkit serves any name it is asked)
#   --threads N            nbdkit's -t (default: nbdkit's 16)
#   --readonly             export read-only
#   Faults, each adds a filter (nbdkit runs the first named filter outermost):
#   --error-rate R         error filter: fail this share of requests (10%, 0.1, 100%)
#   --error-ops LIST       which requests it fails: read,write,trim,zero,extents,cache
#                          (default read,write), as error-pread-rate=R etc.
#   --error ERRNO          EIO (default), ENOSPC, EPERM, EINVAL, ENOMEM, ESHUTDOWN
#   --error-switch         errors only while DIR/inject exists (nbdkit.sh inject/heal DIR)
#   --error-range S-E[,S-E]   sectors S..E (inclusive, 512 bytes) fail with EIO on the ops of
#                          --error-range-ops (default read,write): serves the image through
#                          nbdkit-badrange.py (python plugin) instead of the file plugin
#   --error-range-ops LIST read,write,trim,zero
#   --delay-read T | --delay-write T | --delay-zero T | --delay-trim T
#                          delay filter: T is seconds or NNms
#   --filter NAME          another nbdkit filter (its parameters go after --)
#   -- ARGS...             more plugin/filter parameters (key=value), appended
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
verb=$1 dir=$2; shift 2

case "$verb" in
    stop) srv_stop "$dir"; exit ;;
    kill) srv_kill "$dir"; exit ;;
    restart) srv_restart "$dir"; exit ;;
    uri) srv_print "$dir"; exit ;;
    inject) touch "$dir/inject"; exit ;;
    heal) rm -f "$dir/inject"; exit ;;
    start) ;;
    *) usage ;;
esac

unix="" tcp="" plugin=file image="" size=64M export=disk threads="" ro=""
erate="" eops="read,write" errno_="" eswitch="" erange="" erange_ops="read,write"
delays=() filters=() extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --unix) unix=1 ;;
        --tcp) tcp=$2; shift ;;
        --plugin) plugin=$2; shift ;;
        --image) image=$2; shift ;;
        --size) size=$2; shift ;;
        --export) export=$2; shift ;;
        --threads) threads=$2; shift ;;
        --readonly) ro=1 ;;
        --error-rate) erate=$2; shift ;;
        --error-ops) eops=$2; shift ;;
        --error) errno_=$2; shift ;;
        --error-switch) eswitch=1 ;;
        --error-range) erange=$2; shift ;;
        --error-range-ops) erange_ops=$2; shift ;;
        --delay-read|--delay-write|--delay-zero|--delay-trim) delays+=("${1#--}=$2"); shift ;;
        --filter) filters+=("--filter=$2"); shift ;;
        --) shift; extra=("$@"); break ;;
        *) usage ;;
    esac
    shift
done
[ -n "$unix" ] && [ -n "$tcp" ] && srv_die "nbdkit listens on one address: --unix or --tcp"
[ -z "$tcp" ] && unix=1

dir=$(srv_mkdir "$dir")
rm -f "$dir/log" "$dir/inject"

args=(nbdkit --pidfile="$dir/pid" --export-name="$export")
[ -n "$threads" ] && args+=(--threads="$threads")
[ -n "$ro" ] && args+=(--readonly)

sock="" port=""
if [ -n "$unix" ]; then
    sock="$dir/nbd.sock"
    [ ${#sock} -lt 108 ] || srv_die "socket path $sock is too long for a Unix socket (108 bytes)"
    rm -f "$sock"
    args+=(--unix="$sock")
else
    port=$tcp
    [ "$port" = auto ] && port=$(srv_free_port)
    args+=(--ipaddr=127.0.0.1 --port="$port")
fi

params=()
if [ -n "$erate" ]; then
    args+=(--filter=error)
    [ -n "$errno_" ] && params+=("error=$errno_")
    IFS=, read -r -a ops <<<"$eops"
    for op in "${ops[@]}"; do
        case "$op" in
            read) op=pread ;; write) op=pwrite ;;
            trim|zero|extents|cache) ;;
            *) srv_die "unknown --error-ops entry $op" ;;
        esac
        params+=("error-$op-rate=$erate")
        [ -n "$eswitch" ] && params+=("error-$op-file=$dir/inject")
    done
fi
if [ ${#delays[@]} -gt 0 ]; then
    args+=(--filter=delay)
    params+=("${delays[@]}")
fi
args+=("${filters[@]}")

case "$plugin" in
    file)
        [ -n "$image" ] || image=$(srv_make_image "$dir" raw "$size" "")
        [ -e "$image" ] || srv_die "no image $image"
        image=$(realpath "$image")
        if [ -n "$erange" ]; then
            args+=(python "$here/nbdkit-badrange.py" "file=$image" "bad=$erange" "ops=$erange_ops")
        else
            args+=(file "file=$image")
        fi
        ;;
    memory)
        [ -z "$erange" ] || srv_die "--error-range works with the file plugin only"
        args+=(memory "size=$size")
        ;;
    *) srv_die "unknown plugin $plugin (file or memory)" ;;
esac
args+=("${params[@]}" "${extra[@]}")

srv_set_uris "$dir" "$export" "$sock" "$port"
srv_launch_daemon "$dir" "${args[@]}" || exit 1
srv_wait_nbd "$dir" "$(cat "$dir/uri")" || { srv_stop "$dir"; exit 1; }
srv_print "$dir"
