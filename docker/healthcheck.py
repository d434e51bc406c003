"""HEALTHCHECK of the worker image: /healthz on WORKER_METRICS_PORT answers 200 (port 0: no check)."""

import os
import sys
import urllib.request

port = int(os.environ.get("WORKER_METRICS_PORT") or 9464)
if port:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
            sys.exit(0 if response.status == 200 else 1)
    except OSError as exc:
        print(f"/healthz: {exc}", file=sys.stderr)
        sys.exit(1)
