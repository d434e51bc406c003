"""The neutraliser: what a script (its output, its file's name) could use to drive a terminal or
misstate a line is shown as a visible escape, and every escape reads back to exactly one text."""

from __future__ import annotations

import io
import re

import pytest

from dsw.terminal import neutralised, write_output

ESCAPED = {
    *map(chr, range(0x00, 0x20)),  # C0: ESC (so CSI, OSC, DCS), CR, BS, BEL, ...
    chr(0x7F),  # DEL
    *map(chr, range(0x80, 0xA0)),  # C1: 8-bit CSI (U+009B), OSC (U+009D), DCS (U+0090), ...
    *map(chr, range(0x202A, 0x202F)),  # bidi embeddings and overrides: LRE RLE PDF LRO RLO
    *map(chr, range(0x2066, 0x206A)),  # bidi isolates: LRI RLI FSI PDI
    "\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f",  # RIGHT-TO-LEFT MARK
    "\u061c",  # ARABIC LETTER MARK
    "\u2028",  # LINE SEPARATOR
    "\u2029",  # PARAGRAPH SEPARATOR
    *map(chr, range(0xD800, 0xE000)),  # lone surrogates
    "\\",  # so that the text `\x1b` cannot pass for an escaped ESC
} - {"\n", "\t"}

_ESCAPE = re.compile(r"\\(?:\\|r|x[0-9a-f]{2}|u[0-9a-f]{4})")


def read_back(shown: str) -> str:
    """The text that `shown` (neutralised) stands for: each escape read as one character."""

    def one(match: re.Match[str]) -> str:
        escape = match[0]
        return {"\\\\": "\\", "\\r": "\r"}.get(escape) or chr(int(escape[2:], 16))

    assert "\\" not in _ESCAPE.sub("", shown), "a backslash that starts no escape"
    return _ESCAPE.sub(one, shown)


def test_exactly_the_listed_characters_are_escaped() -> None:
    for point in range(0x110000):
        character = chr(point)
        shown = neutralised(character)
        if character in ESCAPED:
            assert shown.startswith("\\"), hex(point)
            assert len(shown) > 1, hex(point)
            assert shown.isascii(), hex(point)
            assert shown.isprintable(), hex(point)
        else:
            assert shown == character, hex(point)


@pytest.mark.parametrize(
    "hostile",
    [
        "\x1b]0;pwned\x07",  # OSC: retitle the window
        "\x1b[2J\x1b[H",  # CSI: clear the screen, home the cursor
        "\x1bP1$r\x1b\\",  # DCS, ended by ST
        "\x9b31m\x9d0;t\x9c",  # the same in C1, 8 bits
        "rm -rf /\roverwritten",  # CR: rewrite the line
        "safe\x08\x08\x08\x08evil",  # BS
        "del\x7f",
        "a\u202egnp.exe\u202c",  # RLO: reverses what follows
        "\u2067isolated\u2069 \u200e\u200f\u061c",
        "fake\u2028dsw: line\u2029",
    ],
)
def test_what_could_drive_a_terminal_is_shown_as_escapes(hostile: str) -> None:
    shown = neutralised(hostile)
    assert not set(shown) & (ESCAPED - {"\\"})
    assert read_back(shown) == hostile


def test_newline_and_tab_and_printable_text_stay() -> None:
    text = "line one\n\tindented é 😀 שלום [red]markup[/red]\n"
    assert neutralised(text) == text


def test_a_literal_backslash_is_unambiguous() -> None:
    assert neutralised("\\x1b") == "\\\\x1b"
    assert neutralised("\x1b") == "\\x1b"
    assert neutralised("C:\\dir\\") == "C:\\\\dir\\\\"
    assert neutralised("\\\x1b") == "\\\\\\x1b"


def test_every_text_reads_back_to_itself() -> None:
    everything = "".join(map(chr, range(0x110000)))
    assert read_back(neutralised(everything)) == everything


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_output_is_neutralised_on_a_terminal_only_and_not_with_raw() -> None:
    text = "title\x1b]0;pwned\x07 \\x1b\n"
    for stream, raw, expected in (
        (Terminal(), False, neutralised(text)),
        (Terminal(), True, text),
        (io.StringIO(), False, text),
    ):
        write_output(stream, text, raw)
        assert stream.getvalue() == expected
