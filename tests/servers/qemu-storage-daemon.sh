#!/usr/bin/env bash
# qemu-storage-daemon exporting a raw or qcow2 image over NBD, for tests.
#
#   qemu-storage-daemon.sh start DIR [options]   start, wait for the handshake, print NBD_URI=...
#   qemu-storage-daemon.sh stop DIR              SIGTERM (SIGKILL after 10 s)
#   qemu-storage-daemon.sh kill DIR              SIGKILL at once (keeps DIR/cmd for restart)
#   qemu-storage-daemon.sh restart DIR           same command line again, same address
#   qemu-storage-daemon.sh uri DIR               print the NBD_URI=... lines again
#
# start options:
#   --unix                 listen on DIR/nbd.sock (the default when --tcp is not given)
#   --tcp PORT|auto        listen on 127.0.0.1:PORT instead (one --nbd-server per daemon)
#   --image FILE           export FILE (default: create DIR/disk.FORMAT with qemu-img)
#   --format raw|qcow2     image format (default raw); a qcow2 opens its backing chain
#   --size SIZE            size of a created image (default 64M)
#   --backing FILE         create DIR/disk.qcow2 as an overlay over FILE
#   --export NAME          export name (default "disk")
#   --max-connections N    the NBD server's limit (default 0: none)
#   --direct               cache.direct=on (O_DIRECT) on the file
#   --aio MODE             threads|native|io_uring (native needs --direct)
#   --readonly             export read-only
#   -- ARGS...             more qemu-storage-daemon arguments, appended
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

unix="" tcp="" image="" format=raw size=64M backing="" export=disk maxconn=0 direct=off aio="" ro=""
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
        --max-connections) maxconn=$2; shift ;;
        --direct) direct=on ;;
        --aio) aio=$2; shift ;;
        --readonly) ro=1 ;;
        --) shift; extra=("$@"); break ;;
        *) usage ;;
    esac
    shift
done
[ -n "$unix" ] && [ -n "$tcp" ] && srv_die "one --nbd-server per daemon: --unix or --tcp"
[ -z "$tcp" ] && unix=1

dir=$(srv_mkdir "$dir")
rm -f "$dir/log"
[ -n "$image" ] || image=$(srv_make_image "$dir" "$format" "$size" "$backing")
[ -e "$image" ] || srv_die "no image $image"
image=$(realpath "$image")
case "$image" in *,*) srv_die "image path $image has a comma (QEMU option syntax)" ;; esac

writable=on readonly=off
[ -n "$ro" ] && { writable=off; readonly=on; }
file="driver=file,node-name=file0,filename=$image,cache.direct=$direct,discard=unmap,read-only=$readonly"
[ -n "$aio" ] && file+=",aio=$aio"

sock="" port=""
if [ -n "$unix" ]; then
    sock="$dir/nbd.sock"
    [ ${#sock} -lt 108 ] || srv_die "socket path $sock is too long for a Unix socket (108 bytes)"
    rm -f "$sock"
    server="addr.type=unix,addr.path=$sock,max-connections=$maxconn"
else
    port=$tcp
    [ "$port" = auto ] && port=$(srv_free_port)
    server="addr.type=inet,addr.host=127.0.0.1,addr.port=$port,max-connections=$maxconn"
fi

args=(qemu-storage-daemon
      --blockdev "$file"
      --blockdev "driver=$format,node-name=disk0,file=file0,discard=unmap,read-only=$readonly"
      --nbd-server "$server"
      --export "type=nbd,id=exp0,node-name=disk0,name=$export,writable=$writable"
      "${extra[@]}")

srv_set_uris "$dir" "$export" "$sock" "$port"
srv_launch "$dir" "${args[@]}"
srv_wait_nbd "$dir" "$(cat "$dir/uri")" || { srv_stop "$dir"; exit 1; }
srv_print "$dir"
