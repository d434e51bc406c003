"""Test helpers: one script through `run_script` against the real daemon."""

from __future__ import annotations

import uuid

from dsw.config import Settings
from dsw.container_spec import JobLimits
from dsw.docker import DockerClient
from dsw.sandbox import ScriptOutcome, ScriptRequest, run_script
from dsw.sandbox_types import load_sandbox_type


def request_for(
    settings: Settings,
    script: str,
    sandbox: str = "linux-amd64-shell",
    *,
    stdin: str | None = None,
    timeout_s: float = 30.0,
    memory_bytes: int | None = None,
    job_id: str | None = None,
) -> ScriptRequest:
    return ScriptRequest(
        job_id=job_id or str(uuid.uuid4()),
        sandbox=load_sandbox_type(settings.sandbox_dir, sandbox),
        script=script,
        stdin=stdin,
        limits=JobLimits(timeout_s=timeout_s, memory_bytes=memory_bytes or settings.memory_bytes),
    )


async def run(
    docker: DockerClient,
    settings: Settings,
    script: str,
    sandbox: str = "linux-amd64-shell",
    *,
    stdin: str | None = None,
    timeout_s: float = 30.0,
    memory_bytes: int | None = None,
) -> ScriptOutcome:
    request = request_for(
        settings, script, sandbox, stdin=stdin, timeout_s=timeout_s, memory_bytes=memory_bytes
    )
    return await run_script(docker, settings, request)
