"""The reaper removes orphans of this project and nothing else."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid

import trio

from dsw.config import Settings, load_settings
from dsw.container_spec import (
    HOST_LABEL,
    JOB_LABEL,
    PID_LABEL,
    PIDNS_LABEL,
    PROJECT_LABEL,
    TYPE_LABEL,
    WORKER_LABEL,
    age_bound_s,
    pid_namespace,
)
from dsw.docker import DockerClient
from dsw.pool import WarmContainer
from dsw.reaper import EXITED_GRACE_S, finished_at, orphan_reason, reap
from dsw.sandbox import run_script
from dsw.sandbox_types import load_sandbox_type
from tests.pools import open_pool
from tests.sandbox_runs import request_for

SHELL = "linux-amd64-shell"
IMAGE = "dsw-sandbox:linux-amd64-shell"


async def create(
    docker: DockerClient, name: str, labels: dict[str, str], command: str = "sleep 60"
) -> str:
    config = {
        "Image": IMAGE,
        "Entrypoint": ["sh", "-c"],
        "Cmd": [command],
        "Labels": labels,
    }
    container, _ = await docker.container_create(name, config)
    return container


def a_round_later() -> float:
    """The clock of a reaper round two minutes from now: past every grace period."""
    return time.time() + 2 * EXITED_GRACE_S


async def existing(docker: DockerClient, containers: list[str]) -> dict[str, str]:
    """Which of `containers` exist, and their state."""
    listed = {c["Id"]: c["State"] for c in await docker.containers_list()}
    return {container: listed[container] for container in containers if container in listed}


def dsw_labels(
    worker: str, pid: int, host: str = "", job: str = "", pidns: str = ""
) -> dict[str, str]:
    return {
        PROJECT_LABEL: "dsw",
        JOB_LABEL: job or str(uuid.uuid4()),
        WORKER_LABEL: worker,
        HOST_LABEL: host or socket.gethostname(),
        PID_LABEL: str(pid),
        PIDNS_LABEL: pidns or pid_namespace(),
        TYPE_LABEL: "linux-amd64-shell",
    }


async def test_reaps_orphans_and_nothing_else(docker: DockerClient, settings: Settings) -> None:
    dead_pid = _dead_pid()
    tag = uuid.uuid4().hex[:8]
    gone = await create(
        docker, f"dsw-reap-gone-{tag}", dsw_labels(settings.worker_id + "-gone", dead_pid)
    )
    # The original Java worker's run between its create and its start: same names, no labels.
    java_created = await create(docker, f"sandbox-job-{uuid.uuid4()}", {})
    # The original Java worker's live run: running.
    java_live = await create(docker, f"sandbox-job-{uuid.uuid4()}", {})
    await docker.container_start(java_live)
    alive = await create(
        docker, f"dsw-reap-alive-{tag}", dsw_labels(settings.worker_id + "-alive", os.getppid())
    )
    elsewhere = await create(
        docker,
        f"dsw-reap-elsewhere-{tag}",
        dsw_labels(settings.worker_id + "-far", dead_pid, host="another-host"),
    )
    other_pids = await create(
        docker,
        f"dsw-reap-otherns-{tag}",
        dsw_labels(settings.worker_id + "-ns", dead_pid, pidns="pid:[1]"),
    )
    mine_running = await create(
        docker, f"dsw-reap-mine-{tag}", dsw_labels(settings.worker_id, os.getpid(), job="busy")
    )
    stranger = await create(docker, f"not-ours-{tag}", {})
    spared = [java_created, java_live, alive, elsewhere, other_pids, mine_running, stranger]
    try:
        removed = await reap(docker, settings, in_use=lambda: {"busy"})
        left = {c["Id"] for c in await docker.containers_list()}
        assert gone not in left
        assert set(spared) <= left
        assert removed >= 1  # others' orphans on this daemon may go too
    finally:
        with trio.move_on_after(30, shield=True):
            for container in spared:
                await docker.container_remove(container)


async def test_another_system_s_container_is_reaped_only_once_it_has_long_ended(
    docker: DockerClient, settings: Settings
) -> None:
    # The original Java worker's containers: no labels, in each state a job of its passes.
    created = await create(docker, f"sandbox-job-{uuid.uuid4()}", {})
    running = await create(docker, f"sandbox-job-{uuid.uuid4()}", {})
    exited = await create(docker, f"sandbox-job-{uuid.uuid4()}", {}, "exit 3")
    containers = [created, running, exited]
    try:
        for container in (running, exited):
            await docker.container_start(container)
        assert await docker.container_wait(exited) == 3
        listed = {c["Id"]: c for c in await docker.containers_list(name="^/sandbox-job-")}
        ended = await finished_at(docker, listed[exited])
        assert ended is not None
        assert abs(ended - time.time()) < EXITED_GRACE_S  # the daemon's exact end, not words
        assert await finished_at(docker, listed[running]) is None
        # Just exited: the Java worker may still be reading its output and exit code.
        await reap(docker, settings)
        states = await existing(docker, containers)
        assert states == {created: "created", running: "running", exited: "exited"}
        # A round a couple of minutes later: only the one that ended long ago goes.
        await reap(docker, settings, clock=a_round_later)
        assert await existing(docker, containers) == {created: "created", running: "running"}
    finally:
        with trio.move_on_after(30, shield=True):
            for container in containers:
                await docker.container_remove(container)


async def test_a_live_worker_s_pool_is_spared_idle_and_handed_over(
    docker: DockerClient, settings: Settings
) -> None:
    # Judged as a round a couple of minutes later would: no young grace spares them, only
    # being in use.
    sandbox = load_sandbox_type(settings.sandbox_dir, SHELL)
    request = request_for(settings, "echo begun; sleep 300\n", timeout_s=300)
    in_flight: set[str] = set()
    async with open_pool(docker, settings, sandbox, size=2) as pool:

        def in_use() -> set[str]:
            return in_flight | pool.in_use()

        idle = sorted(pool.names())
        await reap(docker, settings, in_use, a_round_later)
        assert sorted(pool.names()) == idle

        # A job takes a container and registers after the reaper listed it as idle.
        taken: list[WarmContainer | None] = []

        def taken_meanwhile() -> set[str]:
            if not taken:
                taken.append(pool.take())
                in_flight.add(request.job_id)
            return in_use()

        await reap(docker, settings, taken_meanwhile, a_round_later)
        warm = taken[0]
        assert warm is not None
        assert warm.name in idle
        assert set(await existing(docker, [warm.id])) == {warm.id}

        # Renamed to the job's name and running: spared as the job's.
        released = trio.Event()

        async def the_job() -> None:
            await run_script(docker, settings, request, released.set, warm=warm)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(the_job)
            await released.wait()
            await reap(docker, settings, in_use, a_round_later)
            assert await existing(docker, [warm.id]) == {warm.id: "running"}
            nursery.cancel_scope.cancel(reason="the test is done with the job")
        in_flight.clear()
        assert pool.in_use() == pool.names()  # the job removed it: no longer named
        assert await existing(docker, [warm.id]) == {}


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


NOW = 1_800_000_000.0
UNIT = load_settings({}, worker_id="me")


def listed(labels: dict[str, str], age_s: float = 120, state: str = "running") -> dict[str, object]:
    return {"Labels": labels, "Created": NOW - age_s, "State": state}


def test_orphan_reasons_of_each_kind() -> None:
    dead = _dead_pid()
    mine = dsw_labels("me", os.getpid(), job="job-a")
    assert orphan_reason(listed(mine), UNIT, {"job-a"}, NOW) is None
    assert orphan_reason(listed(mine, age_s=5), UNIT, set(), NOW) is None  # still being set up
    assert (orphan_reason(listed(mine), UNIT, set(), NOW) or "").startswith("no longer in use")
    old = listed(mine, age_s=age_bound_s(UNIT) + 1)
    assert (orphan_reason(old, UNIT, {"job-a"}, NOW) or "").startswith("older than any job")
    gone = dsw_labels("other", dead)
    assert orphan_reason(listed(gone), UNIT, set(), NOW) == f"its worker (pid {dead}) is gone"
    alive = dsw_labels("other", os.getppid())
    assert orphan_reason(listed(alive), UNIT, set(), NOW) is None
    elsewhere = dsw_labels("other", dead, host="another-host")
    assert orphan_reason(listed(elsewhere), UNIT, set(), NOW) is None
    other_pids = dsw_labels("other", dead, pidns="pid:[1]")
    assert orphan_reason(listed(other_pids), UNIT, set(), NOW) is None


def test_an_unlabelled_container_is_reaped_only_once_it_has_long_ended_or_is_too_old() -> None:
    long_ago = NOW - EXITED_GRACE_S - 1
    for state in ("created", "running", "paused", "restarting", "removing"):
        assert orphan_reason(listed({}, state=state), UNIT, set(), NOW) is None
        assert orphan_reason(listed({}, state=state), UNIT, set(), NOW, long_ago) is None
    for state in ("exited", "dead"):
        ended = listed({}, state=state)
        assert orphan_reason(ended, UNIT, set(), NOW) is None  # when it ended is not known
        assert orphan_reason(ended, UNIT, set(), NOW, NOW - 1) is None  # output still read
        assert orphan_reason(ended, UNIT, set(), NOW, NOW - EXITED_GRACE_S) is None
        reason = orphan_reason(ended, UNIT, set(), NOW, long_ago)
        assert reason == f"unlabelled sandbox-job container, {state} 61 s ago"
    too_old = listed({}, age_s=age_bound_s(UNIT) + 1)
    assert (orphan_reason(too_old, UNIT, set(), NOW) or "").startswith("older than any job")
