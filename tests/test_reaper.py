"""The reaper removes orphans of this project and nothing else."""

from __future__ import annotations

import os
import socket
import subprocess
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
from dsw.reaper import orphan_reason, reap

IMAGE = "dsw-sandbox:linux-amd64-shell"


async def create(docker: DockerClient, name: str, labels: dict[str, str]) -> str:
    config = {"Image": IMAGE, "Entrypoint": ["sleep"], "Cmd": ["60"], "Labels": labels}
    container, _ = await docker.container_create(name, config)
    return container


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
    unlabelled = await create(docker, f"sandbox-job-{uuid.uuid4()}", {})
    # The original Java worker's live run: same names, no labels, running.
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
    try:
        removed = await reap(docker, settings, in_use={"busy"})
        left = {c["Id"] for c in await docker.containers_list()}
        assert gone not in left
        assert unlabelled not in left
        assert {java_live, alive, elsewhere, other_pids, mine_running, stranger} <= left
        assert removed == 2
    finally:
        with trio.move_on_after(30, shield=True):
            for container in (java_live, alive, elsewhere, other_pids, mine_running, stranger):
                await docker.container_remove(container)


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


def test_an_unlabelled_container_is_reaped_only_when_not_running_or_too_old() -> None:
    assert orphan_reason(listed({}), UNIT, set(), NOW) is None
    for state in ("exited", "created", "dead"):
        assert orphan_reason(listed({}, state=state), UNIT, set(), NOW) is not None
    too_old = listed({}, age_s=age_bound_s(UNIT) + 1)
    assert (orphan_reason(too_old, UNIT, set(), NOW) or "").startswith("older than any job")
