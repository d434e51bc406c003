"""Log lines: one record is one line, whatever the values logged."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from dsw.log import JsonFormatter, KeyValueFormatter, escaped

# Every character at which Python's str.splitlines (or JavaScript) ends a line, and others that
# could disguise one: controls, DEL, a lone surrogate, bidirectional overrides and isolates.
BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
DISGUISES = "\x00\x1b\x7f\x9b\ud800 \udfff\u202a\u202e\u2066\u2069"


def line_of(formatter: logging.Formatter, message: str, *args: object) -> str:
    record = logging.LogRecord("dsw.test", logging.WARNING, __file__, 1, message, args, None)
    return formatter.format(record)


def forbidden(character: str) -> bool:
    code = ord(character)
    return (
        code < 32
        or 0x7F <= code <= 0x9F
        or character in "\u2028\u2029"
        or 0x202A <= code <= 0x202E
        or 0x2066 <= code <= 0x2069
        or 0xD800 <= code <= 0xDFFF
    )


@pytest.mark.parametrize(
    "value",
    [
        "a\nts=2026 level=error msg=forged",
        "x\r\ny",
        "\x1b[2J",
        "\u2028z",
        "\x85",
        "\x00",
        "a\x85ts=2026 level=error msg=forged",
        'a\u2029{"level": "error"}',
        "\u202eevil",
        "lone \ud800 surrogate",
        BREAKS + DISGUISES,
    ],
)
@pytest.mark.parametrize("formatter", [KeyValueFormatter(), JsonFormatter()])
def test_untrusted_values_cannot_forge_a_line(value: str, formatter: logging.Formatter) -> None:
    text = line_of(formatter, "rejected reason=%s", value)
    assert len(text.splitlines()) == 1
    assert not any(forbidden(c) for c in text)
    if isinstance(formatter, JsonFormatter):
        assert json.loads(text)["msg"] == f"rejected reason={value}"  # escaped, not lost


@pytest.mark.parametrize("formatter", [KeyValueFormatter(), JsonFormatter()])
def test_an_exception_cannot_forge_a_line_either(formatter: logging.Formatter) -> None:
    try:
        raise ValueError(BREAKS + DISGUISES)
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("dsw.test", logging.ERROR, __file__, 1, "failed", (), exc_info)
    text = formatter.format(record)
    assert len(text.splitlines()) == 1
    assert not any(forbidden(c) for c in text)


def test_escapes_are_readable() -> None:
    assert escaped("a\nb\tc\x1b") == "a\\nb\\tc\\x1b"
    assert escaped("\x85\u2028\u202e\ud800") == "\\x85\\u2028\\u202e\\ud800"
    assert escaped("plain é ü 😀 עברית") == "plain é ü 😀 עברית"
