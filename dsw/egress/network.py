"""A worker's egress: an internal Docker network it owns, filtered so that the sandboxes on it
reach only the worker's proxy, and the proxy itself, served on the network's gateway address.

A sandbox type with `network = "egress"` gets this network and, per container, a proxy URL with a
token of its own (`HTTP_PROXY`, `HTTPS_PROXY`): the proxy knows which job asks, applies its policy
and caps, and closes the job's tunnels when the job ends. The network is created at start-up
(`dsw-egress-<id>`, internal: no route out; no traffic between its containers) and removed at
exit; or, with WORKER_EGRESS_NETWORK, a network prepared beforehand (Docker-in-Docker, hosts where
the worker may not filter packets) is used as it is, its proxy on WORKER_EGRESS_PROXY_PORT.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from dsw.config import Settings
from dsw.container_spec import owner_labels
from dsw.docker.client import DockerClient, Json
from dsw.egress import filter as packet_filter
from dsw.egress.access import EgressAccess
from dsw.egress.policy import EgressPolicy, infrastructure_addresses
from dsw.egress.proxy import EgressProxy, proxy_environment
from dsw.errors import DockerError, NotConfinable
from dsw.reaper import remove_network
from dsw.sandbox_types import SandboxType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Egress:
    network: str
    proxy: EgressProxy
    host: str
    port: int

    def access(self) -> EgressAccess:
        """A new container's access; revoke its token when the container is gone."""
        token = self.proxy.new_token()
        environment = proxy_environment(token, self.host, self.port)
        return EgressAccess(self.network, self.host, environment, token)


def network_name(settings: Settings) -> tuple[str, str]:
    """This worker's egress network and its bridge interface (at most 15 characters)."""
    digest = hashlib.sha256(settings.worker_id.encode()).hexdigest()[:10]
    return f"dsw-egress-{digest}", f"dsweg{digest}"


def gateway_of(network: Json) -> str:
    for config in (network.get("IPAM") or {}).get("Config") or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
    raise NotConfinable(f"the egress network {network.get('Name')} has no IPv4 gateway")


@asynccontextmanager
async def open_egress_for(
    docker: DockerClient, settings: Settings, sandboxes: Iterable[SandboxType]
) -> AsyncIterator[Egress | None]:
    """`open_egress` if one of `sandboxes` has `network = "egress"`, else None."""
    if not any(sandbox.network == "egress" for sandbox in sandboxes):
        yield None
        return
    async with open_egress(docker, settings) as egress:
        yield egress


@asynccontextmanager
async def open_egress(docker: DockerClient, settings: Settings) -> AsyncIterator[Egress]:
    """The network (created, or the prepared one), its filter, and the proxy serving on it;
    all of it undone at exit. NotConfinable when the network cannot be made safe; ConfigError
    for a bad WORKER_EGRESS_ALLOW or WORKER_EGRESS_REFUSE, before anything is made."""
    # The worker's own services, which this machine's addresses need not cover (a remote daemon,
    # a broker elsewhere); others in WORKER_EGRESS_REFUSE.
    services = await infrastructure_addresses(settings)
    policy = EgressPolicy.from_settings(settings, services)
    prepared = bool(settings.egress_network)
    name, bridge = (settings.egress_network, "") if prepared else network_name(settings)
    if prepared:
        network = await docker.network_inspect(name)
        if not network.get("Internal"):
            raise NotConfinable(f"WORKER_EGRESS_NETWORK {name} is not an internal network")
    else:
        await docker.network_remove(name)  # a leftover of a worker with this id
        await docker.network_create(
            {
                "Name": name,
                "Driver": "bridge",
                "Internal": True,
                "Labels": owner_labels(settings),
                "Options": {
                    "com.docker.network.bridge.name": bridge,
                    "com.docker.network.bridge.enable_icc": "false",
                },
            }
        )
        network = await docker.network_inspect(name)
    address = gateway_of(network)
    ourselves = ""
    if settings.egress_proxy_address:
        # Docker-out-of-Docker: the proxy is this worker's container, joined to the network.
        ourselves = own_container_id()
        address = settings.egress_proxy_address
        await docker.network_connect(name, ourselves, address)
    proxy = EgressProxy(settings, policy)
    try:
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(proxy.serve, address, settings.egress_proxy_port)
            if not prepared:
                await packet_filter.apply(bridge, address, port)
            log.info("egress network=%s proxy=%s:%d", name, host, port)
            try:
                yield Egress(name, proxy, host, port)
            finally:
                nursery.cancel_scope.cancel(reason="egress closing")
    finally:
        with trio.move_on_after(settings.cleanup_timeout_s, shield=True):
            try:
                if ourselves:
                    await docker.network_disconnect(name, ourselves)
                if not prepared:
                    await remove_network(docker, name, bridge)
            except DockerError as exc:
                log.warning("egress network %s not cleaned up: %s (the reaper will)", name, exc)


def own_container_id() -> str:
    """The id of the container this process runs in (from the mounts Docker makes for it);
    NotConfinable if it runs in none."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text()
    except OSError:
        mounts = ""
    found = re.search(r"/containers/([0-9a-f]{64})/", mounts)
    if found is None:
        raise NotConfinable(
            "WORKER_EGRESS_PROXY_ADDRESS is for a worker in a container (Docker-out-of-Docker),"
            " and this one runs in none"
        )
    return found[1]
