"""Checks before a sandbox type serves jobs, against the real daemon."""

from __future__ import annotations

import msgspec
import pytest

from dsw.config import Settings
from dsw.docker import DockerClient
from dsw.errors import ImageMissing
from dsw.preflight import ensure_image, preflight
from dsw.sandbox_types import load_sandbox_type
from tests.conftest import configure, containers_of


async def test_a_served_type_passes_and_leaves_no_probe(
    docker: DockerClient, settings: Settings
) -> None:
    for name in ("linux-amd64-shell", "linux-amd64-mono"):
        await preflight(docker, settings, load_sandbox_type(settings.sandbox_dir, name))
    probes = await docker.containers_list(name="^/dsw-probe-")
    assert [c for c in probes if c in await containers_of(docker, settings.worker_id)] == []


async def test_a_missing_image_names_the_recipe(docker: DockerClient, settings: Settings) -> None:
    sandbox = load_sandbox_type(settings.sandbox_dir, "linux-amd64-shell")
    missing = msgspec.structs.replace(sandbox, image="dsw-sandbox:absent-here")
    with pytest.raises(ImageMissing) as caught:
        await ensure_image(docker, configure(settings, image_pull_timeout_s=20), missing)
    assert "just sandbox linux-amd64-shell" in str(caught.value)
