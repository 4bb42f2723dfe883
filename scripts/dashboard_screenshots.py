"""`make dashboards-screenshots`: PNGs of the dashboards' key queries on live demo data.

No Grafana runs here, so the pictures are of Prometheus's own graph page: the demo
(simulator, demo engine through the shim, sidecar) and the Debian Prometheus run as
in the live-data test (tests/helpers/demo_stack.py); after a healthy minute and a
fault phase (rate limits, 5xx, rejected orders, bad OTLP), each chosen panel's query,
taken from the committed dashboards/*.json by panel title and interpolated as Grafana
does (tests/helpers/grafana_vars.py), is opened in Debian's headless Chromium and
saved as docs/img/dashboards/<dashboard-uid>-<panel-slug>.png, with an index
(README.md) of what each picture shows.

    python scripts/dashboard_screenshots.py [--out DIR] [--healthy-seconds N]
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

if TYPE_CHECKING:
    from tests.helpers import demo_stack, grafana_vars
else:
    demo_stack = importlib.import_module("helpers.demo_stack")
    grafana_vars = importlib.import_module("helpers.grafana_vars")

DASHBOARDS = ROOT / "dashboards"
OUT = ROOT / "docs" / "img" / "dashboards"
SCRAPE_INTERVAL = "1s"
# Faults for the error panels; the engine keeps running, so every line goes on.
FAULTS = ("rate_limit", "server_error", "rejected_order", "bad_otlp")
# Per dashboard: (panel title, refId) of the queries worth a picture.
SHOTS: dict[str, list[tuple[str, str]]] = {
    "tickscope-trading": [
        ("Requests per second by exchange and method", "A"),
        ("Latency p50 / p95 / p99 by method", "C"),
        ("Errors by error type", "A"),
        ("Orders per second by outcome", "A"),
    ],
    "tickscope-host": [
        ("CPU by mode", "A"),
        ("Engine memory against its limit", "A"),
        ("Engine CPU against its limit", "A"),
    ],
    "tickscope-sidecar": [
        ("Spans received, accepted, rejected", "B"),
        ("Export request duration", "B"),
        ("Span-metric series against the limit", "A"),
        ("Sidecar memory", "A"),
    ],
}
# Debian's Chromium, headless. 1000 px high (not 700): the classic graph page's plot
# and its legend end at about 950 px.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1200,1000",
    "--virtual-time-budget=5000",
    "--hide-scrollbars",
)


@dataclass(frozen=True)
class Shot:
    uid: str
    title: str
    ref_id: str
    expr: str

    @property
    def file_name(self) -> str:
        return f"{self.uid}-{slug(self.title)}.png"


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def chromium() -> str:
    """Debian's Chromium, installed with apt (scripts/lib.sh apt_install) if missing."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(
            ["sh", "-c", f". {ROOT / 'scripts' / 'lib.sh'} && apt_install chromium"], check=True
        )
        found = shutil.which("chromium")
    if found is None:
        raise SystemExit("chromium is not installed and apt could not install it")
    return found


def load_shots() -> list[Shot]:
    range_ms = grafana_vars.relative_range_ms("now-5m")
    shots: list[Shot] = []
    for uid, wanted in SHOTS.items():
        path = DASHBOARDS / f"{uid}.json"
        dashboard: dict[str, Any] = json.loads(path.read_text())
        queries = {
            (q.panel_title, q.ref_id): q
            for q in grafana_vars.panel_queries(dashboard, range_ms, SCRAPE_INTERVAL)
        }
        for title, ref_id in wanted:
            query = queries.get((title, ref_id))
            if query is None:
                titles = sorted({t for t, _ in queries})
                raise SystemExit(f"{path.name}: no panel {title!r} with target {ref_id}: {titles}")
            shots.append(Shot(uid, title, ref_id, query.expr))
    return shots


def screenshot(binary: str, url: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        result = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", url],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    if result.returncode != 0 or not out.is_file() or out.stat().st_size < 10_000:
        raise SystemExit(f"chromium failed on {url}:\n{result.stderr[-2000:]}")


def graph_url(prometheus: str, expr: str, range_s: int) -> str:
    """Prometheus 2.42's classic graph page (the Debian package serves no other)."""
    query = urllib.parse.urlencode(
        {"g0.expr": expr, "g0.range_input": f"{range_s}s", "g0.tab": "0"}
    )
    return f"{prometheus}/classic/graph?{query}"


def write_index(out: Path, shots: list[Shot], faults: tuple[str, ...]) -> None:
    lines = [
        "# Dashboard screenshots",
        "",
        "Made by `make dashboards-screenshots` (scripts/dashboard_screenshots.py): Prometheus's",
        "graph page on the live demo, with a 1 s scrape, after a healthy minute and the faults",
        f"{', '.join(faults)}. Each query is the panel's, from dashboards/*.json, interpolated as",
        "Grafana does with every filter at All (`$__rate_interval` = 4s, `$job` = `.*`, ...).",
        "",
        "| picture | dashboard | panel | query |",
        "|---|---|---|---|",
    ]
    for shot in shots:
        expr = shot.expr.replace("|", "\\|")
        lines.append(
            f"| [{shot.file_name}]({shot.file_name}) | `{shot.uid}` | {shot.title} "
            f"({shot.ref_id}) | `{expr}` |"
        )
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--healthy-seconds", type=float, default=50.0)
    parser.add_argument("--after-faults-seconds", type=float, default=25.0)
    args = parser.parse_args(argv)
    shots = load_shots()
    binary = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    binary_prometheus = shutil.which("prometheus")
    if binary_prometheus is None:
        raise SystemExit("prometheus is not installed (make system-deps)")
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="tickscope-shots-") as tmp,
        demo_stack.DemoStack(Path(tmp), prometheus_binary=binary_prometheus) as stack,
    ):
        print(f"demo running; Prometheus at {stack.prometheus.url}", flush=True)
        stack.wait_for_data(args.healthy_seconds)
        for fault in FAULTS:
            stack.inject(fault)
            print(f"injected {fault}", flush=True)
        time.sleep(args.after_faults_seconds)
        range_s = int(time.time() - stack.started_at) + 5
        end = time.time()
        for shot in shots:
            series = stack.prometheus.range(shot.expr, end - range_s, end, 1.0)
            if not series:
                raise SystemExit(f"{shot.uid} / {shot.title}: no data to show: {shot.expr}")
            target = args.out / shot.file_name
            screenshot(binary, graph_url(stack.prometheus.url, shot.expr, range_s), target)
            print(
                f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: "
                f"{len(series)} series",
                flush=True,
            )
    write_index(args.out, shots, FAULTS)
    print(f"{len(shots)} screenshots in {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
