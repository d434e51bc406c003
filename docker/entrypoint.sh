#!/bin/sh
# Entrypoint of the worker image (target worker), run by tini. The image runs as user dsw: given
# the socket's group (`docker run --group-add "$(stat -c %g /var/run/docker.sock)"`) it just runs the
# command. Started as root (`--user root`, as docker-compose.yaml does, where the socket's group is
# not known in advance), it drops to dsw with the group of the Docker socket it is given, unless
# DSW_RUN_AS=root.
set -eu
[ $# -gt 0 ] || set -- dsw worker
if [ "$(id -u)" != 0 ] || [ "${DSW_RUN_AS:-dsw}" = root ]; then
    exec "$@"
fi
host=${WORKER_DOCKER_HOST:-${DOCKER_HOST:-unix:///var/run/docker.sock}}
groups=""
case "$host" in
    unix:*)
        socket=${host#unix:}
        socket=/${socket#"${socket%%[!/]*}"}
        if [ -S "$socket" ]; then
            groups="--groups=$(stat -c %g "$socket")"
        fi
        ;;
esac
# shellcheck disable=SC2086 # $groups is one word or none
exec setpriv --reuid="${DSW_RUN_AS:-dsw}" --regid="${DSW_RUN_AS:-dsw}" ${groups:---clear-groups} \
    --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"
