"""The egress proxy of the sandboxes that need the network (NuGet): policy and proxy.

`policy.py` decides where a sandbox may connect (pure but for resolving names); `proxy.py` is the
HTTP/HTTPS forward proxy the worker serves on the sandboxes' network, one token per container.
"""

from dsw.egress.policy import Allowed, EgressPolicy, Refused

__all__ = ["Allowed", "EgressPolicy", "Refused"]
