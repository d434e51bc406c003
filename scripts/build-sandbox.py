"""Build one sandbox image as its sandbox.toml says: `[build]` names the Dockerfile (default
`<type>/Dockerfile`) and its build arguments; the build context is sandbox/.

    scripts/build-sandbox.py TYPE [DOCKER-BUILD-OPTION...]    e.g. linux-amd64-dotnet-7 -q

Run by the justfile's `sandbox` recipe; the Docker-in-Docker entrypoint builds through
docker/dind-helper.py instead. Both take the argv from dsw.sandbox_types.docker_build_argv.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This checkout's dsw, whichever virtualenv's Python runs the script.
sys.path.insert(0, str(ROOT))

from dsw.errors import DswError  # noqa: E402
from dsw.sandbox_types import docker_build_argv  # noqa: E402


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    try:
        argv = docker_build_argv(ROOT / "sandbox", sys.argv[1], *sys.argv[2:])
    except DswError as exc:
        sys.exit(f"build-sandbox: {exc}")
    # docker itself takes this process's place: its exit status and signals are the recipe's.
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
