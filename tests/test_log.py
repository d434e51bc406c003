"""Log lines: one record is one line, whatever the values logged."""

from __future__ import annotations

import json
import logging

import pytest

from dsw.log import JsonFormatter, KeyValueFormatter, escaped


def line_of(formatter: logging.Formatter, message: str, *args: object) -> str:
    record = logging.LogRecord("dsw.test", logging.WARNING, __file__, 1, message, args, None)
    return formatter.format(record)


@pytest.mark.parametrize(
    "value", ["a\nts=2026 level=error msg=forged", "x\r\ny", "\x1b[2J", "\u2028z", "\x85", "\x00"]
)
def test_untrusted_values_cannot_forge_a_line(value: str) -> None:
    text = line_of(KeyValueFormatter(), "rejected reason=%s", value)
    assert "\n" not in text
    assert "\r" not in text
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in text)
    entry = json.loads(line_of(JsonFormatter(), "rejected reason=%s", value))
    assert entry["msg"] == f"rejected reason={value}"


def test_escapes_are_readable() -> None:
    assert escaped("a\nb\tc\x1b") == "a\\nb\\tc\\x1b"
    assert escaped("plain é ü 😀") == "plain é ü 😀"
