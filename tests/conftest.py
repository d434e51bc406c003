"""Fixtures for tests against the real Docker Engine and the real Kafka broker.

The session stops at once, naming `just provision`, when either cannot be reached: these tests
never skip silently. Every test gets its own worker id (the label on its containers) and its own
topic names, and fails if a container of its worker id is left behind.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from dsw.config import Settings, load_settings, unix_socket_path
from dsw.container_spec import PROJECT_LABEL, WORKER_LABEL
from dsw.docker import DockerClient, open_docker
from dsw.kafka import Kafka, delete_topics, open_kafka

ROOT = Path(__file__).resolve().parent.parent
TEST_SCRIPTS = ROOT / "sandbox" / "test-scripts"
SANDBOX_IMAGES = ("dsw-sandbox:linux-amd64-shell", "dsw-sandbox:linux-amd64-mono")


def _docker_problem(settings: Settings) -> str | None:
    host = settings.docker_host
    path = unix_socket_path(host)
    if path is None:
        return None  # a remote daemon is checked by the first test that uses it
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as http:
            http.get("http://docker/_ping").raise_for_status()
            for image in SANDBOX_IMAGES:
                if http.get(f"http://docker/images/{image}/json").status_code != 200:
                    return f"the sandbox image {image} is missing"
    except httpx.HTTPError as exc:
        return f"no Docker daemon answers at {host} ({exc})"
    return None


def _kafka_problem(bootstrap: str) -> str | None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        return f"no Kafka broker answers at {bootstrap} ({exc})"
    return None


def _stop_the_run(problem: str | None) -> None:
    if problem:
        pytest.exit(
            f"{problem}. Run `just provision` (and `just sandbox TYPE`) first.", returncode=3
        )


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """The first test that needs Docker stops the whole run if the daemon or an image is missing."""
    _stop_the_run(_docker_problem(load_settings()))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The real broker's address; the first test that needs it stops the run if it is down."""
    bootstrap = load_settings().kafka_broker_url
    _stop_the_run(_kafka_problem(bootstrap))
    return bootstrap


@pytest.fixture
def worker_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(worker_id: str) -> Settings:
    return load_settings(worker_id=worker_id, runner_types=["linux-amd64-mono"])


def configure(settings: Settings, **changes: object) -> Settings:
    return msgspec.structs.replace(settings, **changes)


@pytest.fixture
async def docker(docker_ready: None, settings: Settings) -> AsyncIterator[DockerClient]:
    """A real Docker client; at teardown, no container of this test's worker may remain."""
    async with open_docker(settings) as client:
        yield client
        left = await containers_of(client, settings.worker_id)
        for container in left:
            await client.container_remove(container["Id"])
        assert not left, f"containers left behind: {[c['Names'] for c in left]}"


async def containers_of(docker: DockerClient, worker_id: str) -> list[dict[str, Any]]:
    """Containers of this test's workers (their ids start with the test's worker id)."""
    ours = await docker.containers_list(labels=[f"{PROJECT_LABEL}=dsw"])
    return [c for c in ours if (c.get("Labels") or {}).get(WORKER_LABEL, "").startswith(worker_id)]


@pytest.fixture
async def topic_prefix(kafka: Kafka) -> AsyncIterator[str]:
    """Unique per test, so tests never see each other's messages; its topics go afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    yield prefix
    await delete_topics(kafka.settings.kafka_broker_url, prefix)


@pytest.fixture
async def kafka(kafka_bootstrap: str, settings: Settings) -> AsyncIterator[Kafka]:
    """A producer on the real broker, for the test's own messages."""
    async with open_kafka(configure(settings, kafka_broker_url=kafka_bootstrap)) as client:
        yield client
