"""A private Apache Kafka broker for tests that stop and restart it (the shared one stays up)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from tests.conftest import ROOT
from tests.workers import free_port


@dataclass
class Broker:
    directory: Path
    port: int
    controller_port: int
    libs: str
    process: trio.Process | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, *args: str) -> list[str]:
        log4j = ROOT / "scripts" / "kafka" / "log4j2-tools.properties"
        return [
            "java",
            "-Xmx384m",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    async def start(self) -> None:
        log = (self.directory / "broker.log").open("ab")
        self.process = await trio.lowlevel.open_process(
            self._java("kafka.Kafka", str(self.directory / "server.properties")),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        await _wait_for_port(self.port)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def _wait_for_port(port: int) -> None:
    with trio.fail_after(60):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.2)
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def private_broker(directory: Path) -> AsyncIterator[Broker]:
    """A single-node KRaft broker on free ports with its data in `directory`; killed at exit."""
    resolved = await trio.run_process(
        [str(ROOT / "scripts" / "provision-kafka.sh"), "libs"],
        capture_stdout=True,
        capture_stderr=True,
    )
    libs = resolved.stdout.decode().strip()
    broker = Broker(directory, free_port(), free_port(), libs)
    template = (ROOT / "scripts" / "kafka" / "server.properties").read_text()
    (directory / "server.properties").write_text(
        template.replace("@DATA@", str(directory / "data"))
        .replace("127.0.0.1:9092", f"127.0.0.1:{broker.port}")
        .replace("127.0.0.1:9093", f"127.0.0.1:{broker.controller_port}")
    )
    cluster_id = uuid.uuid4().hex[:22]
    await trio.run_process(
        broker._java(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(directory / "server.properties"),
        ),
        capture_stdout=True,
        capture_stderr=True,
    )
    await broker.start()
    try:
        yield broker
    finally:
        with trio.move_on_after(30, shield=True):
            await broker.stop()
