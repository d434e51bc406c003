"""A Docker Engine API client over httpx: `client` speaks the endpoints, `logs` the framing."""

from dsw.docker.client import DockerClient, open_docker

__all__ = ["DockerClient", "open_docker"]
