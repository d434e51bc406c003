"""What one sandbox container gets of the worker's egress: a leaf that imports nothing of dsw,
so that the container's spec (dsw.container_spec) can name it without the network and proxy
above it (dsw.egress.network makes these)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EgressAccess:
    """The network, and the proxy's variables with a token of the container's own."""

    network: str
    proxy_host: str
    environment: dict[str, str]
    token: str
