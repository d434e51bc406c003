"""The Engine API client over every transport, with Docker's errors surfaced."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio

from dsw.config import Settings
from dsw.docker import DockerClient, open_docker
from dsw.errors import DockerError, DockerUnavailable, ImageMissing, NotFound
from dsw.preflight import ensure_image
from dsw.sandbox import FinishedWith, run_script
from dsw.sandbox_types import load_sandbox_type
from tests.conftest import configure
from tests.proxies import make_certificates, serve_tcp_relay
from tests.test_sandbox import request_for


async def hello(settings: Settings) -> None:
    async with open_docker(settings) as docker:
        outcome = await run_script(docker, settings, request_for(settings, "echo hello\n"))
    assert outcome.finished_with is FinishedWith.SUCCEEDED
    assert outcome.stdout == "hello\n"


async def test_the_originals_unix_spelling(docker: DockerClient, settings: Settings) -> None:
    await hello(configure(settings, docker_host="unix:/var/run/docker.sock"))


async def test_the_api_version_is_negotiated(docker: DockerClient) -> None:
    version = await docker.info()
    assert version["ServerVersion"].startswith("20.10")
    assert docker.api_version == "1.41"  # what Debian's dockerd 20.10 speaks


async def test_plain_tcp(docker: DockerClient, settings: Settings) -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp_relay, None)
        await hello(configure(settings, docker_host=f"tcp://127.0.0.1:{port}"))
        nursery.cancel_scope.cancel()


async def test_tls_with_client_certificates(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    make_certificates(tmp_path)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_tcp_relay, tmp_path)
        tls = configure(
            settings,
            docker_host=f"tcp://127.0.0.1:{port}",
            docker_tls_verify=True,
            docker_cert_path=str(tmp_path),
        )
        await hello(tls)
        # Without its client certificate the daemon's side refuses the client.
        bare = tmp_path / "bare"
        bare.mkdir()
        (bare / "ca.pem").write_bytes((tmp_path / "ca.pem").read_bytes())
        with pytest.raises(DockerUnavailable):
            async with open_docker(configure(tls, docker_cert_path=str(bare))):
                pass
        nursery.cancel_scope.cancel()


async def test_docker_errors_carry_docker_s_message(docker: DockerClient) -> None:
    with pytest.raises(NotFound) as missing:
        await docker.image_inspect("dsw-sandbox:no-such-type")
    assert "no-such-type" in missing.value.message
    assert missing.value.endpoint == "GET /images/{id}/json"
    with pytest.raises(DockerError) as invalid:
        await docker.container_create(f"dsw-invalid-{uuid.uuid4()}", {"Image": ""})
    assert invalid.value.status in (400, 404, 500)
    assert invalid.value.message


async def test_no_daemon_is_docker_unavailable(settings: Settings) -> None:
    with pytest.raises(DockerUnavailable):
        async with open_docker(configure(settings, docker_host="unix:///nonexistent.sock")):
            pass


async def test_a_missing_image_names_the_recipe(docker: DockerClient, settings: Settings) -> None:
    sandbox = load_sandbox_type(settings.sandbox_dir, "linux-amd64-shell")
    missing = type(sandbox)(
        **{
            **{f: getattr(sandbox, f) for f in sandbox.__struct_fields__},
            "image": "dsw-sandbox:absent-here",
        }
    )
    with pytest.raises(ImageMissing) as caught:
        await ensure_image(docker, configure(settings, image_pull_timeout_s=20), missing)
    assert "just sandbox linux-amd64-shell" in str(caught.value)
