"""Helpers of dind-entrypoint.sh, run with the worker's Python; they print `LEVEL message` lines.

    dind-helper.py limits INFO_JSON   what the inner daemon (`docker info` JSON) can enforce
    dind-helper.py images             `TYPE IMAGE DOCKERFILE` of each type the worker will serve
    dind-helper.py build TYPE OPT...  becomes `docker build OPT...` of the type's image, as its
                                      sandbox.toml's `[build]` says (Dockerfile, build arguments)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# `docker info` fields of the limits the worker asks for (blkio weight is best effort, as in the
# worker's own preflight, and has no field).
LIMITS = {
    "memory": "MemoryLimit",
    "swap": "SwapLimit",
    "cpu-period": "CpuCfsPeriod",
    "cpu-quota": "CpuCfsQuota",
    "cpu-shares": "CPUShares",
    "pids": "PidsLimit",
}
OFF = ("false", "0", "no", "off")


def limits(info_json: str, limits_setting: str) -> None:
    try:
        info = json.loads(info_json)
    except ValueError:
        print("warning could not read `docker info` of the inner daemon")
        return
    missing = [name for name, key in LIMITS.items() if not info.get(key)]
    enforced = ",".join(name for name in LIMITS if name not in missing) or "none"
    print(
        f"info inner dockerd {info.get('ServerVersion')}: cgroup v{info.get('CgroupVersion')}"
        f" cgroup_driver={info.get('CgroupDriver')} storage_driver={info.get('Driver')}"
        f" limits={enforced}" + (f" missing={','.join(missing)}" if missing else "")
    )
    for warning in info.get("Warnings") or []:
        print(f"warning inner dockerd: {warning}")
    if missing and limits_setting.strip().lower() not in OFF:
        print(
            f"error the inner daemon cannot enforce {','.join(missing)}: the worker will refuse to"
            " start (WORKER_ENABLE_RESOURCE_LIMITS=false runs jobs without limits)"
        )


def images() -> None:
    from dsw.config import load_settings
    from dsw.sandbox_types import load_sandbox_types

    settings = load_settings()
    for sandbox in load_sandbox_types(settings.sandbox_dir, settings.runner_types).values():
        print(sandbox.name, sandbox.image, Path(settings.sandbox_dir) / sandbox.dockerfile)


def build(name: str, options: list[str]) -> None:
    from dsw.config import load_settings
    from dsw.sandbox_types import docker_build_argv

    argv = docker_build_argv(load_settings().sandbox_dir, name, *options)
    # docker takes this process's place, so that the entrypoint's signals reach it.
    os.execvp(argv[0], argv)


def egress() -> int:
    """Exit 0 if a served sandbox type has network = "egress"."""
    from dsw.config import load_settings
    from dsw.sandbox_types import load_sandbox_types

    settings = load_settings()
    served = load_sandbox_types(settings.sandbox_dir, settings.runner_types).values()
    return 0 if any(sandbox.network == "egress" for sandbox in served) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["limits"]:
        limits(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "true")
    elif sys.argv[1:2] == ["images"]:
        images()
    elif sys.argv[1:2] == ["egress"]:
        sys.exit(egress())
    elif sys.argv[1:2] == ["build"] and len(sys.argv) > 2:
        build(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
