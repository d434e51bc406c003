"""The create body of a job's container: its seccomp profile (enforced, probed inside real
sandboxes), the environment and limits it carries, and which daemon warnings refuse it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import msgspec

from dsw.config import Settings
from dsw.container_spec import JobLimits, container_config, unenforced
from dsw.docker import DockerClient
from dsw.egress.access import EgressAccess
from dsw.messages import FinishedWith
from dsw.sandbox_types import load_sandbox_type
from tests.conftest import ROOT, TEST_SCRIPTS
from tests.sandbox_runs import run

JOB_ID = "7f000001-863c-17b2-8186-3cdeb62e0000"


def test_only_blkio_warnings_are_tolerated() -> None:
    blkio = (
        "Your kernel does not support Block I/O weight or the cgroup is not mounted. "
        "Weight discarded."
    )
    swap = "Your kernel does not support swap limit capabilities or the cgroup is not mounted."
    assert unenforced([blkio]) == []
    assert unenforced([blkio, swap]) == [swap]


EXPECTED_OK = {"socket:AF_UNIX", "socket:AF_INET", "personality:query", "getpid"}


def probe_results(stdout: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in stdout.splitlines() if " " in line)


def assert_blocked(results: dict[str, str]) -> None:
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace"):
        assert results[name] == "EPERM", name
    assert results["process_vm_readv"] == results["process_vm_writev"] == "EPERM"
    assert results["clone3"] == "ENOSYS"  # so that glibc falls back to clone
    for name, result in results.items():
        expected = {"clone3": "ENOSYS", "ia32:getpid": "KILLED"}.get(name, "EPERM")
        assert result == ("OK" if name in EXPECTED_OK else expected), name


async def test_the_profile_blocks_its_syscalls_in_the_shell_sandbox(
    docker: DockerClient, settings: Settings
) -> None:
    outcome = await run(docker, settings, (TEST_SCRIPTS / "seccomp-probe.sh").read_text())
    assert outcome.exit_code == 0, outcome.stderr
    results = probe_results(outcome.stdout)
    assert len(results) >= 40
    assert_blocked(results)


async def test_the_profile_blocks_its_syscalls_in_the_csharp_sandbox(
    docker: DockerClient, settings: Settings
) -> None:
    script = (TEST_SCRIPTS / "seccomp-probe.csx").read_text()
    outcome = await run(docker, settings, script, "linux-amd64-mono", timeout_s=60)
    assert outcome.exit_code == 0, outcome.stderr
    results = probe_results(outcome.stdout)
    assert results["ia32:getpid"] == "KILLED"  # native 64-bit system calls only
    assert_blocked(results)


async def test_ptrace_of_init_cannot_keep_the_container_alive(
    docker: DockerClient, settings: Settings
) -> None:
    # With Docker's default profile this attach stopped docker-init and the job hit its limit.
    script = 'perl -e \'print syscall(101, 16, 1, 0, 0) == -1 ? "refused $!\\n" : "attached\\n"\'\n'
    outcome = await run(docker, settings, script, timeout_s=20)
    assert outcome.stdout == "refused Operation not permitted\n"
    assert outcome.finished_with is FinishedWith.SUCCEEDED


def test_the_profile_is_sent_inline_and_compact(settings: Settings) -> None:
    sandbox = load_sandbox_type(settings.sandbox_dir, "linux-amd64-shell")
    body = container_config(settings, sandbox, JobLimits.defaults(settings), JOB_ID)
    options = body["HostConfig"]["SecurityOpt"]
    assert options[0] == "no-new-privileges"
    profile = json.loads(options[1].removeprefix("seccomp="))
    assert profile == json.loads((Path(settings.sandbox_dir) / "seccomp.json").read_text())
    assert options[1] == "seccomp=" + json.dumps(profile, separators=(",", ":"))
    assert "TINI_KILL_PROCESS_GROUP=1" in body["Env"]
    assert body["HostConfig"]["ShmSize"] == settings.shm_bytes
    assert "Runtime" not in body["HostConfig"]  # the daemon's default unless the type says


def test_the_checked_in_profile_is_what_its_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make-seccomp.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_egress_container_is_ipv4_only(settings: Settings) -> None:
    shell = load_sandbox_type(settings.sandbox_dir, "linux-amd64-shell")
    egress = msgspec.structs.replace(shell, network="egress")
    access = EgressAccess("dsw-egress-x", "172.30.0.1", {"http_proxy": "http://p"}, "t" * 32)
    host = container_config(settings, egress, JobLimits.defaults(settings), JOB_ID, access)
    assert host["HostConfig"]["NetworkMode"] == "dsw-egress-x"
    assert host["HostConfig"]["Sysctls"] == {
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
    }
    assert "http_proxy=http://p" in host["Env"]
    plain = container_config(settings, shell, JobLimits.defaults(settings), JOB_ID)
    assert "Sysctls" not in plain["HostConfig"]  # NetworkMode none: only lo


def imported_by(module: str) -> set[str]:
    """Every dsw module `module` names in an import, TYPE_CHECKING ones too."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return {name for name in names if name.startswith("dsw")}


def test_the_container_spec_is_below_the_egress_network() -> None:
    """container_spec names what a container gets of the egress (a leaf) and nothing above it;
    the package dsw.egress loads none of its modules."""
    above = {"dsw.egress.network", "dsw.egress.proxy", "dsw.egress.policy", "dsw.egress.filter"}
    assert imported_by("dsw.container_spec") & above == set()
    assert imported_by("dsw.egress.access") == set()
    assert imported_by("dsw.egress.__init__") == set()
