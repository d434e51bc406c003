"""Settings from the environment: names, defaults, units, and clear errors."""

import subprocess
import sys

import pytest

from dsw.config import GiB, MiB, describe, load_settings
from dsw.errors import ConfigError


def test_defaults_are_the_originals() -> None:
    settings = load_settings({})
    assert settings.kafka_broker_url == "localhost:9092"
    assert settings.runner_types == ("linux-amd64-dotnet-7",)
    assert settings.docker_host == "unix:///var/run/docker.sock"
    assert settings.enable_resource_limits is True
    assert settings.max_containers == 4
    assert settings.job_timeout_s == 120
    assert settings.drain_timeout_s == 30
    assert (settings.memory_bytes, settings.memory_reservation_bytes) == (GiB, 256 * MiB)
    assert (settings.cpu_period_us, settings.cpu_quota_us, settings.cpu_shares) == (
        200000,
        100000,
        512,
    )
    assert (settings.pids_limit, settings.blkio_weight) == (100, 400)
    assert settings.output_limit_bytes == 256 * 1024
    assert settings.job_files_host_dir == "/tmp/scripts"
    assert settings.worker_id


def test_the_originals_names_and_spellings() -> None:
    settings = load_settings(
        {
            "WORKER_KAFKA_BROKER_URL": "kafka-broker-1:9092",
            "WORKER_DOCKER_HOST": "unix:/var/run/docker.sock",
            "WORKER_ENABLE_RESOURCE_LIMITS": "false",
            "WORKER_JOB_FILES_HOST_DIR": "/home/me/tmp",
            "WORKER_RUNNER_TYPES": "linux-amd64-mono, linux-amd64-shell",
            "WORKER_MEMORY_BYTES": "512m",
            "WORKER_DRAIN_TIMEOUT_SEC": "5",
        }
    )
    assert settings.kafka_broker_url == "kafka-broker-1:9092"
    assert settings.docker_host == "unix:/var/run/docker.sock"
    assert settings.enable_resource_limits is False
    assert settings.runner_types == ("linux-amd64-mono", "linux-amd64-shell")
    assert settings.memory_bytes == 512 * MiB
    assert settings.drain_timeout_s == 5


def test_docker_host_falls_back_to_docker_s_own_variable() -> None:
    assert (
        load_settings({"DOCKER_HOST": "tcp://10.0.0.1:2376"}).docker_host == "tcp://10.0.0.1:2376"
    )
    both = {"DOCKER_HOST": "tcp://a:1", "WORKER_DOCKER_HOST": "unix:///x.sock"}
    assert load_settings(both).docker_host == "unix:///x.sock"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WORKER_MAX_CONTAINERS", "many"),
        ("WORKER_MAX_CONTAINERS", "0"),
        ("WORKER_ENABLE_RESOURCE_LIMITS", "maybe"),
        ("WORKER_MEMORY_BYTES", "lots"),
        ("WORKER_LOG_FORMAT", "xml"),
        ("WORKER_DOCKER_HOST", "ftp://x"),
        ("WORKER_JOB_TIMEOUT_S", "600"),
    ],
)
def test_an_invalid_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable


def test_help_lists_every_setting_with_its_default() -> None:
    text = describe()
    for name in (
        "WORKER_KAFKA_BROKER_URL",
        "WORKER_DRAIN_TIMEOUT_S",
        "WORKER_ID",
        "WORKER_METRICS_PORT",
    ):
        assert name in text
    assert "unix:///var/run/docker.sock" in text


def test_invalid_setting_stops_startup_with_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsw", "worker"],
        env={"WORKER_MAX_CONTAINERS": "-1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "WORKER_MAX_CONTAINERS" in result.stderr
