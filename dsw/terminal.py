"""A script's output, and the names of its files, shown on a user's terminal, made harmless.

A script's output is untrusted, and so are the names of the files a CI job submits: written raw to
a terminal, their escape sequences could retitle the window, rewrite or hide lines, or worse on
some emulators. Neutralised text has every character that can drive a terminal or change what a
line appears to say written as a visible escape (`\\x1b`, `\\u202e`):

- C0 controls but newline and tab (ESC, and with it CSI, OSC, DCS, ...; CR; BS), DEL, and the C1
  controls U+0080-U+009F (8-bit CSI, OSC, DCS, which some terminals act on);
- the bidirectional overrides, embeddings and isolates (U+202A-U+202E, U+2066-U+2069), and the
  implicit marks (U+200E, U+200F, U+061C): they reorder what is shown, so a line can read
  differently from its bytes;
- the line and paragraph separators U+2028, U+2029, which some terminals and viewers break lines
  at: a script could fake a line of dsw's own;
- lone surrogates (an undecodable file name, or another writer's JSON), which no UTF-8 can hold;
- and the backslash itself, as `\\\\`, so that a script printing the text `\\x1b` cannot pass for
  an escaped ESC.

Script output is neutralised on a terminal unless `--raw`; pipes and files get it as it is. The
names in dsw's own lines (headings, progress, tables, errors) are neutralised wherever they go.
"""

from __future__ import annotations

import re
from typing import TextIO

_SHOWN_ESCAPED = re.compile(
    "[\\\\\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)


def neutralised(text: str) -> str:
    """`text` with every character listed above as a visible escape; newline and tab kept."""
    return _SHOWN_ESCAPED.sub(lambda match: match[0].encode("unicode_escape").decode("ascii"), text)


def write_output(stream: TextIO, text: str, raw: bool = False) -> None:
    """Write a script's output: neutralised on a terminal unless `raw`, byte for byte otherwise."""
    stream.write(text if raw or not stream.isatty() else neutralised(text))
    stream.flush()
