"""Checks before a sandbox type serves jobs, against the real daemon."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest

from dsw.config import Settings, load_settings
from dsw.docker import DockerClient
from dsw.errors import ConfigError, ImageMissing, NotConfinable
from dsw.preflight import ensure_image, preflight, probe_refusal
from dsw.sandbox import container_name, open_script, run_script
from dsw.sandbox_types import load_sandbox_type
from tests.conftest import configure, containers_of
from tests.sandbox_runs import request_for


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


async def test_an_explicit_runtime_is_checked_and_used(
    docker: DockerClient, settings: Settings
) -> None:
    shell = load_sandbox_type(settings.sandbox_dir, "linux-amd64-shell")
    runc = msgspec.structs.replace(shell, runtime="runc")
    await preflight(docker, settings, runc)
    request = msgspec.structs.replace(request_for(settings, "echo on runc\n"), sandbox=runc)
    async with open_script(docker, settings, request) as outcome:
        # While the container still exists: the daemon was asked for runc, by name.
        inspected = await docker.container_inspect(container_name(request.job_id))
    assert inspected["HostConfig"]["Runtime"] == "runc"
    assert outcome.stdout == "on runc\n"
    default = await run_script(docker, settings, request_for(settings, "echo default\n"))
    assert default.stdout == "default\n"


async def test_a_missing_runtime_is_named(docker: DockerClient, settings: Settings) -> None:
    shell = load_sandbox_type(settings.sandbox_dir, "linux-amd64-shell")
    gvisor = msgspec.structs.replace(shell, runtime="runsc")
    with pytest.raises(NotConfinable) as caught:
        await preflight(docker, settings, gvisor)
    assert "'runsc'" in str(caught.value)
    assert "runc" in str(caught.value)  # what the daemon has


async def test_a_profile_the_daemon_cannot_apply_stops_the_type(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    shutil.copytree(settings.sandbox_dir, tmp_path / "sandbox")
    (tmp_path / "sandbox" / "seccomp.json").write_text('{"defaultAction": "SCMP_ACT_BOGUS"}')
    broken = configure(settings, sandbox_dir=str(tmp_path / "sandbox"))
    shell = load_sandbox_type(broken.sandbox_dir, "linux-amd64-shell")
    with pytest.raises(NotConfinable) as caught:
        await preflight(docker, broken, shell)
    assert "seccomp profile seccomp.json" in str(caught.value)
    assert await containers_of(docker, settings.worker_id) == []


async def test_a_filter_that_is_not_the_profile_stops_the_type(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    # A seccomp filter is applied (Seccomp: 2), but it allows what dsw's profile removes.
    shutil.copytree(settings.sandbox_dir, tmp_path / "sandbox")
    (tmp_path / "sandbox" / "seccomp.json").write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    other = configure(settings, sandbox_dir=str(tmp_path / "sandbox"))
    for name in ("linux-amd64-shell", "linux-amd64-mono"):
        with pytest.raises(NotConfinable) as caught:
            await preflight(docker, other, load_sandbox_type(other.sandbox_dir, name))
        assert f"a {name} container does not run under its seccomp profile" in str(caught.value)
        assert "io_uring_setup" in str(caught.value)
    assert await containers_of(docker, settings.worker_id) == []


@pytest.mark.parametrize(
    ("exit_code", "refused"),
    [
        (0, None),
        (3, "runs under no seccomp filter"),
        (4, "no perl"),
        (5, "io_uring_setup, which its profile removes, was not refused with EPERM"),
        (None, "did not end in time"),
        (137, "exited with 137"),
    ],
)
def test_the_probe_s_exit_status_decides(exit_code: int | None, refused: str | None) -> None:
    shell = load_sandbox_type(load_settings({}).sandbox_dir, "linux-amd64-shell")
    refusal = probe_refusal(shell, exit_code)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refused in refusal


async def test_an_unreadable_profile_names_its_file(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    shutil.copytree(settings.sandbox_dir, tmp_path / "sandbox")
    (tmp_path / "sandbox" / "seccomp.json").write_text("{not json")
    broken = configure(settings, sandbox_dir=str(tmp_path / "sandbox"))
    shell = load_sandbox_type(broken.sandbox_dir, "linux-amd64-shell")
    with pytest.raises(ConfigError) as caught:
        await preflight(docker, broken, shell)
    assert "seccomp.json" in str(caught.value)
