"""`dsw worker` end to end: real broker, real daemon, real worker processes."""

from __future__ import annotations

import json
import signal
import uuid
from typing import Any

import msgspec
import trio

from dsw.config import Settings
from dsw.docker import DockerClient
from dsw.kafka import Kafka
from tests.conftest import containers_of
from tests.workers import (
    EXAMPLE_JOB,
    by_topic,
    committed,
    count_finished,
    finished_of,
    job,
    read_until,
    run_worker,
    stop,
    worker_settings,
)

MONO = "linux-amd64-mono"
SHELL = "linux-amd64-shell"


async def test_original_example_job(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix)
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{MONO}", "key1", EXAMPLE_JOB.encode())
        records = await read_until(
            kafka,
            [ws.running_topic, ws.finished_topic],
            lambda rs: any(r.topic == ws.finished_topic for r in rs),
        )
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    running = by_topic(records, ws.running_topic)
    finished = by_topic(records, ws.finished_topic)
    job_id = "7f000001-863c-17b2-8186-3cdeb62e0000"
    assert running == [{"jobId": job_id}]
    assert finished[0]["jobId"] == job_id
    assert finished[0]["status"] == "ACCEPTED"
    results = finished[0]["scriptResults"]
    assert results["finishedWith"] == "SUCCEEDED"
    assert results["stdout"] == "Hello from script\n"
    assert results["stderr"] == ""
    keys = {r.key for r in records}
    assert keys == {job_id.encode()}


async def test_timeout_failure_and_success(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix)
    slow_id, slow = job("echo started; sleep 100\n", timeoutSeconds=2)
    failing_id, failing = job('Console.WriteLine("x");\nthrow new Exception("bad");\n')
    fine_id, fine = job("echo fine\n")
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", slow_id, slow)
        await kafka.publish(f"{topic_prefix}pending-{MONO}", failing_id, failing)
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", fine_id, fine)
        records = await read_until(
            kafka, [ws.running_topic, ws.finished_topic], count_finished(ws, 3)
        )
        await stop(worker)
    finished = finished_of(records, ws)
    assert finished[slow_id]["scriptResults"]["finishedWith"] == "TIME_LIMIT_EXCEEDED"
    assert finished[slow_id]["scriptResults"]["stdout"] == "started\n"
    # The scheduler keeps only stdout and stderr: the reason is said there.
    note = "dsw: the script passed its 2 s time limit and was stopped\n"
    assert finished[slow_id]["scriptResults"]["stderr"].endswith(note)
    assert finished[failing_id]["scriptResults"]["finishedWith"] == "FAILED"
    assert "bad" in finished[failing_id]["scriptResults"]["stderr"]
    assert finished[fine_id]["scriptResults"]["finishedWith"] == "SUCCEEDED"
    # `running` came before `finished` for every job.
    order = [(r.topic, r.key) for r in records]
    for job_id in (slow_id, failing_id, fine_id):
        key = job_id.encode()
        assert order.index((ws.running_topic, key)) < order.index((ws.finished_topic, key))


async def test_malformed_messages_then_a_valid_job(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, max_script_bytes=64 * 1024)
    pending = f"{topic_prefix}pending-{SHELL}"
    dead = [
        b"not json",
        b"[1, 2]",
        b'{"script": "echo no id"}',
        b'{"jobId": "../x", "script": "x"}',
        b"",
        b'"just a string"',
    ]
    rejected: dict[str, dict[str, Any]] = {
        str(uuid.uuid4()): {"script": "   "},
        str(uuid.uuid4()): {"script": 42},
        str(uuid.uuid4()): {"script": "x" * (ws.max_script_bytes + 1)},
        str(uuid.uuid4()): {"script": "echo", "jobConfig": {"nugetConfigXml": "<configuration>"}},
        str(uuid.uuid4()): {"script": "echo", "jobConfig": {"timeoutSeconds": 10_000}},
        str(uuid.uuid4()): {"script": "echo", "jobConfig": {"memoryBytes": 1 << 40}},
    }
    valid_id, valid = job("echo valid\n")
    async with run_worker(ws) as worker:
        for value in dead:
            await kafka.publish(pending, "k", value)
        for job_id, body in rejected.items():
            await kafka.publish(pending, job_id, json.dumps({"jobId": job_id, **body}).encode())
        await kafka.publish(pending, valid_id, valid)
        records = await read_until(
            kafka,
            [ws.finished_topic, pending + ".DLT"],
            lambda rs: count_finished(ws, 7)(rs) and sum(r.topic.endswith(".DLT") for r in rs) >= 6,
        )
        await stop(worker)
    finished = finished_of(records, ws)
    assert finished[valid_id]["scriptResults"]["stdout"] == "valid\n"
    for job_id in rejected:
        assert finished[job_id]["status"] == "REJECTED"
        assert finished[job_id]["rejectionReason"]
        assert "scriptResults" not in finished[job_id]
    letters = [r for r in records if r.topic == pending + ".DLT"]
    assert sorted(r.value or b"" for r in letters) == sorted(dead)
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["kafka_dlt-original-topic"] == pending.encode()
        assert headers["kafka_dlt-exception-message"]
    assert sum((await committed(ws, SHELL)).values()) == len(dead) + len(rejected) + 1


async def test_twenty_jobs_never_more_than_capacity(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, max_containers=4)
    jobs = [job(f"sleep 0.5; echo {n}\n") for n in range(20)]
    most_jobs = most_shell = 0
    async with run_worker(ws) as worker:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal most_jobs, most_shell
                while True:
                    ours = await containers_of(docker, ws.worker_id)
                    shell = [c for c in ours if c["Labels"].get("dsw.sandbox") == SHELL]
                    running = [c for c in shell if c["Names"][0].startswith("/sandbox-job-")]
                    most_jobs = max(most_jobs, len(running))
                    most_shell = max(most_shell, len(shell))
                    await trio.sleep(0.05)

            nursery.start_soon(watch)
            for job_id, body in jobs:
                await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
            records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 20))
            nursery.cancel_scope.cancel()
        await stop(worker)
    finished = finished_of(records, ws)
    assert {job_id for job_id, _ in jobs} == set(finished)
    assert all(m["scriptResults"]["finishedWith"] == "SUCCEEDED" for m in finished.values())
    assert 1 <= most_jobs <= 4
    assert most_shell <= 4 + 1  # capacity + warm pool (one container), never more


async def test_kill_9_mid_job_then_restart(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    # The broker's minimum session: the dead member leaves the group soon.
    ws = worker_settings(settings, topic_prefix, kafka_session_timeout_ms=6000)
    job_id, body = job("echo begun; sleep 4; echo done\n")
    async with run_worker(ws, "-a") as first:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 1)
        first.signal(signal.SIGKILL)
        await first.wait()
    left = await containers_of(docker, ws.worker_id)  # orphaned by the crash: the job's, the pools'
    assert len([c for c in left if c["Names"][0].startswith("/sandbox-job-")]) == 1
    assert await committed(ws, SHELL) == {}
    async with run_worker(ws, "-b") as second:
        records = await read_until(
            kafka, [ws.running_topic, ws.finished_topic], count_finished(ws, 1)
        )
        await stop(second)
    finished = finished_of(records, ws)
    assert finished[job_id]["scriptResults"]["stdout"] == "begun\ndone\n"
    assert finished[job_id]["workerId"].endswith("-b")
    assert "reaped container" in second.output


async def test_sigterm_drains_a_short_job(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, drain_timeout_s=20)
    job_id, body = job("sleep 3; echo drained\n")
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 1)
        worker.signal(signal.SIGTERM)
        assert await worker.wait() == 0
    records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 1))
    assert finished_of(records, ws)[job_id]["scriptResults"]["stdout"] == "drained\n"
    assert sum((await committed(ws, SHELL)).values()) == 1


async def test_sigterm_cancels_a_long_job_after_the_drain_timeout(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, drain_timeout_s=2)
    job_id, body = job("echo long; sleep 300\n")
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 1)
        worker.signal(signal.SIGTERM)
        assert await worker.wait(timeout_s=30) == 0
    assert await containers_of(docker, ws.worker_id) == []
    assert await committed(ws, SHELL) == {}
    assert f"shutdown cut off job={job_id}" in worker.output
    assert "it will be redelivered" in worker.output
    # The job was not lost: the next worker runs it again.
    ws_short = msgspec.structs.replace(ws, job_timeout_s=2, max_job_timeout_s=2)
    async with run_worker(ws_short, "-next") as worker:
        records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 1))
        await stop(worker)
    assert (
        finished_of(records, ws)[job_id]["scriptResults"]["finishedWith"] == "TIME_LIMIT_EXCEEDED"
    )


async def test_second_sigint_cancels_at_once(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, drain_timeout_s=120)
    job_id, body = job("sleep 300\n")
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 1)
        worker.signal(signal.SIGINT)
        await trio.sleep(1)
        worker.signal(signal.SIGINT)
        assert await worker.wait(timeout_s=30) == 0
    assert await containers_of(docker, ws.worker_id) == []


async def test_two_workers_share_a_burst(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, max_containers=2)
    jobs = [job(f"sleep 0.3; echo {n}\n") for n in range(24)]
    async with run_worker(ws, "-one") as one, run_worker(ws, "-two") as two:
        await trio.sleep(3)  # both join the group before the burst
        for job_id, body in jobs:
            await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 24))
        await stop(one)
        await stop(two)
    finished = finished_of(records, ws)
    assert set(finished) == {job_id for job_id, _ in jobs}
    workers = {m["workerId"] for m in finished.values()}
    assert workers == {ws.worker_id + "-one", ws.worker_id + "-two"}


async def test_same_job_id_twice_runs_once(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix)
    job_id, body = job("sleep 2; echo once\n")
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        records = await read_until(
            kafka, [ws.running_topic, ws.finished_topic], count_finished(ws, 1)
        )
        await trio.sleep(2)
        await stop(worker)
    assert len(by_topic(records, ws.running_topic)) == 1
    assert sum((await committed(ws, SHELL)).values()) == 2


async def test_job_longer_than_max_poll_interval(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(
        settings,
        topic_prefix,
        max_containers=1,
        kafka_max_poll_interval_ms=3000,
        kafka_session_timeout_ms=6000,
    )
    long_id, long_body = job("sleep 8; echo long\n")
    next_id, next_body = job("echo next\n")
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", long_id, long_body)
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", next_id, next_body)
        records = await read_until(
            kafka, [ws.running_topic, ws.finished_topic], count_finished(ws, 2)
        )
        await stop(worker)
    assert len(by_topic(records, ws.running_topic)) == 2
    assert len(by_topic(records, ws.finished_topic)) == 2
    assert worker.output.count("partitions assigned") == 2  # one per type: no rebalance


async def test_finished_shrinks_to_what_the_broker_accepts(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    # The worker believes 3 MiB messages pass; the broker takes about 1 MiB.
    ws = worker_settings(
        settings, topic_prefix, max_message_bytes=3 << 20, output_limit_bytes=3 << 20
    )
    job_id, body = job("head -c 2000000 /dev/zero | tr '\\0' x\n")
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 1))
        await stop(worker)
    results = finished_of(records, ws)[job_id]["scriptResults"]
    assert results["finishedWith"] == "SUCCEEDED"
    assert results["stdoutTruncated"] is True
    assert 100_000 < len(results["stdout"]) < 1_048_576
    assert set(results["stdout"]) == {"x"}
    assert "broker refused finished" in worker.output


async def test_json_log_lines_carry_the_job_id(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, log_format="json")
    job_id, body = job("echo logged\n")
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        await read_until(kafka, [ws.finished_topic], count_finished(ws, 1))
        await stop(worker)
    lines = [json.loads(line) for line in worker.output.splitlines() if line.strip()]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    job_lines = [line["msg"] for line in lines if line["logger"] == "dsw.jobs"]
    assert len(job_lines) == 2  # running, finished
    assert all(f"job={job_id}" in msg for msg in job_lines)


async def test_rebalance_while_jobs_run_loses_nothing(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, kafka_session_timeout_ms=6000)
    jobs = [job(f"sleep 5; echo {n}\n") for n in range(4)]
    async with run_worker(ws, "-a") as first:
        for job_id, body in jobs:
            await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, body)
        await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 4)
        async with run_worker(ws, "-b") as second:  # the group rebalances while all four run
            records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 4))
            await trio.sleep(6)  # anything the newcomer took over ends too
            await stop(second)
        await stop(first)
    finished = finished_of(records, ws)
    assert set(finished) == {job_id for job_id, _ in jobs}
    for job_id, _ in jobs:
        assert first.output.count(f"running job={job_id}") == 1  # never twice on one worker
        assert second.output.count(f"running job={job_id}") <= 1
    assert "partitions assigned" in second.output
