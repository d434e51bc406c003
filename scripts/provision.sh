#!/usr/bin/env bash
# Everything the worker and its tests need on this machine, idempotent: the Python environment,
# a Docker Engine, the debian:bookworm-slim base image, and a Kafka broker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
started=$(date +%s)
"$here/provision-python.sh"
"$here/provision-docker.sh"
"$here/provision-base-image.sh"
"$here/provision-kafka.sh" up
printf '[provision] ready in %ss\n' "$(( $(date +%s) - started ))"
