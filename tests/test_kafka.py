"""The real broker: produce, consume in a group, commit only what is finished."""

from __future__ import annotations

import socket
import uuid

import pytest
import trio

from dsw.errors import KafkaUnavailable
from dsw.kafka import (
    Kafka,
    Record,
    committed_positions,
    create_topics,
    open_reader,
    topic_partitions,
)
from dsw.offsets import OffsetTracker
from tests.raw_records import batch_with_bad_header_key, produce_raw


async def test_produce_consume_commit_round_trip(kafka: Kafka, topic_prefix: str) -> None:
    topic, group = f"{topic_prefix}round-trip", f"{topic_prefix}group"
    await create_topics(kafka.settings.kafka_broker_url, [topic], partitions=1)
    values = [uuid.uuid4().hex.encode() for _ in range(3)]
    for value in values:
        await kafka.publish(topic, "key", value)
    tracker = OffsetTracker()
    async with kafka.open_consumer(topic, group, tracker) as consumer:
        taken: list[Record] = []
        with trio.fail_after(60):
            while len(taken) < 3:
                taken += await consumer.take(max_records=10, timeout_s=0.5)
        assert [r.value for r in taken] == values
        for record in taken:
            tracker.begin((record.topic, record.partition), record.offset)
        # Only the first and third are finished: the commit stops before the second.
        tracker.finish((topic, 0), taken[0].offset)
        tracker.finish((topic, 0), taken[2].offset)
        assert await consumer.commit()
        assert await committed_positions(kafka.settings.kafka_broker_url, group) == {
            (topic, 0): taken[1].offset
        }
        tracker.finish((topic, 0), taken[1].offset)
        assert await consumer.commit()
    assert await committed_positions(kafka.settings.kafka_broker_url, group) == {
        (topic, 0): taken[2].offset + 1
    }


async def test_create_topics_names_each_refusal_and_skips_existing(
    kafka: Kafka, topic_prefix: str
) -> None:
    bootstrap = kafka.settings.kafka_broker_url
    existing, fresh = f"{topic_prefix}existing", f"{topic_prefix}fresh"
    assert await create_topics(bootstrap, [existing], partitions=1) == [existing]
    assert await create_topics(bootstrap, [existing, fresh]) == [fresh]
    # One broker cannot hold three replicas: the broker answers with an error, not an exception.
    refused = f"{topic_prefix}three-replicas"
    with pytest.raises(KafkaUnavailable, match=f"{refused}: .*[Rr]eplication"):
        await create_topics(bootstrap, [refused], replication=3)
    assert refused not in await topic_partitions(bootstrap, topic_prefix)


async def test_admin_calls_without_a_broker_raise_kafka_unavailable(kafka: Kafka) -> None:
    with socket.socket() as unused:  # a port that nothing listens on
        unused.bind(("127.0.0.1", 0))
        bootstrap = f"127.0.0.1:{unused.getsockname()[1]}"
        with pytest.raises(KafkaUnavailable):
            await create_topics(bootstrap, ["never"])
        with pytest.raises(KafkaUnavailable):
            await committed_positions(bootstrap, "group")


async def test_an_undecodable_record_batch_comes_back_as_one_unreadable_record(
    kafka: Kafka, topic_prefix: str
) -> None:
    """A header key that is not UTF-8 makes aiokafka raise at every fetch of its batch (the broker
    and Java's clients accept it), dropping what it had read of other partitions meanwhile: the
    consumer reads around it and loses nothing else."""
    topic, group = f"{topic_prefix}undecodable", f"{topic_prefix}group"
    bootstrap = kafka.settings.kafka_broker_url
    await create_topics(bootstrap, [topic], partitions=2)
    before = [f"before-{n}".encode() for n in range(6)]  # spread over both partitions by key
    for n, value in enumerate(before):
        await kafka.publish(topic, f"key-{n}", value)
    await produce_raw(bootstrap, topic, 1, batch_with_bad_header_key([(b"k", b"1"), (b"k", b"2")]))
    await produce_raw(bootstrap, topic, 1, batch_with_bad_header_key([(b"k", b"3")]))
    await kafka.publish(topic, "key-0", b"after")
    async with kafka.open_consumer(topic, group, OffsetTracker()) as consumer:
        taken: list[Record] = []
        with trio.fail_after(60):
            while len(taken) < len(before) + 2:
                taken += await consumer.take(max_records=10, timeout_s=0.5)
    assert sorted(r.value for r in taken if r.value) == sorted([*before, b"after"])
    [unreadable] = [r for r in taken if r.unreadable]
    first = sum(1 for r in taken if r.partition == 1 and r.value in before)
    assert (unreadable.partition, unreadable.offset, unreadable.value) == (1, first, None)
    assert unreadable.unreadable.startswith(
        f"undecodable record batch at offsets {first}..{first + 2}: UnicodeDecodeError"
    )


async def test_a_reader_meeting_an_undecodable_record_raises_kafka_unavailable(
    kafka: Kafka, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}undecodable-read"
    await create_topics(kafka.settings.kafka_broker_url, [topic], partitions=1)
    batch = batch_with_bad_header_key([(b"k", b"v")])
    await produce_raw(kafka.settings.kafka_broker_url, topic, 0, batch)
    async with open_reader(kafka, [topic], from_beginning=True) as reader:

        async def read_all() -> None:
            with trio.fail_after(30):
                while True:
                    await reader.take(0.5)

        with pytest.raises(KafkaUnavailable, match="cannot be decoded: UnicodeDecodeError"):
            await read_all()
