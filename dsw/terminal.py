"""A script's output shown on a user's terminal, made harmless.

A script's output is untrusted: written raw to a terminal, its escape sequences could retitle the
window, rewrite or hide lines, or worse on some emulators. On a terminal every control character
but newline and tab (C0, DEL, C1, and the bidirectional overrides that reorder what is shown) is
written as a visible escape such as `\\x1b`; `--raw` turns this off. Pipes and files get the bytes
as they are.
"""

from __future__ import annotations

import re
from typing import TextIO

_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def neutralised(text: str) -> str:
    """`text` with its control characters (not newline or tab) as visible escapes."""
    return _CONTROLS.sub(lambda match: match[0].encode("unicode_escape").decode("ascii"), text)


def write_output(stream: TextIO, text: str, raw: bool = False) -> None:
    """Write a script's output: neutralised on a terminal unless `raw`, byte for byte otherwise."""
    stream.write(text if raw or not stream.isatty() else neutralised(text))
    stream.flush()
