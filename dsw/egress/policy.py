"""Where a sandbox may connect through the egress proxy: one decision per (host, port).

    policy = EgressPolicy.from_settings(settings, extra_refused_addresses=("203.0.113.5",))
    verdict = await policy.check("api.nuget.org", 443)   # Allowed(addresses, ...) | Refused(...)

`check` resolves the host itself (a literal IP needs none), checks every address it got, and
answers with the addresses that passed, in the resolver's order: the proxy connects only to those
and never resolves again, so a name that answers differently the next time (DNS rebinding)
cannot move the connection. Refused, whatever name points there:

    loopback      127.0.0.0/8, ::1
    unspecified   0.0.0.0/8, ::
    private       10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7 (unique-local)
    link_local    169.254/16, fe80::/10
    metadata      169.254.169.254, fd00:ec2::254, 100.100.100.200 (cloud instance metadata)
    multicast     224/4, ff00::/8
    reserved      every other block of IANA's special-purpose registries that is not globally
                  reachable (192.0.0/24, documentation, benchmarking, 240/4, 2001::/23 with
                  Teredo, 3fff::/20, 5f00::/16, ...: the table `_TABLE`), the deprecated 6to4
                  relay block 192.88.99/24 and site-local fec0::/10, every IPv4-compatible
                  ::a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d (both deprecated), and all of
                  IPv6 outside the global unicast space 2000::/3
    host          this machine's own addresses (/proc/net/fib_trie LOCAL, /proc/net/if_inet6),
                  WORKER_EGRESS_REFUSE and `extra_refused_addresses` (a remote Docker host's,
                  the Kafka brokers')

An IPv4 address inside IPv6 (mapped ::ffff:a.b.c.d, translated ::ffff:0:a.b.c.d, compatible
::a.b.c.d, 6to4 2002::/16, NAT64 64:ff9b::/96 and 64:ff9b:1::/48) is judged as that IPv4 address:
refused if it is. The table is explicit rather than Python's `is_global`, which in 3.11 lets
192.0.0.8, 192.88.99.1, 3fff::1, 5f00::1 and ::ffff:0:7f00:1 through.

Everything else is allowed, unless WORKER_EGRESS_ALLOW lists destinations: then only those are,
matched against the target as the request names it: `host` (exactly), `*.suffix` (any name
under it, not the suffix itself), an IP or a CIDR block (a literal address target within it),
each with an optional `:port` (IPv6 in brackets: `[fd00::1]:443`). An unlisted name is not even
resolved (a lookup can carry data out). A listed exact name or address is the only way to open a
refused address on purpose (a company feed: `nuget.corp.example:443`, or `10.1.2.3` for a feed
URL that names the address). A `*.suffix` never opens one, since whoever can add a name under
the suffix could point it at 169.254.169.254, and an address entry opens no name that resolves
to it (`localhost` stays refused with `127.0.0.1` listed). Pure but for `check`'s resolver and
`host_networks`, which reads /proc.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import trio

from dsw.config import Settings
from dsw.errors import ConfigError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_ALLOW_HINT = "only WORKER_EGRESS_ALLOW can open it"
_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$"
)
_net = ipaddress.ip_network
_DOCUMENTATION = "a documentation address"
_IETF = "an IETF protocol assignment"
# The first network that holds an address decides (so the most specific come first): a reason
# refuses it, None lets it pass (globally reachable, inside a refused block). From IANA's IPv4 and
# IPv6 special-purpose address registries (as of 2025), the multicast blocks and the cloud
# metadata addresses.
_TABLE: tuple[tuple[IPNetwork, str | None, str], ...] = (
    (_net("169.254.169.254/32"), "metadata", "the cloud metadata address"),
    (_net("fd00:ec2::254/128"), "metadata", "the cloud metadata address"),
    (_net("100.100.100.200/32"), "metadata", "the cloud metadata address"),
    (_net("0.0.0.0/8"), "unspecified", "an unspecified address"),
    (_net("::/128"), "unspecified", "the unspecified address"),
    (_net("127.0.0.0/8"), "loopback", "a loopback address"),
    (_net("::1/128"), "loopback", "a loopback address"),
    (_net("10.0.0.0/8"), "private", "a private address (RFC 1918)"),
    (_net("172.16.0.0/12"), "private", "a private address (RFC 1918)"),
    (_net("192.168.0.0/16"), "private", "a private address (RFC 1918)"),
    (_net("100.64.0.0/10"), "private", "a shared CGNAT address (RFC 6598)"),
    (_net("fc00::/7"), "private", "a unique-local address (fc00::/7)"),
    (_net("169.254.0.0/16"), "link_local", "a link-local address"),
    (_net("fe80::/10"), "link_local", "a link-local address"),
    (_net("224.0.0.0/4"), "multicast", "a multicast address"),
    (_net("ff00::/8"), "multicast", "a multicast address"),
    (_net("192.0.0.9/32"), None, "PCP anycast"),
    (_net("192.0.0.10/32"), None, "TURN anycast"),
    (_net("192.0.0.0/24"), "reserved", f"{_IETF} (192.0.0.0/24)"),
    (_net("192.0.2.0/24"), "reserved", _DOCUMENTATION),
    (_net("198.51.100.0/24"), "reserved", _DOCUMENTATION),
    (_net("203.0.113.0/24"), "reserved", _DOCUMENTATION),
    (_net("192.88.99.0/24"), "reserved", "the deprecated 6to4 relay anycast block"),
    (_net("198.18.0.0/15"), "reserved", "a benchmarking address (198.18.0.0/15)"),
    (_net("255.255.255.255/32"), "reserved", "the broadcast address"),
    (_net("240.0.0.0/4"), "reserved", "a reserved address (240.0.0.0/4)"),
    (_net("100::/64"), "reserved", "a discard-only address (100::/64)"),
    (_net("100:0:0:1::/64"), "reserved", "a dummy address (100:0:0:1::/64)"),
    (_net("2001:1::1/128"), None, "PCP anycast"),
    (_net("2001:1::2/128"), None, "TURN anycast"),
    (_net("2001:1::3/128"), None, "DNS-SD service registration anycast"),
    (_net("2001:3::/32"), None, "AMT"),
    (_net("2001:4:112::/48"), None, "AS112"),
    (_net("2001:20::/28"), None, "ORCHIDv2"),
    (_net("2001:30::/28"), None, "drone remote ID"),
    (_net("2001::/23"), "reserved", f"{_IETF} (2001::/23: Teredo, benchmarking, ...)"),
    (_net("2001:db8::/32"), "reserved", _DOCUMENTATION),
    (_net("3fff::/20"), "reserved", _DOCUMENTATION),
    (_net("5f00::/16"), "reserved", "an SRv6 segment identifier (5f00::/16)"),
    (_net("fec0::/10"), "reserved", "a deprecated site-local address"),
)
# IPv6 unicast is assigned only within this; the rest is unassigned or one of the above.
_GLOBAL_UNICAST = _net("2000::/3")
_NAT64 = (_net("64:ff9b::/96"), _net("64:ff9b:1::/48"))
_TRANSLATED = _net("::ffff:0:0:0/96")


class Allowed(msgspec.Struct, frozen=True):
    """Connect to `host`:`port` at one of `addresses` (checked; in order) and nowhere else."""

    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.addresses[0]


class Refused(msgspec.Struct, frozen=True):
    """`reason` is a metric label, `code` the HTTP status (403 refused, 502 unresolvable) and
    `message` the plain text the script sees."""

    reason: str
    code: int
    message: str


class Pattern(msgspec.Struct, frozen=True):
    """One WORKER_EGRESS_ALLOW entry: a name, a `*.suffix` (held as `.suffix`) or a network."""

    text: str
    name: str | None = None
    suffix: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def covers_name(self, host: str, port: int) -> bool:
        if self.port not in (None, port):
            return False
        if self.suffix is not None:
            return host.endswith(self.suffix)
        return self.name == host

    def covers_address(self, address: IPAddress, port: int) -> bool:
        return self.network is not None and self.port in (None, port) and address in self.network


def parse_pattern(text: str) -> Pattern:
    """`nuget.org`, `*.nuget.org:443`, `10.1.2.3`, `10.1.0.0/16:443`, `[fd00::1]:443`; ValueError
    otherwise."""
    entry = text.strip().lower()
    port: int | None = None
    if entry.startswith("["):
        inside, bracket, after = entry[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"not host[:port]: {text!r}")
        entry, port = inside, _port(after[1:], text) if after else None
    elif entry.count(":") == 1:
        entry, _, digits = entry.partition(":")
        port = _port(digits, text)
    try:
        return Pattern(text, network=ipaddress.ip_network(entry), port=port)
    except ValueError as exc:
        if any(c in entry for c in ":/") or re.fullmatch(r"[\d.]+", entry):
            raise ValueError(f"not an address or CIDR block: {text!r} ({exc})") from None
    entry = entry.rstrip(".")
    if entry.startswith("*.") and _NAME.match(entry[2:]):
        return Pattern(text, suffix=entry[1:], port=port)
    if _NAME.match(entry):
        return Pattern(text, name=entry, port=port)
    raise ValueError(f"not a host name, *.suffix, address or CIDR block: {text!r}")


def _port(digits: str, text: str) -> int:
    if not digits.isdigit() or not 1 <= int(digits) <= 65535:
        raise ValueError(f"not a port (1-65535) in {text!r}")
    return int(digits)


def embedded_ipv4(address: IPAddress) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 one stands for, and the form's name; None for a plain one."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    if any(address in prefix for prefix in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "NAT64"
    if address in _TRANSLATED:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "IPv4-translated"
    if int(address) >> 32 == 0 and int(address) > 1:
        return ipaddress.IPv4Address(int(address)), "IPv4-compatible"
    return None


def classify(address: IPAddress, host_networks: Iterable[IPNetwork] = ()) -> tuple[str, str] | None:
    """(reason, description) of an address that is refused unless listed; None if it may be used.
    An embedded IPv4 address is judged as itself."""
    embedded = embedded_ipv4(address)
    if embedded is not None:
        inner, form = embedded
        verdict = classify(inner, host_networks)
        if verdict is not None:
            return verdict[0], f"the {form} form of {inner}, {verdict[1]}"
        if form in ("IPv4-compatible", "IPv4-translated"):
            return "reserved", f"a deprecated {form} address"
        return None
    for network, reason, description in _TABLE:
        if address in network:
            if reason is not None:
                return reason, description
            break
    else:
        if address.version == 6 and address not in _GLOBAL_UNICAST:
            return "reserved", "an IPv6 address outside the global unicast space (2000::/3)"
    if any(address in network for network in host_networks):
        return "host", "an address of this machine (the Docker host) or of the worker's services"
    return None


def host_networks(proc: Path = Path("/proc/net")) -> list[IPNetwork]:
    """This machine's own addresses: the LOCAL routes of /proc/net/fib_trie (a /32 per address;
    wider ones where a whole block is local) and every address of /proc/net/if_inet6."""
    found: list[IPNetwork] = []
    try:
        last = ""
        for line in (proc / "fib_trie").read_text().splitlines():
            words = line.split()
            if words[:1] in (["|--"], ["+--"]):
                last = words[1].split("/")[0]
            elif len(words) >= 3 and words[-1] == "LOCAL" and words[0].startswith("/") and last:
                found.append(ipaddress.ip_network(f"{last}{words[0]}", strict=False))
    except (OSError, ValueError):
        pass  # no /proc (not Linux): loopback and the other classes still hold
    try:
        for line in (proc / "if_inet6").read_text().splitlines():
            found.append(_net(f"{ipaddress.IPv6Address(int(line.split()[0], 16))}/128"))
    except (OSError, ValueError, IndexError):
        pass
    return list(dict.fromkeys(found))


def infrastructure_hosts(settings: Settings) -> list[str]:
    """The hosts of the worker's own services, never to be reached through the proxy: the Docker
    daemon of WORKER_DOCKER_HOST when it is not a unix socket, and every WORKER_KAFKA_BROKER_URL
    bootstrap server (names or literal addresses, in order, once each)."""
    urls = [] if settings.docker_host.startswith("unix:") else [settings.docker_host]
    for entry in settings.kafka_broker_url.split(","):
        entry = entry.strip()
        if entry:
            urls.append(entry if "://" in entry else f"//{entry}")
    hosts = []
    for url in urls:
        try:
            hosts.append(urlsplit(url).hostname or "")
        except ValueError:
            continue  # not an address: the client of that service says so
    return [host for host in dict.fromkeys(hosts) if host]


async def infrastructure_addresses(
    settings: Settings, resolver: Resolver | None = None, timeout_s: float | None = None
) -> list[str]:
    """Every address of `infrastructure_hosts`, resolved now, each within `timeout_s` (default
    WORKER_EGRESS_CONNECT_TIMEOUT_S); a name that does not resolve is logged and left out.
    Cancellation propagates."""
    resolver = resolver or resolve
    timeout_s = settings.egress_connect_timeout_s if timeout_s is None else timeout_s
    found: list[str] = []
    for host in infrastructure_hosts(settings):
        literal = _literal(host)
        if literal is not None:
            found.append(str(literal))
            continue
        try:
            with trio.fail_after(timeout_s):
                answers = await resolver(host, 0)
            found += [answer.split("%")[0] for answer in answers]
        except (OSError, trio.TooSlowError) as exc:
            log.warning("egress cannot resolve %s to refuse it: %s", host, exc or "timed out")
    return list(dict.fromkeys(found))


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, in getaddrinfo's order of preference; socket.gaierror if none."""
    answers = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


class EgressPolicy:
    """The allowlist, the refused addresses and the resolver; `check` decides. This machine's
    addresses (`read_host_networks`) are read again at most every HOST_REFRESH_S, so networks
    and addresses that appear later (a Docker network created since) are refused too."""

    HOST_REFRESH_S = 10.0

    def __init__(
        self,
        allow: Sequence[Pattern] = (),
        refused: Iterable[IPNetwork] = (),
        *,
        resolver: Resolver = resolve,
        resolve_timeout_s: float = 10.0,
        read_host_networks: Callable[[], list[IPNetwork]] | None = None,
    ) -> None:
        self.allow = tuple(allow)
        self.given = tuple(refused)
        self.resolver = resolver
        self.resolve_timeout_s = resolve_timeout_s
        self.read_host_networks = read_host_networks
        self._host: tuple[IPNetwork, ...] = ()
        self._host_read_at = -math.inf

    @property
    def refused(self) -> tuple[IPNetwork, ...]:
        """The given networks and, when read, this machine's."""
        if self.read_host_networks is not None:
            now = time.monotonic()
            if now - self._host_read_at >= self.HOST_REFRESH_S:
                self._host, self._host_read_at = tuple(self.read_host_networks()), now
        return self.given + self._host

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        extra_refused_addresses: Iterable[str] = (),
        *,
        resolver: Resolver = resolve,
    ) -> EgressPolicy:
        """WORKER_EGRESS_ALLOW and WORKER_EGRESS_REFUSE, this machine's addresses and
        `extra_refused_addresses` (addresses or CIDR blocks). Raises ConfigError."""
        try:
            allow = [parse_pattern(entry) for entry in settings.egress_allow]
        except ValueError as exc:
            raise ConfigError("WORKER_EGRESS_ALLOW", str(exc)) from None
        try:
            given = [_net(text.strip(), strict=False) for text in settings.egress_refuse]
            given += [_net(text.strip(), strict=False) for text in extra_refused_addresses]
        except ValueError as exc:
            raise ConfigError("WORKER_EGRESS_REFUSE", str(exc)) from None
        return cls(
            allow,
            given,
            resolver=resolver,
            resolve_timeout_s=settings.egress_connect_timeout_s,
            read_host_networks=host_networks,
        )

    async def check(self, host: str, port: int) -> Allowed | Refused:
        """Resolve `host` once (within resolve_timeout_s; never an unlisted name when there is an
        allowlist: a lookup can carry data out) and judge every address. Cancellation
        propagates; nothing is left running."""
        host = host.lower().removeprefix("[").removesuffix("]").rstrip(".")
        literal = _literal(host)
        listed = self._listed(host, literal, port)
        if self.allow and listed is None and literal is None:
            message = f"dsw egress: {host}:{port} is not listed in WORKER_EGRESS_ALLOW"
            return Refused("not_listed", 403, message + " (only the destinations listed are open)")
        if literal is not None:
            addresses = [literal]
        else:
            try:
                with trio.fail_after(self.resolve_timeout_s):
                    answers = await self.resolver(host, port)
                addresses = [ipaddress.ip_address(answer.split("%")[0]) for answer in answers]
            except (OSError, trio.TooSlowError, ValueError) as exc:
                why = str(exc) or "timed out"
                return Refused("unresolvable", 502, f"dsw egress: cannot resolve {host}: {why}")
            if not addresses:
                return Refused("unresolvable", 502, f"dsw egress: {host} has no address")
        passed: list[str] = []
        refusals: list[Refused] = []
        for address in dict.fromkeys(addresses):
            refusal = None
            if listed != "exact":
                refusal = self._refusal(host, address, listed, literal is not None)
            if refusal is not None:
                refusals.append(refusal)
                continue
            inner = embedded_ipv4(address)
            mapped = inner is not None and inner[1] == "IPv4-mapped"
            passed.append(str(inner[0]) if inner is not None and mapped else str(address))
        if passed:
            return Allowed(host, port, tuple(passed))
        return refusals[0]

    def _listed(self, host: str, literal: IPAddress | None, port: int) -> str | None:
        """ "exact" if an entry names this target (its host name; an IP or CIDR block holding
        its literal address), "wildcard" if only a *.suffix does, None if none does."""
        if literal is not None:
            return "exact" if any(p.covers_address(literal, port) for p in self.allow) else None
        covering = [p for p in self.allow if p.covers_name(host, port)]
        if any(p.name is not None for p in covering):
            return "exact"
        return "wildcard" if covering else None

    def _refusal(
        self, host: str, address: IPAddress, listed: str | None, literal: bool
    ) -> Refused | None:
        verdict = classify(address, self.refused)
        if verdict is not None:
            reason, description = verdict
            subject = f"{host} is" if literal else f"{host} resolves to {address},"
            hint = _ALLOW_HINT
            if listed == "wildcard":
                hint = f"a *.suffix entry does not open it: list {host} in WORKER_EGRESS_ALLOW"
            return Refused(reason, 403, f"dsw egress: {subject} {description}; {hint}")
        if self.allow and listed is None:
            message = f"dsw egress: {address} is not listed in WORKER_EGRESS_ALLOW"
            return Refused("not_listed", 403, message + " (only the destinations listed are open)")
        return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
