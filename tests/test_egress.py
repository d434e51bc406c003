"""`network = "egress"` against the real daemon: a sandbox's only way out is the worker's proxy.

A sandbox type of the tests' own (the shell image, `network = "egress"`) and a small HTTP server of
the test's on this machine, listed in WORKER_EGRESS_ALLOW as `127.0.0.1:<port>`. Only ever
addresses on this machine are targeted.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from dsw import container_spec
from dsw.config import Settings
from dsw.docker import DockerClient
from dsw.egress import filter as packet_filter
from dsw.egress.network import network_name, open_egress
from dsw.egress.policy import Allowed, Refused
from dsw.kafka import Kafka
from dsw.messages import FinishedWith
from dsw.sandbox import run_script
from tests.conftest import configure
from tests.egress_setups import EGRESS, check_answers, egress_sandbox_dir, script_for, serve_hello
from tests.sandbox_runs import request_for
from tests.workers import (
    count_finished,
    finished_of,
    free_port,
    job,
    read_until,
    run_dsw,
    run_worker,
    stop,
    worker_settings,
)


@pytest.fixture
async def hello_port() -> AsyncIterator[int]:
    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_hello, port)
        yield port
        nursery.cancel_scope.cancel()


async def test_a_job_reaches_only_what_the_proxy_allows(
    docker: DockerClient,
    kafka: Kafka,
    settings: Settings,
    topic_prefix: str,
    hello_port: int,
    tmp_path: Path,
) -> None:
    ws = worker_settings(
        settings,
        topic_prefix,
        sandbox_dir=egress_sandbox_dir(settings, tmp_path),
        runner_types=(EGRESS,),
        egress_allow=(f"127.0.0.1:{hello_port}",),
    )
    job_id, body = job(script_for(hello_port))
    started = time.monotonic()
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{EGRESS}", job_id, body)
        records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 1))
        await stop(worker)
    results = finished_of(records, ws)[job_id]["scriptResults"]
    assert results["finishedWith"] == "SUCCEEDED", results["stderr"]
    check_answers(results["stdout"], hello_port)
    assert time.monotonic() - started < 60
    refusals = [line for line in worker.output.splitlines() if "refused" in line and job_id in line]
    assert len(refusals) >= 4  # each refusal logged with the job id
    assert "egress network=" in worker.output


async def test_dsw_run_serves_the_same_proxy(
    docker: DockerClient, settings: Settings, hello_port: int, tmp_path: Path
) -> None:
    local = configure(
        settings,
        sandbox_dir=egress_sandbox_dir(settings, tmp_path),
        egress_allow=(f"127.0.0.1:{hello_port}",),
    )
    (tmp_path / "client.sh").write_text(script_for(hello_port))
    result = await run_dsw(local, "run", str(tmp_path / "client.sh"), "--sandbox", EGRESS)
    assert result.returncode == 0, result.stderr
    check_answers(result.stdout.decode(), hello_port)
    assert b"refused" in result.stderr


async def test_the_network_and_its_filter_go_with_the_worker(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    ws = worker_settings(
        settings,
        topic_prefix,
        sandbox_dir=egress_sandbox_dir(settings, tmp_path),
        runner_types=(EGRESS,),
    )
    async with run_worker(ws) as worker:
        job_id, body = job("echo up\n")
        await kafka.publish(f"{topic_prefix}pending-{EGRESS}", job_id, body)
        records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 1))
        networks = await docker.networks_list([f"dsw.worker={worker.settings.worker_id}"])
        assert [n["Internal"] for n in networks] == [True]
        await stop(worker)
    assert finished_of(records, ws)[job_id]["scriptResults"]["finishedWith"] == (
        FinishedWith.SUCCEEDED.value
    )
    assert await docker.networks_list([f"dsw.worker={worker.settings.worker_id}"]) == []
    rules = await trio.run_process(["iptables", "-S"], capture_stdout=True)
    assert b"DSW-dsweg" not in rules.stdout


# The sandbox's IPv6 addresses, then a connection to the host's link-local address on the egress
# network's bridge, tried for a while (a new address is usable only after duplicate detection).
IPV6_CLIENT = r"""
echo "ipv6 addresses $(wc -l < /proc/net/if_inet6)"
perl -MIO::Socket::IP -e '
    for (1 .. 40) {
        if (IO::Socket::IP->new(PeerHost => $ARGV[0], PeerPort => $ARGV[1], Timeout => 2)) {
            print "ipv6 connected\n"; exit;
        }
        select undef, undef, undef, 0.25;
    }
    print "ipv6 failed: $@\n";
' "$0" "$1"
"""


def link_local_of(interface: str) -> str | None:
    for line in Path("/proc/net/if_inet6").read_text().splitlines():
        hexadecimal, *_, name = line.split()
        if name == interface and hexadecimal.startswith("fe80"):
            return str(ipaddress.IPv6Address(int(hexadecimal, 16)))
    return None


async def serve_on_every_ipv6_address(
    port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """A stand-in for a host service on `::` (the worker's /metrics, a database)."""

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(b"host service\n")

    listeners = await trio.open_tcp_listeners(port, host="::")
    task_status.started()
    await trio.serve_listeners(answer, listeners)


@pytest.mark.parametrize("ipv6", ["off", "on"])
async def test_an_egress_sandbox_has_no_ipv6(
    docker: DockerClient,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ipv6: str,
) -> None:
    """The filter is IPv4 only; the sandbox gets no IPv6 at all, so a host service listening on
    `::` is not reached at the bridge's fe80:: address. "on" (IPv6 switched back on in the
    container) shows that the way would be open otherwise."""
    if ipv6 == "on":
        monkeypatch.setattr(container_spec, "IPV6_OFF", {"net.ipv6.conf.all.disable_ipv6": "0"})
    local = configure(settings, sandbox_dir=egress_sandbox_dir(settings, tmp_path))
    port = free_port()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_on_every_ipv6_address, port)
        async with open_egress(docker, local) as egress:
            # The bridge gets its link-local address once a container has been on it.
            await run_script(docker, local, request_for(local, "true", EGRESS), egress=egress)
            address = link_local_of(network_name(local)[1])
            assert address is not None
            script = IPV6_CLIENT.replace('"$0" "$1"', f"{address}%eth0 {port}")
            outcome = await run_script(
                docker, local, request_for(local, script, EGRESS, timeout_s=60), egress=egress
            )
        nursery.cancel_scope.cancel()
    assert outcome.exit_code == 0, outcome.stderr
    counted, verdict = outcome.stdout.splitlines()
    if ipv6 == "off":
        assert counted == "ipv6 addresses 0"
        assert verdict.startswith("ipv6 failed")
    else:
        assert counted != "ipv6 addresses 0"
        assert verdict == "ipv6 connected"


async def test_the_workers_own_services_are_refused(
    docker: DockerClient, settings: Settings
) -> None:
    """The Docker daemon of a tcp WORKER_DOCKER_HOST and the Kafka brokers, wherever they are:
    here public literals (only ever judged, never connected to) stand in for them."""
    local = configure(settings, kafka_broker_url=f"{settings.kafka_broker_url},93.184.215.14:9092")
    async with open_egress(docker, local) as egress:
        verdict = await egress.proxy.policy.check("93.184.215.14", 443)
        assert isinstance(verdict, Refused)
        assert verdict.reason == "host"
        assert isinstance(await egress.proxy.policy.check("93.184.215.15", 443), Allowed)


def test_replies_pass_the_filter_before_its_rejections() -> None:
    """The proxy may sit on the bridge itself (Docker-out-of-Docker): its answers come from the
    bridge too. tests/test_deploy.py runs that setup end to end."""
    rules = [" ".join(command) for command in packet_filter.up_commands("dswt0", "10.9.9.2", 3128)]
    chain = packet_filter.chain_of("dswt0")
    appended = [rule for rule in rules if f" -A {chain} " in rule]
    assert "--ctstate ESTABLISHED,RELATED -j ACCEPT" in appended[0]
    assert "-d 10.9.9.2 --dport 3128 -j ACCEPT" in appended[1]
    assert all("REJECT" in rule for rule in appended[2:])
