"""dsw.egress.policy: the address classes, WORKER_EGRESS_ALLOW patterns and `check` (resolvers
injected; nothing here opens a connection)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from dsw.config import load_settings
from dsw.egress.policy import (
    Allowed,
    EgressPolicy,
    Refused,
    classify,
    host_networks,
    infrastructure_addresses,
    infrastructure_hosts,
    parse_pattern,
)
from dsw.errors import ConfigError

PUBLIC_V4 = "93.184.215.14"  # globally routable; only ever classified, never connected to
PUBLIC_V6 = "2606:4700:4700::1111"


def reason_of(text: str, *host: str) -> str | None:
    networks = [ipaddress.ip_network(h) for h in host]
    verdict = classify(ipaddress.ip_address(text), networks)
    return verdict[0] if verdict else None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("100.127.255.254", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.1.1", "link_local"),
        ("fe80::1", "link_local"),
        ("febf::1", "link_local"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("fec0::1", "reserved"),
        ("192.0.2.10", "reserved"),  # documentation: not globally reachable
        ("198.18.0.1", "reserved"),  # benchmarking
        ("2001:db8::1", "reserved"),
        ("2001::1", "reserved"),  # Teredo
    ],
)
def test_each_refused_class(address: str, reason: str) -> None:
    assert reason_of(address) == reason


@pytest.mark.parametrize(
    "address",
    [
        # What Python 3.11's `is_global` let through.
        "192.0.0.8",  # the IPv4 dummy address
        "192.88.99.1",  # the deprecated 6to4 relay anycast
        "5f00::1",  # SRv6 segment identifiers
        "3fff::1",  # documentation (RFC 9637)
        "3fff:fff:ffff::1",
        # The rest of IANA's blocks that are not globally reachable.
        "192.0.0.1",  # DS-Lite
        "192.0.0.170",  # NAT64 discovery
        "192.0.0.255",
        "198.51.100.1",
        "203.0.113.254",
        "198.19.255.255",
        "100::1",  # discard-only
        "100:0:0:1::1",  # dummy prefix
        "2001:2::1",  # benchmarking
        "2001:10::1",  # ORCHID (deprecated)
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        # Outside 2000::/3: unassigned.
        "4000::1",
        "1::1",
        "::1:0:0:1",
        "e000::1",
    ],
)
def test_every_block_not_globally_reachable_is_reserved(address: str) -> None:
    assert reason_of(address) == "reserved"


@pytest.mark.parametrize(
    "address",
    [
        "192.0.0.9",  # PCP anycast
        "192.0.0.10",  # TURN anycast
        "192.31.196.1",  # AS112
        "192.52.193.1",  # AMT
        "192.175.48.1",  # AS112
        "2001:1::1",
        "2001:1::2",
        "2001:1::3",
        "2001:3::1",  # AMT
        "2001:4:112::1",  # AS112
        "2001:20::1",  # ORCHIDv2
        "2001:30::1",  # drone remote ID
        "2620:4f:8000::1",  # AS112
        "2a00:1450:4001::1",
        "3000::1",
    ],
)
def test_globally_reachable_special_purpose_addresses_pass(address: str) -> None:
    assert reason_of(address) is None


@pytest.mark.parametrize(
    ("address", "reason", "form"),
    [
        ("::ffff:127.0.0.1", "loopback", "IPv4-mapped"),
        ("::ffff:10.0.0.1", "private", "IPv4-mapped"),
        ("::ffff:169.254.169.254", "metadata", "IPv4-mapped"),
        ("::ffff:100.64.1.1", "private", "IPv4-mapped"),
        ("::ffff:0.0.0.0", "unspecified", "IPv4-mapped"),
        ("::127.0.0.1", "loopback", "IPv4-compatible"),
        ("::10.0.0.1", "private", "IPv4-compatible"),
        ("::2", "unspecified", "IPv4-compatible"),
        ("2002:7f00:1::", "loopback", "6to4"),
        ("2002:a9fe:a9fe::1", "metadata", "6to4"),
        ("2002:c0a8:101::1", "private", "6to4"),
        ("64:ff9b::127.0.0.1", "loopback", "NAT64"),
        ("64:ff9b::a9fe:a9fe", "metadata", "NAT64"),
        ("64:ff9b:1::10.0.0.1", "private", "NAT64"),
        ("::ffff:0:7f00:1", "loopback", "IPv4-translated"),
        ("::ffff:0:a9fe:a9fe", "metadata", "IPv4-translated"),
    ],
)
def test_ipv4_inside_ipv6_is_judged_as_the_ipv4_address(
    address: str, reason: str, form: str
) -> None:
    verdict = classify(ipaddress.ip_address(address))
    assert verdict is not None
    assert verdict[0] == reason
    assert form in verdict[1]


def test_a_public_address_inside_ipv6_passes_but_the_deprecated_forms_never_do() -> None:
    assert reason_of(f"::ffff:{PUBLIC_V4}") is None
    assert reason_of("2002:5db8:d70e::1") is None  # 6to4 of PUBLIC_V4
    assert reason_of(f"64:ff9b::{PUBLIC_V4}") is None
    assert reason_of(f"::{PUBLIC_V4}") == "reserved"
    assert reason_of(f"::ffff:0:{PUBLIC_V4}") == "reserved"  # IPv4-translated: deprecated too


def test_public_addresses_pass() -> None:
    assert reason_of(PUBLIC_V4) is None
    assert reason_of(PUBLIC_V6) is None
    assert reason_of("100.128.0.1") is None  # just past 100.64/10
    assert reason_of("172.32.0.1") is None  # just past 172.16/12


def test_this_machines_addresses_are_refused() -> None:
    assert reason_of(PUBLIC_V4, f"{PUBLIC_V4}/32") == "host"
    assert reason_of(f"::ffff:{PUBLIC_V4}", f"{PUBLIC_V4}/32") == "host"
    assert reason_of(PUBLIC_V6, f"{PUBLIC_V6}/128") == "host"
    mine = host_networks()
    assert ipaddress.ip_network("127.0.0.1/32") in mine
    assert ipaddress.ip_network("::1/128") in mine


def test_host_networks_reads_fib_trie_local_routes_and_if_inet6(tmp_path: Path) -> None:
    (tmp_path / "fib_trie").write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 4\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
        "Local:\n  +-- 0.0.0.0/0 3 0 4\n     +-- 127.0.0.0/8 2 0 2\n"
        "        |-- 127.0.0.1\n           /32 host LOCAL\n"
        "     |-- 203.0.113.7\n        /32 host LOCAL\n"
        "     |-- 203.0.113.255\n        /32 link BROADCAST\n"
        "     |-- 198.51.100.0\n        /24 host LOCAL\n"
    )
    (tmp_path / "if_inet6").write_text(
        "20010db8000000000000000000000042 02 40 00 80     eth0\n"
        "00000000000000000000000000000001 01 80 10 80       lo\n"
    )
    assert host_networks(tmp_path) == [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("203.0.113.7/32"),
        ipaddress.ip_network("198.51.100.0/24"),
        ipaddress.ip_network("2001:db8::42/128"),
        ipaddress.ip_network("::1/128"),
    ]
    assert host_networks(tmp_path / "absent") == []


@pytest.mark.parametrize(
    ("text", "field", "value", "port"),
    [
        ("nuget.org", "name", "nuget.org", None),
        ("NuGet.Org.:443", "name", "nuget.org", 443),
        ("*.nuget.org", "suffix", ".nuget.org", None),
        ("*.nuget.org:443", "suffix", ".nuget.org", 443),
        ("10.1.2.3", "network", ipaddress.ip_network("10.1.2.3/32"), None),
        ("10.1.0.0/16:8080", "network", ipaddress.ip_network("10.1.0.0/16"), 8080),
        ("fd00::1", "network", ipaddress.ip_network("fd00::1/128"), None),
        ("[fd00::/64]:443", "network", ipaddress.ip_network("fd00::/64"), 443),
    ],
)
def test_patterns(text: str, field: str, value: object, port: int | None) -> None:
    pattern = parse_pattern(text)
    assert getattr(pattern, field) == value
    assert pattern.port == port


@pytest.mark.parametrize(
    "text",
    ["", "a b", "host:0", "host:65536", "host:http", "[fd00::1", "[fd00::1]443", "1.2.3",
     "10.1.2.3/16", "*.", "*", "-bad.example", "x/y", "a:b:c/"],
)  # fmt: skip
def test_bad_patterns(text: str) -> None:
    with pytest.raises(ValueError, match=r"not"):
        parse_pattern(text)


def test_a_bad_entry_names_its_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        EgressPolicy.from_settings(load_settings(egress_allow=["nuget.org", "10.0.0.0/33"]))
    assert caught.value.variable == "WORKER_EGRESS_ALLOW"
    with pytest.raises(ConfigError) as caught:
        EgressPolicy.from_settings(load_settings(egress_refuse=["somewhere"]))
    assert caught.value.variable == "WORKER_EGRESS_REFUSE"


def test_settings_read_the_egress_variables() -> None:
    settings = load_settings(
        {
            "WORKER_EGRESS_ALLOW": "nuget.org:443, *.nuget.org ,10.1.2.3",
            "WORKER_EGRESS_MAX_BYTES": "64m",
            "WORKER_EGRESS_IDLE_TIMEOUT_SEC": "5",
            "WORKER_EGRESS_MAX_CONNECTIONS": "4",
        }
    )
    assert settings.egress_allow == ("nuget.org:443", "*.nuget.org", "10.1.2.3")
    assert settings.egress_max_bytes == 64 * 1024 * 1024
    assert settings.egress_idle_timeout_s == 5.0
    assert settings.egress_max_connections == 4
    defaults = load_settings({})
    assert defaults.egress_allow == ()
    assert defaults.egress_max_connections == 32
    assert defaults.egress_max_bytes == 1024**3


class Resolver:
    """Answers from a script, one list per call; records what it was asked."""

    def __init__(self, *answers: Sequence[str] | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def policy(
    *allow: str, resolver: Resolver | None = None, refused: Sequence[str] = ()
) -> EgressPolicy:
    networks = [ipaddress.ip_network(a) for a in refused]
    if resolver is None:
        return EgressPolicy([parse_pattern(a) for a in allow], networks)
    return EgressPolicy([parse_pattern(a) for a in allow], networks, resolver=resolver)


async def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    verdict = await policy().check("localhost", 8080)  # /etc/hosts: 127.0.0.1, ::1
    assert verdict == Refused(
        "loopback",
        403,
        "dsw egress: localhost resolves to 127.0.0.1, a loopback address; "
        "only WORKER_EGRESS_ALLOW can open it",
    )


async def test_literals_need_no_resolver() -> None:
    resolver = Resolver()
    checked = policy(resolver=resolver)
    assert await checked.check("127.0.0.1", 80) == Refused(
        "loopback",
        403,
        "dsw egress: 127.0.0.1 is a loopback address; only WORKER_EGRESS_ALLOW can open it",
    )
    metadata = await checked.check("169.254.169.254", 80)
    assert isinstance(metadata, Refused)
    assert metadata.reason == "metadata"
    assert "169.254.169.254 is the cloud metadata address" in metadata.message
    v6 = await checked.check("[::ffff:127.0.0.1]", 443)
    assert isinstance(v6, Refused)
    assert v6.reason == "loopback"
    assert await checked.check(PUBLIC_V4, 443) == Allowed(PUBLIC_V4, 443, (PUBLIC_V4,))
    assert resolver.asked == []


async def test_rebinding_the_checked_address_is_the_one_to_connect_to() -> None:
    resolver = Resolver([PUBLIC_V4], ["127.0.0.1"])
    checked = policy(resolver=resolver)
    verdict = await checked.check("rebind.example", 443)
    assert verdict == Allowed("rebind.example", 443, (PUBLIC_V4,))
    assert verdict.address == PUBLIC_V4
    assert resolver.asked == [("rebind.example", 443)]  # once: the proxy never asks again
    # The next answer would have been loopback: a check made then is refused.
    again = await checked.check("rebind.example", 443)
    assert isinstance(again, Refused)
    assert again.reason == "loopback"


async def test_every_address_is_checked_and_only_those_that_passed_are_given() -> None:
    resolver = Resolver(["127.0.0.1", f"::ffff:{PUBLIC_V4}", "10.0.0.1", PUBLIC_V6])
    verdict = await policy(resolver=resolver).check("mixed.example", 443)
    assert verdict == Allowed("mixed.example", 443, (PUBLIC_V4, PUBLIC_V6))
    resolver = Resolver(["10.0.0.1", "169.254.169.254"])
    refused = await policy(resolver=resolver).check("inside.example", 443)
    assert isinstance(refused, Refused)
    assert refused.reason == "private"
    assert refused.message.startswith("dsw egress: inside.example resolves to 10.0.0.1, a private")


async def test_unresolvable_names_are_502() -> None:
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    verdict = await policy(resolver=Resolver(error)).check("nowhere.example", 443)
    assert verdict == Refused(
        "unresolvable",
        502,
        "dsw egress: cannot resolve nowhere.example: [Errno -2] Name or service not known",
    )
    assert (await policy(resolver=Resolver([])).check("empty.example", 443)) == Refused(
        "unresolvable", 502, "dsw egress: empty.example has no address"
    )

    async def hangs(host: str, port: int) -> list[str]:
        await trio.sleep_forever()
        raise AssertionError

    slow = EgressPolicy(resolver=hangs, resolve_timeout_s=0.05)
    verdict = await slow.check("slow.example", 443)
    assert verdict == Refused(
        "unresolvable", 502, "dsw egress: cannot resolve slow.example: timed out"
    )


async def test_this_machines_addresses_and_the_extra_ones_are_refused() -> None:
    settings = load_settings(egress_refuse=["93.184.216.0/24"])
    checked = EgressPolicy.from_settings(settings, extra_refused_addresses=[PUBLIC_V4])
    for address in (PUBLIC_V4, "93.184.216.7"):
        verdict = await checked.check(address, 443)
        assert isinstance(verdict, Refused)
        assert verdict.reason == "host"
        assert "an address of this machine" in verdict.message
    assert isinstance(await checked.check(PUBLIC_V6, 443), Allowed)


@pytest.mark.parametrize(
    ("docker_host", "brokers", "hosts"),
    [
        ("unix:///var/run/docker.sock", "localhost:9092", ["localhost"]),
        ("unix:/run/docker.sock", "Kafka-1:9092, kafka-2:9092,", ["kafka-1", "kafka-2"]),
        ("tcp://dind-tls:2376", "127.0.0.1:9092", ["dind-tls", "127.0.0.1"]),
        ("https://[fd00::5]:2376", "PLAINTEXT://[fd00::6]:9092,k", ["fd00::5", "fd00::6", "k"]),
        ("tcp://kafka:2376", "kafka:9092", ["kafka"]),
    ],
)  # fmt: skip
def test_the_workers_services_are_its_docker_host_and_brokers(
    docker_host: str, brokers: str, hosts: list[str]
) -> None:
    settings = load_settings(docker_host=docker_host, kafka_broker_url=brokers)
    assert infrastructure_hosts(settings) == hosts


async def test_the_workers_services_are_refused_at_every_address_they_resolve_to(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(
        docker_host="tcp://docker.example:2376",
        kafka_broker_url=f"broker.example:9092,[{PUBLIC_V6}]:9092,gone.example:9092",
    )
    error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    resolver = Resolver([PUBLIC_V4], ["203.0.113.9", PUBLIC_V4], error)
    found = await infrastructure_addresses(settings, resolver)
    assert found == [PUBLIC_V4, "203.0.113.9", PUBLIC_V6]
    assert [host for host, _ in resolver.asked] == [
        "docker.example",
        "broker.example",
        "gone.example",
    ]
    assert "cannot resolve gone.example" in caplog.text
    checked = EgressPolicy.from_settings(settings, found)
    for address in (PUBLIC_V4, PUBLIC_V6):
        verdict = await checked.check(address, 443)
        assert isinstance(verdict, Refused)
        assert verdict.reason == "host"
        assert "the worker's services" in verdict.message


async def test_only_the_listed_destinations_with_an_allowlist() -> None:
    resolver = Resolver([PUBLIC_V4], [PUBLIC_V4])
    checked = policy("nuget.org:443", "*.nuget.org", PUBLIC_V6, resolver=resolver)
    assert await checked.check("nuget.org", 443) == Allowed("nuget.org", 443, (PUBLIC_V4,))
    assert isinstance(await checked.check("api.nuget.org", 80), Allowed)
    assert isinstance(await checked.check(PUBLIC_V6, 8443), Allowed)
    for host, port in (("nuget.org", 80), ("evil.example", 443), ("nuget.org.evil.example", 443)):
        verdict = await checked.check(host, port)
        assert verdict == Refused(
            "not_listed",
            403,
            f"dsw egress: {host}:{port} is not listed in WORKER_EGRESS_ALLOW"
            " (only the destinations listed are open)",
        )
    not_listed = await checked.check(PUBLIC_V4, 443)
    assert isinstance(not_listed, Refused)
    assert not_listed.reason == "not_listed"
    # Unlisted names were not even resolved.
    assert resolver.asked == [("nuget.org", 443), ("api.nuget.org", 80)]


async def test_a_wildcard_covers_names_below_it_but_not_itself() -> None:
    checked = policy("*.nuget.org", resolver=Resolver([PUBLIC_V4]))
    assert isinstance(await checked.check("api.NuGet.org.", 443), Allowed)
    refused = await checked.check("nuget.org", 443)
    assert isinstance(refused, Refused)
    assert refused.reason == "not_listed"


async def test_a_listed_name_or_literal_opens_a_refused_address() -> None:
    resolver = Resolver(["10.1.2.3"])
    checked = policy(
        "nuget.corp.example:443", "10.1.2.3", "[::1]:8080", "127.0.0.1:8080", resolver=resolver
    )
    assert await checked.check("nuget.corp.example", 443) == Allowed(
        "nuget.corp.example", 443, ("10.1.2.3",)
    )
    assert await checked.check("10.1.2.3", 5000) == Allowed("10.1.2.3", 5000, ("10.1.2.3",))
    assert await checked.check("::1", 8080) == Allowed("::1", 8080, ("::1",))
    assert await checked.check("127.0.0.1", 8080) == Allowed("127.0.0.1", 8080, ("127.0.0.1",))
    wrong_port = await checked.check("127.0.0.1", 8081)
    assert isinstance(wrong_port, Refused)
    assert wrong_port.reason == "loopback"


async def test_an_address_entry_opens_no_name_that_resolves_to_it() -> None:
    checked = policy("127.0.0.1:8080", "10.0.0.0/8")
    verdict = await checked.check("localhost", 8080)
    assert isinstance(verdict, Refused)
    assert verdict.reason == "not_listed"


async def test_a_wildcard_never_opens_a_refused_address() -> None:
    resolver = Resolver(["169.254.169.254"], [PUBLIC_V4])
    checked = policy("*.corp.example", resolver=resolver)
    verdict = await checked.check("feed.corp.example", 443)
    assert verdict == Refused(
        "metadata",
        403,
        "dsw egress: feed.corp.example resolves to 169.254.169.254, the cloud metadata address; "
        "a *.suffix entry does not open it: list feed.corp.example in WORKER_EGRESS_ALLOW",
    )
    assert isinstance(await checked.check("feed.corp.example", 443), Allowed)


async def test_this_machines_addresses_are_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = [ipaddress.ip_network("127.0.0.1/32")]
    checked = EgressPolicy(read_host_networks=lambda: list(mine))
    assert isinstance(await checked.check(PUBLIC_V4, 443), Allowed)
    mine.append(ipaddress.ip_network(f"{PUBLIC_V4}/32"))  # an address appears on this machine
    assert isinstance(await checked.check(PUBLIC_V4, 443), Allowed)  # within HOST_REFRESH_S
    monkeypatch.setattr(EgressPolicy, "HOST_REFRESH_S", 0.0)
    verdict = await checked.check(PUBLIC_V4, 443)
    assert isinstance(verdict, Refused)
    assert verdict.reason == "host"


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "017700000001", "0177.0.0.1"])
async def test_other_spellings_of_loopback_are_refused_as_what_they_resolve_to(host: str) -> None:
    async def numeric_only(name: str, port: int) -> list[str]:
        # What getaddrinfo makes of the spelling, without ever asking a DNS server.
        answers = await trio.socket.getaddrinfo(name, port, flags=socket.AI_NUMERICHOST)
        return [str(answer[4][0]) for answer in answers]

    verdict = await EgressPolicy(resolver=numeric_only).check(host, 80)
    assert isinstance(verdict, Refused)
    assert verdict.reason == "loopback"
    assert verdict.message.startswith(f"dsw egress: {host} resolves to 127.0.0.1, a loopback")
