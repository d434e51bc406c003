"""Test helpers for `network = "egress"` end to end: the tests' egress sandbox type, a small HTTP
server of the test's on this machine, and a sandbox script that tries every way out (through the
worker's proxy and around it) along with the check of its answers."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import trio

from dsw.config import Settings

EGRESS = "test-egress"

# Asks for each target through the proxy (plain HTTP, the credentials from $http_proxy), then
# connects directly, bypassing the proxy; one line each, with the time it took.
CLIENT = r"""
proxy=${http_proxy#http://}; auth=$(printf %s "${proxy%%@*}" | base64 -w0); at=${proxy#*@}
gateway=${at%:*}
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 ))ms; }
through() {
    t=$(date +%s%N)
    answer=$(perl -MIO::Socket::INET -e '
        my ($proxy, $auth, $target) = @ARGV;
        my $s = IO::Socket::INET->new(PeerAddr => $proxy, Timeout => 5) or die "no proxy: $!\n";
        print $s "GET http://$target/ HTTP/1.1\r\nHost: $target\r\n"
            . "Proxy-Authorization: Basic $auth\r\nConnection: close\r\n\r\n";
        local $/; my $answer = <$s> // ""; my ($status) = $answer =~ /^HTTP\/1\.1 (\d+)/;
        my ($body) = $answer =~ /\r\n\r\n(.*)\z/s;
        printf "%s %s", $status // "none", ($body // "") =~ s/\s+/ /gr;
    ' "$at" "$auth" "$1")
    set -- "$1" "$answer"
    echo "through $1 ${2%% *} $(ms "$t") ${2#* }"
}
direct() {
    t=$(date +%s%N)
    verdict=$(perl -MIO::Socket::INET -e '
        print IO::Socket::INET->new(PeerAddr => $ARGV[0], Timeout => 10) ? "connected" : "failed";
    ' "$1")
    echo "direct $1 $verdict $(ms "$t")"
}
"""


def egress_sandbox_dir(settings: Settings, root: Path) -> str:
    """The checkout's sandbox types plus test-egress: the shell image with network = egress."""
    shutil.copytree(settings.sandbox_dir, root / "sandbox")
    shell = (root / "sandbox" / "linux-amd64-shell" / "sandbox.toml").read_text()
    (root / "sandbox" / EGRESS).mkdir()
    (root / "sandbox" / EGRESS / "sandbox.toml").write_text(
        shell.replace("network = false", 'network = "egress"')
    )
    return str(root / "sandbox")


async def serve_hello(
    port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """An HTTP server of the test's on every address of this machine."""

    async def answer(stream: trio.SocketStream) -> None:
        try:
            await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello egress")
        except trio.BrokenResourceError:
            pass
        finally:
            with trio.move_on_after(1, shield=True):
                await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host="0.0.0.0")
    task_status.started()
    await trio.serve_listeners(answer, listeners)


def docker0_address() -> str:
    """The host's address on Docker's default bridge."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("172.17.0.1", 9))  # no packet is sent: only the route is looked up
        return str(probe.getsockname()[0])


def lines_of(stdout: str) -> dict[str, list[str]]:
    return {" ".join(line.split()[:2]): line.split()[2:] for line in stdout.splitlines() if line}


def script_for(port: int) -> str:
    bridge = docker0_address()
    return (
        CLIENT
        + f"through 127.0.0.1:{port}\n"  # listed: reachable
        + f"through 127.0.0.1:{port + 1}\n"  # loopback, not listed
        + f"through localhost:{port}\n"  # a name that resolves to loopback
        + f"through {bridge}:{port}\n"  # the host's bridge address
        + "through 169.254.169.254:80\n"  # the metadata address
        + f'direct "$gateway:{port}"\n'  # the host, bypassing the proxy
        + f"direct {bridge}:{port}\n"  # past the host, bypassing the proxy
    )


def check_answers(stdout: str, port: int) -> None:
    seen = lines_of(stdout)
    bridge = docker0_address()
    assert seen[f"through 127.0.0.1:{port}"][0] == "200"
    assert seen[f"through 127.0.0.1:{port}"][-2:] == ["hello", "egress"]
    for refused in (f"127.0.0.1:{port + 1}", f"localhost:{port}", f"{bridge}:{port}"):
        status, elapsed, *reason = seen[f"through {refused}"]
        assert status == "403", refused
        assert int(elapsed.removesuffix("ms")) < 5000, refused  # not a 10 s hang
        assert "dsw egress" in " ".join(reason)
    assert seen["through 169.254.169.254:80"][0] == "403"
    directs = {key: value for key, value in seen.items() if key.startswith("direct")}
    assert len(directs) == 2
    for key, (verdict, elapsed) in directs.items():
        assert verdict == "failed", key
        assert int(elapsed.removesuffix("ms")) < 5000, key  # refused, not a 10 s hang
