"""`make demo`: start the sidecar and say where to look.

Until the engine shim lands, the demo runs the sidecar alone, with host metrics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORT = int(os.environ.get("TICKSCOPE_DEMO_PORT", "9464"))
BASE = f"http://127.0.0.1:{PORT}"


def ready(timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{BASE}/readyz", timeout=1) as r:
                if json.load(r)["status"] == "ready":
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def main() -> int:
    env = dict(os.environ, TICKSCOPE_SERVER__PORT=str(PORT))
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(HERE / "demo.yaml")],
        cwd=HERE.parent,
        env=env,
    )
    try:
        if not ready():
            print("tickscope did not become ready; see its log above", file=sys.stderr)
            return 1
        print(
            f"""
tickscope is running alone, with host metrics only: the demo engine and the
exchange simulator arrive with the engine shim.

  metrics   {BASE}/metrics
  status    {BASE}/
  ready     {BASE}/readyz
  alive     {BASE}/healthz

Ctrl-C stops it.
""",
            flush=True,
        )
        return sidecar.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if sidecar.poll() is None:
            sidecar.send_signal(signal.SIGTERM)
            sidecar.wait(15)


if __name__ == "__main__":
    raise SystemExit(main())
