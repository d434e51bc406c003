"""The worker image end to end: built from the local debian:bookworm-slim (Dockerfile), run in
Docker-in-Docker mode (its own dockerd, limits enforced by it) and in Docker-out-of-Docker mode (the
host's socket), against the real broker.

The images are rebuilt only when their inputs changed (the label `dsw.source-hash` holds the inputs'
hash), so a second run costs only the containers. Every container here is named after the test's
worker id, labelled `dsw.test`, and removed with its volumes (the inner daemon's state) whatever
happens. The containers use `--network host`: the broker advertises 127.0.0.1:9092.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from dsw.config import MiB, Settings, environment_of
from dsw.docker import DockerClient
from dsw.errors import DockerError
from dsw.kafka import Kafka, Record
from tests.conftest import ROOT, SANDBOX_IMAGES, containers_of
from tests.egress_setups import (
    CLIENT,
    EGRESS,
    check_answers,
    docker0_address,
    egress_sandbox_dir,
    lines_of,
    script_for,
    serve_hello,
)
from tests.workers import (
    EXAMPLE_JOB,
    by_topic,
    free_port,
    job,
    read_until,
    worker_settings,
)

# A cold build of both images takes minutes; every test that needs them may be the one that builds.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WORKER_IMAGE = "dsw-worker:latest"
DIND_IMAGE = "dsw-worker:dind"
BASE_IMAGE = "debian:bookworm-slim"
SOURCE_LABEL = "dsw.source-hash"
TEST_LABEL = "dsw.test"
# What the Dockerfile reads (.dockerignore lets in only these).
BUILD_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "requirements/worker.lock",
    "README.md",
    "dsw",
    "sandbox",
    "docker",
)
# PEM certificates of a TLS-intercepting proxy, for pip in the build stage (none: nothing added).
CA_DIR = Path("/usr/local/share/ca-certificates")
# Settings that describe this host rather than the container: the image's own values apply.
HOST_ONLY = {
    "WORKER_SANDBOX_DIR",
    "WORKER_DOCKER_HOST",
    "WORKER_DOCKER_TLS_VERIFY",
    "WORKER_DOCKER_CERT_PATH",
}
# Capability names by bit, as far as Docker 20.10 knows them.
_CAPABILITY_NAMES = """
    CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
    NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO
    SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME
    SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG
    WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
"""
CAPABILITIES = _CAPABILITY_NAMES.split()
WORKER_UID = "10000"
MONO, SHELL = "linux-amd64-mono", "linux-amd64-shell"
EXAMPLE_ID = "7f000001-863c-17b2-8186-3cdeb62e0000"
# Prints the limits the sandbox's own cgroup has, for cgroup v1 and v2 alike.
LIMITS_PROBE = """cd /sys/fs/cgroup
for f in memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes cpu/cpu.cfs_period_us \\
         cpu/cpu.cfs_quota_us cpu/cpu.shares pids/pids.max memory.max memory.swap.max cpu.max \\
         pids.max; do
  if [ -r "$f" ]; then echo "$f=$(cat "$f")"; fi
done
"""


# ---- images and the docker CLI -------------------------------------------------------------------


def _docker(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=timeout_s
    )


def source_hash() -> str:
    digest = hashlib.sha256()
    for top in BUILD_INPUTS:
        path = ROOT / top
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            relative = file.relative_to(ROOT)
            if "__pycache__" in relative.parts or file.suffix in (".pyc", ".pyo"):
                continue
            content = file.read_bytes() if file.exists() else b"<missing>"
            digest.update(str(relative).encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:16]


def _image_label(tag: str) -> tuple[str, str]:
    """(source hash label, image id) of `tag`, empty strings if it is missing."""
    found = _docker(
        "image", "inspect", "-f", f'{{{{index .Config.Labels "{SOURCE_LABEL}"}}}} {{{{.Id}}}}', tag
    )
    if found.returncode != 0:
        return "", ""
    label, _, image_id = found.stdout.strip().partition(" ")
    return label, image_id


@pytest.fixture(scope="session")
def worker_images(docker_ready: None) -> tuple[str, str]:
    """dsw-worker:latest and dsw-worker:dind, built from this checkout unless already current."""
    wanted = source_hash()
    replaced = []
    certificates = "".join(p.read_text() for p in sorted(CA_DIR.glob("*.crt")))
    for target, tag in (("worker", WORKER_IMAGE), ("worker-dind", DIND_IMAGE)):
        label, old_id = _image_label(tag)
        if label == wanted:
            continue
        started = time.monotonic()
        build = _docker(
            "build", "--force-rm", "-q", "--target", target,
            "--label", f"{SOURCE_LABEL}={wanted}",
            "--build-arg", f"EXTRA_CA_CERTS={certificates}",
            "-t", tag, str(ROOT),
            timeout_s=1500,
        )  # fmt: skip
        if build.returncode != 0:
            pytest.fail(f"docker build --target {target} failed:\n{build.stderr[-4000:]}")
        print(f"built {tag} ({target}) in {time.monotonic() - started:.1f}s")
        if old_id:
            replaced.append(old_id)
    # The images these replaced, newest first (the dind image is a child of the worker image);
    # one still in use or tagged elsewhere stays.
    for image_id in reversed(replaced):
        _docker("image", "rm", image_id)
    _remove_old_build_stages()
    return WORKER_IMAGE, DIND_IMAGE


def _remove_old_build_stages() -> None:
    """The legacy builder leaves each build's `build` stage untagged: keep the newest (the cache
    of the next build), remove the older ones."""
    listed = _docker(
        "images", "-q", "--no-trunc", "--filter=dangling=true", "--filter=label=dsw.image=build"
    )
    ids = listed.stdout.split()
    if len(ids) < 2:
        return
    created = _docker("image", "inspect", "-f", "{{.Created}} {{.Id}}", *ids).stdout.splitlines()
    for line in sorted(created)[:-1]:
        _docker("image", "rm", line.split()[1])


def _save(tmp_path_factory: pytest.TempPathFactory, name: str, images: tuple[str, ...]) -> Path:
    folder = tmp_path_factory.mktemp(name)
    saved = _docker("save", "-o", str(folder / f"{name}.tar"), *images)
    assert saved.returncode == 0, saved.stderr
    return folder


@pytest.fixture(scope="session")
def sandbox_tarballs(
    docker_ready: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A folder with `docker save` of the sandbox images, for the inner daemon to load."""
    folder = _save(tmp_path_factory, "sandboxes", SANDBOX_IMAGES)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def base_tarball(docker_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with only the base image: the inner daemon must build the sandbox images."""
    folder = _save(tmp_path_factory, "base", (BASE_IMAGE,))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def dind_flags(docker_ready: None) -> list[str]:
    """The README's flags for Docker-in-Docker: a private cgroup namespace and `--privileged`, or
    where the daemon cannot grant every capability (its bounding set lacks some, as on sandboxed
    machines), the README's equivalent without the missing ones."""
    probe = f"dsw-test-probe-{uuid.uuid4().hex[:8]}"
    try:
        run = _docker(
            "run", "--name", probe, "--privileged", "--network", "none", BASE_IMAGE, "true"
        )
    finally:
        _docker("rm", "-f", "-v", probe)
    if run.returncode == 0:
        return ["--cgroupns=private", "--privileged"]
    assert "apply caps" in run.stderr, run.stderr
    status = Path("/proc/self/status").read_text()
    bounding = int(next(line for line in status.splitlines() if line.startswith("CapBnd:"))[7:], 16)
    missing = [name for bit, name in enumerate(CAPABILITIES) if not bounding >> bit & 1]
    print(f"--privileged is refused here (no {','.join(missing)} in the bounding set)")
    return [
        "--cgroupns=private",
        "--cap-add=ALL",
        *(f"--cap-drop={name}" for name in missing),
        "--security-opt=seccomp=unconfined",
        "--security-opt=apparmor=unconfined",
        "--security-opt=systempaths=unconfined",
    ]


async def docker_cli(
    *args: str, check: bool = True, timeout_s: float = 120
) -> tuple[int, str, str]:
    with trio.fail_after(timeout_s):
        done = await trio.run_process(
            ["docker", *args], capture_stdout=True, capture_stderr=True, check=False
        )
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    if check:
        assert done.returncode == 0, f"docker {' '.join(args[:3])}... exit {done.returncode}: {err}"
    return done.returncode, out, err


async def container_logs(name: str) -> str:
    _, out, err = await docker_cli("logs", name, check=False)
    return out + err


async def container_state(name: str) -> dict[str, Any]:
    _, out, _ = await docker_cli("inspect", "-f", "{{json .State}}", name)
    state: dict[str, Any] = json.loads(out)
    return state


@asynccontextmanager
async def container(name: str, args: list[str]) -> AsyncIterator[str]:
    """`docker run -d` named `name`; at exit its log is printed and it goes, with its volumes."""
    try:
        await docker_cli("run", "-d", "--name", name, "--label", f"{TEST_LABEL}={name}", *args)
        yield name
    finally:
        with trio.CancelScope(shield=True):
            print(f"---- log of {name}\n{await container_logs(name)}")
            await docker_cli("rm", "-f", "-v", name, check=False)


def env_args(settings: Settings) -> list[str]:
    """`-e` options with the worker's settings, except those that only make sense on this host."""
    env = environment_of(settings)
    return [
        arg
        for key in sorted(env)
        if key.startswith("WORKER_") and key not in HOST_ONLY
        for arg in ("-e", f"{key}={env[key]}")
    ]


async def wait_ready(name: str, port: int, timeout_s: float = 240) -> None:
    """Until the worker's /readyz answers 200; fails at once, with its log, if it exits."""
    async with httpx.AsyncClient() as http:
        with trio.fail_after(timeout_s):
            while True:
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                state = await container_state(name)
                if not state["Running"]:
                    logs = await container_logs(name)
                    raise AssertionError(f"{name} exited ({state['ExitCode']}):\n{logs}")
                await trio.sleep(0.2)


async def stop(name: str) -> int:
    """`docker stop` with room for the drain and dockerd's stop; the container's exit code."""
    await docker_cli("stop", "-t", "90", name, timeout_s=120)
    return int((await container_state(name))["ExitCode"])


async def worker_uids(name: str) -> list[str]:
    """The uid of each `dsw worker` Python process in the container, as the host sees it."""
    _, out, _ = await docker_cli("top", name, "-eo", "pid,uid,args")
    rows = [line.split(maxsplit=2) for line in out.splitlines()[1:]]
    return [uid for _, uid, args in rows if re.match(r"\S*/python\S* \S*/dsw worker", args)]


def finished(records: list[Record], ws: Settings) -> dict[str, dict[str, Any]]:
    return {m["jobId"]: m for m in by_topic(records, ws.finished_topic)}


def has_finished(ws: Settings, *job_ids: str) -> Callable[[list[Record]], bool]:
    return lambda records: set(job_ids) <= finished(records, ws).keys()


def assert_example_succeeded(records: list[Record], ws: Settings) -> None:
    running = [m for m in by_topic(records, ws.running_topic) if m["jobId"] == EXAMPLE_ID]
    assert running == [{"jobId": EXAMPLE_ID}]
    example = finished(records, ws)[EXAMPLE_ID]
    assert example["status"] == "ACCEPTED"
    assert example["scriptResults"]["finishedWith"] == "SUCCEEDED"
    assert example["scriptResults"]["stdout"] == "Hello from script\n"
    assert example["scriptResults"]["stderr"] == ""
    assert example["workerId"] == ws.worker_id


def assert_limits(probe_stdout: str, memory_bytes: int, ws: Settings) -> None:
    """The sandbox's cgroup carries every limit the worker asked for (cgroup v1 or v2 names)."""
    found = dict(line.split("=", 1) for line in probe_stdout.splitlines() if "=" in line)
    if "memory/memory.limit_in_bytes" in found:
        assert found == {
            "memory/memory.limit_in_bytes": str(memory_bytes),
            "memory/memory.memsw.limit_in_bytes": str(memory_bytes),
            "cpu/cpu.cfs_period_us": str(ws.cpu_period_us),
            "cpu/cpu.cfs_quota_us": str(ws.cpu_quota_us),
            "cpu/cpu.shares": str(ws.cpu_shares),
            "pids/pids.max": str(ws.pids_limit),
        }
    else:
        assert found["memory.max"] == str(memory_bytes)
        assert found["memory.swap.max"] == "0"
        assert found["cpu.max"] == f"{ws.cpu_quota_us} {ws.cpu_period_us}"
        assert found["pids.max"] == str(ws.pids_limit)


# ---- Docker-in-Docker ----------------------------------------------------------------------------


async def test_dind_example_job_limits_and_drain(
    worker_images: tuple[str, str],
    sandbox_tarballs: Path,
    dind_flags: list[str],
    docker: DockerClient,
    kafka: Kafka,
    kafka_bootstrap: str,
    settings: Settings,
    topic_prefix: str,
) -> None:
    """The worker in its own dockerd: the original README's example job, every limit in force in
    the sandbox's cgroup, a memory bomb OOM-killed, and `docker stop` draining a running job."""
    port = free_port()
    ws = worker_settings(
        settings, topic_prefix, metrics_port=port, kafka_broker_url=kafka_bootstrap
    )
    name = f"dsw-test-dind-{ws.worker_id}"
    args = [
        *dind_flags,
        "--network=host",
        f"--hostname={name}",
        f"--volume={sandbox_tarballs}:/var/lib/dsw/images:ro",
        *env_args(ws),
        DIND_IMAGE,
    ]
    started = trio.current_time()
    async with container(name, args):
        await wait_ready(name, port)
        print(f"DinD: ready {trio.current_time() - started:.1f}s after docker run")

        # The inner daemon can enforce every limit; the worker runs as dsw, not root.
        _, out, _ = await docker_cli("exec", name, "docker", "info", "--format", "{{json .}}")
        info = json.loads(out)
        print("DinD: inner docker info:", {k: info.get(k) for k in (
            "ServerVersion", "CgroupVersion", "CgroupDriver", "Driver", "MemoryLimit",
            "SwapLimit", "CpuCfsPeriod", "CpuCfsQuota", "CPUShares", "PidsLimit", "Warnings",
        )})  # fmt: skip
        for key in ("MemoryLimit", "SwapLimit", "CpuCfsPeriod", "CpuCfsQuota", "CPUShares"):
            assert info[key] is True, key
        assert info["PidsLimit"] is True
        assert info["Driver"] == "overlay2"  # /var/lib/docker is the image's volume
        assert await worker_uids(name) == [WORKER_UID]

        sent = trio.current_time()
        await kafka.publish(f"{topic_prefix}pending-{MONO}", "key1", EXAMPLE_JOB.encode())
        topics = [ws.running_topic, ws.finished_topic]
        records = await read_until(kafka, topics, has_finished(ws, EXAMPLE_ID))
        print(f"DinD: the example job took {trio.current_time() - sent:.2f}s end to end")
        assert_example_succeeded(records, ws)

        probe_id, probe = job(LIMITS_PROBE)
        bomb_id, bomb = job("tail /dev/zero\n", memoryBytes=64 * MiB)
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", probe_id, probe)
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", bomb_id, bomb)
        records = await read_until(kafka, topics, has_finished(ws, probe_id, bomb_id))
        results = {k: m["scriptResults"] for k, m in finished(records, ws).items()}
        print("DinD: limits in the sandbox's cgroup:", results[probe_id]["stdout"].split())
        print("DinD: memory bomb:", results[bomb_id])
        assert results[probe_id]["finishedWith"] == "SUCCEEDED", results[probe_id]
        assert_limits(results[probe_id]["stdout"], ws.memory_bytes, ws)
        assert results[bomb_id]["finishedWith"] == "FAILED"
        assert results[bomb_id]["oomKilled"] is True
        assert results[bomb_id]["exitCode"] == 137

        # docker stop while a job runs: the worker drains it, then dockerd stops.
        slow_id, slow = job("echo begin; sleep 3; echo end\n")
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", slow_id, slow)
        await read_until(
            kafka,
            [ws.running_topic],
            lambda rs: slow_id in {m["jobId"] for m in by_topic(rs, ws.running_topic)},
        )
        stopping = trio.current_time()
        assert await stop(name) == 0
        print(
            f"DinD: docker stop took {trio.current_time() - stopping:.1f}s with a 3 s job running"
        )
        records = await read_until(kafka, topics, has_finished(ws, slow_id))
        drained = finished(records, ws)[slow_id]["scriptResults"]
        assert drained["finishedWith"] == "SUCCEEDED"
        assert drained["stdout"] == "begin\nend\n"
        logs = await container_logs(name)
        assert "SIGTERM: passing it to the worker" in logs
        assert "the worker exited with status 0" in logs
        assert re.search(r"dockerd stopped status=0", logs), logs[-2000:]


async def test_dind_builds_a_missing_sandbox_image(
    worker_images: tuple[str, str], base_tarball: Path, dind_flags: list[str]
) -> None:
    """Its own network (a bridge in the container's namespace), only the base image given: the
    entrypoint builds the shell sandbox from the Dockerfile in the image, and `dsw run` uses it."""
    name = f"dsw-test-dind-build-{uuid.uuid4().hex[:10]}"
    args = [
        *dind_flags,
        f"--volume={base_tarball}:/var/lib/dsw/images:ro",
        f"--env=WORKER_RUNNER_TYPES={SHELL}",
        DIND_IMAGE,
        "dsw", "run", "--json", "--sandbox", SHELL, "/opt/dsw/sandbox/test-scripts/hello-world.sh",
    ]  # fmt: skip
    started = trio.current_time()
    async with container(name, args):
        _, code, _ = await docker_cli("wait", name, timeout_s=300)
        print(f"DinD build: exited after {trio.current_time() - started:.1f}s")
        _, out, err = await docker_cli("logs", name)
    assert int(code) == 0, err
    assert f"built dsw-sandbox:{SHELL}" in err
    assert "dockerd runs in a network namespace of its own" not in err  # the container's own
    result = json.loads(out)
    assert result["scriptResults"]["finishedWith"] == "SUCCEEDED"
    assert result["scriptResults"]["stdout"] == "Hello from script\n"


async def test_dind_refuses_to_start_unprivileged(worker_images: tuple[str, str]) -> None:
    name = f"dsw-test-dind-unprivileged-{uuid.uuid4().hex[:10]}"
    async with container(name, [f"--env=WORKER_RUNNER_TYPES={SHELL}", DIND_IMAGE]):
        _, code, _ = await docker_cli("wait", name)
        logs = await container_logs(name)
    assert int(code) == 1
    assert "Docker-in-Docker needs `docker run --privileged`" in logs


# ---- Docker-out-of-Docker ------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["group-add", "as-root"])
async def test_dood_example_job(
    start: str,
    worker_images: tuple[str, str],
    docker: DockerClient,
    kafka: Kafka,
    kafka_bootstrap: str,
    settings: Settings,
    topic_prefix: str,
) -> None:
    """The worker on the host's daemon through its socket, as dsw: given the socket's group
    (`--group-add`), or started as root, dropping to dsw with it (as docker-compose.yaml does)."""
    socket = "/" + settings.docker_host.removeprefix("unix:").lstrip("/")
    assert settings.docker_host.startswith("unix:"), "Docker-out-of-Docker needs the local socket"
    port = free_port()
    ws = worker_settings(
        settings, topic_prefix, metrics_port=port, kafka_broker_url=kafka_bootstrap
    )
    # A hostname of its own: the reaper's rule for workers gone from "this host" must see only
    # this worker's containers.
    name = f"dsw-test-dood-{ws.worker_id}"
    user = ["--group-add", str(os.stat(socket).st_gid)] if start == "group-add" else ["--user=root"]
    args = [
        *user,
        "--network=host",
        f"--hostname={name}",
        f"--volume={socket}:/var/run/docker.sock",
        *env_args(ws),
        WORKER_IMAGE,
    ]
    started = trio.current_time()
    async with container(name, args):
        await wait_ready(name, port)
        print(f"DooD ({start}): ready {trio.current_time() - started:.1f}s after docker run")
        assert await worker_uids(name) == [WORKER_UID]
        await docker_cli("exec", name, "python", "/opt/dsw/healthcheck.py")  # the HEALTHCHECK
        sent = trio.current_time()
        await kafka.publish(f"{topic_prefix}pending-{MONO}", "key1", EXAMPLE_JOB.encode())
        records = await read_until(
            kafka, [ws.running_topic, ws.finished_topic], has_finished(ws, EXAMPLE_ID)
        )
        print(f"DooD ({start}): the example job took {trio.current_time() - sent:.2f}s end to end")
        assert_example_succeeded(records, ws)
        assert await stop(name) == 0


def _make_certificates(folder: Path, server_name: str) -> tuple[Path, Path]:
    """A CA, a server certificate for `server_name` and a client certificate, in Docker's file
    names (ca.pem, cert.pem, key.pem): the server's folder and the client's."""
    ca_key, ca = folder / "ca-key.pem", folder / "ca.pem"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str | Path) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    openssl(
        "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=dsw-test-ca"
    )
    folders = []
    for who, name, extensions in (
        ("server", server_name, f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{server_name}\n"),
        ("client", "dsw-worker", "extendedKeyUsage=clientAuth\n"),
    ):
        out = folder / who
        out.mkdir()
        (folder / f"{who}.ext").write_text(extensions)
        openssl(
            "req",
            *ec,
            "-keyout",
            out / "key.pem",
            "-out",
            folder / f"{who}.csr",
            "-subj",
            f"/CN={name}",
        )
        openssl(
            "x509", "-req", "-in", folder / f"{who}.csr", "-CA", ca, "-CAkey", ca_key,
            "-CAcreateserial", "-out", out / "cert.pem", "-days", "2",
            "-extfile", folder / f"{who}.ext",
        )  # fmt: skip
        shutil.copy(ca, out / "ca.pem")
        for file in out.iterdir():
            file.chmod(0o644)  # the worker reads them as dsw
        folders.append(out)
    return folders[0], folders[1]


async def test_remote_daemon_over_tls(
    worker_images: tuple[str, str],
    sandbox_tarballs: Path,
    dind_flags: list[str],
    kafka: Kafka,
    kafka_bootstrap: str,
    settings: Settings,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    """WORKER_DOCKER_HOST=tcp://... with TLS client certificates: the worker image against a
    daemon that is not on this host's socket (a DinD container listening on tcp 2376 with
    --tlsverify); job files travel through the Engine API, nothing is shared."""
    server_certs, client_certs = _make_certificates(tmp_path, "dind-tls")
    suffix = uuid.uuid4().hex[:10]
    daemon = f"dsw-test-tls-daemon-{suffix}"
    daemon_args = [
        *dind_flags,
        f"--volume={server_certs}:/certs:ro",
        f"--volume={sandbox_tarballs}:/var/lib/dsw/images:ro",
        f"--env=WORKER_RUNNER_TYPES={MONO},{SHELL}",
        "--env=DSW_DOCKERD_ARGS=--host=tcp://0.0.0.0:2376 --tlsverify --tlscacert=/certs/ca.pem"
        " --tlscert=/certs/cert.pem --tlskey=/certs/key.pem",
        DIND_IMAGE,
        "sleep", "infinity",
    ]  # fmt: skip
    port = free_port()
    ws = worker_settings(
        settings, topic_prefix, metrics_port=port, kafka_broker_url=kafka_bootstrap
    )
    worker = f"dsw-test-tls-worker-{ws.worker_id}"
    async with container(daemon, daemon_args):
        with trio.fail_after(120):
            while "started the worker" not in await container_logs(daemon):
                assert (await container_state(daemon))["Running"], await container_logs(daemon)
                await trio.sleep(0.2)
        _, address, _ = await docker_cli("inspect", "-f", "{{.NetworkSettings.IPAddress}}", daemon)
        worker_args = [
            "--network=host",
            f"--hostname={worker}",
            f"--add-host=dind-tls:{address.strip()}",
            f"--volume={client_certs}:/certs:ro",
            "--env=WORKER_DOCKER_HOST=tcp://dind-tls:2376",
            "--env=WORKER_DOCKER_TLS_VERIFY=true",
            "--env=WORKER_DOCKER_CERT_PATH=/certs",
            *env_args(ws),
            WORKER_IMAGE,
        ]
        async with container(worker, worker_args):
            await wait_ready(worker, port)
            await kafka.publish(f"{topic_prefix}pending-{MONO}", "key1", EXAMPLE_JOB.encode())
            records = await read_until(
                kafka, [ws.running_topic, ws.finished_topic], has_finished(ws, EXAMPLE_ID)
            )
            assert await stop(worker) == 0
            # Not even one attempt failed (a stale pooled TLS connection once did).
            assert "docker failed" not in await container_logs(worker)
            assert_example_succeeded(records, ws)
        # The remote daemon ran the job (there is no other) and kept nothing of it.
        _, names, _ = await docker_cli("exec", daemon, "docker", "ps", "-aq")
        assert names.strip() == ""


def _readable_by_all(tree: Path) -> None:
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


async def test_dood_egress_through_a_prepared_network(
    worker_images: tuple[str, str],
    docker: DockerClient,
    kafka: Kafka,
    kafka_bootstrap: str,
    settings: Settings,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    """Docker-out-of-Docker with the egress of network = "egress" types: the worker container
    (no capabilities) is given a network prepared on the host, filtered there by root, and serves
    the proxy on its gateway; a job reaches only what the proxy allows."""
    socket = "/" + settings.docker_host.removeprefix("unix:").lstrip("/")
    sandbox_dir = egress_sandbox_dir(settings, tmp_path)
    _readable_by_all(tmp_path)  # the worker reads it as dsw
    hello = free_port()
    proxy_port = free_port()
    port = free_port()
    network = f"dsw-test-egress-{uuid.uuid4().hex[:8]}"
    bridge = f"dswt{uuid.uuid4().hex[:8]}"
    await docker.network_create(
        {
            "Name": network,
            "Internal": True,
            "Labels": {TEST_LABEL: network},
            "Options": {
                "com.docker.network.bridge.name": bridge,
                "com.docker.network.bridge.enable_icc": "false",
            },
        }
    )
    try:
        gateway = (await docker.network_inspect(network))["IPAM"]["Config"][0]["Gateway"]
        await trio.run_process(
            [sys.executable, "-m", "dsw.egress.filter", "up", bridge, gateway, str(proxy_port)]
        )
        ws = worker_settings(
            settings,
            topic_prefix,
            metrics_port=port,
            kafka_broker_url=kafka_bootstrap,
            runner_types=(EGRESS,),
            egress_network=network,
            egress_proxy_port=proxy_port,
            egress_allow=(f"127.0.0.1:{hello}",),
        )
        name = f"dsw-test-dood-egress-{ws.worker_id}"
        args = [
            "--group-add",
            str(os.stat(socket).st_gid),
            "--network=host",
            f"--hostname={name}",
            f"--volume={socket}:/var/run/docker.sock",
            f"--volume={sandbox_dir}:/opt/dsw/sandbox:ro",
            *env_args(ws),
            WORKER_IMAGE,
        ]
        async with trio.open_nursery() as nursery, container(name, args):
            await nursery.start(serve_hello, hello)
            await wait_ready(name, port)
            job_id, body = job(script_for(hello))
            await kafka.publish(f"{topic_prefix}pending-{EGRESS}", job_id, body)
            records = await read_until(kafka, [ws.finished_topic], has_finished(ws, job_id))
            results = finished(records, ws)[job_id]["scriptResults"]
            assert results["finishedWith"] == "SUCCEEDED", results["stderr"]
            check_answers(results["stdout"], hello)
            assert "egress refused job=" + job_id in await container_logs(name)
            assert await stop(name) == 0
            nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(30, shield=True):
            await trio.run_process(
                [sys.executable, "-m", "dsw.egress.filter", "down", bridge], check=False
            )
            await docker.network_remove(network)


# A byte relay: each connection to argv[1]:argv[2] goes on to argv[3]:argv[4].
RELAY = """
import sys, trio
async def pipe(source, sink, scope):
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()
async def handle(client):
    try:
        upstream = await trio.open_tcp_stream(sys.argv[3], int(sys.argv[4]))
    except OSError:
        return await client.aclose()
    async with client, upstream, trio.open_nursery() as nursery:
        nursery.start_soon(pipe, client, upstream, nursery.cancel_scope)
        nursery.start_soon(pipe, upstream, client, nursery.cancel_scope)
trio.run(lambda: trio.serve_tcp(handle, int(sys.argv[2]), host=sys.argv[1]))
"""


async def _internal_network(docker: DockerClient, name: str, bridge: str) -> str:
    """An internal network with a subnet of its own choosing (a fixed address needs one), as
    docs/deployment.md prepares it; its subnet's first three octets."""
    for attempt in range(20):
        prefix = f"10.199.{(uuid.uuid4().int + attempt) % 250 + 1}"
        try:
            await docker.network_create(
                {
                    "Name": name,
                    "Internal": True,
                    "Labels": {TEST_LABEL: name},
                    "IPAM": {"Config": [{"Subnet": f"{prefix}.0/24", "Gateway": f"{prefix}.1"}]},
                    "Options": {
                        "com.docker.network.bridge.name": bridge,
                        "com.docker.network.bridge.enable_icc": "false",
                    },
                }
            )
        except DockerError:
            continue  # the subnet overlaps another network's
        return prefix
    raise AssertionError("no free 10.199.x.0/24 subnet")


async def test_dood_egress_with_the_worker_container_joined_to_the_network(
    worker_images: tuple[str, str],
    docker: DockerClient,
    kafka: Kafka,
    kafka_bootstrap: str,
    settings: Settings,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    """Docker-out-of-Docker as docs/deployment.md describes it: the worker's container (no
    capabilities, on Docker's bridge) joins a prepared network at WORKER_EGRESS_PROXY_ADDRESS and
    serves the proxy there, so that the proxy's replies to a sandbox cross the host's filter (the
    conntrack rule lets them back). A job reaches what is listed, through the proxy only: not the
    worker container's own /metrics on the proxy's address, not the host. The broker advertises
    127.0.0.1, so a relay inside the worker's container leads there through the host's bridge."""
    socket = "/" + settings.docker_host.removeprefix("unix:").lstrip("/")
    sandbox_dir = egress_sandbox_dir(settings, tmp_path)
    _readable_by_all(tmp_path)
    host = docker0_address()  # the host as the worker's container sees it
    hello, relay, proxy_port, port = free_port(), free_port(), free_port(), free_port()
    kafka_port = kafka_bootstrap.rpartition(":")[2]
    network = f"dsw-test-egress-{uuid.uuid4().hex[:8]}"
    bridge = f"dswt{uuid.uuid4().hex[:8]}"
    prefix = await _internal_network(docker, network, bridge)
    gateway, proxy = f"{prefix}.1", f"{prefix}.2"
    ws = worker_settings(
        settings,
        topic_prefix,
        metrics_port=port,
        kafka_broker_url=f"127.0.0.1:{kafka_port}",
        runner_types=(EGRESS,),
        egress_network=network,
        egress_proxy_address=proxy,
        egress_proxy_port=proxy_port,
        egress_allow=(f"{host}:{hello}",),
    )
    try:
        await trio.run_process(
            [sys.executable, "-m", "dsw.egress.filter", "up", bridge, proxy, str(proxy_port)]
        )
        name = f"dsw-test-dood-joined-{ws.worker_id}"
        args = [
            "--group-add",
            str(os.stat(socket).st_gid),
            f"--hostname={name}",
            f"--publish=127.0.0.1:{port}:{port}",
            f"--volume={socket}:/var/run/docker.sock",
            f"--volume={sandbox_dir}:/opt/dsw/sandbox:ro",
            f"--env=DSW_TEST_RELAY={RELAY}",
            *env_args(ws),
            "--entrypoint=/usr/bin/tini",
            WORKER_IMAGE,
            "--", "sh", "-c",
            f'python -c "$DSW_TEST_RELAY" 127.0.0.1 {kafka_port} {host} {relay} &'
            " exec sh /opt/dsw/entrypoint.sh dsw worker",
        ]  # fmt: skip
        script = (
            CLIENT
            + f"through {host}:{hello}\n"  # listed: reachable, the replies let back
            + f"through 127.0.0.1:{hello}\n"  # loopback (the worker container's), not listed
            + f"direct {proxy}:{port}\n"  # the worker container's /metrics, past the proxy
            + f"direct {gateway}:{hello}\n"  # the host on the network's gateway
            + f"direct {host}:{hello}\n"  # the host beyond the network
        )
        async with trio.open_nursery() as nursery:
            relaying = [sys.executable, "-c", RELAY, host, str(relay), "127.0.0.1", kafka_port]
            nursery.start_soon(trio.run_process, relaying)
            await nursery.start(serve_hello, hello)
            async with container(name, args):
                await wait_ready(name, port)
                job_id, body = job(script)
                await kafka.publish(f"{topic_prefix}pending-{EGRESS}", job_id, body)
                records = await read_until(kafka, [ws.finished_topic], has_finished(ws, job_id))
                results = finished(records, ws)[job_id]["scriptResults"]
                assert results["finishedWith"] == "SUCCEEDED", results["stderr"]
                seen = lines_of(results["stdout"])
                assert seen[f"through {host}:{hello}"][0] == "200", results["stdout"]
                assert seen[f"through {host}:{hello}"][-2:] == ["hello", "egress"]
                assert seen[f"through 127.0.0.1:{hello}"][0] == "403"
                for target in (f"{proxy}:{port}", f"{gateway}:{hello}", f"{host}:{hello}"):
                    assert seen[f"direct {target}"][0] == "failed", target
                assert "egress refused job=" + job_id in await container_logs(name)
                assert await stop(name) == 0
                assert await containers_of(docker, ws.worker_id) == []
            nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(30, shield=True):
            # A worker that did not drain leaves its warm containers on the network.
            for left in await docker.containers_list([f"dsw.worker={ws.worker_id}"]):
                await docker.container_remove(left["Id"])
            await trio.run_process(
                [sys.executable, "-m", "dsw.egress.filter", "down", bridge], check=False
            )
            await docker.network_remove(network)
