"""docker-compose.yaml cannot run here (no registry, no compose plugin): its shape is checked."""

from typing import Any

import yaml

from dsw.config import load_settings
from dsw.sandbox_types import load_sandbox_type
from tests.conftest import ROOT

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_kafka_is_single_node_kraft_on_a_named_network_with_a_host_port() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not any("ZOOKEEPER" in key for key in env)
    assert "127.0.0.1:9092:9092" in kafka["ports"]
    assert kafka["networks"] == ["dsw-network"]
    assert COMPOSE["networks"]["dsw-network"]["name"] == "dsw-network"


def test_the_workers_settings_are_valid_and_modes_are_right() -> None:
    worker, dind = SERVICES["worker"], SERVICES["worker-dind"]
    for service in (worker, dind):
        env = {k: str(v).split(":-")[-1].rstrip("}") for k, v in service["environment"].items()}
        load_settings(env)  # raises ConfigError on a bad name's value
        assert service["networks"] == ["dsw-network"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]
    assert worker["build"]["target"] == "worker"
    assert dind["build"]["target"] == "worker-dind"
    assert dind["privileged"] is True
    assert dind["profiles"] == ["dind"]
    assert not any("docker.sock" in v for v in dind["volumes"])


def test_sandbox_builds_match_their_sandbox_toml() -> None:
    settings = load_settings({})
    for service in SERVICES.values():
        image = service.get("image", "")
        if not image.startswith("dsw-sandbox:") or "build" not in service:
            continue
        sandbox = load_sandbox_type(settings.sandbox_dir, image.split(":", 1)[1])
        build = service["build"]
        assert build["dockerfile"] == sandbox.dockerfile
        assert build.get("args", {}) == dict(sandbox.build.args)
