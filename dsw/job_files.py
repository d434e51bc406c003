"""Jobs made from files, for `dsw run` and `dsw submit`: each script read, made into the job the
scheduler would publish (a fresh id), and checked by the worker's own rules and limits."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from dsw.config import Settings
from dsw.errors import InvalidInput
from dsw.intake import Accepted, Rejected, check


def read_text(path: str | Path) -> str:
    """A file's text (`-`: standard input), UTF-8; InvalidInput if it cannot be read."""
    try:
        return sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc


def job_value(
    script: str,
    nuget: str | None = None,
    stdin: str | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """A job as the scheduler publishes it (camelCase, optional fields left out), fresh id."""
    config = {"nugetConfigXml": nuget, "stdin": stdin, "timeoutSeconds": timeout_s}
    value: dict[str, Any] = {"jobId": str(uuid.uuid4()), "script": script}
    if present := {key: item for key, item in config.items() if item is not None}:
        value["jobConfig"] = present
    return value


class FileJob(NamedTuple):
    path: str
    value: dict[str, Any]  # the message, as published
    accepted: Accepted


def jobs_from_files(
    paths: list[str],
    settings: Settings,
    *,
    nuget_config: str | Path | None = None,
    stdin: str | Path | None = None,
    timeout_s: float | None = None,
) -> list[FileJob]:
    """One checked job per script path; InvalidInput naming the file if one would be rejected."""
    nuget = read_text(nuget_config) if nuget_config else None
    stdin_text = read_text(stdin) if stdin else None
    found = []
    for path in paths:
        value = job_value(read_text(path), nuget, stdin_text, timeout_s)
        checked = check(value, settings)
        if isinstance(checked, Rejected):
            raise InvalidInput(f"{path}: the worker would reject it: {checked.reason}")
        found.append(FileJob(path, value, checked))
    return found
