"""Soak: three `dsw worker` processes in one group take a burst of 600 shell jobs while, one after
another, a worker is killed with SIGKILL, the broker stops for ~10 s and dockerd restarts.

Everything here is private to the test: a KRaft broker of its own (tests/brokers.py) and a dockerd
of its own (tests/dockerds.py), both restarted by the test. The machine's daemon is only
read (`docker save` of the sandbox image) and the shared broker is not used at all.

Asserted afterwards: every job has a `finished` (none lost); every job run twice is explained by
a fault; no job is blamed on its script because of a fault (an `echo` or `sleep` script is
SUCCEEDED with its output, a time-limited one TIME_LIMIT_EXCEEDED); never more than
workers x capacity sandbox containers on the daemon at once; nothing left on it; each worker's RSS
bounded; throughput back after each fault. The figures go to stdout and to
`.local/soak/<timestamp>.json`; when it fails, the workers', dockerd's and the broker's logs are
kept beside it in `.local/soak/<timestamp>/`.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import shutil
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio_asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from dsw.config import MiB, Settings
from dsw.container_spec import WORKER_LABEL
from dsw.docker import DockerClient, open_docker
from dsw.errors import DockerError, KafkaUnavailable
from dsw.kafka import Kafka, Record, committed_positions, create_topics, open_kafka, open_reader
from tests.brokers import Broker, private_broker
from tests.conftest import ROOT
from tests.dockerds import Dockerd, private_dockerd
from tests.workers import WorkerProcess, free_port, job, read_until, run_worker, worker_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SHELL = "linux-amd64-shell"
IMAGE = f"dsw-sandbox:{SHELL}"
WORKERS = 3
CAPACITY = 4
POOL = 1  # warm containers per worker (tests.workers.worker_settings)
PARTITIONS = 6
# The burst: most jobs under a second, some a few seconds, a few over a 2 s time limit, and a few
# that outlast dockerd's stop timeout (10 s: at its SIGTERM it stops every container, SIGKILL
# after 10 s), so that the restart surely meets containers it has to kill. Those are published
# together at OUTLAST_AT of the burst and the restart waits for one of them to start: late
# enough that the queue gets to them only after the broker stop has settled (at about 60 s; the
# burst takes 90-120 s), early enough that the restart still meets load.
MIX = {"echo": 300, "short": 194, "long": 80, "timeout": 20, "outlast": 6}
OUTLAST_S = 15
OUTLAST_AT = 0.8
DOCKERD_STOP_TIMEOUT_S = 10  # a container's default StopTimeout
TIME_LIMIT_S = 2
# A killed worker's partitions move once the broker gives up on it: this, not the default 45 s.
SESSION_TIMEOUT_MS = 10_000
BROKER_DOWN_S = 10.0
RSS_BOUND_BYTES = 150 * MiB
# A fault is injected only with at least this many jobs still to finish, so it meets load.
MIN_REMAINING_AT_FAULT = 60
# Settled: this long after the fault was undone, the group stable with every worker, each worker
# finishing jobs again and the finished rate of the last RATE_WINDOW_S at least half of the rate
# before the fault.
MIN_SETTLE_S = 8.0
RATE_WINDOW_S = 5.0
SETTLE_TIMEOUT_S = 90.0
# The restart waits this long at most for an outlasting job to start (the queue gets to it).
OUTLAST_WAIT_S = 240.0
ALL_DONE_TIMEOUT_S = 420.0
OUT = ROOT / ".local" / "soak"


# ---- the jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    job_id: str
    kind: str
    body: bytes
    stdout: str  # what its `finished` must carry
    finished_with: str


def plan_jobs(rng: random.Random) -> list[Planned]:
    planned: list[Planned] = []
    for kind, count in MIX.items():
        for _ in range(count):
            mark = f"soak-{len(planned)}"
            config: dict[str, Any] = {}
            outcome = "SUCCEEDED"
            if kind == "echo":
                script = f"echo {mark}\n"
            elif kind == "short":
                script = f"sleep 0.2; echo {mark}\n"
            elif kind == "long":
                script = f"sleep {rng.choice((2, 3, 4))}; echo {mark}\n"
            elif kind == "outlast":
                script = f"sleep {OUTLAST_S}; echo {mark}\n"
            else:
                script, outcome = f"echo {mark}; sleep 30\n", "TIME_LIMIT_EXCEEDED"
                config["timeoutSeconds"] = TIME_LIMIT_S
            job_id, body = job(script, **config)
            planned.append(Planned(job_id, kind, body, f"{mark}\n", outcome))
    outlast = [p for p in planned if p.kind == "outlast"]
    rest = [p for p in planned if p.kind != "outlast"]
    rng.shuffle(rest)
    at = int(len(rest) * OUTLAST_AT)
    return rest[:at] + outlast + rest[at:]


# ---- what was seen -------------------------------------------------------------------------------


@dataclass
class Seen:
    """`running` and `finished` as read so far (broker append times), without repeats."""

    running_topic: str
    finished_topic: str
    records: dict[tuple[str, int, int], Record] = field(default_factory=dict)
    _added: trio.Event = field(default_factory=trio.Event)

    def add(self, records: list[Record]) -> None:
        for record in records:
            self.records[(record.topic, record.partition, record.offset)] = record
        if records:
            self._added.set()
            self._added = trio.Event()

    def running_unfinished(self, job_ids: set[str]) -> dict[str, float]:
        """Those of `job_ids` running now (a `running`, no `finished`): when they last started."""
        started: dict[str, float] = {}
        done = set()
        for r in self.records.values():
            job_id = (r.key or b"").decode()
            if job_id not in job_ids:
                continue
            if r.topic == self.running_topic:
                started[job_id] = max(started.get(job_id, 0.0), r.timestamp_ms / 1000)
            else:
                done.add(job_id)
        return {j: ts for j, ts in started.items() if j not in done}

    async def wait_for_start(self, job_ids: set[str], within_s: float) -> dict[str, float]:
        """Until one of `job_ids` has started within the last `within_s`; those running then."""
        while True:
            running = self.running_unfinished(job_ids)
            if any(time.time() - ts < within_s for ts in running.values()):
                return running
            await self._added.wait()

    async def wait_for(self, finished: int) -> None:
        """Until `finished` jobs have a `finished`."""
        while len(self.first_finished()) < finished:
            await self._added.wait()

    def finished(self) -> list[tuple[float, dict[str, Any]]]:
        finished = [
            (r.timestamp_ms / 1000, json.loads(r.value or b"null"))
            for r in self.records.values()
            if r.topic == self.finished_topic
        ]
        return sorted(finished, key=lambda pair: pair[0])

    def first_finished(self) -> dict[str, float]:
        """Job id → when its first `finished` was appended."""
        first: dict[str, float] = {}
        for ts, message in self.finished():
            first.setdefault(message["jobId"], ts)
        return first


async def follow(kafka: Kafka, seen: Seen) -> None:
    """Read `running` and `finished` from the beginning for ever, through broker outages."""
    topics = [seen.running_topic, seen.finished_topic]
    while True:
        try:
            async with open_reader(kafka, topics, from_beginning=True) as reader:
                while True:
                    seen.add(await reader.take(0.25))
        except KafkaUnavailable:
            await trio.sleep(0.5)


def rate(times: list[float], start: float, end: float) -> float:
    return sum(start < t <= end for t in times) / max(end - start, 1e-9)


# ---- samplers ------------------------------------------------------------------------------------


@dataclass
class ContainerSamples:
    samples: int = 0
    failed: int = 0  # the daemon did not answer (its restart)
    max_sandboxes: int = 0
    max_sandboxes_at: float = 0.0
    at_max: list[str] = field(default_factory=list)  # name, state and worker of each, at the max
    max_all: int = 0  # sandboxes plus the workers' preflight probes (created, never started)
    max_running: int = 0
    max_pool: int = 0  # the workers' warm pool containers (dsw-pool-*)


async def sample_containers(docker: DockerClient, out: ContainerSamples) -> None:
    """GET /containers/json?all=1 every 50 ms."""
    while True:
        try:
            listed = await docker.containers_list()
        except DockerError:
            out.failed += 1
        else:
            out.samples += 1
            sandboxes = [
                c for c in listed if any(n.startswith("/sandbox-job-") for n in c.get("Names", []))
            ]
            if len(sandboxes) > out.max_sandboxes:
                out.max_sandboxes, out.max_sandboxes_at = len(sandboxes), time.time()
                out.at_max = sorted(
                    f"{c['Names'][0]} {c.get('State')} {(c.get('Labels') or {}).get(WORKER_LABEL)}"
                    for c in sandboxes
                )
            out.max_all = max(out.max_all, len(listed))
            out.max_pool = max(
                out.max_pool,
                sum(any(n.startswith("/dsw-pool-") for n in c.get("Names", [])) for c in listed),
            )
            out.max_running = max(
                out.max_running, sum(c.get("State") == "running" for c in sandboxes)
            )
        await trio.sleep(0.05)


def vm_rss_bytes(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match[1]) * 1024 if match else None


# ---- the workers ---------------------------------------------------------------------------------


class Fleet:
    """The worker processes, started into one exit stack (SIGKILLed at exit if still running)."""

    def __init__(self, stack: AsyncExitStack, settings: Settings, logs: Path) -> None:
        self._stack = stack
        self._settings = settings
        self._logs = logs
        self.workers: dict[str, WorkerProcess] = {}
        self.rss_peak: dict[str, int] = {}
        self.rss_samples: dict[str, int] = defaultdict(int)

    async def start(self, instance: str) -> WorkerProcess:
        settings = msgspec.structs.replace(self._settings, metrics_port=free_port())
        log = self._stack.enter_context((self._logs / f"worker{instance}.log").open("ab"))
        worker = await self._stack.enter_async_context(
            run_worker(settings, instance, log=log, ready_timeout_s=90)
        )
        self.workers[instance] = worker
        return worker

    def live(self) -> dict[str, WorkerProcess]:
        return {i: w for i, w in self.workers.items() if w.process.returncode is None}

    async def sample_rss(self) -> None:
        while True:
            for instance, worker in self.live().items():
                rss = vm_rss_bytes(worker.pid)
                if rss is not None:
                    self.rss_peak[instance] = max(self.rss_peak.get(instance, 0), rss)
                    self.rss_samples[instance] += 1
            await trio.sleep(0.2)


# ---- Kafka set-up and group state ----------------------------------------------------------------


@asynccontextmanager
async def open_admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await trio_asyncio.aio_as_trio(admin.start)()
    try:
        yield admin
    finally:
        with trio.move_on_after(10, shield=True):
            await trio_asyncio.aio_as_trio(admin.close)()


async def create_append_time_topics(bootstrap: str, topics: list[str]) -> None:
    """`running` and `finished` stamped by the broker when appended: the times compared with the
    faults are then when a message really arrived, not when a producer first tried to send it."""
    async with open_admin(bootstrap) as admin:
        for topic in topics:
            new = NewTopic(topic, 2, 1, topic_configs={"message.timestamp.type": "LogAppendTime"})
            try:
                await trio_asyncio.aio_as_trio(admin.create_topics)([new])
            except TopicAlreadyExistsError:
                pass


async def group_members(bootstrap: str, group: str) -> tuple[str, list[str]]:
    """The group's state and its members' client ids ("dsw-<worker id>"); ("", []) when the
    broker does not answer."""
    try:
        async with open_admin(bootstrap) as admin:
            responses = await trio_asyncio.aio_as_trio(admin.describe_consumer_groups)([group])
    except Exception:  # the broker is away or electing its coordinator: ask again later
        return "", []
    described = responses[0].groups[0]
    state, members = described[2], described[5]
    return str(state), sorted(str(m[1]) for m in members)


# ---- faults --------------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    start: float
    back: float = 0.0  # the fault undone: the worker ready again, the broker or dockerd answering
    settled: float | None = None
    remaining_at_start: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def window_end(self) -> float:
        return self.settled if self.settled is not None else self.back + SETTLE_TIMEOUT_S


async def settle(
    fault: Fault, seen: Seen, fleet: Fleet, bootstrap: str, group: str, total: int
) -> None:
    """Wait until the system has recovered from `fault` (see MIN_SETTLE_S); `settled` stays None
    if it does not within SETTLE_TIMEOUT_S."""
    before = list(seen.first_finished().values())
    baseline = rate(before, fault.start - 10, fault.start)
    fault.figures["baseline_jobs_per_s"] = round(baseline, 2)
    with trio.move_on_after(SETTLE_TIMEOUT_S):
        while True:
            await trio.sleep(0.5)
            now = time.time()
            first = seen.first_finished()
            if len(first) >= total:
                fault.settled = now
                return
            if now < fault.back + MIN_SETTLE_S:
                continue
            if rate(list(first.values()), now - RATE_WINDOW_S, now) < 0.5 * baseline:
                continue
            busy = {m.get("workerId") for ts, m in seen.finished() if ts > fault.back}
            live = {w.settings.worker_id for w in fleet.live().values()}
            if not live <= busy:
                continue
            state, members = await group_members(bootstrap, group)
            if state == "Stable" and sorted(f"dsw-{w}" for w in live) == members:
                fault.settled = now
                return


def remaining(seen: Seen, total: int) -> int:
    return total - len(seen.first_finished())


# ---- analysis ------------------------------------------------------------------------------------


def job_records(
    records: list[Record], ws: Settings
) -> dict[str, dict[str, list[tuple[float, dict[str, Any]]]]]:
    """Job id → {"running": [(ts, message)], "finished": [(ts, message)]}, in append order."""
    per_job: dict[str, dict[str, list[tuple[float, dict[str, Any]]]]] = defaultdict(
        lambda: {"running": [], "finished": []}
    )
    for record in sorted(records, key=lambda r: r.timestamp_ms):
        message = json.loads(record.value or b"null")
        kind = "running" if record.topic == ws.running_topic else "finished"
        per_job[message["jobId"]][kind].append((record.timestamp_ms / 1000, message))
    return per_job


# An answer this long before a fault may still have been uncommitted when the fault came (offsets
# commit after every poll, at most every half second while the worker is busy).
UNCOMMITTED_S = 2.0


def explain_duplicate(
    job_id: str,
    runs: list[tuple[float, dict[str, Any]]],
    fins: list[tuple[float, dict[str, Any]]],
    faults: list[Fault],
    t0: float,
) -> tuple[str, str] | None:
    """(the fault, in words why) that made this job run or answer twice; None if none did.

    The repeat is the second `running` (or, without one, the second `finished`). A fault explains
    it when the job's first attempt began before the fault was undone (its offset may stay
    uncommitted long after its answer, behind a longer job at a lower offset of its partition)
    and the repeat came after the fault began; of those, the one in whose window the first
    attempt was answered (its offset then not committed) or, if it was not answered, the first
    one.
    """

    def at(ts: float) -> str:
        return f"+{ts - t0:.1f}s"

    first_run = min([ts for ts, _ in runs] + [ts for ts, _ in fins])
    repeat = runs[1][0] if len(runs) > 1 else fins[1][0]
    answered = [ts for ts, _ in fins if ts < repeat]
    candidates = [f for f in faults if first_run <= f.back and repeat >= f.start]
    if not candidates:
        return None
    cause = candidates[0]
    if answered:
        cause = next(
            (f for f in candidates if f.start - UNCOMMITTED_S <= answered[0] <= f.window_end()),
            cause,
        )
    story = ", ".join(
        [f"running {at(ts)}" for ts, _ in runs]
        + [
            f"finished {at(ts)} by {m.get('workerId', '?')} "
            f"({m['status']} {(m.get('scriptResults') or {}).get('finishedWith', '')})".rstrip()
            for ts, m in fins
        ]
    )
    window = f"{at(cause.start)}..{at(cause.window_end())}"
    if cause.name == "kill -9":
        killed = cause.detail["worker_id"]
        if any(m.get("workerId") == killed for _, m in fins):
            why = (
                f"answered by {killed} but not yet committed when it was killed at "
                f"{at(cause.start)}, so redelivered and run again"
            )
        elif answered:
            why = (
                f"answered at {at(answered[0])} while the group rebalanced after the kill -9 at "
                f"{at(cause.start)} (commits refused, its partition moved), so run again by the "
                "partition's next owner"
            )
        else:
            why = (
                f"in flight when {killed} was killed at {at(cause.start)}, so redelivered after "
                "the rebalance"
            )
    elif cause.name == "broker stop":
        why = (
            f"around the broker outage {at(cause.start)}..{at(cause.back)}: its offset could not "
            "be committed (or the group rebalanced), so redelivered"
        )
    else:
        why = (
            f"its container was in the way of the dockerd restart at {at(cause.start)} (back "
            f"{at(cause.back)}), so the worker ran it again"
        )
    return cause.name, f"{job_id}: {story}. {cause.name} [{window}]: {why}"


def nearest_fault(ts: float, faults: list[Fault], t0: float) -> str:
    for fault in faults:
        if fault.start - 5 <= ts <= fault.window_end():
            return (
                f"during {fault.name} (+{fault.start - t0:.1f}s..+{fault.window_end() - t0:.1f}s)"
            )
    return "outside every fault window"


# ---- the test ------------------------------------------------------------------------------------


async def test_soak_three_workers_600_jobs_through_kill_broker_stop_and_dockerd_restart(
    docker_ready: None, settings: Settings, tmp_path: Path
) -> None:
    began = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = OUT / stamp
    logs.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started": stamp,
        "logs": str(logs),
        "failures": ["the soak did not get to its checks"],
    }
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    try:
        await soak(settings, broker_dir, logs, report, began)
    finally:
        report["wall_s"] = round(time.time() - began, 1)
        if not report.get("failures"):
            shutil.rmtree(logs, ignore_errors=True)  # the logs are kept only when it fails
            report["logs"] = None
        (OUT / f"{stamp}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        print_report(report)
        shutil.rmtree(broker_dir, ignore_errors=True)
    failures = report["failures"]
    assert not failures, "\n".join(failures)


async def soak(
    settings: Settings, broker_dir: Path, logs: Path, report: dict[str, Any], began: float
) -> None:
    prefix = f"soak{int(began)}-"
    planned = plan_jobs(random.Random(20240601))
    by_id = {p.job_id: p for p in planned}
    total = len(planned)
    faults: list[Fault] = []
    containers = ContainerSamples()
    async with AsyncExitStack() as stack:
        broker: Broker = await stack.enter_async_context(private_broker(broker_dir))
        stack.callback(_keep, broker_dir / "broker.log", logs / "broker.log")
        dockerd: Dockerd = await stack.enter_async_context(
            private_dockerd([IMAGE], source_host=settings.docker_host)
        )
        stack.callback(_keep, dockerd.log_path, logs / "dockerd.log")
        ws = worker_settings(
            settings,
            prefix,
            kafka_broker_url=broker.bootstrap,
            docker_host=dockerd.docker_host,
            max_containers=CAPACITY,
            kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
            kafka_timeout_s=10,
            warm_containers=POOL,
        )
        ws = msgspec.structs.replace(ws, runner_types=(SHELL,))
        pending = f"{ws.pending_topic_prefix}{SHELL}"
        group = f"{ws.consumer_group_prefix}{SHELL}"
        report["setup"] = {
            "workers": WORKERS,
            "capacity": CAPACITY,
            "partitions": PARTITIONS,
            "jobs": dict(MIX),
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "broker": broker.bootstrap,
            "docker_host": dockerd.docker_host,
            "dockerd_started_s": round(time.time() - began, 1),
        }
        kafka = await stack.enter_async_context(open_kafka(ws))
        await create_topics(broker.bootstrap, [pending], partitions=PARTITIONS)
        await create_append_time_topics(broker.bootstrap, [ws.running_topic, ws.finished_topic])
        docker = await stack.enter_async_context(open_docker(ws))
        background = await stack.enter_async_context(trio.open_nursery())
        stack.callback(background.cancel_scope.cancel)
        seen = Seen(ws.running_topic, ws.finished_topic)
        background.start_soon(follow, kafka, seen)
        background.start_soon(sample_containers, docker, containers)

        fleet = Fleet(stack, ws, logs)
        for n in range(WORKERS):
            await fleet.start(f"-w{n}")
        background.start_soon(fleet.sample_rss)
        # The group settles before the burst: no rebalance of the start-up runs anything twice.
        expected = sorted(f"dsw-{w.settings.worker_id}" for w in fleet.workers.values())
        with trio.fail_after(60):
            while True:
                if await group_members(broker.bootstrap, group) == ("Stable", expected):
                    break
                await trio.sleep(0.2)
        report["setup"]["ready_s"] = round(time.time() - began, 1)

        # The burst.
        t0 = time.time()
        # In three steps, each at once: what comes before the outlasting jobs, then they, then
        # the rest, so that every partition has them at OUTLAST_AT of its queue.
        for _, part in itertools.groupby(planned, key=lambda p: p.kind == "outlast"):
            async with trio.open_nursery() as publishing:
                for p in part:
                    publishing.start_soon(kafka.publish, pending, p.job_id, p.body)
        report["burst"] = {"published_s": round(time.time() - t0, 2)}

        # (a) kill -9 a worker, then start it again under a new instance suffix.
        with trio.fail_after(120):
            await seen.wait_for(50)
        victim = fleet.workers["-w0"]
        victim_label = f"{WORKER_LABEL}={victim.settings.worker_id}"
        with trio.fail_after(60):
            while True:  # ...while it has sandboxes running, so that the kill leaves orphans
                listed = await docker.containers_list(labels=[victim_label])
                if sum(c.get("State") == "running" for c in listed) >= 2:
                    break
                await trio.sleep(0.05)
        fault = Fault("kill -9", time.time(), remaining_at_start=remaining(seen, total))
        fault.detail["worker_id"] = victim.settings.worker_id
        fault.detail["its_containers"] = sorted(str(c.get("State")) for c in listed)
        victim.signal(signal.SIGKILL)
        await victim.wait(10)
        await trio.sleep(2)
        restarted = await fleet.start("-w3")
        fault.back = time.time()
        fault.detail["restarted_as"] = restarted.settings.worker_id
        faults.append(fault)
        await settle(fault, seen, fleet, broker.bootstrap, group, total)

        # (b) the broker stops for BROKER_DOWN_S.
        fault = Fault("broker stop", time.time(), remaining_at_start=remaining(seen, total))
        await broker.stop()
        await trio.sleep(BROKER_DOWN_S)
        fault.detail["stopped_for_s"] = round(time.time() - fault.start, 1)
        await broker.start()
        fault.back = time.time()
        faults.append(fault)
        await settle(fault, seen, fleet, broker.bootstrap, group, total)

        # (c) dockerd restarts (SIGTERM: it stops every container, then starts on the same root),
        # as soon as a job that outlasts its stop timeout has started.
        outlast = {p.job_id for p in planned if p.kind == "outlast"}
        with trio.move_on_after(OUTLAST_WAIT_S):
            await seen.wait_for_start(outlast, within_s=1.0)
        fault = Fault("dockerd restart", time.time(), remaining_at_start=remaining(seen, total))
        fault.detail["outlast_running_for_s"] = sorted(
            round(fault.start - ts, 1) for ts in seen.running_unfinished(outlast).values()
        )
        fault.detail["dockerd_exit"] = await dockerd.stop()
        fault.detail["stopped_after_s"] = round(time.time() - fault.start, 1)
        await dockerd.start()
        fault.back = time.time()
        faults.append(fault)
        await settle(fault, seen, fleet, broker.bootstrap, group, total)

        # Every job answered, every offset committed, nothing in flight: nothing more will come.
        with trio.move_on_after(ALL_DONE_TIMEOUT_S - (time.time() - t0)):
            await seen.wait_for(total)
            while True:
                if sum((await _committed(broker.bootstrap, group)).values()) >= total:
                    break
                await trio.sleep(0.5)
        all_done = time.time()
        await trio.sleep(2)
        records = await read_until(
            kafka,
            [ws.running_topic, ws.finished_topic],
            lambda rs: len(rs) >= len(seen.records),
            timeout_s=60,
        )
        exits = {}
        for instance, worker in fleet.live().items():
            worker.signal(signal.SIGTERM)
            exits[instance] = await worker.wait(ws.drain_timeout_s + 30)
        await trio.sleep(0.5)
        left_containers = [c.get("Names") for c in await dockerd.containers()]
        left_volumes = [v.get("Name") for v in await dockerd.volumes()]
        committed = sum((await _committed(broker.bootstrap, group)).values())

        report["failures"] = check(
            report,
            records=records,
            ws=ws,
            by_id=by_id,
            faults=faults,
            fleet=fleet,
            containers=containers,
            t0=t0,
            all_done=all_done,
            exits=exits,
            left_containers=left_containers,
            left_volumes=left_volumes,
            committed=committed,
        )


async def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    try:
        return await committed_positions(bootstrap, group)
    except KafkaUnavailable:
        return {}


def _keep(source: Path, target: Path) -> None:
    try:
        shutil.copyfile(source, target)
    except OSError:
        pass


def check(
    report: dict[str, Any],
    *,
    records: list[Record],
    ws: Settings,
    by_id: dict[str, Planned],
    faults: list[Fault],
    fleet: Fleet,
    containers: ContainerSamples,
    t0: float,
    all_done: float,
    exits: dict[str, int],
    left_containers: list[Any],
    left_volumes: list[Any],
    committed: int,
) -> list[str]:
    """Every figure into `report`; the failed checks, in words."""
    failures: list[str] = []
    total = len(by_id)
    per_job = job_records(records, ws)
    first_finished = sorted(
        fins[0][0] for fins in (j["finished"] for j in per_job.values()) if fins
    )
    finished_times = first_finished

    # Lost.
    lost = [job_id for job_id in by_id if not per_job.get(job_id, {}).get("finished")]
    if lost:
        failures.append(f"{len(lost)} of {total} jobs have no finished: {lost[:10]}")
    strangers = set(per_job) - set(by_id)
    if strangers:
        failures.append(f"records of jobs never published: {sorted(strangers)[:10]}")

    # Blamed on the script (or rejected) because of a fault.
    wrong = []
    for job_id, p in by_id.items():
        for ts, m in per_job.get(job_id, {}).get("finished", []):
            results = m.get("scriptResults") or {}
            if (
                m["status"] == "ACCEPTED"
                and results.get("finishedWith") == p.finished_with
                and results.get("stdout") == p.stdout
            ):
                continue
            wrong.append(
                f"{job_id} ({p.kind}, expected {p.finished_with} {p.stdout!r}): {m['status']} "
                f"{results.get('finishedWith', '')} exit={results.get('exitCode')} "
                f"stdout={results.get('stdout', '')!r} stderr={results.get('stderr', '')[-200:]!r}"
                f" reason={m.get('rejectionReason', '')!r} by {m.get('workerId')} at "
                f"+{ts - t0:.1f}s {nearest_fault(ts, faults, t0)}"
            )
    if wrong:
        failures.append(
            f"{len(wrong)} finished messages blame the script for a fault or are wrong:\n  "
            + "\n  ".join(wrong[:30])
        )

    # Run twice.
    duplicates: list[str] = []
    unexplained: list[str] = []
    causes: Counter[str] = Counter()
    for job_id, jr in per_job.items():
        runs, fins = jr["running"], jr["finished"]
        if len(runs) <= 1 and len(fins) <= 1:
            continue
        explanation = explain_duplicate(job_id, runs, fins, faults, t0)
        if explanation is not None:
            causes[explanation[0]] += 1
            duplicates.append(explanation[1])
        else:
            unexplained.append(
                f"{job_id}: running at {[f'+{ts - t0:.1f}s' for ts, _ in runs]}, "
                f"finished at {[f'+{ts - t0:.1f}s' for ts, _ in fins]}"
            )
    if unexplained:
        failures.append(
            f"{len(unexplained)} jobs ran or answered twice outside every fault:\n  "
            + "\n  ".join(unexplained[:20])
        )

    # Containers, leftovers, memory, exits.
    bound = WORKERS * CAPACITY
    if containers.max_sandboxes > bound:
        failures.append(
            f"{containers.max_sandboxes} sandbox containers at once (at "
            f"+{containers.max_sandboxes_at - t0:.1f}s, "
            f"{nearest_fault(containers.max_sandboxes_at, faults, t0)}), more than {WORKERS} x "
            f"{CAPACITY}: {containers.at_max}"
        )
    # Each worker keeps a pool of POOL per type; a killed worker's stay until the reaper of its
    # successor removes them.
    if containers.max_pool > (WORKERS + 1) * POOL:
        failures.append(
            f"{containers.max_pool} warm pool containers at once, more than "
            f"({WORKERS} workers + 1 killed) x {POOL}"
        )
    if left_containers or left_volumes:
        failures.append(f"left on the daemon: containers {left_containers}, volumes {left_volumes}")
    for instance, peak in fleet.rss_peak.items():
        if peak >= RSS_BOUND_BYTES:
            failures.append(f"worker{instance} RSS peaked at {peak / MiB:.0f} MiB")
    if len(fleet.rss_peak) != len(fleet.workers):
        failures.append(f"RSS not sampled for every worker: {sorted(fleet.rss_peak)}")
    if any(exits.values()):
        failures.append(f"workers exited non-zero on SIGTERM: {exits}")
    if committed < total:
        failures.append(f"only {committed} of {total} offsets committed")

    # Faults: each met load and was recovered from.
    for fault in faults:
        every_finished = sorted(ts for jr in per_job.values() for ts, _ in jr["finished"])
        later = [t for t in every_finished if t > fault.start]
        # A job started after the fault was undone and answered: work flows again.
        fresh = sorted(
            jr["finished"][-1][0]
            for jr in per_job.values()
            if jr["running"] and jr["running"][-1][0] > fault.back and jr["finished"]
        )
        in_flight = [
            jr["finished"][0][0]
            for jr in per_job.values()
            if jr["running"]
            and jr["running"][0][0] < fault.start
            and jr["finished"]
            and jr["finished"][0][0] >= fault.start
        ]
        back_at = None
        baseline = fault.figures.get("baseline_jobs_per_s", 0)
        t = fault.back + RATE_WINDOW_S
        while t <= max(finished_times, default=0):
            if rate(finished_times, t - RATE_WINDOW_S, t) >= 0.5 * baseline:
                back_at = t
                break
            t += 0.25
        fault.figures.update(
            at_s=round(fault.start - t0, 1),
            duration_s=round(fault.back - fault.start, 1),
            remaining_jobs=fault.remaining_at_start,
            running_at_fault=len(in_flight),
            next_finished_s=round(later[0] - fault.start, 1) if later else None,
            next_fresh_finished_s=round(fresh[0] - fault.start, 1) if fresh else None,
            running_all_finished_s=round(max(in_flight) - fault.start, 1) if in_flight else None,
            throughput_back_s=round(back_at - fault.start, 1) if back_at else None,
            settled_s=round(fault.settled - fault.start, 1) if fault.settled else None,
            duplicates=causes.get(fault.name, 0),
        )
        if fault.remaining_at_start < MIN_REMAINING_AT_FAULT:
            failures.append(f"{fault.name} met only {fault.remaining_at_start} unfinished jobs")
        if fault.settled is None:
            failures.append(f"no recovery within {SETTLE_TIMEOUT_S:.0f} s of {fault.name}")
        if fault.name == "dockerd restart" and not any(
            age < OUTLAST_S - DOCKERD_STOP_TIMEOUT_S - 1
            for age in fault.detail.get("outlast_running_for_s", [])
        ):
            failures.append(f"the dockerd restart met no container it had to kill: {fault.detail}")

    last = max(finished_times, default=t0)
    report["burst"].update(
        jobs=total,
        finished=len(first_finished),
        wall_s=round(last - t0, 1),
        jobs_per_s=round(len(first_finished) / max(last - t0, 1e-9), 2),
        all_done_s=round(all_done - t0, 1),
        outcomes=dict(
            Counter(
                f"{m['status']} {(m.get('scriptResults') or {}).get('finishedWith', '')}".strip()
                for jr in per_job.values()
                for _, m in jr["finished"]
            )
        ),
    )
    report["lost"] = len(lost)
    report["duplicates"] = {
        "count": len(duplicates) + len(unexplained),
        "by_fault": dict(causes),
        "explained": duplicates,
        "unexplained": unexplained,
    }
    report["wrong_finished"] = wrong
    report["containers"] = asdict(containers) | {
        "bound": bound,
        "max_sandboxes_at_s": round(containers.max_sandboxes_at - t0, 1),
        "left": left_containers,
        "volumes_left": left_volumes,
    }
    report["rss_peak_mib"] = {
        f"worker{i}": round(peak / MiB, 1) for i, peak in sorted(fleet.rss_peak.items())
    }
    report["worker_ids"] = {i: w.settings.worker_id for i, w in fleet.workers.items()}
    report["exits"] = exits
    report["faults"] = [
        asdict(f)
        | {
            "start": round(f.start - t0, 1),
            "back": round(f.back - t0, 1),
            "settled": round(f.settled - t0, 1) if f.settled else None,
        }
        for f in faults
    ]
    return failures


def print_report(report: dict[str, Any]) -> None:
    burst = report.get("burst", {})
    lines = [
        "",
        f"soak {report.get('started')}: wall {report.get('wall_s')} s, logs in {report['logs']}",
        f"  burst: {burst.get('jobs')} jobs, {burst.get('jobs_per_s')} jobs/s over "
        f"{burst.get('wall_s')} s; outcomes {burst.get('outcomes')}",
        f"  lost: {report.get('lost')}; duplicates: {report.get('duplicates', {}).get('count')} "
        f"{report.get('duplicates', {}).get('by_fault')}",
    ]
    c = report.get("containers", {})
    lines.append(
        f"  containers: max {c.get('max_sandboxes')} sandboxes at once (bound {c.get('bound')}),"
        f" max running {c.get('max_running')}, max warm {c.get('max_pool')}, samples "
        f"{c.get('samples')} "
        f"(+{c.get('failed')} unanswered); left {c.get('left')} {c.get('volumes_left')}"
    )
    lines.append(f"  peak RSS MiB: {report.get('rss_peak_mib')}")
    for fault in report.get("faults", []):
        lines.append(f"  {fault['name']}: {fault['figures']}")
    for line in report.get("duplicates", {}).get("explained", [])[:50]:
        lines.append(f"    dup {line}")
    for failure in report.get("failures", []):
        lines.append(f"  FAILED {failure}")
    print("\n".join(lines))
