"""`dsw submit` against a real worker: exit codes, --json, --no-wait, --timeout, plain progress."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import trio

from dsw.config import Settings, environment_of
from dsw.docker import DockerClient
from dsw.kafka import Kafka
from tests.conftest import TEST_SCRIPTS, configure
from tests.terminals import run_on_terminal
from tests.test_cli_run import HOSTILE
from tests.workers import free_port, run_dsw, run_worker, worker_settings

SHELL = "linux-amd64-shell"


async def dsw_submit(
    settings: Settings, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return await run_dsw(settings, "submit", *args, stdin=stdin)


@pytest.fixture
async def ws(
    docker: DockerClient, kafka: Kafka, settings: Settings, topic_prefix: str
) -> AsyncIterator[Settings]:
    """A running worker's settings (job time limit 3 s, scripts up to 200 bytes); submit uses the
    same topics, but allows the default script size, so that the worker can reject a script."""
    ws = worker_settings(settings, topic_prefix, job_timeout_s=3, max_job_timeout_s=3)
    async with run_worker(msgspec.structs.replace(ws, max_script_bytes=200)) as worker:
        yield ws
        worker.signal(2)
        await worker.wait()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


async def test_all_succeeded_exits_0_with_outputs(ws: Settings) -> None:
    result = await dsw_submit(ws, str(TEST_SCRIPTS / "hello-world.sh"), "--sandbox", SHELL)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello from script\n"
    progress = result.stderr.decode()
    assert "queued" in progress
    assert "SUCCEEDED" in progress
    assert "\x1b[" not in progress  # not a terminal: plain lines, no control codes


async def test_exit_codes_and_json_lines(ws: Settings, tmp_path: Path) -> None:
    ok = write(tmp_path, "ok.sh", "echo ok\n")
    failing = write(tmp_path, "failing.sh", "exit 3\n")
    slow = write(tmp_path, "slow.sh", "sleep 60\n")
    too_large = write(tmp_path, "large.sh", "echo " + "x" * 300 + "\n")

    async def code(*paths: str) -> int:
        return (await dsw_submit(ws, *paths, "--sandbox", SHELL)).returncode

    assert await code(ok, failing) == 1
    assert await code(ok, failing, slow) == 124
    assert await code(ok, failing, slow, too_large) == 3
    result = await dsw_submit(ws, ok, failing, "--sandbox", SHELL, "--json")
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert sorted(m["scriptResults"]["finishedWith"] for m in lines) == ["FAILED", "SUCCEEDED"]
    assert result.stderr == b""


async def test_stdin_script_and_no_wait(ws: Settings) -> None:
    result = await dsw_submit(ws, "-", "--sandbox", SHELL, stdin=b"echo from stdin\n")
    assert (result.returncode, result.stdout) == (0, b"from stdin\n")
    result = await dsw_submit(ws, "-", "--sandbox", SHELL, "--no-wait", stdin=b"echo later\n")
    assert result.returncode == 0
    assert len(result.stdout.decode().strip()) == 36  # the job id


async def test_timeout_of_the_wait_exits_2(
    kafka: Kafka, settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    ws = worker_settings(settings, topic_prefix)  # no worker serves these topics
    script = write(tmp_path, "nobody.sh", "echo\n")
    result = await dsw_submit(ws, script, "--sandbox", SHELL, "--timeout", "3")
    assert result.returncode == 2
    assert b"timed out" in result.stderr


async def test_unreadable_file_exits_2(settings: Settings) -> None:
    result = await dsw_submit(settings, "/nonexistent/script.csx")
    assert result.returncode == 2
    assert b"/nonexistent/script.csx" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("  \n", [], b"script is blank"),
        ("echo\n", ["--nuget-config", "{tmp}/bad.config"], b"not well-formed XML"),
        ("echo\n", ["--timeout", "-1"], b"positive number of seconds"),
        ("echo\n", ["--timeout", "nan"], b"positive number of seconds"),
    ],
)
async def test_what_the_worker_would_reject_is_refused_before_publishing(
    settings: Settings, tmp_path: Path, script: str, args: list[str], message: bytes
) -> None:
    (tmp_path / "bad.config").write_text("<configuration>")
    path = write(tmp_path, "job.sh", script)
    result = await dsw_submit(settings, path, *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    assert message in result.stderr
    assert b"Traceback" not in result.stderr


async def test_no_broker_exits_2_within_the_kafka_timeout(settings: Settings) -> None:
    nowhere = configure(settings, kafka_broker_url=f"127.0.0.1:{free_port()}", kafka_timeout_s=3)
    script = str(TEST_SCRIPTS / "hello-world.sh")
    with trio.fail_after(30):
        result = await dsw_submit(nowhere, script, "--sandbox", SHELL)
    assert result.returncode == 2
    assert b"no broker answered" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_output_and_names_on_a_terminal_are_shown_as_text(
    ws: Settings, tmp_path: Path
) -> None:
    script = write(tmp_path, "[red]odd.sh", HOSTILE)
    argv = [sys.executable, "-m", "dsw", "submit", script, "--sandbox", SHELL]
    code, shown = await run_on_terminal(argv, environment_of(ws))
    assert code == 0, shown
    assert b"\x1b]0;pwned\x07" not in shown
    assert b"\x1b[2J" not in shown
    assert b"title\\x1b]0;pwned\\x07" in shown
    assert b"[red]odd.sh" in shown  # the name as it is, not rich markup
