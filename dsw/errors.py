"""The exception tree of dsw: every error that crosses a module boundary is one of these.

    DswError
    ├── ConfigError            a setting has an invalid value (names the variable)
    ├── InvalidJobId           a job id is not a UUID; refused before any Docker call
    ├── UnreadableMessage      a Kafka record is not JSON that can be read
    ├── InvalidInput           a file given to dsw run/submit is unreadable, or its job invalid
    ├── SandboxError           a sandbox type cannot serve jobs
    │   ├── UnknownSandboxType no sandbox/<type>/sandbox.toml
    │   ├── ImageMissing       the type's image is neither present nor pullable
    │   ├── LimitsNotEnforced  the daemon says a requested limit would not be enforced
    │   └── NotConfinable      the daemon lacks the type's runtime, or cannot apply its seccomp
    ├── WarmContainerLost      a warm pool's container could not take its job (the job runs cold)
    ├── KafkaUnavailable       Kafka did not give what was needed in time (`dsw submit`, readers)
    ├── MessageTooLarge        the broker refused a message as too large
    └── DockerError            the Engine API answered with an error (endpoint, status, message)
        ├── DockerUnavailable  no answer at all: connection refused, reset or timed out (transient)
        ├── NotFound           404
        └── Conflict           409

No dependency's own exceptions leave the module that wraps it: httpx's become DockerError in
`dsw.docker.client`, aiokafka's are retried inside `dsw.kafka` (producer, consumers) or become
KafkaUnavailable (readers, admin calls), msgspec's become UnreadableMessage in `dsw.messages`.
"""

from __future__ import annotations


class DswError(Exception):
    """Base of every error dsw raises on purpose."""


class ConfigError(DswError):
    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class InvalidJobId(DswError):
    def __init__(self, job_id: object) -> None:
        super().__init__(f"job id is not a UUID: {job_id!r:.80}")
        self.job_id = job_id


class UnreadableMessage(DswError):
    pass


class InvalidInput(DswError):
    pass


class WarmContainerLost(DswError):
    pass


class KafkaUnavailable(DswError):
    pass


class MessageTooLarge(DswError):
    pass


class SandboxError(DswError):
    """A sandbox type cannot serve jobs."""


class UnknownSandboxType(SandboxError):
    pass


class ImageMissing(SandboxError):
    pass


class LimitsNotEnforced(SandboxError):
    def __init__(self, warnings: list[str]) -> None:
        super().__init__("the Docker daemon would not enforce the limits: " + "; ".join(warnings))
        self.warnings = warnings


class NotConfinable(SandboxError):
    pass


class DockerError(DswError):
    """The Engine API answered `status` and `message` to `endpoint` ("POST /containers/create")."""

    def __init__(self, endpoint: str, status: int | None, message: str) -> None:
        where = f"{endpoint} -> {status}" if status is not None else endpoint
        super().__init__(f"docker {where}: {message}")
        self.endpoint = endpoint
        self.status = status
        self.message = message


class DockerUnavailable(DockerError):
    """The daemon did not answer: worth retrying later, never the script's fault."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(endpoint, None, message)


class NotFound(DockerError):
    pass


class Conflict(DockerError):
    pass
