"""Sandbox types as data: `sandbox/<type>/sandbox.toml` says which image runs a script and how."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from dsw.errors import ConfigError, UnknownSandboxType


class SandboxBuild(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How the type's image is built: its `[build]` table (absent: `<type>/Dockerfile`, no args)."""

    # Relative to the sandbox folder, which is the build context; None: `<type>/Dockerfile`.
    dockerfile: str | None = None
    # `--build-arg NAME=VALUE` each, e.g. the SDK version of a Dockerfile several types share.
    args: dict[str, str] = {}


class SandboxType(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One sandbox type, as its sandbox.toml describes it."""

    name: str
    image: str
    script_name: str
    command: tuple[str, ...]
    # False: none; "egress": only the worker's proxy (dsw.egress); True: Docker's default bridge.
    network: bool | Literal["egress"] = False
    nuget_config: bool = False
    tmpfs_exec: bool = False
    env: tuple[str, ...] = ("HOME=/home/sandbox",)
    # A warm pool's command: waits for the worker's release itself, having prepared what it can
    # (dsw-entry --warm); None: dsw-entry waits, then runs `command`.
    warm_command: tuple[str, ...] | None = None
    # The seccomp profile, relative to the sandbox folder.
    seccomp: str = "seccomp.json"
    # The OCI runtime (e.g. "runsc" for gVisor); None: the daemon's default (runc).
    runtime: str | None = None
    build: SandboxBuild = SandboxBuild()

    @property
    def dockerfile(self) -> str:
        """The Dockerfile of the image, relative to the sandbox folder."""
        return self.build.dockerfile or f"{self.name}/Dockerfile"


def load_sandbox_type(sandbox_dir: str | Path, name: str) -> SandboxType:
    """Read sandbox/<name>/sandbox.toml. Raises UnknownSandboxType or ConfigError."""
    if not name or "/" in name or name.startswith("."):
        raise UnknownSandboxType(f"not a sandbox type name: {name!r}")
    path = Path(sandbox_dir) / name / "sandbox.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnknownSandboxType(
            f"unknown sandbox type {name!r}: no {path} (WORKER_SANDBOX_DIR is {sandbox_dir})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from exc
    try:
        return msgspec.convert({**data, "name": name}, SandboxType)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(path), str(exc)) from exc


def load_sandbox_types(sandbox_dir: str | Path, names: tuple[str, ...]) -> dict[str, SandboxType]:
    return {name: load_sandbox_type(sandbox_dir, name) for name in names}


def docker_build_argv(sandbox_dir: str | Path, name: str, *options: str) -> list[str]:
    """`docker build OPTIONS -f ... --build-arg ... -t IMAGE SANDBOX_DIR` for the type's image: what
    every builder of sandbox images runs. Raises UnknownSandboxType or ConfigError."""
    sandbox = load_sandbox_type(sandbox_dir, name)
    build_args = [f"--build-arg={key}={value}" for key, value in sandbox.build.args.items()]
    dockerfile = str(Path(sandbox_dir) / sandbox.dockerfile)
    return [
        "docker",
        "build",
        *options,
        "-f",
        dockerfile,
        *build_args,
        "-t",
        sandbox.image,
        str(sandbox_dir),
    ]
