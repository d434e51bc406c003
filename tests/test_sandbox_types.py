"""Sandbox types as data: each sandbox.toml's `[build]` table and the `docker build` argv of it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dsw.errors import ConfigError
from dsw.sandbox_types import docker_build_argv, load_sandbox_type
from tests.conftest import ROOT

SANDBOX_DIR = ROOT / "sandbox"
TYPES = sorted(p.parent.name for p in SANDBOX_DIR.glob("*/sandbox.toml"))
DOTNET = {
    "linux-amd64-dotnet-7": {"SDK_VERSION": "7.0", "DOTNET_SCRIPT_VERSION": "1.5.0"},
    "linux-amd64-dotnet-10": {"SDK_VERSION": "10.0", "DOTNET_SCRIPT_VERSION": "2.0.0"},
}


@pytest.mark.parametrize("name", sorted(DOTNET))
def test_the_dotnet_types_share_one_dockerfile_with_their_versions(name: str) -> None:
    sandbox = load_sandbox_type(SANDBOX_DIR, name)
    assert sandbox.dockerfile == "dotnet/Dockerfile"
    assert sandbox.build.args == DOTNET[name]
    assert [p.name for p in (SANDBOX_DIR / name).iterdir()] == ["sandbox.toml"]
    argv = docker_build_argv("sandbox", name, "-q")
    versions = DOTNET[name]
    assert argv == [
        "docker", "build", "-q", "-f", "sandbox/dotnet/Dockerfile",
        f"--build-arg=SDK_VERSION={versions['SDK_VERSION']}",
        f"--build-arg=DOTNET_SCRIPT_VERSION={versions['DOTNET_SCRIPT_VERSION']}",
        "-t", f"dsw-sandbox:{name}", "sandbox",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["linux-amd64-mono", "linux-amd64-shell"])
def test_a_type_without_build_table_uses_its_own_dockerfile_and_no_args(name: str) -> None:
    sandbox = load_sandbox_type(SANDBOX_DIR, name)
    assert sandbox.dockerfile == f"{name}/Dockerfile"
    assert sandbox.build.args == {}
    assert docker_build_argv(SANDBOX_DIR, name) == [
        "docker", "build", "-f", str(SANDBOX_DIR / name / "Dockerfile"),
        "-t", f"dsw-sandbox:{name}", str(SANDBOX_DIR),
    ]  # fmt: skip


@pytest.mark.parametrize("name", TYPES)
def test_every_dockerfile_exists_declares_its_args_and_needs_no_buildkit(name: str) -> None:
    sandbox = load_sandbox_type(SANDBOX_DIR, name)
    text = (SANDBOX_DIR / sandbox.dockerfile).read_text()
    declared = set(re.findall(r"^ARG (\w+)", text, re.MULTILINE))
    assert set(sandbox.build.args) <= declared
    assert not re.search(r"^# *syntax=|--mount=|<<", text, re.MULTILINE)


def test_the_shared_dockerfile_takes_the_sdk_version_before_from() -> None:
    lines = (SANDBOX_DIR / "dotnet" / "Dockerfile").read_text().splitlines()
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[:2] == [
        "ARG SDK_VERSION",
        "FROM mcr.microsoft.com/dotnet/sdk:${SDK_VERSION}",
    ]


def _type_with_build(tmp_path: Path, build: str) -> Path:
    folder = tmp_path / "linux-amd64-x"
    folder.mkdir()
    (folder / "sandbox.toml").write_text(
        'image = "dsw-sandbox:linux-amd64-x"\nscript_name = "main.sh"\ncommand = ["sh"]\n' + build
    )
    return tmp_path


@pytest.mark.parametrize(
    ("build", "error"),
    [
        ('[build]\ndockerfile = "x/Dockerfile"\ntarget = "final"\n', "unknown field `target`"),
        ("[build]\nargs = { SDK_VERSION = 7.0 }\n", "Expected `str`, got `float`"),
    ],
)
def test_a_bad_build_table_is_a_config_error(tmp_path: Path, build: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)) as caught:
        load_sandbox_type(_type_with_build(tmp_path, build), "linux-amd64-x")
    assert caught.value.variable.endswith("linux-amd64-x/sandbox.toml")


def test_a_build_table_may_name_another_dockerfile_in_the_sandbox_folder(tmp_path: Path) -> None:
    build = '[build]\ndockerfile = "shared/Dockerfile"\nargs = { A = "1", B = "two words" }\n'
    argv = docker_build_argv(_type_with_build(tmp_path, build), "linux-amd64-x")
    assert argv[2:] == [
        "-f", str(tmp_path / "shared" / "Dockerfile"), "--build-arg=A=1",
        "--build-arg=B=two words", "-t", "dsw-sandbox:linux-amd64-x", str(tmp_path),
    ]  # fmt: skip
