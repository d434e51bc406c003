"""One frozen Settings struct, loaded once from the environment and passed down explicitly.

Every field is read from `WORKER_<FIELD NAME IN UPPER CASE>`, so the original worker's variables
(`WORKER_KAFKA_BROKER_URL`, `WORKER_DOCKER_HOST`, `WORKER_ENABLE_RESOURCE_LIMITS`,
`WORKER_JOB_FILES_HOST_DIR`, ...) keep working; `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and
`DOCKER_CERT_PATH` are honoured when their `WORKER_` twins are unset. Sizes (`*_bytes`) accept
binary suffixes (`256k`, `1m`, `1g`); lists are comma-separated; durations (`*_S`, seconds) may
also be spelled `*_SEC` (`WORKER_DRAIN_TIMEOUT_SEC`). `dsw worker --help` prints the
table made by `describe()`.
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec
from msgspec import Meta

from dsw.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

PositiveInt = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]
Bytes = Annotated[int, Meta(ge=0)]

_DEFAULT_SANDBOX_DIR = str(Path(__file__).resolve().parent.parent / "sandbox")


def _doc(text: str) -> Meta:
    return Meta(description=text)


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Everything the worker can be told; defaults are the original worker's where it had one."""

    # Kafka
    kafka_broker_url: Annotated[str, _doc("Kafka bootstrap servers, comma-separated")] = (
        "localhost:9092"
    )
    runner_types: Annotated[tuple[str, ...], _doc("sandbox types served, comma-separated")] = (
        "linux-amd64-dotnet-7",
    )
    pending_topic_prefix: Annotated[str, _doc("jobs of type T come from <prefix>T")] = "pending-"
    consumer_group_prefix: Annotated[str, _doc("workers of type T join group <prefix>T")] = (
        "workers."
    )
    running_topic: Annotated[str, _doc("topic for `running` messages")] = "running"
    finished_topic: Annotated[str, _doc("topic for `finished` messages")] = "finished"
    dead_letter_suffix: Annotated[str, _doc("unreadable jobs go to <pending topic><suffix>")] = (
        ".DLT"
    )
    max_message_bytes: Annotated[
        PositiveInt, _doc("largest message the broker accepts; `finished` is trimmed to fit")
    ] = 1000 * KiB
    topic_partitions: Annotated[
        PositiveInt, _doc("partitions of a topic the worker creates (it never shrinks one)")
    ] = 2
    topic_replication_factor: Annotated[
        PositiveInt, _doc("replication factor of a topic the worker creates")
    ] = 1
    kafka_timeout_s: Annotated[Seconds, _doc("Kafka request timeout")] = 30.0
    reconnect_backoff_s: Annotated[
        Seconds, _doc("first delay before reconnecting (Kafka, Docker)")
    ] = 0.1
    reconnect_backoff_max_s: Annotated[Seconds, _doc("longest reconnect delay")] = 10.0
    kafka_max_poll_interval_ms: Annotated[
        PositiveInt, _doc("consumer max.poll.interval.ms (polling goes on while jobs run)")
    ] = 300_000
    kafka_session_timeout_ms: Annotated[PositiveInt, _doc("consumer session.timeout.ms")] = 45_000
    # Jobs
    max_containers: Annotated[PositiveInt, _doc("jobs run at once per sandbox type")] = 4
    job_timeout_s: Annotated[Seconds, _doc("time limit of a job")] = 120.0
    max_job_timeout_s: Annotated[Seconds, _doc("largest per-job timeout a job may ask for")] = 120.0
    max_script_bytes: Annotated[PositiveInt, _doc("largest script (and stdin) accepted")] = MiB
    output_limit_bytes: Annotated[
        PositiveInt, _doc("cap of stdout and of stderr each; the container is killed past it")
    ] = 256 * KiB
    stop_grace_s: Annotated[Seconds, _doc("SIGTERM to SIGKILL grace at a timeout")] = 2.0
    drain_timeout_s: Annotated[Seconds, _doc("on SIGTERM, how long running jobs may finish")] = 30.0
    warm_containers: Annotated[
        Annotated[int, Meta(ge=0)] | None,
        _doc("started single-use containers kept ready per type; 0 off; default: capacity"),
    ] = None
    warm_max_idle_s: Annotated[
        Seconds, _doc("an idle warm container older than this is replaced")
    ] = 600.0
    job_max_age_s: Annotated[
        Annotated[float, Meta(ge=0)],
        _doc("a job older than this when it would start is REJECTED as expired; 0 off"),
    ] = 0.0
    docker_retries: Annotated[
        Annotated[int, Meta(ge=0)], _doc("retries of a job hit by a transient Docker error")
    ] = 2
    # Docker
    docker_host: Annotated[str, _doc("Engine API address: unix:///path, unix:/path or tcp://")] = (
        "unix:///var/run/docker.sock"
    )
    docker_tls_verify: Annotated[bool, _doc("verify the daemon's TLS certificate")] = False
    docker_cert_path: Annotated[str, _doc("folder with ca.pem, cert.pem, key.pem for TLS")] = ""
    docker_timeout_s: Annotated[Seconds, _doc("timeout of short Docker calls")] = 30.0
    cleanup_timeout_s: Annotated[Seconds, _doc("deadline of a container's removal")] = 15.0
    image_pull_timeout_s: Annotated[Seconds, _doc("deadline of a sandbox image pull")] = 120.0
    egress_network: Annotated[
        str, _doc("a prepared internal network for network=egress types; default: one of its own")
    ] = ""
    egress_proxy_address: Annotated[
        str, _doc("Docker-out-of-Docker: this worker's address on WORKER_EGRESS_NETWORK")
    ] = ""
    egress_proxy_port: Annotated[
        Annotated[int, Meta(ge=0, le=65535)], _doc("port of the egress proxy; 0: any free one")
    ] = 0
    sandbox_dir: Annotated[str, _doc("folder of sandbox/<type>/sandbox.toml")] = (
        _DEFAULT_SANDBOX_DIR
    )
    # Limits
    enable_resource_limits: Annotated[bool, _doc("apply memory, CPU, pids, blkio limits")] = True
    memory_bytes: Annotated[Bytes, _doc("memory limit (swap limited to the same)")] = GiB
    max_memory_bytes: Annotated[Bytes, _doc("largest per-job memory a job may ask for")] = GiB
    memory_reservation_bytes: Annotated[Bytes, _doc("memory soft limit")] = 256 * MiB
    cpu_period_us: Annotated[PositiveInt, _doc("CFS period")] = 200_000
    cpu_quota_us: Annotated[PositiveInt, _doc("CFS quota per period")] = 100_000
    cpu_shares: Annotated[PositiveInt, _doc("relative CPU weight")] = 512
    pids_limit: Annotated[PositiveInt, _doc("processes and threads per container")] = 100
    blkio_weight: Annotated[
        Annotated[int, Meta(ge=0, le=1000)], _doc("block I/O weight where the kernel has it; 0 off")
    ] = 400
    tmpfs_bytes: Annotated[Bytes, _doc("size of the /tmp and HOME tmpfs each")] = 256 * MiB
    shm_bytes: Annotated[Bytes, _doc("size of /dev/shm (a tmpfs counted as memory)")] = 64 * MiB
    nofile_limit: Annotated[PositiveInt, _doc("open files per process (ulimit -n)")] = 1024
    file_size_limit_bytes: Annotated[Bytes, _doc("largest file a job may write (ulimit -f)")] = (
        64 * MiB
    )
    # Service
    worker_id: Annotated[str, _doc("this instance's name in labels and messages")] = ""
    metrics_port: Annotated[Annotated[int, Meta(ge=0, le=65535)], _doc("0 disables")] = 9464
    log_format: Annotated[Literal["keyvalue", "json"], _doc("log line format")] = "keyvalue"
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], _doc("log level")] = "INFO"
    job_files_host_dir: Annotated[
        str, _doc("accepted for compatibility; unused: job files travel through the Engine API")
    ] = "/tmp/scripts"
    # Egress (the proxy of the sandbox types that need the network)
    egress_allow: Annotated[
        tuple[str, ...],
        _doc("if set, the only destinations: host[:port], *.suffix, IP, CIDR; comma-separated"),
    ] = ()
    egress_refuse: Annotated[
        tuple[str, ...],
        _doc("addresses or CIDR blocks refused besides the built-in ones (a remote Docker host)"),
    ] = ()
    egress_max_connections: Annotated[
        PositiveInt, _doc("proxy connections open at once per sandbox container")
    ] = 32
    egress_max_bytes: Annotated[
        Bytes, _doc("bytes a job may relay through the proxy, both ways; 0 no cap")
    ] = GiB
    egress_idle_timeout_s: Annotated[
        Seconds, _doc("a proxy connection with no byte either way for this long is closed")
    ] = 60.0
    egress_connect_timeout_s: Annotated[
        Seconds, _doc("deadline of the proxy's connection to a destination")
    ] = 10.0


def warm_pool_size(settings: Settings) -> int:
    """WORKER_WARM_CONTAINERS, by default the type's capacity."""
    if settings.warm_containers is None:
        return settings.max_containers
    return settings.warm_containers


_FALLBACKS = {
    "docker_host": "DOCKER_HOST",
    "docker_tls_verify": "DOCKER_TLS_VERIFY",
    "docker_cert_path": "DOCKER_CERT_PATH",
}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}
_worker_id: str | None = None


def env_name(field: str) -> str:
    return "WORKER_ID" if field == "worker_id" else "WORKER_" + field.upper()


def default_worker_id() -> str:
    """host-pid-random: unique per process, readable in `docker ps` labels."""
    global _worker_id
    if _worker_id is None:
        _worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return _worker_id


def parse_size(text: str) -> int:
    """Bytes of `1048576`, `256k`, `64m`, `1g` (binary units); ValueError otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (e.g. 1048576, 256k, 1g)")
    return int(match[1]) * _UNITS[match[2].lower()]


def human_bytes(size: int) -> str:
    """`256 KiB`, `1 GiB`, `1000 bytes`: binary units where they are exact."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def unix_socket_path(docker_host: str) -> str | None:
    """The socket of a `unix:///path` (or the original's `unix:/path`) address; None for TCP."""
    if not docker_host.startswith("unix:"):
        return None
    return "/" + docker_host.removeprefix("unix:").lstrip("/")


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read Settings from `environ` (default: os.environ); `overrides` win. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        variable = env_name(field.name)
        text = environ.get(variable)
        if text is None and field.name in _FALLBACKS:
            text = environ.get(_FALLBACKS[field.name])
        if text is None and field.name.endswith("_s"):
            text = environ.get(variable + "EC")  # WORKER_DRAIN_TIMEOUT_SEC for ..._S
        if text is None:
            continue
        if field.name.endswith("_bytes"):
            try:
                raw[field.name] = parse_size(text)
            except ValueError as exc:
                raise ConfigError(variable, str(exc)) from None
        elif _is_list(field.type):
            raw[field.name] = [part.strip() for part in text.split(",") if part.strip()]
        else:
            raw[field.name] = text.strip()
    raw.update(overrides)
    raw["worker_id"] = raw.get("worker_id") or default_worker_id()
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        name = _field_of(str(exc))
        value = f"invalid value {raw[name]!r}: " if name in raw else ""
        raise ConfigError(env_name(name) if name else "WORKER_*", f"{value}{exc}") from exc
    _check(settings)
    return settings


def _is_list(annotation: Any) -> bool:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return get_origin(annotation) is tuple


def _field_of(message: str) -> str:
    match = re.search(r"at `\$\.(\w+)", message)
    return match[1] if match else ""


def _check(settings: Settings) -> None:
    if not settings.runner_types:
        raise ConfigError("WORKER_RUNNER_TYPES", "no sandbox type given")
    if settings.job_timeout_s > settings.max_job_timeout_s:
        raise ConfigError("WORKER_JOB_TIMEOUT_S", "is larger than WORKER_MAX_JOB_TIMEOUT_S")
    if settings.memory_bytes > settings.max_memory_bytes:
        raise ConfigError("WORKER_MEMORY_BYTES", "is larger than WORKER_MAX_MEMORY_BYTES")
    if settings.egress_proxy_address and not settings.egress_network:
        raise ConfigError("WORKER_EGRESS_PROXY_ADDRESS", "needs WORKER_EGRESS_NETWORK")
    if not re.match(r"^(unix:/|tcp://|https?://)", settings.docker_host):
        raise ConfigError("WORKER_DOCKER_HOST", f"unsupported address {settings.docker_host!r}")


def environment_of(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) without its WORKER_* variables, plus those that make `settings`:
    the environment of a child `dsw` that should see these settings."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if not k.startswith("WORKER_")}
    for field in msgspec.structs.fields(Settings):
        value = getattr(settings, field.name)
        if value is None:
            continue  # the default, whatever it derives from
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        env[env_name(field.name)] = text.lower() if isinstance(value, bool) else text
    return env


def describe() -> str:
    """Every setting with its variable and default, for `--help`."""
    lines = []
    for field in msgspec.structs.fields(Settings):
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        if field.name == "worker_id":
            default = "<host>-<pid>-<random>"
        if field.name == "sandbox_dir":
            default = "<checkout>/sandbox"
        if field.name == "warm_containers":
            default = "<max_containers>"
        doc = next(
            (
                m.description
                for m in getattr(field.type, "__metadata__", ())
                if isinstance(m, Meta) and m.description
            ),
            "",
        )
        lines.append(f"  {env_name(field.name):<36} {default!s:<28} {doc}")
    return "\n".join(lines)
