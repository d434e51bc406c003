# dsw: run C# scripts from Kafka in locked-down Docker containers. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := justfile_directory() / ".venv/bin"
export WORKER_KAFKA_BROKER_URL := env("WORKER_KAFKA_BROKER_URL", "127.0.0.1:9092")

# List the recipes
default:
    @just --list --unsorted

# Install and start what the project needs: Python env, Docker, base image, Kafka (idempotent)
[group('setup')]
provision:
    scripts/provision.sh

# Re-pin requirements/*.lock (hashed; CPython 3.11, Debian 12 x86_64) within pyproject's ranges; ARGS to uv
[group('setup')]
lock *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    # The lock tool lives in a throwaway venv of its own, pinned so that every refresh resolves alike.
    uv=.local/lock-tools/bin/uv
    [ "$($uv --version 2>/dev/null)" = "uv 0.13.8" ] \
        || { python3 -m venv .local/lock-tools && .local/lock-tools/bin/pip install -q uv==0.13.8; }
    compile=("$uv" pip compile -q --generate-hashes --only-binary :all: \
        --python-version 3.11 --python-platform x86_64-manylinux_2_36 --custom-compile-command "just lock")
    "${compile[@]}" pyproject.toml --extra test --extra lint --extra bench {{ARGS}} -o requirements/dev.lock
    # The image's lock is the runtime part of the dev lock: the same pins, never a second resolution.
    "${compile[@]}" pyproject.toml --constraint requirements/dev.lock --upgrade -o requirements/worker.lock
    # What builds dsw itself (pyproject's build-system), installed beside either lock.
    python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
        > .local/lock-tools/build-system.in
    "${compile[@]}" .local/lock-tools/build-system.in {{ARGS}} -o requirements/build.lock
    echo "locked requirements/dev.lock requirements/worker.lock requirements/build.lock"

# Build one sandbox image, tagged dsw-sandbox:TYPE, as its sandbox.toml says (e.g. linux-amd64-mono)
[group('setup')]
sandbox TYPE:
    @[ -x {{venv}}/python ] || scripts/provision-python.sh
    {{venv}}/python scripts/build-sandbox.py {{TYPE}} -q >/dev/null
    @echo "built dsw-sandbox:{{TYPE}}"

# Build the sandbox images the tests and `just run` use
[group('setup')]
sandboxes: (sandbox "linux-amd64-shell") (sandbox "linux-amd64-mono")

# Build the worker image dsw-worker:latest (the host's socket or a remote daemon)
[group('setup')]
image:
    docker build --force-rm -q --target worker -t dsw-worker:latest \
        --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)" . >/dev/null
    @echo "built dsw-worker:latest"

# Build the Docker-in-Docker worker image dsw-worker:dind (its own dockerd; run it privileged)
[group('setup')]
image-dind:
    docker build --force-rm -q --target worker-dind -t dsw-worker:dind \
        --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)" . >/dev/null
    @echo "built dsw-worker:dind"

# Save the sandbox images for a Docker-in-Docker worker to load (.local/images/sandboxes.tar)
[group('setup')]
sandbox-tarball: sandboxes
    mkdir -p .local/images
    docker save -o .local/images/sandboxes.tar dsw-sandbox:linux-amd64-shell dsw-sandbox:linux-amd64-mono
    @echo "saved .local/images/sandboxes.tar"

# Start the local Kafka broker
[group('setup')]
kafka-up:
    scripts/provision-kafka.sh up

# Stop the local Kafka broker
[group('setup')]
kafka-down:
    scripts/provision-kafka.sh down

# Kafka's CLI tools: console-producer, console-consumer, topics, consumer-groups
[group('run')]
kafka TOOL *ARGS:
    scripts/kafka-tool.sh {{TOOL}} {{ARGS}}

# Provision, build the sandboxes and serve jobs in the foreground (Ctrl-C drains and stops)
[group('run')]
run: provision sandboxes
    #!/usr/bin/env bash
    set -euo pipefail
    types=linux-amd64-mono,linux-amd64-shell
    if docker image inspect dsw-sandbox:linux-amd64-dotnet-7 >/dev/null 2>&1; then
        types=linux-amd64-dotnet-7,$types
    fi
    export WORKER_RUNNER_TYPES=${WORKER_RUNNER_TYPES:-$types}
    exec {{venv}}/dsw worker

# Run one script in a sandbox without Kafka (e.g. `just script sandbox/test-scripts/hello-world.csx`)
[group('run')]
script PATH *ARGS:
    {{venv}}/dsw run {{PATH}} {{ARGS}}

# Run the whole test suite against the real Docker daemon and Kafka broker
[group('check')]
test *ARGS: provision sandboxes
    {{venv}}/pytest {{ARGS}}

# Measure the worker against the raw Docker Engine floor (`just bench --help`; results in .local/bench/)
[group('check')]
bench *ARGS: provision sandboxes
    {{venv}}/python -m benchmarks.bench {{ARGS}}

# ruff, mypy (strict on dsw/) and flake8-async
[group('check')]
lint: provision
    {{venv}}/ruff check dsw tests scripts benchmarks
    {{venv}}/ruff format --check dsw tests scripts benchmarks
    {{venv}}/mypy
    # ASYNC127 would swap httpx for a fork (the design fixes httpx); ASYNC9xx are opt-in.
    {{venv}}/flake8-async --disable ASYNC127,ASYNC9 --startable-in-context-manager serve_status,collect,serve_tcp_relay,serve_hello,serve_on_every_ipv6_address,serve \
        $(git ls-files -co --exclude-standard 'dsw/*.py' 'dsw/**/*.py' 'tests/*.py' 'benchmarks/*.py')
