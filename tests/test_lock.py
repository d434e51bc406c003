"""The lock files pin what pyproject.toml allows: requirements/worker.lock (the image) holds every
runtime dependency, requirements/dev.lock (.venv, CI) every runtime, test and lint one, and
requirements/build.lock what builds dsw, each at one version with its hashes; the first two agree
on what they share. `just lock` rewrites them."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(line) for line in PROJECT["dependencies"]]
EXTRAS = {
    extra: [Requirement(line) for line in lines]
    for extra, lines in PROJECT["optional-dependencies"].items()
}
# `name==version \` then `--hash=sha256:...` lines, then `# via` comments.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def read_lock(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """{canonical name: (version, hashes)}; fails on any requirement that is not `==` and hashed."""
    text = (ROOT / "requirements" / name).read_text()
    # One entry per requirement: join the `\`-continued lines, drop the comments.
    logical = re.sub(r"\s*\\\n\s*", " ", re.sub(r"\s*#.*", "", text))
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    for line in filter(None, (line.strip() for line in logical.splitlines())):
        requirement, *options = line.split()
        pinned = PIN.match(requirement)
        assert pinned, f"{name}: not pinned with ==: {line[:80]}"
        hashes = frozenset(o.removeprefix("--hash=") for o in options if o.startswith("--hash="))
        assert hashes, f"{name}: no --hash for {requirement}"
        assert len(hashes) == len(options), f"{name}: options other than --hash: {line[:80]}"
        assert all(h.startswith("sha256:") for h in hashes), f"{name}: {requirement}"
        key = canonicalize_name(pinned[1])
        assert key not in pins, f"{name}: {key} twice"
        pins[key] = (pinned[2], hashes)
    return pins


WORKER, DEV = read_lock("worker.lock"), read_lock("dev.lock")


def _assert_locked(requirement: Requirement, lock: dict[str, tuple[str, frozenset[str]]]) -> None:
    name = canonicalize_name(requirement.name)
    assert name in lock, f"{requirement} is not locked: run `just lock`"
    version = lock[name][0]
    assert requirement.specifier.contains(Version(version), prereleases=True), (
        f"{name}=={version} is outside pyproject's {requirement}: run `just lock`"
    )


@pytest.mark.parametrize("requirement", RUNTIME, ids=str)
def test_every_runtime_dependency_is_in_both_locks(requirement: Requirement) -> None:
    _assert_locked(requirement, WORKER)
    _assert_locked(requirement, DEV)


@pytest.mark.parametrize("requirement", [r for lines in EXTRAS.values() for r in lines], ids=str)
def test_every_extras_dependency_is_in_the_dev_lock(requirement: Requirement) -> None:
    _assert_locked(requirement, DEV)


def test_the_worker_lock_is_the_runtime_part_of_the_dev_lock() -> None:
    assert set(WORKER) <= set(DEV), f"only in worker.lock: {sorted(set(WORKER) - set(DEV))}"
    differ = {name: (WORKER[name], DEV[name]) for name in WORKER if WORKER[name] != DEV[name]}
    assert not differ, f"the locks disagree (version, hashes): {differ}"


@pytest.mark.parametrize(
    "requirement",
    [
        Requirement(line)
        for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    ],
    ids=str,
)
def test_what_builds_dsw_is_locked(requirement: Requirement) -> None:
    _assert_locked(requirement, read_lock("build.lock"))
