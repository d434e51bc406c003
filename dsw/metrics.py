"""Prometheus metrics of the worker. Each is documented in docs/operations.md (a test checks)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from dsw import __version__

_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

jobs_received = Counter("dsw_jobs_received", "Job records taken from Kafka", ["sandbox"])
jobs_finished = Counter(
    "dsw_jobs_finished", "Outcomes published to `finished`", ["sandbox", "status", "finished_with"]
)
jobs_rejected = Counter("dsw_jobs_rejected", "Jobs published as REJECTED", ["sandbox", "reason"])
jobs_dead_lettered = Counter(
    "dsw_jobs_dead_lettered",
    "Unreadable records sent to the dead-letter topic",
    ["sandbox", "reason"],
)
jobs_deduplicated = Counter(
    "dsw_jobs_deduplicated",
    "Records of a job id already in flight in this worker, joined to that run",
    ["sandbox"],
)
containers_reaped = Counter("dsw_containers_reaped", "Orphaned containers removed by the reaper")
cleanup_failures = Counter("dsw_cleanup_failures", "Container removals that failed or timed out")
docker_errors = Counter("dsw_docker_api_errors", "Docker Engine API errors", ["endpoint"])
kafka_reconnects = Counter("dsw_kafka_reconnects", "Kafka calls retried after a failure")
commit_failures = Counter("dsw_kafka_commit_failures", "Offset commits the group refused")

pool_handovers = Counter("dsw_pool_handovers", "Jobs that got a warm pool container", ["sandbox"])
pool_misses = Counter(
    "dsw_pool_misses", "Jobs that ran cold because the warm pool was empty", ["sandbox"]
)
pool_replaced = Counter(
    "dsw_pool_replaced",
    "Warm containers removed unused: died or too old while idle, or lost at hand-over",
    ["sandbox", "reason"],
)

queue_wait = Histogram(
    "dsw_queue_wait_seconds",
    "From the job record's timestamp to its container's start",
    buckets=_DURATION_BUCKETS,
)
container_create = Histogram(
    "dsw_container_create_seconds",
    "Container create, or a warm one's hand-over",
    buckets=_DURATION_BUCKETS,
)
container_start = Histogram(
    "dsw_container_start_seconds", "Container start", buckets=_DURATION_BUCKETS
)
container_run = Histogram(
    "dsw_container_run_seconds",
    "From start to exit (or to the time limit)",
    buckets=_DURATION_BUCKETS,
)
container_cleanup = Histogram(
    "dsw_container_cleanup_seconds", "Container removal", buckets=_DURATION_BUCKETS
)
job_end_to_end = Histogram(
    "dsw_job_end_to_end_seconds",
    "From the job record's timestamp to `finished` acknowledged",
    buckets=_DURATION_BUCKETS,
)

jobs_in_flight = Gauge("dsw_jobs_in_flight", "Jobs running now", ["sandbox"])
pool_idle = Gauge("dsw_pool_idle", "Warm containers ready for a job", ["sandbox"])
capacity = Gauge("dsw_capacity", "Jobs that may run at once", ["sandbox"])
partitions_assigned = Gauge(
    "dsw_partitions_assigned",
    "Partitions of the pending topic assigned to this worker",
    ["sandbox"],
)
partitions_paused = Gauge(
    "dsw_partitions_paused", "Partitions paused for lack of capacity", ["sandbox"]
)
build_info = Gauge("dsw_build_info", "Always 1; the version in a label", ["version"])
build_info.labels(version=__version__).set(1)

egress_connections = Counter(
    "dsw_egress_connections", "Egress proxy requests, by outcome", ["outcome"]
)
egress_refused = Counter(
    "dsw_egress_refused", "Egress proxy requests refused by the policy (403)", ["reason"]
)
egress_bytes = Counter("dsw_egress_bytes", "Bytes relayed by the egress proxy, both directions")
egress_tunnels = Gauge("dsw_egress_tunnels", "Egress proxy connections relaying now")
