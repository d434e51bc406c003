"""One sandbox type served from Kafka, and the one place that decides when an offset commits.

A `TypeServer` owns its type's capacity limiter, its offset tracker and the wake-up of its poll
loop; the in-flight registry is the worker's, shared by every type. At-least-once delivery, top
to bottom:

1. The poll loop takes at most as many records as there are free slots (a record that needs no
   container, a rejection or a dead letter, needs no slot). Every record taken is begun in the
   tracker. A record it cannot start now is sought back and read again later.
2. Every record gets one answer: a dead letter, a REJECTED or the job's run and its `finished`.
   A record of a job id already in flight anywhere in the worker joins that run instead.
3. Once the broker acknowledges the answer, `_finish` marks the record's offset finished (a run's
   container is removed after that; a rejection's dead-letter copy is written before it).
4. After a poll, the loop commits each partition up to its first unfinished offset: after every
   poll while no job runs, at most every COMMIT_EVERY_S while jobs run (each commit is a write
   to the broker; a crash redelivers what finished since the last one), and once more at the end.
5. A task cancelled before its answer is acknowledged (shutdown, drain timeout) leaves its offset
   unfinished, so it is never committed and the job is redelivered. Every record left unfinished
   when the job nursery closes is logged, by job id (or by where it is when it has none).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from dsw import jobs, metrics
from dsw.drain import Drain
from dsw.inflight import InFlight
from dsw.intake import Accepted, DeadLetter, Parsed, Rejected, expired, parse
from dsw.jobs import JobContext, where
from dsw.kafka import Consumer, Record
from dsw.offsets import OffsetTracker, Partition
from dsw.status import Readiness

log = logging.getLogger(__name__)

POLL_S = 0.5
# Under load, commits at most this often rather than after every job.
COMMIT_EVERY_S = 1.0

Position = tuple[Partition, int]


@dataclass
class _Open:
    """A record begun and not finished: what to call it in a log line, and whether its job's
    `finished` is out already (a rejection's dead-letter copy may still be on its way)."""

    label: str
    answered: bool = False


class TypeServer:
    def __init__(
        self, ctx: JobContext, in_flight: InFlight, drain: Drain, readiness: Readiness
    ) -> None:
        self.ctx = ctx
        self.name = ctx.sandbox.name
        self.topic = ctx.settings.pending_topic_prefix + self.name
        self._in_flight = in_flight
        self._drain = drain
        self._readiness = readiness
        self._limiter = trio.CapacityLimiter(ctx.settings.max_containers)
        self._tracker = OffsetTracker()
        # Set when a job gives its slot back, so the poll loop takes the next one at once.
        self._slot_freed = trio.Event()
        self._open: dict[Position, _Open] = {}
        self._idle = False  # assigned no partition (said once, until it gets one)
        self._committed_at = -COMMIT_EVERY_S  # trio's clock

    async def serve(self) -> None:
        """Keep the warm pool (if any) and consume until drained; every job task lives in this
        function's nursery, and the pool in one around it."""
        async with trio.open_nursery() as pool_tasks:
            if self.ctx.pool is not None:
                pool_tasks.start_soon(self.ctx.pool.serve, self._drain.stopping)
            await self._consume()
            pool_tasks.cancel_scope.cancel(reason="stopped consuming")

    async def _consume(self) -> None:
        settings = self.ctx.settings
        metrics.capacity.labels(sandbox=self.name).set(settings.max_containers)
        async with self.ctx.kafka.open_consumer(
            self.topic, self.ctx.group, self._tracker, self._assigned
        ) as consumer:
            self._readiness.consumers[self.name] = consumer
            log.info("consuming topic=%s group=%s", self.topic, self.ctx.group)
            with self._drain.job_scope():
                try:
                    async with trio.open_nursery() as job_tasks:
                        await self._poll(consumer, job_tasks)
                finally:
                    self._say_cut_off()
            with trio.move_on_after(settings.kafka_timeout_s, shield=True):
                await consumer.commit()
            del self._readiness.consumers[self.name]
        log.info("stopped consuming topic=%s", self.topic)

    async def _poll(self, consumer: Consumer, job_tasks: trio.Nursery) -> None:
        """Take records while there is capacity; keep polling (paused) so the group keeps us.

        Once draining, it only polls and commits until the last job task has ended and the last
        record that joined a run (of any type) is answered.
        """
        stopping = self._drain.stopping
        while not (stopping.is_set() and not job_tasks.child_tasks and not self._open):
            taking = not stopping.is_set() and self.ctx.docker_health.healthy
            free = int(self._limiter.available_tokens) if taking else 0
            assigned = consumer.assignment()
            metrics.partitions_paused.labels(sandbox=self.name).set(0 if free else len(assigned))
            if free:
                consumer.resume(assigned)
                records = await consumer.take(max_records=free, timeout_s=POLL_S)
            else:
                consumer.pause(assigned)
                with trio.move_on_after(POLL_S):
                    await self._slot_freed.wait()
                freed, self._slot_freed = self._slot_freed.is_set(), trio.Event()
                if freed:
                    continue  # straight to taking: the next record starts now, commits after
                # Polling while paused keeps the group's membership (max.poll.interval.ms).
                records = await consumer.take(max_records=1, timeout_s=0)
            held_back: set[Partition] = set()
            for record in records:
                partition = (record.topic, record.partition)
                if partition in held_back or not self._tracker.is_new(partition, record.offset):
                    continue
                if stopping.is_set() or not self._take(record, job_tasks):
                    # No room: read it again once a slot is free.
                    consumer.seek(partition, record.offset)
                    held_back.add(partition)
            now = trio.current_time()
            if not job_tasks.child_tasks or now - self._committed_at >= COMMIT_EVERY_S:
                self._committed_at = now
                if not await consumer.commit():
                    metrics.commit_failures.inc()

    def _assigned(self, partitions: list[Partition]) -> None:
        """After a rebalance: say plainly when this worker gets nothing to do."""
        metrics.partitions_assigned.labels(sandbox=self.name).set(len(partitions))
        if not partitions and not self._idle:
            log.info(
                "no partition of topic=%s assigned to this worker: the group has more members "
                "than the topic has partitions; idle until a rebalance gives it one",
                self.topic,
            )
        self._idle = not partitions

    def _take(self, record: Record, job_tasks: trio.Nursery) -> bool:
        """Begin the record and start the task that answers it; False (nothing begun) if it
        needs a slot and none is free."""
        parsed = self._expired(record, self._parse(record))
        token = object()
        if isinstance(parsed, Accepted) and parsed.job_id not in self._in_flight:
            try:
                self._limiter.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                return False
        position = ((record.topic, record.partition), record.offset)
        self._tracker.begin(*position)
        metrics.jobs_received.labels(sandbox=self.name).inc()
        if isinstance(parsed, DeadLetter):
            self._open[position] = _Open(where(record))
            job_tasks.start_soon(self._dead_letter, record, parsed)
            return True
        self._open[position] = _Open(f"job={parsed.job_id} {where(record)}")
        if not self._in_flight.claim(parsed.job_id):
            log.info(
                "job already in flight, joining its run job=%s %s", parsed.job_id, where(record)
            )
            metrics.jobs_deduplicated.labels(sandbox=self.name).inc()
            self._in_flight.join(parsed.job_id, lambda: self._finish(*position))
        elif isinstance(parsed, Rejected):
            job_tasks.start_soon(self._reject, record, parsed)
        else:
            job_tasks.start_soon(self._run, record, parsed, token)
        return True

    def _parse(self, record: Record) -> Parsed:
        if record.unreadable:  # the client could not decode it: no key, no value to read
            return DeadLetter(record.unreadable, "undecodable")
        try:
            return parse(record.key, record.value, self.ctx.settings)
        except Exception as exc:
            # A record that trips a bug of ours must not stop the partition: keep it aside.
            log.exception("cannot read record %s", where(record))
            return DeadLetter(f"internal error reading the record: {exc!r}", "internal_error")

    def _expired(self, record: Record, parsed: Parsed) -> Parsed:
        """A job that waited longer than WORKER_JOB_MAX_AGE_S (the scheduler has given up on it by
        then and would drop its result) is rejected instead of run; a run under way is joined."""
        if not isinstance(parsed, Accepted) or parsed.job_id in self._in_flight:
            return parsed
        reason = expired(record.timestamp_ms, self.ctx.settings.job_max_age_s, time.time())
        return parsed if reason is None else Rejected(parsed.job_id, reason, "expired")

    def _finish(self, partition: Partition, offset: int) -> None:
        """The record is answered (and dead-lettered, if it is to be): its offset may commit."""
        self._tracker.finish(partition, offset)
        self._open.pop((partition, offset), None)

    def _say_cut_off(self) -> None:
        """The job nursery is closed: every record still unfinished was cut off (a drain that ran
        out of time, or a shutdown) and will be read again; say so, one line each."""
        for _, entry in sorted(self._open.items()):
            state = (
                "answered, its dead-letter copy not written" if entry.answered else "not answered"
            )
            log.warning("shutdown cut off %s: %s; it will be redelivered", entry.label, state)
        self._open.clear()

    async def _dead_letter(self, record: Record, letter: DeadLetter) -> None:
        await jobs.dead_letter(self.ctx, record, letter.reason, letter.code)
        self._finish((record.topic, record.partition), record.offset)

    async def _reject(self, record: Record, rejected: Rejected) -> None:
        """Answer, then the records that joined are done; this one once its dead-letter copy (if
        any) is written too."""
        position = ((record.topic, record.partition), record.offset)

        def answered() -> None:
            if position in self._open:
                self._open[position].answered = True
            self._in_flight.answered(rejected.job_id)

        try:
            await jobs.reject(self.ctx, record, rejected, answered)
            self._finish(*position)
        finally:
            self._in_flight.ended(rejected.job_id)

    async def _run(self, record: Record, accepted: Accepted, token: object) -> None:
        """Run; the record and those that joined are done as soon as `finished` is acknowledged,
        while the container is still being removed. The slot is freed once it is gone."""

        def answered() -> None:
            self._finish((record.topic, record.partition), record.offset)
            self._in_flight.answered(accepted.job_id)

        try:
            await jobs.run_job(self.ctx, record, accepted, answered)
        finally:
            self._in_flight.ended(accepted.job_id)
            self._limiter.release_on_behalf_of(token)
            self._slot_freed.set()
