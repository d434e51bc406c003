"""/metrics, /healthz and /readyz of a real worker after real jobs."""

from __future__ import annotations

import signal

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from dsw.config import Settings
from dsw.docker import DockerClient
from dsw.kafka import Kafka
from tests.workers import job, read_until, run_worker, wait_ready, wait_unready, worker_settings

SHELL = "linux-amd64-shell"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_real_jobs_and_readiness_follows_the_drain(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, drain_timeout_s=5)
    pending = f"{topic_prefix}pending-{SHELL}"
    async with (
        run_worker(ws) as worker,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.settings.metrics_port}") as http,
    ):
        await wait_ready(http)
        assert (await http.get("/healthz")).text == "ok\n"
        for script in ("echo one\n", "echo two\n", "exit 3\n", "   "):
            await kafka.publish(pending, *job(script))
        await kafka.publish(pending, "k", b"not json")
        await read_until(kafka, [ws.finished_topic, pending + ".DLT"], lambda rs: len(rs) >= 5)
        await trio.sleep(0.5)
        metrics = samples((await http.get("/metrics")).text)
        shell = {"sandbox": SHELL}
        assert value(metrics, "dsw_jobs_received_total", **shell) == 5
        accepted = {"sandbox": SHELL, "status": "ACCEPTED"}
        assert value(metrics, "dsw_jobs_finished_total", **accepted, finished_with="SUCCEEDED") == 2
        assert value(metrics, "dsw_jobs_finished_total", **accepted, finished_with="FAILED") == 1
        rejected = {"sandbox": SHELL, "status": "REJECTED", "finished_with": ""}
        assert value(metrics, "dsw_jobs_finished_total", **rejected) == 1
        assert value(metrics, "dsw_jobs_rejected_total", **shell, reason="blank_script") == 1
        assert value(metrics, "dsw_jobs_dead_lettered_total", **shell, reason="not_json") == 1
        assert value(metrics, "dsw_container_create_seconds_count") == 3
        assert value(metrics, "dsw_container_run_seconds_count") == 3
        assert value(metrics, "dsw_job_end_to_end_seconds_count") == 4
        assert value(metrics, "dsw_capacity", **shell) == ws.max_containers
        assert value(metrics, "dsw_jobs_in_flight", **shell) == 0
        assert value(metrics, "dsw_build_info", version="0.1.0") == 1

        job_id, body = job("sleep 60\n")
        await kafka.publish(pending, job_id, body)
        await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 4)
        worker.signal(signal.SIGTERM)
        ready = await wait_unready(http, "draining", timeout_s=10)
        assert ready.status_code == 503
        assert "draining" in ready.text
        assert await worker.wait() == 0
