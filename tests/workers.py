"""Test and bench helpers: a real `dsw worker` process; real Kafka topics read and written."""

from __future__ import annotations

import functools
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import httpx
import msgspec
import trio

from dsw.config import Settings, environment_of
from dsw.kafka import Kafka, Record, committed_positions, create_topics, open_reader

EXAMPLE_JOB = (
    '{"jobId": "7f000001-863c-17b2-8186-3cdeb62e0000","script": '
    '"Console.WriteLine(\\"Hello from script\\");","jobConfig": {"nugetConfigXml": '
    '"<?xml version=\\"1.0\\" encoding=\\"utf-8\\"?><configuration><packageSources><add '
    'key=\\"NuGet official package source\\" value=\\"https://nuget.org/api/v2/\\" />'
    '</packageSources><activePackageSource><add key=\\"All\\" value=\\"(Aggregate source)\\" />'
    '</activePackageSource></configuration>"}}'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_settings(settings: Settings, topic_prefix: str, **changes: Any) -> Settings:
    """Settings of a worker that uses only this test's topics and groups."""
    return msgspec.structs.replace(
        settings,
        pending_topic_prefix=f"{topic_prefix}pending-",
        consumer_group_prefix=f"{topic_prefix}workers.",
        running_topic=f"{topic_prefix}running",
        finished_topic=f"{topic_prefix}finished",
        # One warm container per type: every test meets both a warm and a cold start.
        **{
            "runner_types": ("linux-amd64-mono", "linux-amd64-shell"),
            "warm_containers": 1,
            **changes,
        },
    )


async def run_dsw(
    settings: Settings, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """`dsw ARGS...` as a subprocess with `settings` in its environment."""
    return await trio.run_process(
        [sys.executable, "-m", "dsw", *args],
        env=environment_of(settings),
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def job(script: str, job_id: str | None = None, **config: Any) -> tuple[str, bytes]:
    job_id = job_id or str(uuid.uuid4())
    body: dict[str, Any] = {"jobId": job_id, "script": script}
    if config:
        body["jobConfig"] = config
    return job_id, json.dumps(body).encode()


@dataclass
class WorkerProcess:
    settings: Settings
    process: trio.Process
    log: bytearray = field(default_factory=bytearray)
    started_s: float = 0.0  # from exec to /readyz 200, when waited for

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self, timeout_s: float = 60) -> int:
        with trio.fail_after(timeout_s):
            return await self.process.wait()

    @property
    def output(self) -> str:
        return self.log.decode(errors="replace")


@asynccontextmanager
async def run_worker(
    settings: Settings,
    instance: str = "",
    *,
    log: BinaryIO | None = None,
    command: list[str] | None = None,
    ready_timeout_s: float | None = None,
    drain_at_exit: bool = False,
) -> AsyncIterator[WorkerProcess]:
    """A `dsw worker` subprocess (or `command`) with `settings`, its worker id suffixed with
    `instance` and its metrics on a free port unless the settings name one. Its output is kept
    in `.log` and echoed to stderr, or written to `log`. With `ready_timeout_s`, entered once
    /readyz answers 200. At exit, if still running: SIGKILL, or with `drain_at_exit` SIGTERM and
    a wait for the drain."""
    settings = msgspec.structs.replace(
        settings,
        worker_id=settings.worker_id + instance,
        metrics_port=settings.metrics_port if log is not None else free_port(),
    )
    async with trio.open_nursery() as nursery:
        start = functools.partial(
            trio.run_process,
            command or [sys.executable, "-m", "dsw", "worker"],
            env=environment_of(settings),
            stdout=log if log is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        started = time.perf_counter()
        process = await nursery.start(start)
        worker = WorkerProcess(settings, process)

        async def pump() -> None:
            assert process.stdout is not None
            async for chunk in process.stdout:
                worker.log += chunk
                sys.stderr.buffer.write(chunk)

        if log is None:
            nursery.start_soon(pump)
        try:
            if ready_timeout_s is not None:
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{settings.metrics_port}", timeout=2
                ) as http:
                    await wait_ready(http, process, ready_timeout_s)
                worker.started_s = time.perf_counter() - started
            yield worker
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None and drain_at_exit:
                    process.send_signal(signal.SIGTERM)
                    with trio.move_on_after(settings.drain_timeout_s + 10):
                        await process.wait()
                if process.returncode is None:
                    process.kill()


async def wait_ready(
    http: httpx.AsyncClient, process: trio.Process | None = None, timeout_s: float = 60
) -> None:
    """Until the worker behind `http` answers 200 on /readyz (RuntimeError if `process` exits)."""
    with trio.fail_after(timeout_s):
        while True:
            if process is not None and process.returncode is not None:
                raise RuntimeError(f"the worker exited with {process.returncode} at start-up")
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


async def wait_unready(
    http: httpx.AsyncClient, reason: str, timeout_s: float = 30
) -> httpx.Response:
    """Until /readyz names `reason`; its answer."""
    with trio.fail_after(timeout_s):
        while True:
            answer = await http.get("/readyz")
            if reason in answer.text:
                return answer
            await trio.sleep(0.1)


async def produce(kafka: Kafka, topic: str, key: str | bytes | None, value: bytes | None) -> None:
    await kafka.publish(topic, key, value)


async def read_until(
    kafka: Kafka,
    topics: list[str],
    done: Callable[[list[Record]], bool],
    timeout_s: float = 90,
) -> list[Record]:
    """Every record of `topics` from the beginning, until `done(records)` holds."""
    await create_topics(kafka.settings.kafka_broker_url, topics)
    records: list[Record] = []
    async with open_reader(kafka, topics, from_beginning=True) as reader:
        with trio.fail_after(timeout_s):
            while not done(records):
                records += await reader.take(0.5)
    return records


def by_topic(records: list[Record], topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"null") for r in records if r.topic == topic]


def finished_of(records: list[Record], ws: Settings) -> dict[str, dict[str, Any]]:
    return {m["jobId"]: m for m in by_topic(records, ws.finished_topic)}


def count_finished(ws: Settings, n: int) -> Callable[[list[Record]], bool]:
    return lambda rs: len({r.key for r in rs if r.topic == ws.finished_topic}) >= n


async def stop(worker: WorkerProcess) -> None:
    worker.signal(signal.SIGTERM)
    assert await worker.wait() == 0, worker.output


async def committed(ws: Settings, sandbox: str) -> dict[tuple[str, int], int]:
    return await committed_positions(ws.kafka_broker_url, ws.consumer_group_prefix + sandbox)
