"""`dsw submit` against a real worker: exit codes, --json, --no-wait, --timeout, plain progress,
JUnit reports, signals, directories, and the order of what a terminal shows."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

import dsw.submit
from dsw.config import Settings, environment_of
from dsw.docker import DockerClient
from dsw.kafka import Kafka, topic_partitions
from dsw.submit import SubmitOptions, submit
from tests.conftest import TEST_SCRIPTS, configure
from tests.junit_reports import read_report
from tests.terminals import HOSTILE, run_on_terminal
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


async def test_outcome_topics_get_the_worker_s_layout_and_a_refusal_is_a_warning(
    kafka: Kafka, settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    script = write(tmp_path, "nobody.sh", "echo\n")
    ws = worker_settings(settings, topic_prefix, topic_partitions=3)  # no worker serves these
    result = await dsw_submit(ws, script, "--sandbox", SHELL, "--timeout", "3")
    assert result.returncode == 2
    topics = await topic_partitions(ws.kafka_broker_url, topic_prefix)
    assert (topics[ws.running_topic], topics[ws.finished_topic]) == (3, 3)
    # One broker cannot hold three replicas: the broker refuses, submit says so and carries on.
    refused = worker_settings(settings, topic_prefix + "r-", topic_replication_factor=3)
    report = tmp_path / "report.xml"
    args = ["--sandbox", SHELL, "--timeout", "3", "--junit", str(report)]
    result = await dsw_submit(refused, script, *args)
    assert result.returncode == 2
    assert b"dsw submit: warning: topics not created" in result.stderr
    assert b"replication factor of 3" in result.stderr
    assert b"Traceback" not in result.stderr
    [case] = list(read_report(report))
    assert case.result[0].type in ("NO_RESULT", "NOT_PUBLISHED")


async def test_the_whole_run_is_bounded_by_the_timeout_and_reported(
    settings: Settings, tmp_path: Path
) -> None:
    # No broker at all, and a Kafka timeout far beyond --timeout: --timeout ends it all the same.
    nowhere = configure(settings, kafka_broker_url=f"127.0.0.1:{free_port()}", kafka_timeout_s=600)
    one, two = write(tmp_path, "one.sh", "echo\n"), write(tmp_path, "two.sh", "echo\n")
    report = tmp_path / "report.xml"
    with trio.fail_after(120):
        result = await dsw_submit(
            nowhere, one, two, "--sandbox", SHELL, "--timeout", "2", "--junit", str(report)
        )
        no_wait = await dsw_submit(nowhere, one, "--sandbox", SHELL, "--timeout", "2", "--no-wait")
    assert result.returncode == 2
    assert b"timed out after 2 s waiting for 0 job(s); 2 job(s) not published" in result.stderr
    suite = read_report(report)
    assert (suite.tests, suite.errors) == (2, 2)
    for case, path in zip(suite, (one, two), strict=True):
        assert case.name == path
        [error] = case.result
        assert (error.type, error.message) == ("NOT_PUBLISHED", "not published within 2 s")
    assert (no_wait.returncode, no_wait.stdout) == (2, b"")
    assert b"timed out after 2 s; 1 job(s) not published" in no_wait.stderr


async def test_a_publish_that_never_ends_is_bounded_by_the_timeout(
    kafka: Kafka, settings: Settings, topic_prefix: str, tmp_path: Path, monkeypatch: Any
) -> None:
    # A broker that went away after the connection: Kafka.publish retries, forever.
    async def retrying_forever(*_: object, **__: object) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(Kafka, "publish", retrying_forever)
    ws = worker_settings(settings, topic_prefix)
    report = tmp_path / "report.xml"
    options = SubmitOptions(
        paths=[write(tmp_path, "a.sh", "echo\n")], sandbox=SHELL, timeout_s=3, junit=report
    )
    assert await submit(ws, options) == 2
    [case] = list(read_report(report))
    [error] = case.result
    assert (error.type, error.message) == ("NOT_PUBLISHED", "not published within 3 s")


async def test_an_error_of_dsw_s_own_still_writes_the_report(
    settings: Settings, tmp_path: Path, monkeypatch: Any
) -> None:
    async def failing(*_: object) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("boom")

    monkeypatch.setattr(dsw.submit, "_publish_and_wait", failing)
    report = tmp_path / "report.xml"
    options = SubmitOptions(paths=[write(tmp_path, "a.sh", "echo\n")], sandbox=SHELL, junit=report)
    with pytest.RaisesGroup(RuntimeError, allow_unwrapped=True, flatten_subgroups=True):
        await submit(settings, options)
    [case] = list(read_report(report))
    [error] = case.result
    assert error.type == "NOT_PUBLISHED"
    assert error.message == "not published: dsw submit failed: RuntimeError: boom"


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


async def test_plain_progress_on_a_terminal_shows_names_and_stderr_as_text(
    ws: Settings, tmp_path: Path
) -> None:
    # TTY_COMPATIBLE=0: rich takes the terminal for a file and prints plain progress lines, which
    # still reach the terminal; so do the script's stderr and its file's name.
    script = write(tmp_path, "evil\x1b]0;pwned\x07\u202e.sh", "printf 'err\\033[2J\\n' >&2\n")
    argv = [sys.executable, "-m", "dsw", "submit", script, "--sandbox", SHELL]
    env = {**environment_of(ws), "TTY_COMPATIBLE": "0", "COLUMNS": "250"}
    code, shown = await run_on_terminal(argv, env)
    assert code == 0, shown
    assert b"\x1b" not in shown
    assert b"\x07" not in shown
    assert "\u202e".encode() not in shown
    name = b"evil\\x1b]0;pwned\\x07\\u202e.sh"
    assert b"queued   " + str(tmp_path).encode() + b"/" + name in shown
    assert b"SUCCEEDED " + str(tmp_path).encode() + b"/" + name in shown
    assert b"err\\x1b[2J" in shown


# Under the ws worker's 200 bytes: NUL, invalid UTF-8, a CDATA end, escape codes, on both streams.
HOSTILE_OUTPUT = (
    "printf 'nul\\000 bad\\377 ]]> cdata \\033[31mred\\033]0;t\\007\\n'\n"
    "printf 'err\\000\\033[2J]]>' >&2\nexit 1\n"
)


async def test_junit_report_of_every_outcome(ws: Settings, tmp_path: Path) -> None:
    ok = write(tmp_path, "ok.sh", "echo ok\n")
    failing = write(tmp_path, "failing.sh", "echo oops >&2; exit 3\n")
    slow = write(tmp_path, "slow.sh", "sleep 60\n")
    too_large = write(tmp_path, "large.sh", "echo " + "x" * 300 + "\n")
    hostile = write(tmp_path, "hostile.sh", HOSTILE_OUTPUT)
    report = tmp_path / "report.xml"
    paths = [ok, failing, slow, too_large, hostile]
    args = ["--sandbox", SHELL, "--junit", str(report), "--suite", "ci"]
    result = await dsw_submit(ws, *paths, *args)
    assert result.returncode == 3, result.stderr
    # The pipe still gets the scripts' stdout alone, in order, as the worker sent it.
    assert result.stdout == b"ok\n" + "nul\0 bad\ufffd ]]> cdata \x1b[31mred\x1b]0;t\x07\n".encode()

    suite = read_report(report)
    assert (suite.name, suite.tests, suite.failures, suite.errors) == ("ci", 5, 3, 1)
    cases = {case.name: case for case in suite}
    assert list(cases) == paths
    assert {case.classname for case in suite} == {SHELL}
    assert cases[ok].is_passed
    assert cases[ok].system_out == "ok\n"
    [failure] = cases[failing].result
    assert (failure.type, failure.message) == ("FAILED", "FAILED with exit code 3")
    assert cases[failing].system_err == "oops\n"
    [limit] = cases[slow].result
    assert limit.type == "TIME_LIMIT_EXCEEDED"
    assert 2.5 < (cases[slow].time or 0) < 10
    assert "time limit" in (cases[slow].system_err or "")
    [rejected] = cases[too_large].result
    assert rejected.type == "REJECTED"
    assert "200" in (rejected.message or "")
    assert cases[too_large].time == 0
    assert cases[hostile].system_out == (
        "nul\\x00 bad\ufffd ]]> cdata \\x1b[31mred\\x1b]0;t\\x07\n"
    )
    assert cases[hostile].system_err == "err\\x00\\x1b[2J]]>"
    assert cases[hostile].result[0].message == "FAILED with exit code 1"


async def test_the_report_is_written_when_the_wait_times_out(
    kafka: Kafka, settings: Settings, topic_prefix: str, tmp_path: Path
) -> None:
    ws = worker_settings(settings, topic_prefix)  # no worker serves these topics
    script = write(tmp_path, "nobody.sh", "echo\n")
    report = tmp_path / "report.xml"
    report.write_text("an old report")
    args = ["--sandbox", SHELL, "--timeout", "3", "--junit", str(report)]
    result = await dsw_submit(ws, script, *args)
    assert result.returncode == 2
    [case] = list(read_report(report))
    [error] = case.result
    assert (error.type, error.message) == ("NO_RESULT", "no result within 3 s")
    assert case.name == script


async def test_a_report_that_cannot_be_written_is_refused_before_publishing(
    settings: Settings, tmp_path: Path
) -> None:
    script = write(tmp_path, "job.sh", "echo\n")
    for report in (tmp_path / "missing" / "report.xml", tmp_path):
        result = await dsw_submit(settings, script, "--junit", str(report))
        assert result.returncode == 2
        assert b"not a file in a writable folder" in result.stderr
    result = await dsw_submit(settings, script, "--junit", str(tmp_path / "r.xml"), "--no-wait")
    assert result.returncode == 2
    assert b"--junit needs the wait" in result.stderr


async def wait_for(stream: trio.abc.ReceiveStream, seen: bytearray, what: bytes) -> None:
    with trio.fail_after(60):
        while what not in seen:
            chunk = await stream.receive_some()
            assert chunk, f"ended before {what!r}: {seen.decode(errors='replace')}"
            seen += chunk


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_while_waiting_writes_what_is_known_and_exits_130(
    ws: Settings, tmp_path: Path, signum: int
) -> None:
    ok = write(tmp_path, "ok.sh", "echo ok\n")
    slow = write(tmp_path, "slow.sh", "sleep 60\n")  # stopped by the worker after 3 s
    report = tmp_path / "report.xml"
    argv = [sys.executable, "-m", "dsw", "submit", ok, slow, "--sandbox", SHELL]
    start = functools.partial(
        trio.run_process,
        [*argv, "--junit", str(report)],
        env=environment_of(ws),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    seen = bytearray()
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(start)
        assert process.stderr is not None
        assert process.stdout is not None
        await wait_for(process.stderr, seen, b"SUCCEEDED")  # ok.sh is done, slow.sh is not
        process.send_signal(signum)
        await wait_for(process.stderr, seen, b"interrupted")
        with trio.fail_after(60):
            async for chunk in process.stderr:
                seen += chunk
            stdout = b"".join([chunk async for chunk in process.stdout])
            assert await process.wait() == 130
    assert b"Traceback" not in seen
    assert b"dsw submit: interrupted; 1 job(s) had no result yet (they still run)\n" in seen
    assert stdout == b"ok\n"
    suite = read_report(report)
    assert (suite.tests, suite.failures, suite.errors) == (2, 0, 1)
    passed, cut = list(suite)
    assert passed.is_passed
    [error] = cut.result
    assert error.type == "NO_RESULT"
    assert (error.message or "").startswith("interrupted after ")


async def test_a_directory_is_every_script_in_it_sorted(ws: Settings, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    for name in ("b.sh", "a.sh", "sub/c.sh", "sub/.hidden.sh", ".git/x.sh", "notes.txt"):
        (scripts / name).parent.mkdir(parents=True, exist_ok=True)
        (scripts / name).write_text(f"echo {name}\n")
    report = tmp_path / "report.xml"
    result = await dsw_submit(ws, f"{scripts}/", "--sandbox", SHELL, "--junit", str(report))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"a.sh\nb.sh\nsub/c.sh\n"
    names = [case.name for case in read_report(report)]
    assert names == [f"{scripts}/a.sh", f"{scripts}/b.sh", f"{scripts}/sub/c.sh"]


async def test_a_directory_without_scripts_exits_2(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = await dsw_submit(settings, str(empty), "--sandbox", SHELL)
    assert result.returncode == 2
    assert f"{empty}: no *.sh script in this directory".encode() in result.stderr
    assert b"Traceback" not in result.stderr
    (empty / "job.sh").write_text("echo\n")
    # Without --sandbox, the default type (here linux-amd64-mono) takes its own extension.
    result = await dsw_submit(settings, str(empty))
    assert result.returncode == 2
    assert b"no *.csx script" in result.stderr


async def test_pipes_get_stdout_alone_and_headings_in_order_on_stderr(
    ws: Settings, tmp_path: Path
) -> None:
    one = write(tmp_path, "one.sh", "echo out-one; echo err-one >&2; printf no-end\n")
    two = write(tmp_path, "two.sh", "printf out-two; printf err-two >&2\n")
    result = await dsw_submit(ws, one, two, "--sandbox", SHELL)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"out-one\nno-endout-two"
    shown = result.stderr
    order = [b"one.sh (SUCCEEDED)", b"one.sh: stderr", b"err-one\n", b"two.sh (SUCCEEDED)"]
    order += [b"two.sh: stderr", b"err-two\n", b"summary"]
    positions = [shown.index(marker) for marker in order]
    assert positions == sorted(positions), shown.decode()


async def test_on_a_terminal_each_script_output_follows_its_own_heading(
    ws: Settings, tmp_path: Path
) -> None:
    one = write(tmp_path, "one.sh", "echo out-one; echo err-one >&2; printf no-end-one\n")
    two = write(tmp_path, "two.sh", "printf out-two; printf err-two >&2\n")
    three = write(tmp_path, "three.sh", "echo out-three\n")
    argv = [sys.executable, "-m", "dsw", "submit", one, two, three, "--sandbox", SHELL]
    code, shown = await run_on_terminal(argv, {**environment_of(ws), "COLUMNS": "250"})
    assert code == 0, shown
    order = [b"one.sh (SUCCEEDED)", b"out-one", b"no-end-one\r\n", b"one.sh: stderr", b"err-one"]
    order += [b"two.sh (SUCCEEDED)", b"out-two\r\n", b"two.sh: stderr", b"err-two\r\n"]
    order += [b"three.sh (SUCCEEDED)", b"out-three", b"summary"]
    positions = [shown.index(marker) for marker in order]
    assert positions == sorted(positions), shown.decode(errors="replace")
    assert b"three.sh: stderr" not in shown
