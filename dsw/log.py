"""Structured log lines: `key=value` text (default) or one JSON object per line.

Log messages carry untrusted values (record reasons, names). In either format every character that
a reader could take for the end of a line (LF, CR, NEL U+0085, U+2028, ...: what Python's
`str.splitlines` or JavaScript splits at), every other control character, lone surrogates and the
bidirectional overrides that reorder what a terminal shows are escaped, so that no record can end a
line, forge another or disguise one. Text lines use Python escapes, JSON lines JSON's own `\\uXXXX`
(`json.dumps` with `ensure_ascii=False` alone would leave NEL and U+2028 raw).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# C0 and C1 controls and DEL, the line and paragraph separators, the bidirectional embeddings,
# overrides and isolates, and lone surrogates (from undecodable bytes).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def escaped(text: str) -> str:
    """`text` with control characters as Python escapes (`\\n`, `\\x1b`, `\\u2028`)."""
    return _CONTROL.sub(_python_escape, text)


def _python_escape(match: re.Match[str]) -> str:
    return match[0].encode("unicode_escape").decode("ascii")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"ts={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
        line += f"logger={record.name} msg={escaped(record.getMessage())}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # JSON escapes what json.dumps leaves raw; outside strings it writes only ASCII.
        return _CONTROL.sub(_json_escape, json.dumps(entry, ensure_ascii=False))


# aiokafka logs these at ERROR while a new topic or a new cluster's group coordinator settles
# (aiokafka retries them by itself): not alarms. A broker that stays away shows in other messages
# and in /readyz.
_SETTLING = (
    "not found in cluster metadata",
    "GroupCoordinatorNotAvailableError",
    "Marking the coordinator dead",
)


class _OncePerInterval(logging.Filter):
    """aiokafka logs the same error every retry (10 a second while a broker is away): let each
    distinct message through once per interval."""

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        if any(message in record.getMessage() for message in _SETTLING):
            return False

        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        if now - self._last.get(key, -self.interval_s) < self.interval_s:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


def setup_logging(log_format: str = "keyvalue", level: str = "INFO") -> None:
    """Log to stderr in `log_format`; aiokafka's chatter is kept at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    handler.addFilter(_OncePerInterval())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore", "trio-asyncio", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
