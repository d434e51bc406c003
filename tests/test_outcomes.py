"""An outcome as `finished`: the worker's `dsw:` line at the end of stderr, within every limit."""

from __future__ import annotations

import pytest

from dsw import outcomes
from dsw.config import load_settings
from dsw.messages import FinishedWith, fit
from dsw.sandbox import ScriptOutcome

JOB_ID = "7f000001-863c-17b2-8186-3cdeb62e0000"
NOTE = "dsw: stdout passed the 256 KiB output limit; the script was stopped\n"


def outcome(stdout: str = "", stderr: str = "", note: str = NOTE) -> ScriptOutcome:
    return ScriptOutcome(
        finished_with=FinishedWith.FAILED,
        stdout=stdout,
        stderr=stderr,
        exit_code=137,
        duration_s=1.0,
        output_limit_exceeded=bool(note),
        note=note,
    )


def test_the_note_ends_stderr_on_a_line_of_its_own() -> None:
    settings = load_settings({}, worker_id="w")
    for stderr, expected in (("", NOTE), ("oops\n", "oops\n" + NOTE), ("oops", "oops\n" + NOTE)):
        results = outcomes.accepted(JOB_ID, outcome(stderr=stderr), settings).script_results
        assert results is not None
        assert results.stderr == expected
        assert results.output_limit_exceeded  # the flags stay as they were
        assert not results.stderr_truncated


def test_the_note_stays_within_the_output_cap() -> None:
    settings = load_settings({}, worker_id="w", output_limit_bytes=1024)
    results = outcomes.accepted(JOB_ID, outcome(stderr="é" * 512), settings).script_results
    assert results is not None
    assert len(results.stderr.encode()) <= 1024
    assert results.stderr.endswith("é\n" + NOTE)
    assert results.stderr_truncated


def assert_cut_before(note: str, shown: str, original: str) -> None:
    """`shown` is a non-empty start of `original`, cut, then one newline, then `note`."""
    assert shown.endswith("\n" + note), shown[-200:]
    kept = shown[: -len(note) - 1]
    assert kept
    assert original.startswith(kept)
    assert not kept.endswith("\n")  # no blank line: the script's own newline was kept, or ours


@pytest.mark.parametrize("line", ["one line of the script's own\n", "no newline at the end"])
@pytest.mark.parametrize("cap_bytes", range(1000, 1040))
def test_a_cut_stderr_still_ends_its_line_before_the_note(line: str, cap_bytes: int) -> None:
    # Every cut position within a line, for stderr that ends in a newline and one that does not.
    settings = load_settings({}, worker_id="w", output_limit_bytes=cap_bytes)
    stderr = line * 60
    results = outcomes.accepted(JOB_ID, outcome(stderr=stderr), settings).script_results
    assert results is not None
    assert results.stderr_truncated
    assert len(results.stderr.encode()) <= cap_bytes
    assert_cut_before(NOTE, results.stderr, stderr + "\n")


@pytest.mark.parametrize("stderr", ["e" * 500_000, "line\n" * 100_000])
def test_the_note_stays_within_the_message_size(stderr: str) -> None:
    settings = load_settings(
        {}, worker_id="w", max_message_bytes=64 * 1024, output_limit_bytes=1024 * 1024
    )
    big = outcome(stdout="o" * 500_000, stderr=stderr)
    finished = outcomes.accepted(JOB_ID, big, settings)
    assert len(fit(finished, settings.max_message_bytes)) <= 64 * 1024
    assert finished.script_results is not None
    assert finished.script_results.stderr_truncated
    assert_cut_before(NOTE, finished.script_results.stderr, stderr + "\n")


def test_no_note_no_change() -> None:
    settings = load_settings({}, worker_id="w")
    results = outcomes.accepted(JOB_ID, outcome(stderr="x", note=""), settings).script_results
    assert results is not None
    assert results.stderr == "x"
