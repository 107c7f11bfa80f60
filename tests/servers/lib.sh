# Shared helpers for the test servers in this folder; sourced, not run.
#
# A server lives in one directory the caller gives (DIR). Start writes:
#   DIR/pid       the server's PID (it leads its own process group: stop ends the group)
#   DIR/cmd       the command line, one shell-quoted word per line (restart replays it)
#   DIR/log       the server's stdout and stderr
#   DIR/uri       the URI to use (Unix socket if there is one, else TCP)
#   DIR/uri.unix, DIR/uri.tcp   each transport the server listens on
# and prints, on stdout only, lines a caller can eval:
#   NBD_URI=...  NBD_URI_UNIX=...  NBD_URI_TCP=...  NBD_PIDFILE=...
# Everything else goes to stderr.
set -o pipefail

srv_die() { echo "$(basename "$0"): $*" >&2; exit 1; }
srv_note() { echo "$(basename "$0"): $*" >&2; }

# A free TCP port on 127.0.0.1 (checked with ss; a later bind can still lose a race, so
# callers that start a server on it retry on a bind failure).
srv_free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if command -v ss >/dev/null; then
            [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] && { echo "$p"; return 0; }
        else
            python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$p))" 2>/dev/null && { echo "$p"; return 0; }
        fi
    done
    srv_die "no free port found"
}

# Size strings like 64M, 1G, 4096 to bytes.
srv_bytes() {
    numfmt --from=iec "$1"
}

# srv_launch DIR WORD...: runs the command in its own session (so its process group can be
# ended as a whole), records the PID and the command line.
srv_launch() {
    local dir=$1; shift
    : >"$dir/cmd"
    local w
    for w in "$@"; do printf '%q\n' "$w" >>"$dir/cmd"; done
    echo fg >"$dir/launch"
    setsid "$@" >>"$dir/log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
}

# srv_launch_daemon DIR WORD...: for a server that daemonizes itself and writes DIR/pid when
# it is ready (nbdkit -P, nbd-server -p). nbdkit 1.32 in --foreground sets
# PR_SET_PDEATHSIG (it dies with the shell that started it), so it runs as a daemon here.
srv_launch_daemon() {
    local dir=$1; shift
    : >"$dir/cmd"
    local w
    for w in "$@"; do printf '%q\n' "$w" >>"$dir/cmd"; done
    echo daemon >"$dir/launch"
    rm -f "$dir/pid"
    setsid "$@" >>"$dir/log" 2>&1 </dev/null || { tail -n 30 "$dir/log" >&2; return 1; }
    for _ in $(seq 1 100); do
        [ -s "$dir/pid" ] && return 0
        sleep 0.1
    done
    srv_note "no PID file $dir/pid after 10 s; log:"
    tail -n 30 "$dir/log" >&2
    return 1
}

srv_pid() { [ -s "$1/pid" ] && cat "$1/pid"; }

srv_alive() {
    local pid
    pid=$(srv_pid "$1") || return 1
    kill -0 "$pid" 2>/dev/null
}

# Wait until an NBD handshake on URI succeeds (nbdinfo --size), the server exits, or
# TIMEOUT seconds pass.
srv_wait_nbd() {
    local dir=$1 uri=$2 timeout=${3:-20} t0
    t0=$(date +%s)
    while :; do
        if nbdinfo --size "$uri" >/dev/null 2>&1; then return 0; fi
        if ! srv_alive "$dir"; then
            srv_note "server exited during start; its log:"
            tail -n 30 "$dir/log" >&2
            return 1
        fi
        if [ $(( $(date +%s) - t0 )) -ge "$timeout" ]; then
            srv_note "no NBD handshake on $uri after ${timeout}s; log:"
            tail -n 30 "$dir/log" >&2
            return 1
        fi
        sleep 0.1
    done
}

# Signal the server's process group (per-connection children included), wait for it.
srv_signal_wait() {
    local dir=$1 sig=$2 timeout=${3:-10} pid
    pid=$(srv_pid "$dir") || return 0
    kill -"$sig" -- "-$pid" 2>/dev/null || kill -"$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((timeout * 10))); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# Stop: SIGTERM, then SIGKILL after 10 s. Removes the PID file and the socket.
srv_stop() {
    local dir=$1
    [ -s "$dir/pid" ] || { srv_note "nothing running in $dir"; return 0; }
    srv_signal_wait "$dir" TERM 10 || srv_signal_wait "$dir" KILL 5 ||
        srv_die "PID $(srv_pid "$dir") survived SIGKILL"
    rm -f "$dir/pid" "$dir"/*.sock
}

# Kill: SIGKILL at once (fault tests: the server dies without a clean shutdown). Keeps the
# command line so that restart brings the same server back on the same address.
srv_kill() {
    local dir=$1
    [ -s "$dir/pid" ] || srv_die "nothing running in $dir"
    srv_signal_wait "$dir" KILL 5 || srv_die "PID $(srv_pid "$dir") survived SIGKILL"
    rm -f "$dir/pid" "$dir"/*.sock
}

# Restart: the same command line again (after a stop or a kill), then wait for the handshake.
srv_restart() {
    local dir=$1
    [ -s "$dir/cmd" ] || srv_die "$dir has no command line to replay"
    if srv_alive "$dir"; then srv_kill "$dir"; fi
    local -a cmd=()
    local w
    while IFS= read -r w; do eval "cmd+=($w)"; done <"$dir/cmd"
    rm -f "$dir"/*.sock
    if [ "$(cat "$dir/launch" 2>/dev/null)" = daemon ]; then
        srv_launch_daemon "$dir" "${cmd[@]}"
    else
        srv_launch "$dir" "${cmd[@]}"
    fi
    srv_wait_nbd "$dir" "$(cat "$dir/uri")" || return 1
    srv_print "$dir"
}

srv_print() {
    local dir=$1
    echo "NBD_URI=$(cat "$dir/uri")"
    [ -s "$dir/uri.unix" ] && echo "NBD_URI_UNIX=$(cat "$dir/uri.unix")"
    [ -s "$dir/uri.tcp" ] && echo "NBD_URI_TCP=$(cat "$dir/uri.tcp")"
    echo "NBD_PIDFILE=$dir/pid"
}

# Record the URIs of a server listening on SOCK (may be empty) and/or PORT (may be empty).
srv_set_uris() {
    local dir=$1 export=$2 sock=$3 port=$4
    rm -f "$dir/uri" "$dir/uri.unix" "$dir/uri.tcp"
    [ -n "$port" ] && echo "nbd://127.0.0.1:$port/$export" >"$dir/uri.tcp"
    [ -n "$sock" ] && echo "nbd+unix:///$export?socket=$sock" >"$dir/uri.unix"
    if [ -n "$sock" ]; then cp "$dir/uri.unix" "$dir/uri"; else cp "$dir/uri.tcp" "$dir/uri"; fi
}

# The image a server exports: --image FILE as given, or a new one made with qemu-img in DIR
# (DIR/disk.raw or DIR/disk.qcow2 of --size, over --backing when given).
srv_make_image() {
    local dir=$1 format=$2 size=$3 backing=$4
    local img="$dir/disk.$format"
    [ -e "$img" ] && { echo "$img"; return 0; }
    if [ -n "$backing" ]; then
        [ "$format" = qcow2 ] || srv_die "--backing needs --format qcow2"
        local bfmt
        bfmt=$(qemu-img info --output=json "$backing" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])') ||
            srv_die "cannot read $backing"
        qemu-img create -q -f qcow2 -b "$(realpath "$backing")" -F "$bfmt" "$img" ${size:+"$size"} >&2 ||
            srv_die "qemu-img create failed"
    else
        qemu-img create -q -f "$format" "$img" "$size" >&2 || srv_die "qemu-img create failed"
    fi
    echo "$img"
}

srv_mkdir() {
    local dir=$1
    mkdir -p "$dir" || srv_die "cannot create $dir"
    dir=$(realpath "$dir")
    if srv_alive "$dir"; then srv_die "a server is already running in $dir (PID $(srv_pid "$dir"))"; fi
    echo "$dir"
}
