"""`dsw run`: one script, no Kafka; exit codes, --json, and Ctrl-C removing the container."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from dsw.config import Settings, environment_of
from dsw.docker import DockerClient
from tests.conftest import TEST_SCRIPTS, configure, containers_of
from tests.terminals import HOSTILE, run_on_terminal
from tests.workers import run_dsw


async def dsw_run(
    settings: Settings, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return await run_dsw(settings, "run", *args, stdin=stdin)


async def test_exit_codes_and_outputs(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    hello = await dsw_run(
        settings, str(TEST_SCRIPTS / "hello-world.csx"), "--sandbox", "linux-amd64-mono"
    )
    assert (hello.returncode, hello.stdout) == (0, b"Hello from script\n")
    failing = await dsw_run(settings, str(TEST_SCRIPTS / "exit-3.sh"))
    assert failing.returncode == 1
    assert b"FAILED (exit code 3)" in failing.stderr
    slow = await dsw_run(settings, str(TEST_SCRIPTS / "wait-6min.sh"), "--timeout", "1")
    assert slow.returncode == 124
    assert b"dsw: the script passed its 1 s time limit and was stopped\n" in slow.stderr
    usage = await dsw_run(settings, str(tmp_path / "missing.sh"))
    assert usage.returncode == 2


async def test_stdin_and_json(docker: DockerClient, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("line one\n")
    result = await dsw_run(
        settings, str(TEST_SCRIPTS / "read-stdin.sh"), "--stdin", str(tmp_path / "in.txt"), "--json"
    )
    assert result.returncode == 0
    finished = json.loads(result.stdout)
    assert finished["status"] == "ACCEPTED"
    assert "line one" in finished["scriptResults"]["stdout"]
    assert finished["scriptResults"]["exitCode"] == 0
    assert finished["scriptResults"]["peakMemoryBytes"] > 0


async def test_ctrl_c_removes_the_container(docker: DockerClient, settings: Settings) -> None:
    async with trio.open_nursery() as nursery:
        command = [sys.executable, "-m", "dsw", "run", "-", "--sandbox", "linux-amd64-shell"]
        start = functools.partial(
            trio.run_process,
            command,
            env=environment_of(settings),
            stdin=b"echo hi; sleep 300\n",
            capture_stderr=True,
            check=False,
        )
        process = await nursery.start(start)
        with trio.fail_after(30):
            while True:
                names = [
                    n for c in await containers_of(docker, settings.worker_id) for n in c["Names"]
                ]
                if any(n.startswith("/sandbox-job-") for n in names):
                    break
                await trio.sleep(0.1)
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 130
    assert await containers_of(docker, settings.worker_id) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "-1"], b"positive number of seconds"),
        (["--timeout", "nan"], b"positive number of seconds"),
        (["--timeout", "0"], b"positive number of seconds"),
        (["--timeout", "1e9"], b"timeoutSeconds over this worker's maximum of 120"),
        (["--nuget-config", "{tmp}/bad.config"], b"nugetConfigXml is not well-formed XML"),
        (["--stdin", "{tmp}/missing"], b"cannot read"),
    ],
)
async def test_what_the_worker_would_reject_exits_2_before_any_container(
    docker: DockerClient, settings: Settings, tmp_path: Path, args: list[str], message: bytes
) -> None:
    (tmp_path / "bad.config").write_text("<configuration>")
    script = str(TEST_SCRIPTS / "hello-world.sh")
    result = await dsw_run(settings, script, *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    assert message in result.stderr
    assert b"Traceback" not in result.stderr
    assert await containers_of(docker, settings.worker_id) == []


async def test_a_script_over_the_worker_s_size_limit_exits_2(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "big.sh").write_text("echo " + "x" * 2000 + "\n")
    small = configure(settings, max_script_bytes=1000)
    result = await dsw_run(small, str(tmp_path / "big.sh"))
    assert result.returncode == 2
    assert b"script is over 1000 bytes" in result.stderr


async def test_output_on_a_terminal_is_neutralised_unless_raw(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "hostile.sh").write_text(HOSTILE)
    argv = [sys.executable, "-m", "dsw", "run", str(tmp_path / "hostile.sh")]
    code, shown = await run_on_terminal(argv, environment_of(settings))
    assert code == 0
    assert b"\x1b" not in shown
    assert b"\x07" not in shown
    assert b"title\\x1b]0;pwned\\x07 clear\\x1b[2J bell\\x07 cr\\rover\tend" in shown
    code, raw = await run_on_terminal([*argv, "--raw"], environment_of(settings))
    assert code == 0
    assert b"\x1b]0;pwned\x07" in raw
    # A pipe gets the bytes as they are.
    piped = await dsw_run(settings, str(tmp_path / "hostile.sh"))
    assert piped.stdout == b"title\x1b]0;pwned\x07 clear\x1b[2J bell\x07 cr\rover\tend\n"


async def test_stderr_and_file_names_on_a_terminal_are_neutralised(
    docker: DockerClient, settings: Settings, tmp_path: Path
) -> None:
    # The script's stderr: escape sequences, and the text `\x1b`, which must not look the same.
    script = tmp_path / "stderr.sh"
    script.write_text("printf 'err\\033]0;pwned\\007 \\033[2J lit\\\\x1b\\n' >&2\nexit 1\n")
    argv = [sys.executable, "-m", "dsw", "run", str(script)]
    code, shown = await run_on_terminal(argv, environment_of(settings))
    assert code == 1
    assert b"\x1b" not in shown
    assert b"\x07" not in shown
    assert b"err\\x1b]0;pwned\\x07 \\x1b[2J lit\\\\x1b" in shown
    # A file's name in dsw's own error line.
    evil = tmp_path / "evil\x1b]0;pwned\x07\u202e.sh"
    code, shown = await run_on_terminal(
        [sys.executable, "-m", "dsw", "run", str(evil)], environment_of(settings)
    )
    assert code == 2
    assert b"\x1b" not in shown
    assert b"evil\\x1b]0;pwned\\x07\\u202e.sh" in shown
