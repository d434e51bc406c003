"""Records that Kafka stores but no well-behaved client would write: for hostile-input tests.

Java's clients and the broker decode a record header key leniently (malformed UTF-8 becomes
U+FFFD), so a producer of raw batches can leave one that a strict decoder chokes on.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio_asyncio
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

_MARK = b"\x01dsw-mark"
_ATTRIBUTES_OFFSET = struct.calcsize(">qiibI")
_CRC_OFFSET = struct.calcsize(">qiib")


def batch_with_bad_header_key(records: list[tuple[bytes | None, bytes | None]]) -> bytes:
    """One record batch of `records` (key, value), each with a header whose key is not UTF-8."""
    batch = bytearray(raw_batch(records, ((_MARK.decode(), b"v"),)))
    batch[:] = batch.replace(_MARK, b"\xff" + _MARK[1:])
    crc = calc_crc32c(bytes(batch[_ATTRIBUTES_OFFSET:]))
    struct.pack_into(">I", batch, _CRC_OFFSET, crc)
    return bytes(batch)


def raw_batch(
    records: list[tuple[bytes | None, bytes | None]], headers: tuple[tuple[str, bytes], ...] = ()
) -> bytes:
    """One record batch of `records` (key, value; both may be None, as aiokafka's producer will
    not send), each with `headers`."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    for offset, (key, value) in enumerate(records):
        builder.append(offset, None, key, value, list(headers))
    return bytes(builder.build())


async def produce_raw(bootstrap: str, topic: str, partition: int, batch: bytes) -> None:
    """Append `batch` to the partition as it is (in open_kafka's loop)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await _aio(client.bootstrap)()
    try:
        await _aio(client._wait_on_metadata)(topic)
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(None, -1, 10_000, [(topic, [(partition, batch)])])
        response = await _aio(client.send)(leader, request)
        errors = [p[1] for _, parts in response.topics for p in parts]
        assert errors == [0], f"produce refused: {response}"
    finally:
        with trio.move_on_after(10, shield=True):
            await _aio(client.close)()


def _aio(function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    return trio_asyncio.aio_as_trio(function)  # type: ignore[no-any-return]
