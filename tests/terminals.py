"""Test helpers for what a terminal shows: a command run with its stdout and stderr on a real
pseudo-terminal, and a script whose output would take over any terminal that showed it as it is."""

from __future__ import annotations

import os
import subprocess

import trio


def _run_on_pty(argv: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, bytes]:
    master, slave = os.openpty()
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
        )
    finally:
        os.close(slave)
    seen = bytearray()
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        return process.wait(timeout=timeout_s), bytes(seen)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()


async def run_on_terminal(
    argv: list[str], env: dict[str, str], timeout_s: float = 120
) -> tuple[int, bytes]:
    """The exit code, and everything the command wrote to its terminal."""
    return await trio.to_thread.run_sync(_run_on_pty, argv, env, timeout_s)


# A title, a screen clear, bells, a carriage return and a tab: what a terminal must not obey.
HOSTILE = "printf 'title\\033]0;pwned\\007 clear\\033[2J bell\\007 cr\\rover\\tend\\n'\n"
