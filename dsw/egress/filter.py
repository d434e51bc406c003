"""Packet filtering of an egress network: its sandboxes reach the worker's proxy, nothing else.

A Docker internal network has no route out, but two ways stay open that would bypass the proxy:
the host itself at the network's gateway address (any service of the host listening on all
addresses), and packets forwarded elsewhere, which Docker drops silently, so that a connection
hangs until it times out. A chain of its own per network accepts the proxy's port at the gateway
and rejects everything else from the bridge at once, refused rather than hung. Replies to
connections already let through pass first (conntrack): under Docker-out-of-Docker the proxy is a
container on the same bridge, and its answers to a sandbox come in from the bridge too, through
FORWARD. IPv4 only: the sandboxes have IPv6 switched off (dsw.container_spec). Applied with
iptables, as root on the host whose network stack holds the bridge (the host, or the
Docker-in-Docker container); `python -m dsw.egress.filter up|down BRIDGE GATEWAY PORT` does the
same for a network prepared by hand (docs/security.md).
"""

from __future__ import annotations

import subprocess
import sys

import trio

from dsw.errors import NotConfinable


def chain_of(bridge: str) -> str:
    return f"DSW-{bridge}"[:28]


def up_commands(bridge: str, gateway: str, port: int) -> list[list[str]]:
    """`gateway` is the proxy's address: the network's gateway, or (Docker-out-of-Docker) the
    worker container's address on the network."""
    chain = chain_of(bridge)
    append = ["iptables", "-w", "-A", chain]
    return [
        ["iptables", "-w", "-N", chain],
        # Replies: to a sandbox from a proxy on the bridge (DooD), ICMP errors of its connections.
        [*append, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        [*append, "-p", "tcp", "-d", gateway, "--dport", str(port), "-j", "ACCEPT"],
        [*append, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
        [*append, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
        # To the host (INPUT) and through it (FORWARD, where Docker's own DROP would come later).
        ["iptables", "-w", "-I", "INPUT", "-i", bridge, "-j", chain],
        ["iptables", "-w", "-I", "DOCKER-USER", "-i", bridge, "-j", chain],
    ]


def down_commands(bridge: str) -> list[list[str]]:
    chain = chain_of(bridge)
    return [
        ["iptables", "-w", "-D", "INPUT", "-i", bridge, "-j", chain],
        ["iptables", "-w", "-D", "DOCKER-USER", "-i", bridge, "-j", chain],
        ["iptables", "-w", "-F", chain],
        ["iptables", "-w", "-X", chain],
    ]


async def apply(bridge: str, gateway: str, port: int) -> None:
    """Install the rules (after removing any left from before); NotConfinable if they cannot be
    (not root, no iptables)."""
    await remove(bridge)
    for command in up_commands(bridge, gateway, port):
        try:
            result = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
        except OSError as exc:
            raise NotConfinable(f"egress needs iptables on the Docker host: {exc}") from exc
        if result.returncode != 0:
            await remove(bridge)
            message = result.stderr.decode(errors="replace").strip()
            raise NotConfinable(
                f"cannot filter the egress network ({' '.join(command)}: {message}); run the "
                "worker as root beside the daemon, or prepare the network (docs/security.md)"
            )


async def remove(bridge: str) -> None:
    """Remove the rules, as far as they exist."""
    for command in down_commands(bridge):
        try:
            await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
        except OSError:
            return


def main(argv: list[str]) -> int:
    """`up BRIDGE GATEWAY PORT` or `down BRIDGE`, for networks prepared by hand."""
    if len(argv) == 4 and argv[0] == "up":
        commands = [*down_commands(argv[1]), *up_commands(argv[1], argv[2], int(argv[3]))]
        checked = len(down_commands(argv[1]))
    elif len(argv) == 2 and argv[0] == "down":
        commands, checked = down_commands(argv[1]), len(down_commands(argv[1]))
    else:
        print(
            "usage: python -m dsw.egress.filter up BRIDGE GATEWAY PORT | down BRIDGE",
            file=sys.stderr,
        )
        return 2
    for number, command in enumerate(commands):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 and number >= checked:
            print(f"{' '.join(command)}: {result.stderr.strip()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
