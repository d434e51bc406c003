"""The warm pool against the real daemon: it fills, hands over, replaces, and leaves nothing."""

from __future__ import annotations

import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from dsw.config import MiB, Settings
from dsw.docker import DockerClient
from dsw.docker_health import DockerHealth
from dsw.kafka import Kafka
from dsw.messages import FinishedWith
from dsw.pool import WarmPool
from dsw.sandbox import ScriptOutcome, run_script
from dsw.sandbox_types import SandboxType, load_sandbox_type
from tests.conftest import TEST_SCRIPTS, configure, containers_of
from tests.sandbox_runs import request_for
from tests.test_worker import count_finished, finished_of, stop
from tests.workers import job, read_until, run_worker, worker_settings

SHELL, MONO = "linux-amd64-shell", "linux-amd64-mono"


async def pool_containers(docker: DockerClient, settings: Settings) -> list[str]:
    return [
        c["Names"][0]
        for c in await containers_of(docker, settings.worker_id)
        if c["Names"][0].startswith("/dsw-pool-")
    ]


async def wait_for_size(pool: WarmPool, size: int) -> None:
    with trio.fail_after(60):
        while len(pool.names()) != size:  # noqa: ASYNC110 (the pool has no event to offer)
            await trio.sleep(0.05)


@asynccontextmanager
async def open_pool(
    docker: DockerClient, settings: Settings, sandbox: SandboxType, size: int = 2
) -> AsyncIterator[WarmPool]:
    """A pool being served, full; discarded at exit (as a drain does)."""
    pool = WarmPool(docker, settings, sandbox, DockerHealth(), size)
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve, stopping)
        await wait_for_size(pool, size)
        try:
            yield pool
        finally:
            stopping.set()


async def both_ways(
    docker: DockerClient,
    settings: Settings,
    pool: WarmPool,
    script: str,
    sandbox: str = SHELL,
    **kwargs: Any,
) -> tuple[ScriptOutcome, ScriptOutcome]:
    """The same script cold, then in a warm container of `pool`."""
    cold = await run_script(docker, settings, request_for(settings, script, sandbox, **kwargs))
    warm = pool.take()
    assert warm is not None
    request = request_for(settings, script, sandbox, **kwargs)
    hot = await run_script(docker, settings, request, warm=warm)
    pool.job_done()
    return cold, hot


def same(cold: ScriptOutcome, warm: ScriptOutcome) -> None:
    ignore = {"duration_s", "peak_memory_bytes"}
    fields = [f for f in cold.__struct_fields__ if f not in ignore]
    assert {f: getattr(warm, f) for f in fields} == {f: getattr(cold, f) for f in fields}


@pytest.mark.parametrize(
    ("name", "limits"),
    [
        ("hello-world.sh", {}),
        ("read-stdin.sh", {"stdin": "first\nsecond\n"}),
        ("exit-3.sh", {}),
    ],
)
async def test_shell_scripts_give_the_same_result_warm_as_cold(
    docker: DockerClient, settings: Settings, name: str, limits: dict[str, Any]
) -> None:
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    async with open_pool(docker, settings, sandbox, size=1) as pool:
        cold, warm = await both_ways(
            docker, settings, pool, (TEST_SCRIPTS / name).read_text(), **limits
        )
    same(cold, warm)


async def test_limits_hold_the_same_warm_as_cold(docker: DockerClient, settings: Settings) -> None:
    small = configure(settings, output_limit_bytes=64 * 1024)
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    async with open_pool(docker, small, sandbox, size=1) as pool:
        cold, warm = await both_ways(docker, small, pool, "echo started; sleep 300\n", timeout_s=2)
        same(cold, warm)
        assert warm.finished_with is FinishedWith.TIME_LIMIT_EXCEEDED
        assert warm.stdout == "started\n"  # partial output, counted from the release
        cold, warm = await both_ways(docker, small, pool, "yes flood\n")
        same(cold, warm)
        assert warm.output_limit_exceeded
        # A per-job memory limit, applied to the warm container before its release.
        cold, warm = await both_ways(
            docker, small, pool, "tail /dev/zero\n", memory_bytes=64 * MiB, timeout_s=60
        )
        same(cold, warm)
        assert (warm.oom_killed, warm.exit_code) == (True, 137)
        assert warm.peak_memory_bytes is not None
        assert warm.peak_memory_bytes <= 64 * MiB


@pytest.mark.parametrize(
    "name",
    [
        "hello-world.csx",
        "read-stdin.csx",
        "compile-error.csx",
        "unhandled-exception.csx",
        "exit-3.csx",
    ],
)
async def test_csharp_scripts_give_the_same_result_warm_as_cold(
    docker: DockerClient, settings: Settings, name: str
) -> None:
    sandbox = load_sandbox_type(settings.sandbox_dir, MONO)
    script = (TEST_SCRIPTS / name).read_text()
    async with open_pool(docker, settings, sandbox, size=1) as pool:
        cold, warm = await both_ways(
            docker, settings, pool, script, sandbox=MONO, stdin="a line\n", timeout_s=60
        )
    same(cold, warm)


async def test_a_container_killed_while_idle_is_replaced(
    docker: DockerClient, settings: Settings
) -> None:
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    async with open_pool(docker, settings, sandbox, size=2) as pool:
        victim = sorted(pool.names())[0]
        await docker.container_kill(victim)
        with trio.fail_after(30):
            while victim in pool.names() or len(pool.names()) != 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert sorted(await pool_containers(docker, settings)) == sorted(
            f"/{name}" for name in pool.names()
        )
    assert await pool_containers(docker, settings) == []


async def test_an_old_idle_container_is_replaced(docker: DockerClient, settings: Settings) -> None:
    quick = configure(settings, warm_max_idle_s=1.0)
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    async with open_pool(docker, quick, sandbox, size=1) as pool:
        first = pool.names()
        with trio.fail_after(30):
            while pool.names() in (first, set()):  # noqa: ASYNC110
                await trio.sleep(0.05)
    assert await pool_containers(docker, settings) == []


async def test_output_before_the_release_never_reaches_the_job(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    # A type whose waiting command talks before it is released, on both streams.
    shutil.copytree(settings.sandbox_dir, tmp_path / "sandbox")
    chatty = tmp_path / "sandbox" / "test-chatty"
    chatty.mkdir()
    shell_toml = (tmp_path / "sandbox" / SHELL / "sandbox.toml").read_text()
    waiting = (
        'warm_command = ["sh", "-c", "echo early out; echo early err >&2; read x; '
        "printf '\\\\000dsw-released\\\\000\\\\n'; printf '\\\\000dsw-released\\\\000\\\\n' >&2; "
        'exec sh /tmp/script/main.sh < /dev/null"]\n'
    )
    (chatty / "sandbox.toml").write_text(shell_toml + waiting)
    local = configure(settings, sandbox_dir=str(tmp_path / "sandbox"))
    sandbox = load_sandbox_type(local.sandbox_dir, "test-chatty")
    async with open_pool(docker, local, sandbox, size=1) as pool:
        await trio.sleep(0.5)  # it has spoken by now
        warm = pool.take()
        assert warm is not None
        request = msgspec.structs.replace(
            request_for(local, "echo job; echo job err >&2\n"), sandbox=sandbox
        )
        outcome = await run_script(docker, local, request, warm=warm)
    assert (outcome.stdout, outcome.stderr) == ("job\n", "job err\n")


async def test_a_worker_fills_its_pools_hands_over_and_drains_them(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, max_containers=2, warm_containers=2)
    jobs = [job(f"echo {n}\n") for n in range(6)]
    async with run_worker(ws) as worker:
        with trio.fail_after(60):
            while len(await pool_containers(docker, ws)) < 4:  # noqa: ASYNC110
                await trio.sleep(0.1)
        for job_id, body in jobs:
            await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 6))
        await stop(worker)
    finished = finished_of(records, ws)
    assert all(m["scriptResults"]["finishedWith"] == "SUCCEEDED" for m in finished.values())
    assert "discarding the warm pool" in worker.output
    assert await containers_of(docker, ws.worker_id) == []


async def test_a_killed_worker_s_pool_is_reaped_by_the_next(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, warm_containers=1, kafka_session_timeout_ms=6000)
    async with run_worker(ws, "-a") as first:
        with trio.fail_after(60):
            while len(await pool_containers(docker, ws)) < 2:  # noqa: ASYNC110
                await trio.sleep(0.1)
        first.signal(signal.SIGKILL)
        await first.wait()
    assert len(await pool_containers(docker, ws)) == 2  # left by the crash
    async with run_worker(ws, "-b") as second:
        job_id, body = job("echo after\n")
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        await read_until(kafka, [ws.finished_topic], count_finished(ws, 1))
        left = {c["Labels"]["dsw.worker"] for c in await containers_of(docker, ws.worker_id)}
        assert ws.worker_id + "-a" not in left
        await stop(second)
    assert second.output.count("reaped container=dsw-pool-") == 2
