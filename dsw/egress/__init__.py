"""The egress of the sandboxes that need the network (NuGet): an internal network whose only way
out is the worker's HTTP/HTTPS proxy. `access` (what a container gets), `policy` (where it may
connect), `proxy` (the proxy), `filter` (the network's iptables rules), `network` (all of it
opened and closed)."""
