#!/usr/bin/env bash
# qemu-nbd serving a raw or qcow2 image, for tests.
#
#   qemu-nbd.sh start DIR [options]     start, wait for the handshake, print NBD_URI=... lines
#   qemu-nbd.sh stop DIR                SIGTERM (SIGKILL after 10 s), remove the socket
#   qemu-nbd.sh kill DIR                SIGKILL at once (keeps DIR/cmd for restart)
#   qemu-nbd.sh restart DIR             same command line again, same address
#   qemu-nbd.sh uri DIR                 print the NBD_URI=... lines again
#
# start options:
#   --unix                 listen on DIR/nbd.sock (the default when --tcp is not given)
#   --tcp PORT|auto        listen on 127.0.0.1:PORT instead (qemu-nbd takes one address;
#                          for both at once use qemu-storage-daemon.sh or two servers)
#   --image FILE           export FILE (default: create DIR/disk.FORMAT with qemu-img)
#   --format raw|qcow2     image format (default raw)
#   --size SIZE            size of a created image (default 64M)
#   --backing FILE         create DIR/disk.qcow2 as an overlay over FILE
#   --export NAME          export name (default "disk")
#   --shared N             clients at once (qemu-nbd's -e; default 8). qemu-nbd advertises
#                          multi-conn only when N > 1
#   --cache MODE           none|writeback|writethrough|directsync|unsafe (default writeback)
#   --aio MODE             threads|native|io_uring (default: qemu's)
#   --discard MODE         unmap|ignore (default unmap)
#   --readonly             export read-only
#   -- ARGS...             more qemu-nbd arguments, appended
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
    start) ;;
    *) usage ;;
esac

unix="" tcp="" image="" format=raw size=64M backing="" export=disk shared=8 cache=writeback aio="" discard=unmap ro=""
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --unix) unix=1 ;;
        --tcp) tcp=$2; shift ;;
        --image) image=$2; shift ;;
        --format) format=$2; shift ;;
        --size) size=$2; shift ;;
        --backing) backing=$2; shift ;;
        --export) export=$2; shift ;;
        --shared) shared=$2; shift ;;
        --cache) cache=$2; shift ;;
        --aio) aio=$2; shift ;;
        --discard) discard=$2; shift ;;
        --readonly) ro=1 ;;
        --) shift; extra=("$@"); break ;;
        *) usage ;;
    esac
    shift
done
[ -n "$unix" ] && [ -n "$tcp" ] && srv_die "qemu-nbd listens on one address: --unix or --tcp"
[ -z "$tcp" ] && unix=1

dir=$(srv_mkdir "$dir")
rm -f "$dir/log"
[ -n "$image" ] || image=$(srv_make_image "$dir" "$format" "$size" "$backing")
[ -e "$image" ] || srv_die "no image $image"

args=(qemu-nbd --persistent --format="$format" --export-name="$export" --shared="$shared"
      --cache="$cache" --discard="$discard")
[ -n "$aio" ] && args+=(--aio="$aio")
[ -n "$ro" ] && args+=(--read-only)

sock="" port=""
if [ -n "$unix" ]; then
    sock="$dir/nbd.sock"
    [ ${#sock} -lt 108 ] || srv_die "socket path $sock is too long for a Unix socket (108 bytes)"
    rm -f "$sock"
    args+=(--socket="$sock")
else
    port=$tcp
    [ "$port" = auto ] && port=$(srv_free_port)
    args+=(--bind=127.0.0.1 --port="$port")
fi
args+=("${extra[@]}" "$(realpath "$image")")

srv_set_uris "$dir" "$export" "$sock" "$port"
srv_launch "$dir" "${args[@]}"
srv_wait_nbd "$dir" "$(cat "$dir/uri")" || { srv_stop "$dir"; exit 1; }
srv_print "$dir"
