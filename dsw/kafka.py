"""Kafka for trio: aiokafka runs inside trio through trio-asyncio, and only in this module.

`open_kafka` opens the asyncio loop and the idempotent producer (acks=all). `publish` retries
until the broker acknowledges, backing off from 100 ms to 10 s as the original did, so a result is
never dropped while Kafka is away. Consumers commit manually, pause and resume partitions for flow
control, and report rebalances to the caller. No aiokafka type or exception leaves this module:
the worker's producer and consumers retry, readers and admin calls raise KafkaUnavailable (the one
mapping is `_translated`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import msgspec
import trio
import trio_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NoError,
    TopicAlreadyExistsError,
    for_code,
)

from dsw import metrics
from dsw.backoff import Backoff
from dsw.config import Settings
from dsw.errors import KafkaUnavailable, MessageTooLarge
from dsw.offsets import OffsetTracker, Partition

log = logging.getLogger(__name__)

# Reading around an undecodable record: records per partition at most, and the wait for each.
_PROBE_LIMIT = 1000
_PROBE_WAIT_MS = 1000

Headers = list[tuple[str, bytes]]


class Record(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()
    # Set (key and value None) for a record the client could not decode: why, and which offsets.
    unreadable: str = ""


def _aio(function: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    return trio_asyncio.aio_as_trio(function)  # type: ignore[no-any-return]


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """aiokafka's errors as KafkaUnavailable, for the calls that do not retry by themselves."""
    try:
        yield
    except (KafkaError, TimeoutError) as exc:  # aiokafka's admin calls time out as TimeoutError
        raise KafkaUnavailable(f"{what}: {exc!r}") from exc


async def _acknowledged_within(delivery: asyncio.Future[Any], timeout_s: float) -> bool:
    """(asyncio side) Whether `delivery` completes within `timeout_s`; it is never cancelled."""
    try:
        await asyncio.wait_for(asyncio.shield(delivery), timeout_s)
    except TimeoutError:
        return False
    return True


def _records(batches: dict[Any, list[Any]]) -> list[Record]:
    return [
        Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, tuple(r.headers or ()))
        for records in batches.values()
        for r in records
    ]


class Kafka:
    """The worker's connection to Kafka: one producer, any number of consumers."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self._producer = producer
        # Empty while Kafka answers; else the last error, for readiness.
        self.failing = ""

    def trouble(self, what: str, exc: Exception, retry_in_s: float | None = None) -> None:
        self.failing = f"{what}: {exc!r}"
        metrics.kafka_reconnects.inc()
        retry = f" retry_in_s={retry_in_s}" if retry_in_s is not None else ""
        log.warning("Kafka %s failed%s error=%r", what, retry, exc)

    async def publish(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
    ) -> None:
        """Send and wait for the broker's acknowledgement, retrying with backoff until it comes.

        Raises MessageTooLarge when the broker refuses the size; otherwise only cancellation stops
        the retries (the caller then must not commit the job's offset).
        """
        key_bytes = key.encode() if isinstance(key, str) else key
        if key_bytes is None and value is None:
            value = b""  # aiokafka sends no record with neither (a dead letter of a tombstone)
        backoff = Backoff.of(self.settings)
        while True:
            try:
                delivery = await _aio(self._producer.send)(
                    topic, value, key=key_bytes, headers=headers
                )
                # The idempotent producer retries a sent batch until the broker takes it, silently:
                # say so each time the acknowledgement is a request timeout late.
                timeout_s = self.settings.kafka_timeout_s
                while not await _aio(_acknowledged_within)(delivery, timeout_s):
                    self.trouble(f"publish to {topic}", KafkaTimeoutError("no acknowledgement"))
                self.failing = ""
                return
            except MessageSizeTooLargeError as exc:
                raise MessageTooLarge(f"{topic}: {len(value or b'')} bytes refused") from exc
            except KafkaError as exc:
                self.trouble(f"publish to {topic}", exc, backoff.next_s)
                await backoff.sleep()

    @asynccontextmanager
    async def open_consumer(
        self,
        topic: str,
        group: str,
        tracker: OffsetTracker,
        on_assigned: Callable[[list[Partition]], None] = lambda _: None,
    ) -> AsyncIterator[Consumer]:
        """A started consumer of `topic` in `group`, stopped (shielded) on exit.

        In a rebalance it commits what `tracker` says is finished before partitions are given
        up, makes `tracker` forget the partitions that went to another worker, and tells
        `on_assigned` what this consumer now has.
        """
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_broker_url,
            group_id=group,
            client_id=f"dsw-{settings.worker_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(settings.kafka_session_timeout_ms // 10, 100),
            request_timeout_ms=int(settings.kafka_timeout_s * 1000),
            retry_backoff_ms=int(settings.reconnect_backoff_s * 1000),
            max_partition_fetch_bytes=max(settings.max_message_bytes * 2, 1 << 20),
        )
        wrapper = Consumer(self, consumer, tracker)
        consumer.subscribe([topic], listener=_Listener(wrapper, on_assigned))
        backoff = Backoff.of(self.settings)
        while True:
            try:
                await _aio(consumer.start)()
                break
            except KafkaError as exc:
                self.trouble(f"consumer start of {topic}", exc, backoff.next_s)
                await backoff.sleep()
        try:
            yield wrapper
        finally:
            with trio.move_on_after(settings.kafka_timeout_s, shield=True):
                await _aio(consumer.stop)()


class Consumer:
    """Manual-commit consumer: take records, pause and resume partitions, commit positions."""

    def __init__(self, kafka: Kafka, consumer: AIOKafkaConsumer, tracker: OffsetTracker) -> None:
        self._kafka = kafka
        self._consumer = consumer
        self.tracker = tracker

    def assignment(self) -> list[Partition]:
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def pause(self, partitions: Iterable[Partition]) -> None:
        self._consumer.pause(*(TopicPartition(*p) for p in partitions))

    def resume(self, partitions: Iterable[Partition]) -> None:
        self._consumer.resume(*(TopicPartition(*p) for p in partitions))

    def seek(self, partition: Partition, offset: int) -> None:
        """Read `offset` again later: the record was taken from the buffer but not accepted."""
        self._consumer.seek(TopicPartition(*partition), offset)

    async def take(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records` records from unpaused partitions, waiting at most `timeout_s`.

        Calling this keeps the consumer in its group even when every partition is paused. A Kafka
        failure is logged and gives no records after a pause; aiokafka reconnects by itself.
        """
        try:
            batches = await _aio(self._consumer.getmany)(
                timeout_ms=int(timeout_s * 1000), max_records=max_records
            )
        except KafkaError as exc:
            self._kafka.trouble("fetch", exc, timeout_s)
            await trio.sleep(timeout_s)
            return []
        except Exception as exc:  # aiokafka could not decode a record: see _around_undecodable
            try:
                found: list[Record] = await _aio(self._around_undecodable)(exc)
            except KafkaError as kafka_exc:
                self._kafka.trouble("fetch around an undecodable record", kafka_exc, timeout_s)
                await trio.sleep(timeout_s)
                return []
            return found
        return _records(batches)

    async def _around_undecodable(self, error: Exception) -> list[Record]:
        """(asyncio side) aiokafka raised while decoding a fetched record (a header key that is not
        UTF-8, say: Kafka's own clients and the broker accept one). It raises again at every fetch
        of that record batch, and the records it had already taken from other partitions in the
        same call are lost. So: every partition goes back to its committed position (the tracker
        skips what was already taken), each is read one record at a time up to the bad one, and
        the offsets that cannot be decoded (its whole record batch, which aiokafka always decodes
        from its start) come back as one `unreadable` record, placed before the next readable one.
        """
        found: list[Record] = []
        for tp in self._consumer.assignment():
            if tp in self._consumer.paused():
                continue
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
            for _ in range(_PROBE_LIMIT):
                try:
                    taken = await self._probe(tp)
                except KafkaError:
                    raise
                except Exception:
                    found.append(await self._skip_undecodable(tp, error))
                    break
                if not taken:
                    break
                found += taken
        return found

    async def _probe(self, tp: TopicPartition) -> list[Record]:
        """One record of `tp` from its position, or none within the probe's wait."""
        batches = await self._consumer.getmany(tp, timeout_ms=_PROBE_WAIT_MS, max_records=1)
        return _records(batches)

    async def _skip_undecodable(self, tp: TopicPartition, error: Exception) -> Record:
        """Past the undecodable batch at `tp`'s position: the first offset above it that reads
        (or the partition's end) is found by galloping, then bisecting."""
        first = await self._consumer.position(tp)
        end = (await self._consumer.end_offsets([tp]))[tp]

        async def readable(offset: int) -> bool:
            if offset >= end:
                return True
            self._consumer.seek(tp, offset)
            try:
                await self._probe(tp)
            except KafkaError:
                raise
            except Exception:
                return False
            return True

        bad, step = first, 1  # `bad` cannot be read; find `good` > bad that can
        while not await readable(bad + step):
            bad, step = bad + step, step * 2
        good = min(bad + step, end)
        while good - bad > 1:
            middle = (bad + good) // 2
            bad, good = (bad, middle) if await readable(middle) else (middle, good)
        self._consumer.seek(tp, good)
        offsets = f"{first}" if good == first + 1 else f"{first}..{good - 1}"
        why = f"undecodable record batch at offsets {offsets}: {error!r}"
        log.warning("skipping %s of topic=%s partition=%d", why, tp.topic, tp.partition)
        return Record(tp.topic, tp.partition, first, None, None, 0, unreadable=why)

    async def commit(self) -> bool:
        """Commit the tracker's finished positions of assigned partitions; False if refused."""
        return bool(await _aio(self.commit_in_asyncio)(self.assignment()))

    async def commit_in_asyncio(self, partitions: list[Partition]) -> bool:
        positions = self.tracker.to_commit(partitions)
        if not positions:
            return True
        try:
            await self._consumer.commit({TopicPartition(*p): o for p, o in positions.items()})
        except KafkaError as exc:
            # The group moved on (CommitFailedError, IllegalStateError) or the broker is away:
            # the uncommitted jobs are redelivered, which at-least-once allows.
            self._kafka.trouble(f"commit of {positions}", exc)
            return False
        self.tracker.committed(positions)
        return True


class Reader:
    """Reads topics without a consumer group, so it disturbs no one (`dsw submit`, tests)."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def take(self, timeout_s: float) -> list[Record]:
        """What arrived within `timeout_s`; KafkaUnavailable when the fetch fails, or when a
        record cannot be decoded (a reader has no way around it: it would meet it again)."""
        with _translated("fetch"):
            try:
                batches = await _aio(self._consumer.getmany)(timeout_ms=int(timeout_s * 1000))
            except (KafkaError, TimeoutError):
                raise
            except Exception as exc:
                raise KafkaUnavailable(f"a record that cannot be decoded: {exc!r}") from exc
        return _records(batches)


@asynccontextmanager
async def open_reader(
    kafka: Kafka, topics: Iterable[str], from_beginning: bool = False
) -> AsyncIterator[Reader]:
    """Every partition of `topics`, from the beginning or from now on; no offsets are committed.
    Needs the topics to exist (see `create_topics`). Raises KafkaUnavailable."""
    settings = kafka.settings
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_broker_url,
        enable_auto_commit=False,
        request_timeout_ms=int(settings.kafka_timeout_s * 1000),
        max_partition_fetch_bytes=max(settings.max_message_bytes * 2, 1 << 20),
    )
    with _translated(f"reader of {settings.kafka_broker_url}"):
        await _aio(consumer.start)()
    try:
        with _translated(f"reader of {settings.kafka_broker_url}"):
            partitions = await _partitions_of(kafka, list(topics))
            consumer.assign(partitions)
            seek = consumer.seek_to_beginning if from_beginning else consumer.seek_to_end
            await _aio(seek)(*partitions)
            # Resolve the positions now, so that "from now on" means before the caller publishes.
            for partition in partitions:
                await _aio(consumer.position)(partition)
        yield Reader(consumer)
    finally:
        with trio.move_on_after(settings.kafka_timeout_s, shield=True):
            await _aio(consumer.stop)()


async def _partitions_of(kafka: Kafka, topics: list[str]) -> list[TopicPartition]:
    """Every partition of `topics`; the producer's metadata waits for new topics to appear."""
    partitions = []
    for topic in topics:
        with _translated(f"no partitions of {topic}"):
            found = await _aio(kafka._producer.partitions_for)(topic)
        partitions += [TopicPartition(topic, p) for p in sorted(found)]
    return partitions


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs inside aiokafka's rebalance (asyncio side): commit what is done, then hand over."""

    def __init__(self, consumer: Consumer, on_assigned: Callable[[list[Partition]], None]) -> None:
        self._consumer = consumer
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._consumer.commit_in_asyncio([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        partitions = [(tp.topic, tp.partition) for tp in assigned]
        dropped = self._consumer.tracker.keep_only(partitions)
        log.info("partitions assigned=%s dropped=%s", sorted(partitions), sorted(dropped))
        self._on_assigned(partitions)


@asynccontextmanager
async def open_kafka(settings: Settings, wait_s: float = math.inf) -> AsyncIterator[Kafka]:
    """The asyncio loop for aiokafka and a started idempotent producer; waits for Kafka, at most
    `wait_s` (then KafkaUnavailable)."""
    async with trio_asyncio.open_loop():
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_broker_url,
            client_id=f"dsw-{settings.worker_id}",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(settings.kafka_timeout_s * 1000),
            retry_backoff_ms=int(settings.reconnect_backoff_s * 1000),
            max_request_size=settings.max_message_bytes + 64 * 1024,
            linger_ms=0,
        )
        kafka = Kafka(settings, producer)
        backoff = Backoff.of(settings)
        with trio.move_on_after(wait_s) as waiting:
            while True:
                try:
                    await _aio(producer.start)()
                    break
                except KafkaError as exc:
                    kafka.trouble(f"connection to {settings.kafka_broker_url}", exc, backoff.next_s)
                    await backoff.sleep()
        if waiting.cancelled_caught:
            with trio.move_on_after(settings.kafka_timeout_s, shield=True):
                await _aio(producer.stop)()
            message = f"no broker answered at {settings.kafka_broker_url} within {wait_s:g} s"
            raise KafkaUnavailable(message)
        kafka.failing = ""
        try:
            yield kafka
        finally:
            with trio.move_on_after(settings.kafka_timeout_s, shield=True):
                await _aio(producer.stop)()


@asynccontextmanager
async def _open_admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client; KafkaUnavailable for what fails inside."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    with _translated(f"admin client of {bootstrap}"):
        await _aio(admin.start)()
        try:
            yield admin
        finally:
            with trio.move_on_after(10, shield=True):
                await _aio(admin.close)()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic whose name starts with `prefix` (tests clean up after themselves)."""
    async with _open_admin(bootstrap) as admin:
        names = [t for t in await _aio(admin.list_topics)() if t.startswith(prefix)]
        if names:
            await _aio(admin.delete_topics)(names)


async def committed_positions(bootstrap: str, group: str) -> dict[Partition, int]:
    """The positions `group` has committed (for `dsw` tests and operators' checks)."""
    async with _open_admin(bootstrap) as admin:
        offsets = await _aio(admin.list_consumer_group_offsets)(group)
    return {
        (tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if meta.offset >= 0
    }


async def topic_partitions(bootstrap: str, prefix: str = "") -> dict[str, int]:
    """The partition count of every topic whose name starts with `prefix` (tests, operators)."""
    async with _open_admin(bootstrap) as admin:
        names = [t for t in await _aio(admin.list_topics)() if t.startswith(prefix)]
        described = await _aio(admin.describe_topics)(names) if names else []
    return {d["topic"]: len(d["partitions"]) for d in described}


async def create_topics(
    bootstrap: str, topics: Iterable[str], partitions: int = 2, replication: int = 1
) -> list[str]:
    """Create the topics that do not exist yet, with `partitions` each; an existing topic is left
    as it is, never shrunk. Returns the created ones. Needs open_kafka's loop or its own: it runs
    in the current trio-asyncio loop. KafkaUnavailable names each topic the broker refused to
    create (not authorised, a replication factor above its broker count...) and why."""
    created, refused = [], []
    async with _open_admin(bootstrap) as admin:
        with _translated(f"topics of {bootstrap}"):
            existing = set(await _aio(admin.list_topics)())
            for topic in topics:
                if topic in existing:
                    continue
                new = NewTopic(topic, num_partitions=partitions, replication_factor=replication)
                response = await _aio(admin.create_topics)([new])
                # aiokafka returns the broker's per-topic errors rather than raising them.
                for name, code, *message in response.topic_errors:
                    error = for_code(code)
                    if error is NoError:
                        created.append(name)
                    elif error is not TopicAlreadyExistsError:  # created by someone meanwhile
                        why = message[0] if message and message[0] else error.__name__
                        refused.append(f"{name}: {why}")
    if refused:
        raise KafkaUnavailable(f"topics not created: {'; '.join(refused)}")
    return created
