#!/usr/bin/env bash
# Make a Docker Engine answer: use the one at DOCKER_HOST / the default socket, else install
# Debian's docker.io and start dockerd in the background (root on Debian only).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
log_dir="$here/.local/log"

say() { printf '[provision:docker] %s\n' "$*"; }

ping_daemon() {
  local host=${WORKER_DOCKER_HOST:-${DOCKER_HOST:-unix:///var/run/docker.sock}}
  case "$host" in
    unix:*) local sock=${host#unix:}; sock=/${sock#"${sock%%[!/]*}"}
            curl -fsS --max-time 3 --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1 ;;
    tcp://*) DOCKER_HOST=$host docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

if ping_daemon; then
  say "daemon answers at ${WORKER_DOCKER_HOST:-${DOCKER_HOST:-unix:///var/run/docker.sock}}"
  exit 0
fi
if [ -n "${WORKER_DOCKER_HOST:-${DOCKER_HOST:-}}" ] && [ "${WORKER_DOCKER_HOST:-${DOCKER_HOST:-}}" != "unix:///var/run/docker.sock" ]; then
  say "no daemon answers at ${WORKER_DOCKER_HOST:-$DOCKER_HOST}; unset it to start a local one" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
  say "no Docker daemon answers and this is not root on Debian: start Docker yourself" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null; then
  say "installing Debian's docker.io (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io iptables ca-certificates >/dev/null
fi
mkdir -p "$log_dir"
# A dockerd killed without cleaning up leaves its pid file, and a new one refuses to start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  say "removing the stale /var/run/docker.pid"
  rm -f /var/run/docker.pid
fi
say "starting dockerd in the background (log: $log_dir/dockerd.log)"
# setsid: dockerd must outlive the shell that provisions it.
setsid nohup dockerd >"$log_dir/dockerd.log" 2>&1 < /dev/null &
for _ in $(seq 1 120); do
  if ping_daemon; then
    say "dockerd answers"
    exit 0
  fi
  sleep 0.5
done
say "dockerd did not answer within 60 s; see $log_dir/dockerd.log" >&2
tail -n 20 "$log_dir/dockerd.log" >&2 || true
exit 1
