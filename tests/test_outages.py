"""The worker when Docker or Kafka goes away: it stops taking jobs, says so, and loses nothing."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import trio

from dsw.config import Settings
from dsw.docker import DockerClient
from dsw.kafka import Kafka, committed_positions, create_topics, open_kafka, topic_partitions
from tests.brokers import private_broker
from tests.conftest import containers_of
from tests.proxies import CuttableDocker
from tests.workers import (
    by_topic,
    job,
    read_until,
    run_worker,
    wait_ready,
    wait_unready,
    worker_settings,
)

SHELL = "linux-amd64-shell"


async def test_docker_outage_pauses_then_resumes_without_losing_or_blaming_jobs(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    proxy = CuttableDocker(tmp_path / "docker.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        ws = worker_settings(settings, topic_prefix, docker_host=proxy.docker_host)
        pending = f"{topic_prefix}pending-{SHELL}"
        async with (
            run_worker(ws) as worker,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.settings.metrics_port}") as http,
        ):
            await wait_ready(http)
            mid_id, mid = job("echo begun; sleep 3; echo mid\n")
            await kafka.publish(pending, mid_id, mid)
            await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 1)
            proxy.cut()  # Docker goes away while a job runs...
            later_id, later = job("echo later\n")
            await kafka.publish(pending, later_id, later)  # ...and while another waits
            await wait_unready(http, "Docker unreachable")
            await trio.sleep(2)
            await nursery.start(proxy.serve)  # Docker is back
            records = await read_until(
                kafka,
                [ws.finished_topic],
                lambda rs: len({r.key for r in rs}) >= 2,
            )
            await wait_ready(http)
            worker.signal(signal.SIGTERM)
            assert await worker.wait() == 0
        nursery.cancel_scope.cancel()
    finished = {m["jobId"]: m for m in by_topic(records, ws.finished_topic)}
    assert finished[mid_id]["status"] == "ACCEPTED"
    assert finished[mid_id]["scriptResults"]["stdout"] == "begun\nmid\n"  # run again, whole
    assert finished[later_id]["scriptResults"]["stdout"] == "later\n"
    assert "Docker is unreachable" in worker.output
    assert await containers_of(docker, ws.worker_id) == []


async def test_kafka_outage_loses_no_result(
    docker: DockerClient, settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    async with private_broker(tmp_path) as broker:
        ws = worker_settings(
            settings, topic_prefix, kafka_broker_url=broker.bootstrap, kafka_timeout_s=5
        )
        pending = f"{topic_prefix}pending-{SHELL}"
        async with (
            open_kafka(ws) as kafka,
            run_worker(ws) as worker,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.settings.metrics_port}") as http,
        ):
            await wait_ready(http)
            # A first job, so that the producer knows `finished`: its retries are then silent.
            first_id, first = job("echo first\n")
            await kafka.publish(pending, first_id, first)
            await read_until(kafka, [ws.finished_topic], lambda rs: len(rs) >= 1)
            job_id, body = job("echo begun; sleep 3; echo survived\n")
            await kafka.publish(pending, job_id, body)
            await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 2)
            await broker.stop()  # Kafka goes away while the job runs
            await trio.sleep(4)  # the job ends meanwhile; its result must wait, not vanish
            await wait_unready(http, "Kafka unreachable")
            await broker.start()
            records = await read_until(kafka, [ws.finished_topic], lambda rs: len(rs) >= 2)
            await wait_ready(http)
            worker.signal(signal.SIGTERM)
            assert await worker.wait(timeout_s=60) == 0
        finished = {m["jobId"]: m for m in by_topic(records, ws.finished_topic)}
        assert finished[job_id]["scriptResults"]["stdout"] == "begun\nsurvived\n"
        group = ws.consumer_group_prefix + SHELL
        assert sum((await committed_positions(broker.bootstrap, group)).values()) == 2
        assert await containers_of(docker, ws.worker_id) == []


async def test_a_first_start_on_a_fresh_broker_raises_no_alarm(
    docker: DockerClient, settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    async with private_broker(tmp_path) as broker:
        ws = worker_settings(settings, topic_prefix, kafka_broker_url=broker.bootstrap)
        async with open_kafka(ws) as kafka, run_worker(ws) as worker:
            http_url = f"http://127.0.0.1:{worker.settings.metrics_port}"
            async with httpx.AsyncClient(base_url=http_url) as http:
                await wait_ready(http)
            job_id, body = job("echo first\n")
            await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
            records = await read_until(kafka, [ws.finished_topic], lambda rs: len(rs) >= 1)
            worker.signal(signal.SIGTERM)
            assert await worker.wait() == 0
        topics = await topic_partitions(broker.bootstrap, topic_prefix)
    assert by_topic(records, ws.finished_topic)[0]["scriptResults"]["stdout"] == "first\n"
    alarms = [
        line
        for line in worker.output.splitlines()
        if re.search(r"level=(warning|error|critical)", line)
    ]
    assert alarms == []
    assert "created topics=" in worker.output
    pending = [f"{topic_prefix}pending-{t}" for t in ("linux-amd64-mono", "linux-amd64-shell")]
    expected = [*pending, ws.running_topic, ws.finished_topic, *(t + ".DLT" for t in pending)]
    assert {t: topics.get(t) for t in expected} == dict.fromkeys(expected, 2)


async def test_an_existing_topic_is_never_shrunk(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, runner_types=(SHELL,), topic_partitions=2)
    pending = f"{topic_prefix}pending-{SHELL}"
    await create_topics(ws.kafka_broker_url, [pending], partitions=6)
    async with run_worker(ws) as worker:
        job_id, body = job("echo\n")
        await kafka.publish(pending, job_id, body)
        await read_until(kafka, [ws.finished_topic], lambda rs: len(rs) >= 1)
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    topics = await topic_partitions(ws.kafka_broker_url, topic_prefix)
    assert topics[pending] == 6
    assert topics[ws.finished_topic] == 2
