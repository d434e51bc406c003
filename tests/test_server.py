"""The dispatcher of one sandbox type, with a fake consumer: capacity, joins, commit positions.

Pure logic only: the jobs' own work is replaced by a stand-in that waits until the test lets it
finish. The same paths against the real broker and daemon are in test_worker.py.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio

from dsw import jobs
from dsw.config import Settings, load_settings
from dsw.docker_health import DockerHealth
from dsw.drain import Drain
from dsw.inflight import InFlight
from dsw.intake import Accepted
from dsw.jobs import JobContext
from dsw.kafka import Record
from dsw.offsets import OffsetTracker, Partition
from dsw.sandbox_types import load_sandbox_type
from dsw.server import TypeServer
from dsw.status import Readiness


class FakeConsumer:
    """Records per partition, read from a position that `seek` moves; commits are remembered."""

    def __init__(self, tracker: OffsetTracker) -> None:
        self.tracker = tracker
        self.records: dict[Partition, list[Record]] = {}
        self.position: dict[Partition, int] = {}
        self.paused: set[Partition] = set()
        self.committed: dict[Partition, int] = {}

    def add(self, record: Record) -> None:
        partition = (record.topic, record.partition)
        self.records.setdefault(partition, []).append(record)
        self.position.setdefault(partition, 0)

    def assignment(self) -> list[Partition]:
        return list(self.records)

    def pause(self, partitions: list[Partition]) -> None:
        self.paused |= set(partitions)

    def resume(self, partitions: list[Partition]) -> None:
        self.paused -= set(partitions)

    def seek(self, partition: Partition, offset: int) -> None:
        self.position[partition] = offset

    async def take(self, max_records: int, timeout_s: float) -> list[Record]:
        taken: list[Record] = []
        for partition, records in self.records.items():
            if partition in self.paused:
                continue
            while len(taken) < max_records and self.position[partition] < len(records):
                taken.append(records[self.position[partition]])
                self.position[partition] += 1
        if not taken:
            await trio.sleep(min(timeout_s, 0.01))
        return taken

    async def commit(self) -> bool:
        positions = self.tracker.to_commit(self.assignment())
        self.committed.update(positions)
        self.tracker.committed(positions)
        return True


class FakeKafka:
    def __init__(self) -> None:
        self.consumers: dict[str, FakeConsumer] = {}
        self.published: list[tuple[str, bytes | str | None, bytes | None]] = []
        # Topics that cannot be written: a publish there retries until cancelled.
        self.unwritable: set[str] = set()

    @asynccontextmanager
    async def open_consumer(
        self, topic: str, group: str, tracker: OffsetTracker, on_assigned: Any
    ) -> AsyncIterator[FakeConsumer]:
        self.consumers[topic] = FakeConsumer(tracker)
        yield self.consumers[topic]

    async def publish(
        self, topic: str, key: str | bytes | None, value: bytes | None, headers: Any = None
    ) -> None:
        if topic in self.unwritable:
            await trio.sleep_forever()
        self.published.append((topic, key, value))

    def finished(self, settings: Settings) -> list[dict[str, Any]]:
        return [json.loads(v or b"") for t, _, v in self.published if t == settings.finished_topic]


class Runs:
    """Stands in for `jobs.run_job`: each run waits until released, then publishes SUCCEEDED,
    calls `answered`, and "removes its container" (waits until `removed` is set)."""

    def __init__(self, kafka: FakeKafka, settings: Settings) -> None:
        self.kafka, self.settings = kafka, settings
        self.running: list[str] = []
        self.most = 0
        self.release = trio.Event()
        self.removed = trio.Event()
        self.removed.set()

    async def run_job(
        self, ctx: JobContext, record: Record, accepted: Accepted, answered: jobs.Answered
    ) -> None:
        self.running.append(accepted.job_id)
        self.most = max(self.most, len(self.running))
        try:
            await self.release.wait()
            body = {"jobId": accepted.job_id, "status": "ACCEPTED", "sandbox": ctx.sandbox.name}
            await self.kafka.publish(
                self.settings.finished_topic, accepted.job_id, json.dumps(body).encode()
            )
            answered()
            await self.removed.wait()
        finally:
            self.running.remove(accepted.job_id)


SETTINGS = load_settings({}, worker_id="unit", max_containers=2)


def record(
    topic: str, offset: int, value: bytes, partition: int = 0, key: bytes | None = None
) -> Record:
    return Record(topic, partition, offset, key, value, 0)


def job(job_id: str, script: str = "echo") -> bytes:
    return json.dumps({"jobId": job_id, "script": script}).encode()


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def runs(kafka: FakeKafka, monkeypatch: pytest.MonkeyPatch) -> Runs:
    runs = Runs(kafka, SETTINGS)
    monkeypatch.setattr(jobs, "run_job", runs.run_job)
    return runs


def server_of(
    name: str, kafka: FakeKafka, in_flight: InFlight, drain: Drain, settings: Settings = SETTINGS
) -> TypeServer:
    sandbox = load_sandbox_type(settings.sandbox_dir, name)
    ctx = JobContext(settings, None, kafka, DockerHealth(), sandbox, "workers." + name)  # type: ignore[arg-type]
    return TypeServer(ctx, in_flight, drain, Readiness(settings, drain))


async def wait_for(condition: Any) -> None:
    """Polls: the fakes have no events to wait on, and the server's own loop polls too."""
    with trio.fail_after(5):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_never_more_jobs_than_capacity_and_commits_wait_for_answers(
    kafka: FakeKafka, runs: Runs
) -> None:
    drain = Drain(5)
    server = server_of("linux-amd64-shell", kafka, InFlight(), drain)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve)
        await wait_for(lambda: server.topic in kafka.consumers)
        consumer = kafka.consumers[server.topic]
        for offset, job_id in enumerate(ids):
            consumer.add(record(server.topic, offset, job(job_id)))
        await wait_for(lambda: len(runs.running) == 2)
        await trio.sleep(0.1)
        assert set(runs.running) == set(ids[:2])  # the rest wait, unread
        assert consumer.committed == {}  # nothing answered yet
        runs.release.set()
        await wait_for(lambda: len(kafka.finished(SETTINGS)) == 5)
        await wait_for(lambda: consumer.committed == {(server.topic, 0): 5})
        drain.begin()
    assert runs.most == 2


async def test_a_job_id_in_flight_in_another_type_joins_its_run_and_is_answered_once(
    kafka: FakeKafka, runs: Runs
) -> None:
    drain, in_flight = Drain(5), InFlight()
    shell = server_of("linux-amd64-shell", kafka, in_flight, drain)
    mono = server_of("linux-amd64-mono", kafka, in_flight, drain)
    job_id = str(uuid.uuid4())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(shell.serve)
        nursery.start_soon(mono.serve)
        await wait_for(lambda: len(kafka.consumers) == 2)
        kafka.consumers[shell.topic].add(record(shell.topic, 0, job(job_id)))
        await wait_for(lambda: runs.running == [job_id])
        # The same id on the other type, and a blank-script forgery of it: both join the run.
        kafka.consumers[mono.topic].add(record(mono.topic, 0, job(job_id)))
        kafka.consumers[mono.topic].add(record(mono.topic, 1, job(job_id, script=" ")))
        await trio.sleep(0.2)
        assert runs.running == [job_id]
        assert kafka.finished(SETTINGS) == []
        assert kafka.consumers[mono.topic].committed == {}
        runs.release.set()
        await wait_for(lambda: kafka.consumers[mono.topic].committed == {(mono.topic, 0): 2})
        drain.begin()
    answers = kafka.finished(SETTINGS)
    assert [(a["jobId"], a["status"], a["sandbox"]) for a in answers] == [
        (job_id, "ACCEPTED", "linux-amd64-shell")
    ]
    assert kafka.consumers[shell.topic].committed == {(shell.topic, 0): 1}


async def test_rejections_and_dead_letters_need_no_slot(kafka: FakeKafka, runs: Runs) -> None:
    drain = Drain(5)
    server = server_of("linux-amd64-shell", kafka, InFlight(), drain)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve)
        await wait_for(lambda: server.topic in kafka.consumers)
        consumer = kafka.consumers[server.topic]
        values = [b"garbage", job(str(uuid.uuid4()), " "), job(str(uuid.uuid4()))]
        values.append(job(str(uuid.uuid4())))
        for offset, value in enumerate(values):
            consumer.add(record(server.topic, offset, value))
        # The garbage and the blank script are answered without taking a slot: both jobs
        # behind them start, and the answered offsets commit while they run.
        await wait_for(lambda: len(runs.running) == 2)
        topics = sorted(topic for topic, _, _ in kafka.published)
        assert topics == sorted([SETTINGS.finished_topic, server.topic + ".DLT"])
        await wait_for(lambda: consumer.committed == {(server.topic, 0): 2})
        runs.release.set()
        await wait_for(lambda: consumer.committed == {(server.topic, 0): 4})
        drain.begin()


async def test_drain_stops_taking_and_leaves_unanswered_offsets_uncommitted(
    kafka: FakeKafka, runs: Runs
) -> None:
    drain = Drain(0.2)
    server = server_of("linux-amd64-shell", kafka, InFlight(), drain)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve)
        await wait_for(lambda: server.topic in kafka.consumers)
        consumer = kafka.consumers[server.topic]
        consumer.add(record(server.topic, 0, job(str(uuid.uuid4()))))
        await wait_for(lambda: len(runs.running) == 1)
        drain.begin()  # the run never ends by itself: the drain deadline cancels it
    assert consumer.committed == {}
    assert kafka.finished(SETTINGS) == []


async def test_every_record_a_drain_cuts_off_is_logged_and_left_uncommitted(
    kafka: FakeKafka, runs: Runs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dsw")
    drain, in_flight = Drain(0.5), InFlight()
    shell = server_of("linux-amd64-shell", kafka, in_flight, drain)
    mono = server_of("linux-amd64-mono", kafka, in_flight, drain)
    running, unreadable = str(uuid.uuid4()), str(uuid.uuid4())
    kafka.unwritable = {shell.topic + ".DLT"}  # dead letters never get through
    async with trio.open_nursery() as nursery:
        nursery.start_soon(shell.serve)
        nursery.start_soon(mono.serve)
        await wait_for(lambda: len(kafka.consumers) == 2)
        consumer = kafka.consumers[shell.topic]
        consumer.add(record(shell.topic, 0, job(running)))  # runs, never ends by itself
        consumer.add(record(shell.topic, 1, b"no id anywhere"))  # a dead letter alone
        consumer.add(record(shell.topic, 2, b"\x00", key=unreadable.encode()))  # REJECTED + DLT
        await wait_for(lambda: runs.running == [running])
        kafka.consumers[mono.topic].add(record(mono.topic, 0, job(running)))  # joins the run
        await wait_for(lambda: any("joining its run" in r.getMessage() for r in caplog.records))
        # The unreadable job is answered although its dead-letter copy cannot be written.
        await wait_for(lambda: [m["jobId"] for m in kafka.finished(SETTINGS)] == [unreadable])
        drain.begin()
    assert consumer.committed == {}
    assert kafka.consumers[mono.topic].committed == {}
    cut_off = sorted(r.getMessage() for r in caplog.records if "cut off" in r.getMessage())
    assert cut_off == sorted(
        [
            f"shutdown cut off job={running} topic={shell.topic} partition=0 offset=0: "
            "not answered; it will be redelivered",
            f"shutdown cut off topic={shell.topic} partition=0 offset=1: "
            "not answered; it will be redelivered",
            f"shutdown cut off job={unreadable} topic={shell.topic} partition=0 offset=2: "
            "answered, its dead-letter copy not written; it will be redelivered",
            f"shutdown cut off job={running} topic={mono.topic} partition=0 offset=0: "
            "not answered; it will be redelivered",
        ]
    )


async def test_a_job_is_done_once_answered_while_its_container_is_removed(
    kafka: FakeKafka, runs: Runs, caplog: pytest.LogCaptureFixture
) -> None:
    drain, in_flight = Drain(0.5), InFlight()
    server = server_of("linux-amd64-shell", kafka, in_flight, drain)
    job_id = str(uuid.uuid4())
    runs.removed = trio.Event()  # the removal never ends by itself
    runs.release.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve)
        await wait_for(lambda: server.topic in kafka.consumers)
        consumer = kafka.consumers[server.topic]
        consumer.add(record(server.topic, 0, job(job_id)))
        # Answered: its offset commits, though the run still holds its slot.
        await wait_for(lambda: consumer.committed == {(server.topic, 0): 1})
        assert runs.running == [job_id]
        # A copy arriving now is answered by the same run at once.
        consumer.add(record(server.topic, 1, job(job_id)))
        await wait_for(lambda: consumer.committed == {(server.topic, 0): 2})
        drain.begin()  # the drain deadline cuts the removal short
    assert runs.running == []
    assert [m["jobId"] for m in kafka.finished(SETTINGS)] == [job_id]
    assert not [r for r in caplog.records if "cut off" in r.getMessage()]


async def test_only_a_real_timestamp_past_the_max_age_expires_a_job(
    kafka: FakeKafka, runs: Runs
) -> None:
    settings = msgspec.structs.replace(SETTINGS, job_max_age_s=60)
    drain = Drain(5)
    server = server_of("linux-amd64-shell", kafka, InFlight(), drain, settings)
    now_ms = int(time.time() * 1000)
    stamps = {"none": 0, "missing": -1, "future": now_ms + 86_400_000, "old": now_ms - 3_600_000}
    ids = {name: str(uuid.uuid4()) for name in stamps}
    runs.release.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve)
        await wait_for(lambda: server.topic in kafka.consumers)
        consumer = kafka.consumers[server.topic]
        for offset, (name, stamp) in enumerate(stamps.items()):
            value = job(ids[name])
            consumer.add(Record(server.topic, 0, offset, None, value, stamp))
        await wait_for(lambda: len(kafka.finished(settings)) == 4)
        drain.begin()
    answers = {m["jobId"]: m for m in kafka.finished(settings)}
    assert [answers[ids[name]]["status"] for name in stamps] == ["ACCEPTED"] * 3 + ["REJECTED"]
