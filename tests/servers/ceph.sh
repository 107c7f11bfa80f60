#!/usr/bin/env bash
# A one-node Ceph cluster (one monitor, one manager, one BlueStore OSD on a sparse file) in
# a directory, from Debian's ceph packages (bash tests/servers/install.sh ceph), started by
# hand: no systemd, no cephadm, no containers. Everything the cluster has is in DIR: its
# ceph.conf, fsid, keyrings, daemon data, logs, admin sockets; it listens on 127.0.0.1 only,
# the monitor on ports picked at creation (so that two clusters can run side by side).
#
#   ceph.sh start DIR [--size SIZE] [--pool NAME] [--image NAME] [--image-size SIZE]
#        creates the cluster on first use (the OSD's block file is SIZE, sparse, default
#        8G), starts mon, mgr and osd, creates the pool (default "rbd") and the RBD image
#        (default "disk", 1G) when missing, waits for HEALTH_OK, prints lines to eval:
#          CEPH_CONF=DIR/ceph.conf  CEPH_KEYRING=...  RBD_POOL=...  RBD_IMAGE=...
#          RBD_TARGET=rbd:POOL/IMAGE:conf=DIR/ceph.conf:id=admin:keyring=...   (QEMU's spelling)
#        A second start on a stopped cluster starts the same cluster again, data kept.
#   ceph.sh stop DIR                 SIGTERM to osd, mgr, mon (SIGKILL after 30 s)
#   ceph.sh restart-osd DIR [--kill] stop the OSD (SIGTERM, or SIGKILL with --kill), start it
#                                    again, wait until it is up and the pool's PGs are
#                                    active+clean; prints the seconds that took
#   ceph.sh status DIR               ceph -s
#   ceph.sh env DIR                  print the CEPH_CONF=... lines again
#   ceph.sh destroy DIR              stop, then remove DIR
#
# The client side: `ceph -c DIR/ceph.conf ...`, `rbd -c DIR/ceph.conf ...`, or export
# CEPH_CONF=DIR/ceph.conf. librbd reads the same conf (rados_conf_read_file) and the
# client.admin keyring it names.
set -euo pipefail

die() { echo "ceph.sh: $*" >&2; exit 1; }
note() { echo "ceph.sh: $*" >&2; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
verb=$1; dir=$2; shift 2

for t in ceph-mon ceph-mgr ceph-osd ceph rbd monmaptool ceph-authtool; do
    command -v "$t" >/dev/null || die "missing $t: bash tests/servers/install.sh ceph"
done

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return 0; }
    done
    die "no free port"
}

# ceph CLI against this cluster, with a timeout so that a dead monitor is an error, not a hang.
c() { timeout 60 ceph -c "$conf" --connect-timeout 20 "$@"; }

pidof_daemon() { # name: mon.a, mgr.x, osd.0
    local f="$dir/run/$1.pid"
    [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

stop_daemon() { # name [signal]
    local name=$1 sig=${2:-TERM} pid
    pid=$(pidof_daemon "$name") || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$dir/run/$name.pid"; return 0; }
        sleep 0.1
    done
    note "$name (PID $pid) still running after 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
    rm -f "$dir/run/$name.pid"
}

# Ceph daemons daemonize themselves and write "pid file" (ceph.conf); started with setsid so
# that they outlive the shell that started them.
start_daemon() { # name binary args...
    local name=$1; shift
    if pidof_daemon "$name" >/dev/null; then return 0; fi
    setsid "$@" -c "$conf" >>"$dir/log/$name.out" 2>&1 </dev/null || {
        tail -n 20 "$dir/log/$name.out" >&2
        die "$name did not start"
    }
    for _ in $(seq 1 100); do
        pidof_daemon "$name" >/dev/null && return 0
        sleep 0.1
    done
    tail -n 20 "$dir/log/$name.log" >&2 || true
    die "$name wrote no PID file"
}

wait_health_ok() { # timeout
    local t0 h
    t0=$(date +%s)
    while :; do
        h=$(c health 2>/dev/null || true)
        [ "$h" = HEALTH_OK ] && return 0
        if [ $(( $(date +%s) - t0 )) -ge "$1" ]; then
            c health detail >&2 || true
            return 1
        fi
        sleep 1
    done
}

wait_osd_up_clean() { # timeout
    local t0 s
    t0=$(date +%s)
    while :; do
        s=$(c osd stat -f json 2>/dev/null || true)
        if python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d.get("num_up_osds")==1 and d.get("num_in_osds")==1 else 1)' "$s" 2>/dev/null; then
            if c pg stat 2>/dev/null | grep -Eq '^[0-9]+ pgs: [0-9]+ active\+clean;'; then
                return 0
            fi
        fi
        if [ $(( $(date +%s) - t0 )) -ge "$1" ]; then
            c -s >&2 || true
            return 1
        fi
        sleep 0.5
    done
}

print_env() {
    local pool image
    pool=$(cat "$dir/pool") image=$(cat "$dir/image")
    echo "CEPH_CONF=$conf"
    echo "CEPH_KEYRING=$dir/ceph.client.admin.keyring"
    echo "RBD_POOL=$pool"
    echo "RBD_IMAGE=$image"
    echo "RBD_TARGET=rbd:$pool/$image:conf=$conf:id=admin:keyring=$dir/ceph.client.admin.keyring"
}

create_cluster() {
    local size=$1 fsid monport1 monport2
    fsid=$(uuidgen)
    monport2=$(free_port); monport1=$(free_port)
    mkdir -p "$dir"/{run,log,mon/ceph-a,mgr/ceph-x,osd/ceph-0}
    echo "$fsid" >"$dir/fsid"
    cat >"$conf" <<CONF
# generated by tests/servers/ceph.sh: a one-node test cluster, loopback only
[global]
fsid = $fsid
mon_initial_members = a
mon_host = [v2:127.0.0.1:$monport2,v1:127.0.0.1:$monport1]
public_network = 127.0.0.0/8
ms_bind_ipv4 = true
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = $dir/run
pid_file = $dir/run/\$name.pid
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
mon_cluster_log_file = $dir/log/cluster.log
crash_dir = $dir/crash
keyring = $dir/\$cluster.\$name.keyring
# one OSD: size-1 pools, no host-level failure domain, no warnings about either
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_allow_pool_delete = true
# a shared CI disk may be over 95% full (the monitor's data is a few MiB): the
# default crit level (5% free) made ceph-mon refuse to start, warn would block HEALTH_OK
mon_data_avail_warn = 2
mon_data_avail_crit = 1
# small machine: keep the OSD's memory down (the default target is 4 GiB)
osd_memory_target = 1073741824
[mon]
mon_data = $dir/mon/\$cluster-\$id
keyring = $dir/mon/\$cluster-\$id/keyring
[mgr]
mgr_data = $dir/mgr/\$cluster-\$id
keyring = $dir/mgr/\$cluster-\$id/keyring
[osd]
osd_data = $dir/osd/\$cluster-\$id
keyring = $dir/osd/\$cluster-\$id/keyring
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = $(numfmt --from=iec "$size")
bluestore_block_db_create = false
bluestore_block_wal_create = false
# a file on a shared disk: no O_DIRECT-only assumptions about a rotational device
bluestore_prefer_deferred_size_hdd = 0
CONF

    # keys: mon., client.admin (imported into the monitor's keyring), then mgr.x and osd.0
    ceph-authtool --create-keyring "$dir/mon-keyring.tmp" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$dir/ceph.client.admin.keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$dir/mon-keyring.tmp" --import-keyring "$dir/ceph.client.admin.keyring" >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$monport2,v1:127.0.0.1:$monport1]" \
        "$dir/monmap" >/dev/null
    rm -rf "$dir/mon/ceph-a"/store.db
    ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon-keyring.tmp" \
        >>"$dir/log/mkfs.out" 2>&1 || { tail "$dir/log/mkfs.out" >&2; die "ceph-mon --mkfs failed"; }
    rm -f "$dir/mon-keyring.tmp"
    [ -d "$dir/mon/ceph-a/store.db" ] || { tail "$dir/log/mkfs.out" >&2; die "ceph-mon --mkfs made no store"; }
    start_daemon mon.a ceph-mon -i a

    c auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
        -o "$dir/mgr/ceph-x/keyring" >/dev/null
    start_daemon mgr.x ceph-mgr -i x

    local uuid
    uuid=$(uuidgen)
    ceph-authtool --create-keyring "$dir/osd/ceph-0/keyring" --gen-key -n osd.0 >/dev/null
    local id
    id=$(c osd new "$uuid" -i <(python3 -c 'import json,sys; k=open(sys.argv[1]).read().split("key = ")[1].split()[0]; print(json.dumps({"cephx_secret": k}))' "$dir/osd/ceph-0/keyring"))
    [ "$id" = 0 ] || die "ceph osd new gave id $id, not 0"
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >>"$dir/log/mkfs.out" 2>&1 ||
        { tail "$dir/log/mkfs.out" >&2; die "ceph-osd --mkfs failed"; }
    start_daemon osd.0 ceph-osd -i 0
}

conf=""
case "$verb" in
    start)
        size=8G pool=rbd image=disk isize=1G
        while [ $# -gt 0 ]; do
            case "$1" in
                --size) size=$2; shift ;;
                --pool) pool=$2; shift ;;
                --image) image=$2; shift ;;
                --image-size) isize=$2; shift ;;
                *) usage ;;
            esac
            shift
        done
        mkdir -p "$dir"; dir=$(realpath "$dir"); conf="$dir/ceph.conf"
        t0=$(date +%s.%N)
        if [ -s "$dir/fsid" ]; then
            start_daemon mon.a ceph-mon -i a
            start_daemon mgr.x ceph-mgr -i x
            start_daemon osd.0 ceph-osd -i 0
        else
            create_cluster "$size"
        fi
        wait_osd_up_clean 300 || die "the OSD did not come up"
        if ! c osd pool ls | grep -qx "$pool"; then
            c osd pool create "$pool" 32 32 >/dev/null
            timeout 60 rbd -c "$conf" pool init "$pool"
        fi
        if ! timeout 60 rbd -c "$conf" info "$pool/$image" >/dev/null 2>&1; then
            timeout 60 rbd -c "$conf" create --size "$isize" "$pool/$image"
        fi
        echo "$pool" >"$dir/pool"; echo "$image" >"$dir/image"
        wait_health_ok 300 || die "no HEALTH_OK after 300 s"
        note "HEALTH_OK $(python3 -c "import sys,time; print('%.1f' % (time.time()-float(sys.argv[1])))" "$t0") s after start"
        print_env
        ;;
    stop)
        dir=$(realpath "$dir"); conf="$dir/ceph.conf"
        stop_daemon osd.0; stop_daemon mgr.x; stop_daemon mon.a
        ;;
    restart-osd)
        dir=$(realpath "$dir"); conf="$dir/ceph.conf"
        sig=TERM
        [ "${1:-}" = --kill ] && sig=KILL
        t0=$(date +%s.%N)
        stop_daemon osd.0 "$sig"
        start_daemon osd.0 ceph-osd -i 0
        wait_osd_up_clean 300 || die "the OSD did not come back"
        python3 -c "import sys,time; print('osd.0 back, PGs active+clean, %.1f s' % (time.time()-float(sys.argv[1])))" "$t0"
        ;;
    status)
        dir=$(realpath "$dir"); conf="$dir/ceph.conf"
        c -s
        ;;
    env)
        dir=$(realpath "$dir"); conf="$dir/ceph.conf"
        print_env
        ;;
    destroy)
        dir=$(realpath "$dir"); conf="$dir/ceph.conf"
        [ -s "$dir/fsid" ] || die "$dir is not a cluster made by ceph.sh"
        stop_daemon osd.0; stop_daemon mgr.x; stop_daemon mon.a
        rm -rf "$dir"
        ;;
    *) usage ;;
esac
