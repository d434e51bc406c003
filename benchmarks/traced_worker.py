"""`python -m benchmarks.traced_worker TRACE`: `dsw worker`, every Engine API call it makes timed.

The bench runs its workers this way (unless `--worker-command` names another), to see which calls
a job costs and how long each takes as the worker sees it. It wraps `httpx.AsyncClient.send`
(the Docker client's only way out; the worker speaks to nothing else over httpx) and appends one
JSON line per call to the file TRACE: when it started (`time.time()`), the
seconds until the response's headers (a long poll such as `wait` lasts until its answer; an
attach until the stream is open), the method, the endpoint with ids as `{id}` and the status.
Its Kafka consumers' polls and commits (`dsw.kafka.Consumer.take`, `.commit`) are timed alike, as
`kafka take` (with the records asked for and got) and `kafka commit`. A line costs a few
microseconds; nothing else of the worker changes.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import IO, Any

import httpx

from dsw import kafka
from dsw.cli import main

_ID = re.compile(r"^/(containers|volumes|networks)/(?!create$|json$|prune$)[^/]+")
_VERSION = re.compile(r"^/v\d+\.\d+")


def endpoint(method: str, path: str) -> str:
    """`POST /containers/{id}/start` for `POST /v1.41/containers/3f2a.../start` (volumes and
    networks by name alike)."""
    path = _ID.sub(r"/\1/{id}", _VERSION.sub("", path))
    return f"{method} {path}"


def install(trace: IO[str]) -> None:
    original = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        started, t0 = time.time(), time.perf_counter()
        status = 0
        try:
            response = await original(self, request, **kwargs)
            status = response.status_code
            return response
        finally:
            line = {
                "at": started,
                "s": time.perf_counter() - t0,
                "call": endpoint(request.method, request.url.path),
                "status": status,
            }
            trace.write(json.dumps(line) + "\n")
            trace.flush()

    httpx.AsyncClient.send = send  # type: ignore[method-assign]

    def write(started: float, t0: float, call: str, **extra: Any) -> None:
        line = {"at": started, "s": time.perf_counter() - t0, "call": call, **extra}
        trace.write(json.dumps(line) + "\n")
        trace.flush()

    take, commit = kafka.Consumer.take, kafka.Consumer.commit

    async def traced_take(self: kafka.Consumer, max_records: int, timeout_s: float) -> Any:
        started, t0 = time.time(), time.perf_counter()
        got: list[Any] = []
        try:
            got = await take(self, max_records, timeout_s)
            return got
        finally:
            write(started, t0, "kafka take", asked=max_records, got=len(got), timeout=timeout_s)

    async def traced_commit(self: kafka.Consumer) -> bool:
        started, t0 = time.time(), time.perf_counter()
        try:
            return await commit(self)
        finally:
            write(started, t0, "kafka commit")

    kafka.Consumer.take = traced_take  # type: ignore[method-assign]
    kafka.Consumer.commit = traced_commit  # type: ignore[method-assign]


if __name__ == "__main__":
    with open(sys.argv[1], "a", encoding="utf-8") as out:
        install(out)
        sys.exit(main(["worker"]))
