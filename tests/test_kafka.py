"""The real broker: produce, consume in a group, commit only what is finished."""

from __future__ import annotations

import uuid

import trio

from dsw.kafka import Kafka, Record, committed_positions, create_topics
from dsw.offsets import OffsetTracker


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
