"""`make demo`: the exchange simulator, the sidecar and the demo engine, together.

Starts all three on 127.0.0.1, prints where to look, and stops them on Ctrl-C.
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
ROOT = HERE.parent
PORT = int(os.environ.get("TICKSCOPE_DEMO_PORT", "9464"))
BASE = f"http://127.0.0.1:{PORT}"


def wait_ready(timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{BASE}/readyz", timeout=1) as r:  # loopback only
                if json.load(r)["status"] == "ready":
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def start_simulator() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "exchange_simulator.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if "listening on " not in line:
        raise RuntimeError(f"the exchange simulator did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1]


def main() -> int:
    procs: list[subprocess.Popen[str]] = []
    try:
        simulator, exchange_url = start_simulator()
        procs.append(simulator)
        env = dict(os.environ, TICKSCOPE_SERVER__PORT=str(PORT))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tickscope", "run", "--config", str(HERE / "demo.yaml")],
                cwd=ROOT,
                env=env,
                text=True,
            )
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "demo_engine.py"), "--exchange-url", exchange_url],
                cwd=ROOT,
                text=True,
            )
        )
        if not wait_ready():
            print("tickscope did not become ready; see the logs above", file=sys.stderr)
            return 1
        print(
            f"""
tickscope is watching the demo engine, which trades against a local exchange
simulator ({exchange_url}, Binance's REST API) through real ccxt.

  metrics   {BASE}/metrics     span metrics, trading metrics, host, engine process
  status    {BASE}/
  ready     {BASE}/readyz
  alive     {BASE}/healthz

Try:  curl -s {BASE}/metrics | grep -E '^(traces_span_metrics_calls|trading_orders|exchange_)'
Inject exchange errors:  curl -s -XPOST {exchange_url}/_sim/faults -d '{{"status": 429, "count": 20}}'

Ctrl-C stops everything.
""",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # The engine first (it flushes its last spans to the sidecar), then the
        # sidecar, then the exchange: each waited for before the next.
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
