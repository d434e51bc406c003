# The dsw worker image, two targets from one file:
#
#   worker       `dsw worker` as a non-root user; talks to a daemon it is given: the host's socket
#                (Docker-out-of-Docker) or WORKER_DOCKER_HOST=tcp://... with TLS.
#                  docker build --target worker -t dsw-worker .
#   worker-dind  the same plus dockerd: run --privileged, it starts its own daemon, loads or builds
#                the sandbox images into it, then runs the worker (unprivileged) against it.
#                  docker build --target worker-dind -t dsw-worker:dind .
#
# Built on debian:bookworm-slim only (pulled, or made locally by scripts/provision-base-image.sh),
# with no BuildKit-only syntax: the legacy builder builds it too. The build context is the
# repository root; .dockerignore lets in only pyproject.toml, requirements/{worker,build}.lock,
# README.md, dsw/, sandbox/, docker/.
ARG BASE_IMAGE=debian:bookworm-slim

# ---- build: a virtualenv with dsw and its dependencies (wheels only, no compiler) ----------------
FROM ${BASE_IMAGE} AS build
# Marks this stage's leftover images (the legacy builder keeps them, untagged, as its cache).
LABEL dsw.image=build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/dsw/venv
# PEM certificates to trust for PyPI in this stage only, where HTTPS goes through an intercepting
# proxy: `--build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)"`.
ARG EXTRA_CA_CERTS=""
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" | awk '/BEGIN CERTIFICATE/ { n++ } n { print > ("/usr/local/share/ca-certificates/build-extra-" n ".crt") }' \
        && update-ca-certificates >/dev/null; \
    fi
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# Dependencies first, exactly as requirements/worker.lock pins them (versions and hashes; `just lock`
# refreshes it): a change in dsw/ or pyproject.toml reuses this layer.
COPY requirements/worker.lock requirements/build.lock /src/requirements/
RUN /opt/dsw/venv/bin/pip install -q --only-binary=:all: --require-hashes \
        -r /src/requirements/worker.lock -r /src/requirements/build.lock
COPY pyproject.toml README.md /src/
COPY dsw /src/dsw
# The locked setuptools builds dsw (no isolated build fetching another); `pip check` fails the
# build where pyproject.toml names a dependency the lock lacks; pip and setuptools go afterwards:
# the final image installs nothing.
RUN /opt/dsw/venv/bin/pip install -q --no-deps --no-build-isolation /src \
 && /opt/dsw/venv/bin/pip check \
 && /opt/dsw/venv/bin/pip uninstall -q -y pip setuptools

# ---- runtime: what both workers share (the final stages add the code last, so that a change in
# dsw/ rebuilds only their last layers, never the Docker packages of the DinD image) -------------
FROM ${BASE_IMAGE} AS runtime
# python3: the interpreter the venv was made with (same base, same path); tini: PID 1 that forwards
# signals and reaps.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
        /usr/share/doc/* /usr/share/man/* \
 && groupadd --gid 10000 dsw \
 && useradd --uid 10000 --gid dsw --home-dir /opt/dsw --no-create-home \
        --shell /usr/sbin/nologin dsw
ENV PATH=/opt/dsw/venv/bin:$PATH \
    HOME=/opt/dsw \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WORKER_SANDBOX_DIR=/opt/dsw/sandbox
WORKDIR /opt/dsw
EXPOSE 9464
# /healthz: the worker's trio tree is alive (readiness is /readyz, for orchestrators that ask).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/dsw/venv/bin/python", "/opt/dsw/healthcheck.py"]

# ---- worker: Docker-out-of-Docker / remote daemon ----------------------------------------------
FROM runtime AS worker
COPY --from=build /opt/dsw/venv /opt/dsw/venv
# The sandbox types (sandbox.toml, read at start-up; their Dockerfiles serve the DinD image).
COPY sandbox /opt/dsw/sandbox
COPY docker/entrypoint.sh docker/healthcheck.py /opt/dsw/
USER dsw
# Runs the command as is; started as root, drops to dsw with the Docker socket's group.
ENTRYPOINT ["/usr/bin/tini", "--", "sh", "/opt/dsw/entrypoint.sh"]
CMD ["dsw", "worker"]

# ---- dind-runtime: the runtime plus dockerd -------------------------------------------------------
FROM runtime AS dind-runtime
# docker.io: dockerd, containerd, runc, the docker CLI (image load and build in the entrypoint);
# iptables: the inner daemon's bridge network; fuse-overlayfs: the storage driver where
# /var/lib/docker is not a volume (overlay2 cannot sit on the container's overlay root).
# Not needed: ctr and containerd-stress (containerd's debugging tools), the v1 shims (dockerd
# 20.10 runs containers through containerd-shim-runc-v2).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        docker.io iptables fuse-overlayfs \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
        /usr/share/doc/* /usr/share/man/* /usr/bin/ctr /usr/bin/containerd-stress \
        /usr/bin/containerd-shim /usr/bin/containerd-shim-runc-v1 \
 && usermod -a -G docker dsw \
 && mkdir -p /var/lib/dsw/images
# The inner daemon's state: a volume, so overlay2 works (an anonymous one per container unless a
# named volume is mounted; `docker rm -v` removes it).
VOLUME /var/lib/docker

# ---- worker-dind: its own dockerd, run --privileged ---------------------------------------------
FROM dind-runtime AS worker-dind
COPY --from=build /opt/dsw/venv /opt/dsw/venv
COPY sandbox /opt/dsw/sandbox
COPY docker/entrypoint.sh docker/healthcheck.py docker/dind-entrypoint.sh docker/dind-helper.py \
    /opt/dsw/
# Sandbox image tarballs (`docker save`) found here are loaded into the inner daemon at start-up.
ENV DSW_DIND_IMAGES_DIR=/var/lib/dsw/images
# Runs as root (dockerd needs it); the entrypoint runs the worker as dsw. tini forwards SIGTERM to
# the entrypoint, which drains the worker and then stops dockerd.
ENTRYPOINT ["/usr/bin/tini", "--", "bash", "/opt/dsw/dind-entrypoint.sh"]
CMD ["dsw", "worker"]
