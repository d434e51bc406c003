"""`dsw worker` against records a hostile or careless producer sends, and against overload.

Real broker, real daemon, real worker processes: every readable job id gets one answer, no record
can touch another job's run, and a backlog sheds the jobs nobody waits for any more.
"""

from __future__ import annotations

import json
import re
import struct
import uuid

import httpx
import trio

from dsw.config import Settings
from dsw.docker import DockerClient
from dsw.kafka import Kafka, create_topics
from tests.raw_records import batch_with_bad_header_key, produce_raw, raw_batch
from tests.workers import (
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


async def test_a_job_id_in_flight_on_another_type_joins_its_run_and_kills_nothing(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix)
    job_id, shell_job = job("echo start; sleep 6; echo done\n")
    _, mono_job = job('Console.WriteLine("mono");\n', job_id)
    _, forged = job("   ", job_id)  # a blank script: it would be REJECTED on its own
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, shell_job)
        await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 1)
        await trio.sleep(2)
        await kafka.publish(f"{topic_prefix}pending-{MONO}", job_id, mono_job)
        await kafka.publish(f"{topic_prefix}pending-{MONO}", job_id, forged)
        await read_until(kafka, [ws.finished_topic], count_finished(ws, 1))
        with trio.fail_after(30):
            while sum((await committed(ws, MONO)).values()) < 2:  # noqa: ASYNC110
                await trio.sleep(0.2)
        await trio.sleep(2)  # nothing else comes
        records = await read_until(
            kafka, [ws.running_topic, ws.finished_topic], count_finished(ws, 1)
        )
        await stop(worker)
    finished = by_topic(records, ws.finished_topic)
    assert len(finished) == 1  # answered once
    results = finished[0]["scriptResults"]
    assert (finished[0]["status"], results["finishedWith"]) == ("ACCEPTED", "SUCCEEDED")
    assert results["stdout"] == "start\ndone\n"  # the shell run went on untouched
    assert len(by_topic(records, ws.running_topic)) == 1
    assert "replacing leftover" not in worker.output
    assert worker.output.count(f"joining its run job={job_id}") == 2


async def test_an_upper_case_copy_of_a_running_job_id_joins_its_run(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    # The scheduler reads job ids as java.util.UUID, whatever their case: the same job.
    ws = worker_settings(settings, topic_prefix)
    job_id, shell_job = job("echo start; sleep 4; echo done\n")
    upper = job_id.upper()
    _, forged_shell = job("echo forged\n", upper)
    _, forged_mono = job('Console.WriteLine("forged");\n', upper)
    async with run_worker(ws) as worker:
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", job_id, shell_job)
        await read_until(kafka, [ws.running_topic], lambda rs: len(rs) >= 1)
        await kafka.publish(f"{topic_prefix}pending-{SHELL}", upper, forged_shell)
        await kafka.publish(f"{topic_prefix}pending-{MONO}", upper, forged_mono)
        with trio.fail_after(60):
            while (  # noqa: ASYNC110
                sum((await committed(ws, SHELL)).values()) < 2
                or sum((await committed(ws, MONO)).values()) < 1
            ):
                await trio.sleep(0.2)
        await trio.sleep(2)  # nothing else comes
        records = await read_until(
            kafka, [ws.running_topic, ws.finished_topic], count_finished(ws, 1)
        )
        await stop(worker)
    finished = by_topic(records, ws.finished_topic)
    assert len(finished) == 1  # answered once, by the run that was under way
    assert finished[0]["jobId"] == job_id
    assert finished[0]["scriptResults"]["stdout"] == "start\ndone\n"
    assert by_topic(records, ws.running_topic) == [{"jobId": job_id}]
    assert {r.key for r in records} == {job_id.encode()}
    assert worker.output.count(f"joining its run job={job_id}") == 2
    assert upper not in worker.output


async def test_a_rejection_is_answered_when_its_dead_letter_cannot_be_written(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    # No topic can have this name: every dead letter is retried until the drain cuts it off.
    ws = worker_settings(settings, topic_prefix, dead_letter_suffix=".DLT!", drain_timeout_s=2)
    pending = f"{topic_prefix}pending-{SHELL}"
    job_id = str(uuid.uuid4())
    async with run_worker(ws) as worker:
        await kafka.publish(pending, job_id, b"\x00 not JSON, keyed by its job id")
        await kafka.publish(pending, b"no id", b"\x00 not JSON, no id anywhere")
        records = await read_until(kafka, [ws.finished_topic], count_finished(ws, 1))
        with trio.fail_after(60):
            while worker.output.count("dead-lettered") < 2:  # noqa: ASYNC110
                await trio.sleep(0.2)
        await stop(worker)
    finished = finished_of(records, ws)
    assert finished[job_id]["status"] == "REJECTED"
    assert await committed(ws, SHELL) == {}  # both records are read again
    lines = [line for line in worker.output.splitlines() if "shutdown cut off" in line]
    assert len(lines) == 2
    assert any(
        f"shutdown cut off job={job_id} topic={pending} partition=" in line
        and "answered, its dead-letter copy not written; it will be redelivered" in line
        for line in lines
    )
    assert any(
        f"shutdown cut off topic={pending} partition=" in line
        and "not answered; it will be redelivered" in line
        for line in lines
    )


def dlt_headers(headers: tuple[tuple[str, bytes], ...]) -> dict[str, bytes]:
    return dict(headers)


async def test_unreadable_records_with_a_readable_id_are_rejected_and_kept(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix)
    pending = f"{topic_prefix}pending-{SHELL}"
    ids = [str(uuid.uuid4()) for _ in range(5)]
    deep = b"[" * 100_000 + b"]" * 100_000
    unreadable: dict[str, str | bytes] = {
        ids[0]: f'{{"jobId": "{ids[0]}", "script": "x", "jobConfig": {{"timeoutSeconds": 1e400}}}}',
        ids[1]: f'{{"jobId": "{ids[1]}", "script": "x", "x": '.encode() + deep + b"}",
        ids[2]: f'{{"script": "\xff\xfe", "jobId": "{ids[2]}"}}'.encode("latin-1"),
        ids[3]: b"\x00garbage keyed by its job id",
    }
    own_headers = [("__TypeId__", b"org.example.Job"), ("trace", b"\x00\x01")]
    async with run_worker(ws) as worker:
        for job_id, value in unreadable.items():
            data = value.encode() if isinstance(value, str) else value
            await kafka.publish(pending, job_id, data, own_headers)
        await kafka.publish(pending, b"not-a-uuid", b"no id anywhere", own_headers)
        valid_id, valid = job("echo still fine\n", ids[4])
        await kafka.publish(pending, valid_id, valid)
        records = await read_until(
            kafka,
            [ws.finished_topic, pending + ".DLT"],
            lambda rs: count_finished(ws, 5)(rs) and sum(r.topic.endswith(".DLT") for r in rs) >= 5,
        )
        await stop(worker)
    finished = finished_of(records, ws)
    for job_id in unreadable:
        assert finished[job_id]["status"] == "REJECTED"
        assert finished[job_id]["rejectionReason"].startswith("unreadable job: not JSON")
    assert finished[valid_id]["scriptResults"]["stdout"] == "still fine\n"
    letters = [r for r in records if r.topic == pending + ".DLT"]
    assert len(letters) == 5
    for letter in letters:
        headers = dlt_headers(letter.headers)
        assert headers["__TypeId__"] == b"org.example.Job"  # the record's own headers are kept
        assert headers["trace"] == b"\x00\x01"
        assert headers["kafka_dlt-original-topic"] == pending.encode()
        # Spring's encodings: a 4-byte partition, 8-byte offset and timestamp.
        assert struct.unpack(">i", headers["kafka_dlt-original-partition"])[0] in (0, 1)
        assert struct.unpack(">q", headers["kafka_dlt-original-offset"])[0] >= 0
        assert struct.unpack(">q", headers["kafka_dlt-original-timestamp"])[0] > 0
        assert headers["kafka_dlt-original-consumer-group"] == ws.consumer_group_prefix.encode() + (
            SHELL.encode()
        )
    assert sum((await committed(ws, SHELL)).values()) == 6


async def test_a_record_the_client_cannot_decode_is_dead_lettered_and_stops_nothing(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    # A header key that is not UTF-8: the broker keeps it, aiokafka raises at every fetch of it.
    ws = worker_settings(settings, topic_prefix, runner_types=(SHELL,))
    pending = f"{topic_prefix}pending-{SHELL}"
    await create_topics(ws.kafka_broker_url, [pending], partitions=1)  # one queue, in order
    poisoned = str(uuid.uuid4())
    _, body = job("echo never\n", poisoned)
    batch = batch_with_bad_header_key([(poisoned.encode(), body)])
    async with run_worker(ws) as worker:
        await produce_raw(ws.kafka_broker_url, pending, 0, batch)
        # Neither key nor value (a tombstone), which aiokafka will not send as it is.
        await produce_raw(ws.kafka_broker_url, pending, 0, raw_batch([(None, None)]))
        valid_id, valid = job("echo after it\n")
        await kafka.publish(pending, valid_id, valid)
        records = await read_until(
            kafka,
            [ws.finished_topic, pending + ".DLT"],
            lambda rs: count_finished(ws, 1)(rs) and sum(r.topic.endswith(".DLT") for r in rs) > 1,
        )
        await stop(worker)
    assert finished_of(records, ws)[valid_id]["scriptResults"]["stdout"] == "after it\n"
    # By their offset: the dead-letter topic's two partitions keep no order between them.
    undecodable, tombstone = sorted(
        (r for r in records if r.topic == pending + ".DLT"),
        key=lambda r: dlt_headers(r.headers)["kafka_dlt-original-offset"],
    )
    headers = dlt_headers(undecodable.headers)
    assert headers["kafka_dlt-exception-fqcn"] == b"dsw.undecodable"
    assert headers["kafka_dlt-exception-message"].startswith(
        b"undecodable record batch at offsets 0: UnicodeDecodeError"
    )
    assert struct.unpack(">q", headers["kafka_dlt-original-offset"])[0] == 0
    assert (tombstone.key, tombstone.value) == (None, b"")
    assert struct.unpack(">q", dlt_headers(tombstone.headers)["kafka_dlt-original-offset"])[0] == 1
    assert sum((await committed(ws, SHELL)).values()) == 3


async def test_a_job_id_with_a_line_break_forges_no_log_line(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix)
    pending = f"{topic_prefix}pending-{SHELL}"
    forged_line = "ts=2026-01-01T00:00:00.000Z level=error logger=dsw.jobs msg=FORGED"
    job_id = f"{uuid.uuid4()}\n{forged_line}"
    async with run_worker(ws) as worker:
        await kafka.publish(pending, "k", json.dumps({"jobId": job_id, "script": "echo"}).encode())
        await kafka.publish(
            pending, "k", json.dumps({"jobId": job_id[:37], "script": "x"}).encode()
        )
        await read_until(kafka, [pending + ".DLT"], lambda rs: len(rs) >= 2)
        await stop(worker)
    assert not any(line.startswith(forged_line) for line in worker.output.splitlines())
    assert "dead-lettered" in worker.output
    assert "Traceback" not in worker.output


async def test_a_backlog_older_than_the_max_age_is_shed_without_containers(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, max_containers=1, job_max_age_s=4)
    pending = f"{topic_prefix}pending-{SHELL}"
    jobs = [job(f"sleep 1.5; echo {n}\n") for n in range(8)]
    await create_topics(ws.kafka_broker_url, [pending], partitions=1)  # one queue, in order
    async with run_worker(ws) as worker:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{worker.settings.metrics_port}"
        ) as http:
            for job_id, body in jobs:
                await kafka.publish(pending, job_id, body)
            records = await read_until(
                kafka, [ws.running_topic, ws.finished_topic], count_finished(ws, len(jobs))
            )
            metrics = (await http.get("/metrics")).text
        await stop(worker)
    finished = finished_of(records, ws)
    outcomes = [finished[job_id]["status"] for job_id, _ in jobs]
    ran = outcomes.count("ACCEPTED")
    # The first jobs ran (one at a time); once the queue's head was older than 4 s, the rest were
    # answered at once, in order, without a container.
    assert 1 <= ran <= 4
    assert outcomes == ["ACCEPTED"] * ran + ["REJECTED"] * (len(jobs) - ran)
    for job_id, _ in jobs[ran:]:
        assert re.fullmatch(r"expired: \d+ s in the queue", finished[job_id]["rejectionReason"])
    assert len(by_topic(records, ws.running_topic)) == ran
    expired = f'dsw_jobs_rejected_total{{reason="expired",sandbox="{SHELL}"}} {len(jobs) - ran}.0'
    assert expired in metrics


async def test_a_worker_with_no_partition_says_so_once(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> None:
    ws = worker_settings(settings, topic_prefix, runner_types=(SHELL,))
    pending = f"{topic_prefix}pending-{SHELL}"
    await create_topics(ws.kafka_broker_url, [pending], partitions=1)
    async with run_worker(ws, "-a") as first, run_worker(ws, "-b") as second:
        gauges: dict[str, str] = {}
        with trio.fail_after(60):
            while len(gauges) < 2 or sorted(gauges.values()) != ["0.0", "1.0"]:
                await trio.sleep(0.5)
                for worker in (first, second):
                    url = f"http://127.0.0.1:{worker.settings.metrics_port}/metrics"
                    async with httpx.AsyncClient() as http:
                        try:
                            text = (await http.get(url)).text
                        except httpx.TransportError:
                            continue
                    found = re.search(rf'dsw_partitions_assigned{{sandbox="{SHELL}"}} (\S+)', text)
                    if found:
                        gauges[worker.settings.worker_id] = found[1]
        idle = first if gauges[first.settings.worker_id] == "0.0" else second
        await stop(first)
        await stop(second)
    assert idle.output.count(f"no partition of topic={pending} assigned to this worker") == 1
