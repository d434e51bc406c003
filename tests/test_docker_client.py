"""The Engine API client over every transport, with Docker's errors surfaced."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
import trio

from dsw.config import Settings
from dsw.docker import DockerClient, open_docker
from dsw.docker.client import MAX_API_VERSION, api_version_for, endpoint_of, transport_for
from dsw.errors import DockerError, DockerUnavailable, NotFound
from dsw.messages import FinishedWith
from dsw.sandbox import run_script
from tests.conftest import configure
from tests.proxies import make_certificates, serve_tcp_relay
from tests.sandbox_runs import request_for


async def hello(settings: Settings) -> None:
    async with open_docker(settings) as docker:
        outcome = await run_script(docker, settings, request_for(settings, "echo hello\n"))
    assert outcome.finished_with is FinishedWith.SUCCEEDED
    assert outcome.stdout == "hello\n"


async def test_the_originals_unix_spelling(docker: DockerClient, settings: Settings) -> None:
    await hello(configure(settings, docker_host="unix:/var/run/docker.sock"))


async def test_the_api_version_is_the_daemon_s_up_to_the_newest_known(
    docker: DockerClient, settings: Settings
) -> None:
    base_url, transport = transport_for(settings)
    async with httpx.AsyncClient(base_url=base_url, transport=transport) as http:
        daemon = (await http.get("/version")).json()["ApiVersion"]
    expected = min(tuple(int(p) for p in daemon.split(".")), MAX_API_VERSION)
    assert docker.api_version == "{}.{}".format(*expected)


@pytest.mark.parametrize(
    ("server", "spoken"),
    [("1.41", (1, 41)), ("1.40", (1, 40)), ("1.45", (1, 45)), ("1.99", (1, 45)), ("2.3", (1, 45))],
)
def test_negotiation_speaks_the_older_of_the_two(server: str, spoken: tuple[int, int]) -> None:
    assert api_version_for(server) == spoken


@pytest.mark.parametrize("server", ["1.39", "1.12", "banana", ""])
def test_a_daemon_too_old_or_unreadable_is_refused(server: str) -> None:
    with pytest.raises(DockerError):
        api_version_for(server)


async def test_negotiation_against_a_daemon_that_answers_1_43(settings: Settings) -> None:
    seen: list[str] = []

    def daemon(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/version":
            return httpx.Response(200, json={"ApiVersion": "1.43"})
        return httpx.Response(200, text="OK")

    async with httpx.AsyncClient(
        base_url="http://docker", transport=httpx.MockTransport(daemon)
    ) as http:
        client = DockerClient(http, 1.0)
        await client.negotiate()
        await client.ping()
    assert (client.api_version, seen) == ("1.43", ["/version", "/v1.43/_ping"])


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("unix:///var/run/docker.sock", "http://docker"),
        ("unix:/var/run/docker.sock", "http://docker"),
        ("tcp://10.0.0.1:2375", "http://10.0.0.1:2375"),
        ("https://10.0.0.1:2376", "https://10.0.0.1:2376"),
    ],
)
def test_transport_and_base_url_of_each_address(
    settings: Settings, host: str, base_url: str
) -> None:
    assert transport_for(configure(settings, docker_host=host))[0] == base_url
    with_tls = configure(settings, docker_host="tcp://h:2376", docker_tls_verify=True)
    assert transport_for(with_tls)[0] == "https://h:2376"


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("POST", "/containers/abc123/start", "POST /containers/{id}/start"),
        ("GET", "/containers/json?all=true", "GET /containers/json"),
        ("POST", "/containers/create?name=sandbox-job-x", "POST /containers/create"),
        ("GET", "/images/dsw-sandbox%3Ax/json", "GET /images/{id}/json"),
        ("DELETE", "/containers/abc", "DELETE /containers/{id}"),
        ("GET", "/_ping", "GET /_ping"),
    ],
)
def test_endpoints_are_named_without_ids(method: str, path: str, endpoint: str) -> None:
    assert endpoint_of(method, path) == endpoint


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(200, content=b"{not json"), DockerError),
        (httpx.Response(500, content=b"\xff\xfe"), DockerError),
        (httpx.Response(404, json={"message": "no such container"}), NotFound),
    ],
)
async def test_unreadable_answers_are_docker_errors(answer: httpx.Response, error: type) -> None:
    async with httpx.AsyncClient(
        base_url="http://docker", transport=httpx.MockTransport(lambda _: answer)
    ) as http:
        with pytest.raises(error):
            await DockerClient(http, 1.0).container_inspect("abc")


async def test_transport_errors_are_docker_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(
        base_url="http://docker", transport=httpx.MockTransport(refuse)
    ) as http:
        with pytest.raises(DockerUnavailable):
            await DockerClient(http, 1.0).ping()
        with pytest.raises(DockerUnavailable):
            async with DockerClient(http, 1.0).open_container_attach_stdin("abc"):
                pass


async def test_a_malformed_url_is_a_docker_error(docker: DockerClient) -> None:
    with pytest.raises(DockerError):
        await docker.container_inspect("bad\nname")
    with pytest.raises(DockerError):
        await docker.container_remove("bad\nname")


async def test_a_streamed_json_line_that_does_not_decode_is_a_docker_error() -> None:
    lines = json.dumps({"status": "pulling"}).encode() + b"\n{broken\n"
    async with httpx.AsyncClient(
        base_url="http://docker",
        transport=httpx.MockTransport(lambda _: httpx.Response(200, content=lines)),
    ) as http:
        with pytest.raises(DockerError):
            await DockerClient(http, 1.0).image_pull("x:latest")


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
