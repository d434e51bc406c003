#!/usr/bin/env bash
# Entrypoint of the dsw worker image in Docker-in-Docker mode (target worker-dind), run by tini:
#
#   1. checks that it runs --privileged and that the inner daemon can enforce limits: cgroup v2 (with
#      a private cgroup namespace) moves itself into a leaf cgroup and delegates every controller, as
#      moby's hack/dind does; cgroup v1 needs the memory, cpu and pids hierarchies mounted writable,
#      which --privileged gives;
#   2. picks a storage driver that works nested (overlay2 on a volume, else fuse-overlayfs, else vfs)
#      and, when the container shares the host's network namespace (--network host), gives dockerd a
#      network namespace of its own, so that it never touches the host's docker0 or iptables;
#   3. starts dockerd on /var/run/docker.sock and waits until it answers;
#   4. loads every $DSW_DIND_IMAGES_DIR/*.tar[.gz] (`docker save` output) and builds each sandbox
#      image still missing as /opt/dsw/sandbox/<type>/sandbox.toml says (`[build]`: the Dockerfile,
#      default <type>/Dockerfile, and build arguments; its base images are pulled, or come from those
#      tarballs);
#   5. runs the command (default `dsw worker`) as user dsw with no capabilities (setpriv); only the
#      docker group's access to the inner socket remains;
#   6. SIGTERM/SIGINT go to the worker, which stops taking jobs and drains; once it has exited,
#      dockerd is stopped (SIGTERM, then SIGKILL after DSW_DOCKERD_STOP_TIMEOUT_S). If dockerd dies
#      first, the worker is stopped and the container exits 1, for a restart policy to act on.
#
# Settings (environment; the worker's own are WORKER_*):
#   DSW_DIND_IMAGES_DIR          /var/lib/dsw/images  tarballs to load
#   DSW_DIND_BUILD               missing              `missing`: build absent sandbox images; `never`
#   DSW_DIND_NETWORK             auto                 dockerd's network namespace: `container` (the
#                                                     container's: bridge, NAT, pulls, builds work),
#                                                     `isolated` (its own, empty: none of those), `auto`
#                                                     (isolated where the host's network is shared)
#   DSW_DOCKERD_ARGS             (empty)              more dockerd flags, e.g. --storage-driver=vfs
#   DSW_DOCKERD_LOG_LEVEL        warn                 dockerd's log level (its lines go to stderr)
#   DSW_DOCKERD_START_TIMEOUT_S  60                   how long dockerd may take to answer
#   DSW_DOCKERD_STOP_TIMEOUT_S   20                   how long dockerd may take to stop
#   DSW_RUN_AS                   dsw                  user of the worker process (`root`: no drop)
set -uo pipefail

images_dir=${DSW_DIND_IMAGES_DIR:-/var/lib/dsw/images}
build_mode=${DSW_DIND_BUILD:-missing}
network_mode=${DSW_DIND_NETWORK:-auto}
start_timeout_s=${DSW_DOCKERD_START_TIMEOUT_S:-60}
stop_timeout_s=${DSW_DOCKERD_STOP_TIMEOUT_S:-20}
run_as=${DSW_RUN_AS:-dsw}
socket=/var/run/docker.sock
export DOCKER_HOST=unix://$socket

dockerd_pid=""
worker_pid=""
child_pid=""  # a long set-up step (image load or build) running in the background
stop_signal=""

helper=/opt/dsw/dind-helper.py
python=/opt/dsw/venv/bin/python

# Lines like the worker's (WORKER_LOG_FORMAT=keyvalue): ts=... level=... logger=dsw.dind msg=...
log() {
    printf 'ts=%s level=%s logger=dsw.dind msg=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$1" "${*:2}" >&2
}
die() { log error "$*"; stop_dockerd; exit 1; }

# shellcheck disable=SC2329 # called by the traps below
on_signal() {
    stop_signal=$1
    if [ -n "$worker_pid" ]; then
        log info "SIG$1: passing it to the worker; dockerd stops once the worker has drained"
        kill -s "$1" "$worker_pid" 2>/dev/null
    else
        log info "SIG$1: stopping"
        [ -z "$child_pid" ] || kill -TERM "$child_pid" 2>/dev/null
    fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT

# Waits for a child, surviving trapped signals; its exit status in `status`.
status=0
wait_for() {
    local finished=""
    while :; do
        wait -n -p finished "$1"
        status=$?
        if [ -n "${finished:-}" ] || [ "$status" = 127 ]; then
            return 0
        fi
    done
}

# Runs a set-up command in the background so that a signal can interrupt it; returns its status.
step() {
    "$@" &
    child_pid=$!
    wait_for "$child_pid"
    child_pid=""
    return "$status"
}

stop_dockerd() {
    [ -n "$dockerd_pid" ] || return 0
    log info "stopping dockerd (pid $dockerd_pid)"
    local started=$SECONDS
    kill -TERM "$dockerd_pid" 2>/dev/null
    sleep "$stop_timeout_s" &
    local timer=$!
    while :; do
        local finished=""
        wait -n -p finished "$dockerd_pid" "$timer"
        status=$?
        if [ "${finished:-}" = "$timer" ]; then
            log warning "dockerd did not stop within ${stop_timeout_s}s: killing it"
            kill -KILL "$dockerd_pid" 2>/dev/null
            wait_for "$dockerd_pid"
            break
        fi
        [ -z "${finished:-}" ] && [ "$status" != 127 ] || break
    done
    kill "$timer" 2>/dev/null
    log info "dockerd stopped status=$status after $((SECONDS - started))s"
    dockerd_pid=""
}

# ---- 1. privileges and cgroups --------------------------------------------------------------------
capabilities=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
if (( (0x$capabilities >> 21 & 1) == 0 )); then
    die "no CAP_SYS_ADMIN: Docker-in-Docker needs \`docker run --privileged\` (see the README)"
fi
# --privileged mounts the cgroup hierarchies writable. Without it (where the host cannot grant every
# capability, the README's alternative flags) they come read-only: remount this container's view
# read-write; `bind` changes only this mount, never the hierarchy's superblock.
while read -r target; do
    mount -o remount,bind,rw "$target" \
        || die "cannot make $target writable: run with --privileged, or with the README's" \
            "--cap-add=ALL --security-opt seccomp=unconfined --security-opt systempaths=unconfined"
done < <(awk '$5 ~ "^/sys/fs/cgroup" && $6 ~ "^ro" && / - cgroup2? / { print $5 }' /proc/self/mountinfo)
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    if [ "$(cat /proc/self/cgroup)" = "0::/" ]; then
        # A cgroup with processes cannot delegate controllers to children: move every process of
        # the namespace's root cgroup into /init, then enable all controllers for the children.
        mkdir -p /sys/fs/cgroup/init
        xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
        sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
            > /sys/fs/cgroup/cgroup.subtree_control \
            || log warning "could not delegate the cgroup v2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
    else
        log warning "cgroup v2 without a private cgroup namespace ($(cat /proc/self/cgroup)): run with" \
            "--cgroupns=private, or the inner daemon cannot enforce limits"
    fi
else
    for controller in memory cpu pids; do
        [ -d "/sys/fs/cgroup/$controller" ] && [ -w "/sys/fs/cgroup/$controller" ] \
            || log warning "cgroup v1 controller $controller is not mounted writable at /sys/fs/cgroup/$controller"
    done
fi

# ---- 2. storage driver and network ----------------------------------------------------------------
read -r -a dockerd_args <<< "${DSW_DOCKERD_ARGS:-}"
if [[ " ${dockerd_args[*]} " != *" --storage-driver"* && " ${dockerd_args[*]} " != *" -s "* ]]; then
    root_fs=$(stat -f -c %T /var/lib/docker)
    if [ "$root_fs" = overlayfs ]; then
        # overlay2 cannot use a directory on overlayfs as its upper layer. fuse-overlayfs (needs
        # /dev/fuse) measured 12 s against overlay2's 8 s from `docker run` to a script's result
        # with the sandboxes loaded; vfs copies every layer: 45 s to load the same images.
        if command -v fuse-overlayfs >/dev/null && [ -c /dev/fuse ]; then
            dockerd_args+=(--storage-driver=fuse-overlayfs)
        else
            dockerd_args+=(--storage-driver=vfs)
        fi
        log warning "/var/lib/docker is on the container's overlay root, not a volume:" \
            "using ${dockerd_args[-1]#--storage-driver=} (slower); mount a volume there for overlay2"
    fi
fi
# A Docker bridge (docker0, br-*) or veth here means this is the host's network namespace
# (--network host): a dockerd here would take over the host's docker0 (and delete it when started
# with --bridge=none) and rewrite the host's iptables.
host_network=""
for link in /sys/class/net/docker0 /sys/class/net/br-* /sys/class/net/veth*; do
    if [ -e "$link" ]; then host_network=${link##*/}; break; fi
done
if [ "$network_mode" = auto ]; then
    if [ -n "$host_network" ]; then network_mode=isolated; else network_mode=container; fi
fi
dockerd_prefix=()
case "$network_mode" in
    container)
        [ -z "$host_network" ] || die "DSW_DIND_NETWORK=container but this network namespace has" \
            "$host_network, the host's: dockerd would take over the host's network"
        ;;
    isolated)
        dockerd_prefix=(unshare --net --)
        log warning "dockerd runs in a network namespace of its own, with no way out" \
            "${host_network:+(the host network is shared here: $host_network)}:" \
            "sandbox images must come from $images_dir, and sandbox types with network = true" \
            "cannot reach the network; give the container a network of its own for those"
        ;;
    *) die "DSW_DIND_NETWORK must be auto, container or isolated, not $network_mode" ;;
esac

# ---- 3. dockerd -----------------------------------------------------------------------------------
# A restarted container keeps /var/run: stale pid files would stop dockerd and containerd.
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
started=$SECONDS
"${dockerd_prefix[@]}" dockerd --host="unix://$socket" --group=docker \
    --log-level="${DSW_DOCKERD_LOG_LEVEL:-warn}" "${dockerd_args[@]}" &
dockerd_pid=$!
until docker version >/dev/null 2>&1; do
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
        wait_for "$dockerd_pid"
        dockerd_pid=""
        die "dockerd exited with status $status before answering"
    fi
    [ -z "$stop_signal" ] || { stop_dockerd; exit 0; }
    (( SECONDS - started < start_timeout_s )) || die "dockerd did not answer within ${start_timeout_s}s"
    sleep 0.1
done
# What the inner daemon can enforce: the worker's preflight refuses to start if a limit would not
# hold; this says why, early.
info=$(docker info --format '{{json .}}' 2>/dev/null) || info='{}'
while read -r level message; do
    log "$level" "$message"
done < <("$python" "$helper" limits "$info" "${WORKER_ENABLE_RESOURCE_LIMITS:-true}")
log info "dockerd answers after $((SECONDS - started))s (pid $dockerd_pid)"

# ---- 4. sandbox images ----------------------------------------------------------------------------
shopt -s nullglob
for tarball in "$images_dir"/*.tar "$images_dir"/*.tar.gz; do
    [ -z "$stop_signal" ] || break
    log info "loading $tarball"
    step docker load -q -i "$tarball" >&2 || log warning "could not load $tarball"
done
# Each served type's image, from its sandbox.toml (as the worker reads it).
types=$("$python" "$helper" images) \
    || log warning "could not read the sandbox types; the worker will say why"
while read -r type image dockerfile; do
    [ -n "$type" ] && [ -z "$stop_signal" ] || continue
    docker image inspect "$image" >/dev/null 2>&1 && continue
    if [ "$build_mode" != missing ] || [ ! -f "$dockerfile" ]; then
        log warning "image $image is missing; the worker will try to pull it"
        continue
    fi
    log info "building $image from $dockerfile"
    build_started=$SECONDS
    # The build's RUN steps use dockerd's network namespace directly: no bridge or NAT needed.
    # The helper becomes `docker build` with the type's Dockerfile and build arguments.
    if step "$python" "$helper" build "$type" -q --network=host >/dev/null; then
        log info "built $image in $((SECONDS - build_started))s"
    else
        log warning "could not build $image; the worker will try to pull it"
    fi
done <<< "$types"
if [ -n "$stop_signal" ]; then
    stop_dockerd
    exit 0
fi

# ---- 5. the egress network ------------------------------------------------------------------------
# Types with network = "egress" reach only the worker's proxy, on an internal network whose filter
# (iptables, root's) lets its sandboxes reach that port and nothing else. The worker runs without
# capabilities, so the network and its filter are made here and named to it.
if [ -z "${WORKER_EGRESS_NETWORK:-}" ] && "$python" "$helper" egress; then
    if [ "$network_mode" = isolated ]; then
        log warning "network = egress types need the worker beside dockerd's network:" \
            "give the container a network of its own (DSW_DIND_NETWORK=container)"
    else
        egress_port=${WORKER_EGRESS_PROXY_PORT:-0}
        [ "$egress_port" != 0 ] || egress_port=3128
        docker network rm dsw-egress >/dev/null 2>&1 || true
        step docker network create --internal --label dsw.project=dsw \
            -o com.docker.network.bridge.name=dsw-egress0 \
            -o com.docker.network.bridge.enable_icc=false dsw-egress >/dev/null \
            || die "could not create the egress network dsw-egress"
        gateway=$(docker network inspect -f '{{(index .IPAM.Config 0).Gateway}}' dsw-egress)
        step "$python" -m dsw.egress.filter up dsw-egress0 "$gateway" "$egress_port" \
            || die "could not filter the egress network (iptables)"
        export WORKER_EGRESS_NETWORK=dsw-egress WORKER_EGRESS_PROXY_PORT=$egress_port
        log info "egress network dsw-egress, proxy at $gateway:$egress_port"
    fi
fi

# ---- 6. the worker --------------------------------------------------------------------------------
[ $# -gt 0 ] || set -- dsw worker
export WORKER_DOCKER_HOST=$DOCKER_HOST
if [ "$run_as" = root ]; then
    "$@" &
else
    setpriv --reuid="$run_as" --regid="$run_as" --init-groups --no-new-privs \
        --inh-caps=-all --bounding-set=-all -- "$@" &
fi
worker_pid=$!
log info "started the worker (pid $worker_pid, user $run_as): $*"
# A signal that came before worker_pid was set is passed on now.
[ -z "$stop_signal" ] || kill -s "$stop_signal" "$worker_pid" 2>/dev/null

# ---- 6. wait; stop dockerd after the worker -------------------------------------------------------
exit_code=0
while :; do
    done_pid=""
    wait -n -p done_pid "$worker_pid" ${dockerd_pid:+"$dockerd_pid"}
    code=$?
    [ -n "${done_pid:-}" ] || continue  # a trapped signal interrupted the wait
    if [ "$done_pid" = "$worker_pid" ]; then
        exit_code=$code
        log info "the worker exited with status $code"
        break
    fi
    log error "dockerd exited with status $code under the worker; stopping the worker"
    dockerd_pid=""
    exit_code=1
    kill -TERM "$worker_pid" 2>/dev/null
done
worker_pid=""
stop_dockerd
exit "$exit_code"
