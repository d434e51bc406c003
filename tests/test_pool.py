"""The warm pool against the real daemon: it fills, hands over, replaces, and leaves nothing."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from dsw.backoff import Backoff
from dsw.config import MiB, Settings
from dsw.docker import DockerClient, open_docker
from dsw.docker_health import DockerHealth
from dsw.errors import WarmContainerLost
from dsw.kafka import Kafka
from dsw.messages import FinishedWith
from dsw.pool import WarmPool
from dsw.sandbox import ScriptOutcome, ScriptRequest, run_script
from dsw.sandbox_types import SandboxType, load_sandbox_type
from tests.conftest import TEST_SCRIPTS, configure, containers_of
from tests.pools import open_pool, wait_for_size
from tests.proxies import CuttableDocker, RestartingDaemon, is_delete, open_docker_via
from tests.sandbox_runs import request_for
from tests.workers import (
    by_topic,
    count_finished,
    finished_of,
    job,
    read_until,
    run_worker,
    stop,
    worker_settings,
)

SHELL, MONO = "linux-amd64-shell", "linux-amd64-mono"


async def pool_containers(docker: DockerClient, settings: Settings) -> list[str]:
    return [
        c["Names"][0]
        for c in await containers_of(docker, settings.worker_id)
        if c["Names"][0].startswith("/dsw-pool-")
    ]


async def wait_until(done: Any, timeout_s: float = 60) -> None:
    """Until `done()` (a test's look at state that offers no event)."""
    with trio.fail_after(timeout_s):
        while not done():  # noqa: ASYNC110
            await trio.sleep(0.05)


def with_warm_command(
    settings: Settings, tmp_path: Path, command: list[str]
) -> tuple[Settings, SandboxType]:
    """Settings with a test sandbox type: the shell type, its pool waiting in `command`
    (dsw-entry --warm: the command gets the control stdin and says the release itself)."""
    shutil.copytree(settings.sandbox_dir, tmp_path / "sandbox")
    test_type = tmp_path / "sandbox" / "test-waiting"
    test_type.mkdir()
    shell_toml = (tmp_path / "sandbox" / SHELL / "sandbox.toml").read_text()
    (test_type / "sandbox.toml").write_text(f"{shell_toml}warm_command = {json.dumps(command)}\n")
    local = configure(settings, sandbox_dir=str(tmp_path / "sandbox"))
    return local, load_sandbox_type(local.sandbox_dir, "test-waiting")


def request_of(
    settings: Settings, sandbox: SandboxType, script: str, **kwargs: Any
) -> ScriptRequest:
    return msgspec.structs.replace(request_for(settings, script, **kwargs), sandbox=sandbox)


RELEASED = r"printf '\000dsw-released\000\n'; printf '\000dsw-released\000\n' >&2"


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


async def test_output_after_the_attach_and_before_the_release_never_reaches_the_job(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    # A waiting command that talks on both streams while it waits (so also once the worker
    # has attached), and again after it has read the release, before its marker: the worker
    # is attached by then for certain (the release came through the attachment), so only the
    # marker filter keeps those lines from the job.
    chatty = (
        "while :; do echo early out; echo early err >&2; sleep 0.05; done & "
        # The release as dsw-entry takes it: `dsw-job main.sh=SIZE`, then the script.
        "read _ file; kill $!; wait $!; mkdir /tmp/script; "
        'dd bs="${file#*=}" count=1 iflag=fullblock status=none of=/tmp/script/main.sh; '
        "echo late out; echo late err >&2; "
        f"{RELEASED}; "
        "exec sh /tmp/script/main.sh < /dev/null"
    )
    local, sandbox = with_warm_command(settings, tmp_path, ["sh", "-c", chatty])
    async with open_pool(docker, local, sandbox, size=1) as pool:
        warm = pool.take()
        assert warm is not None
        request = request_of(local, sandbox, "echo job; echo job err >&2\n")
        outcome = await run_script(docker, local, request, warm=warm)
    assert (outcome.stdout, outcome.stderr) == ("job\n", "job err\n")
    assert outcome.finished_with is FinishedWith.SUCCEEDED


async def test_the_time_limit_counts_from_the_release(
    docker: DockerClient, settings: Settings
) -> None:
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    request = request_for(settings, "echo begun; sleep 1; echo done\n", timeout_s=4)
    async with open_pool(docker, settings, sandbox, size=1) as pool:
        await trio.sleep(request.limits.timeout_s + 1)  # idle longer than the job's limit
        warm = pool.take()
        assert warm is not None
        outcome = await run_script(docker, settings, request, warm=warm)
    assert outcome.finished_with is FinishedWith.SUCCEEDED
    assert outcome.stdout == "begun\ndone\n"


async def test_running_is_told_at_the_release(docker: DockerClient, settings: Settings) -> None:
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    request = request_for(settings, "echo begun; sleep 300\n", timeout_s=300)
    told: list[str] = []
    released = trio.Event()

    def started() -> None:
        told.append(request.job_id)
        released.set()

    async with open_pool(docker, settings, sandbox, size=1) as pool:
        warm = pool.take()
        assert warm is not None

        async def the_job() -> None:
            await run_script(docker, settings, request, started, warm=warm)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(the_job)
            await released.wait()
            # Handed over (the job's name) and running its script.
            state = (await docker.container_inspect(f"sandbox-job-{request.job_id}"))["State"]
            assert state["Running"]
            nursery.cancel_scope.cancel(reason="the test has seen it")
    assert told == [request.job_id]


async def test_running_is_told_once_when_the_container_is_lost_after_its_release(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    # A waiting command that takes the release and dies before it says so.
    local, sandbox = with_warm_command(settings, tmp_path, ["sh", "-c", "read x; exit 0"])
    request = request_of(local, sandbox, "echo cold\n")
    told: list[str] = []
    async with open_pool(docker, local, sandbox, size=1) as pool:
        warm = pool.take()
        assert warm is not None
        # What a job does (dsw.jobs): the warm attempt, then the cold one, one `started`.
        with pytest.raises(WarmContainerLost):
            await run_script(docker, local, request, lambda: told.append("warm"), warm=warm)
        outcome = await run_script(docker, local, request, lambda: told.append("cold"))
    assert told == ["cold"]
    assert outcome.stdout == "cold\n"


async def test_a_docker_outage_discards_the_pool(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    proxy = CuttableDocker(tmp_path / "docker.sock")
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    via_proxy = configure(settings, docker_host=proxy.docker_host)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with open_docker(via_proxy) as cut_docker, trio.open_nursery() as monitor:
            health = DockerHealth()
            monitor.start_soon(health.serve_monitor, cut_docker, Backoff(0.1, 0.5))
            async with open_pool(cut_docker, via_proxy, sandbox, 2, health) as pool:
                before = pool.names()
                proxy.cut()  # Docker goes away
                await wait_until(lambda: not health.healthy)
                await nursery.start(proxy.serve)  # and comes back

                def anew() -> bool:
                    return len(pool.names()) == 2 and not pool.names() & before

                await wait_until(anew)
                # The containers of before the outage are gone: removed by the pool itself.
                on_daemon = sorted(await pool_containers(docker, settings))
                assert on_daemon == sorted(f"/{name}" for name in pool.names())
            monitor.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    assert await pool_containers(docker, settings) == []


async def test_the_pool_never_holds_more_than_its_size(
    docker: DockerClient, settings: Settings
) -> None:
    # Each create is looked at on its way: how many pool containers exist at that moment.
    held_at_create: list[int] = []

    class Watched(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST" and request.url.path.endswith("/containers/create"):
                held_at_create.append(len(await pool_containers(docker, settings)))
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    quick = configure(settings, warm_max_idle_s=1.0)
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    async with (
        open_docker_via(quick, Watched) as (watched_docker, _),
        open_pool(watched_docker, quick, sandbox, size=1) as pool,
    ):
        await wait_until(lambda: len(held_at_create) >= 3)  # replaced for its age, twice
        await wait_for_size(pool, 1)
        victim = next(iter(pool.names()))
        await docker.container_kill(victim)
        await wait_until(lambda: victim not in pool.names() and len(pool.names()) == 1)
    assert held_at_create == [0] * len(held_at_create)
    assert await pool_containers(docker, settings) == []


async def test_what_a_restarting_daemon_would_not_remove_is_removed_once_it_answers(
    docker: DockerClient, settings: Settings
) -> None:
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)

    def creates(restarting: RestartingDaemon) -> int:
        return sum(r.endswith("/containers/create") for r in restarting.requests)

    async with (
        open_docker_via(settings, lambda inner: RestartingDaemon(inner, is_delete)) as (
            restarting_docker,
            restarting,
        ),
        open_pool(restarting_docker, settings, sandbox, size=1) as pool,
    ):
        # The daemon restarts (from the start: the fill needs no removal): its removals are
        # answered 500 while the idle container dies.
        victim = next(iter(pool.names()))
        await docker.container_kill(victim)
        await wait_until(lambda: len(restarting.answered_500) >= 2)  # asked, and again
        # Not yet removed: it still counts, and no replacement is made beside it.
        assert creates(restarting) == 1
        assert pool.names() == set()
        restarting.restarting = False  # back
        await wait_until(lambda: len(pool.names()) == 1 and victim not in pool.names())
        assert await pool_containers(docker, settings) == [f"/{name}" for name in pool.names()]


async def test_what_a_daemon_shutting_down_made_is_removed_at_shutdown(
    docker: DockerClient, settings: Settings
) -> None:
    # While dockerd shuts down, a create answers 500 "database not open" but has made the
    # container, and its removal answers 500 too.
    def shutting_down(inner: httpx.AsyncBaseTransport) -> RestartingDaemon:
        return RestartingDaemon(
            inner,
            lambda request: request.url.path.endswith("/containers/create") or is_delete(request),
            made=lambda request: request.method == "POST",
        )

    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    async with (
        open_docker_via(settings, shutting_down) as (restarting_docker, restarting),
        open_pool(restarting_docker, settings, sandbox, size=1, full=False),
    ):
        await wait_until(lambda: any(r.startswith("DELETE") for r in restarting.answered_500))
        assert len(await pool_containers(docker, settings)) == 1
        restarting.restarting = False  # the daemon is back as the worker stops
    # Removed by the pool itself as it stopped, not left to a reaper.
    assert await pool_containers(docker, settings) == []


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
        records = await read_until(
            kafka, [ws.running_topic, ws.finished_topic], count_finished(ws, 6)
        )
        await stop(worker)
    finished = finished_of(records, ws)
    assert all(m["scriptResults"]["finishedWith"] == "SUCCEEDED" for m in finished.values())
    running = sorted(m["jobId"] for m in by_topic(records, ws.running_topic))
    assert running == sorted(job_id for job_id, _ in jobs)  # one `running` per job
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
