"""bench/report.py --quick writes the performance report: its tables hold numbers for
every benchmark and every point of each scaling curve, and its plots are PNGs.
No timing is asserted: the figures are this machine's."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.binaries import require_binary

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ["host_metrics.png", "ingest_scaling.png", "metrics_scaling.png", "footprint.png",
         "shim_scaling.png"]  # fmt: skip
NUMBER = re.compile(r"^[+-]?[\d,]+(\.\d+)?%?$")


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """Each `## section`'s (or `### section`'s) table, as rows of cells (header first)."""
    out: dict[str, list[list[str]]] = {}
    section = ""
    for line in markdown.splitlines():
        if line.startswith(("## ", "### ")):
            section = line.split(" ", 1)[1]
        elif line.startswith("|") and not line.startswith(("|:", "|-")):
            out.setdefault(section, []).append([c.strip() for c in line.strip("| ").split("|")])
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_binary("prometheus-node-exporter")
    out = tmp_path_factory.mktemp("report")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "report.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote" in result.stdout
    return out


def numeric_rows(rows: list[list[str]], first_numeric: int) -> None:
    assert len(rows) >= 2
    for row in rows[1:]:
        assert len(row) == len(rows[0]), row
        for cell in row[first_numeric:]:
            assert NUMBER.match(cell), (row, cell)


@pytest.mark.system
def test_tables_hold_numbers(report: Path) -> None:
    text = (report / "performance.md").read_text()
    t = tables(text)
    machine = t["The machine"]
    assert machine[0] == ["CPU", "cores", "RAM", "kernel", "Python", "date", "load average before"]
    assert all(machine[1]), machine
    host = t["Host metrics: tickscope next to node_exporter"]
    assert [r[0] for r in host[1:]] == ["node_exporter", "tickscope"]
    numeric_rows(host, 1)
    ingest = t["Span ingest and how it scales with connections"]
    assert [(r[0], r[1]) for r in ingest[1:]] == [
        ("OTLP/HTTP", "1"), ("OTLP/HTTP", "4"), ("OTLP/HTTP", "16"), ("OTLP/gRPC", "4"),
    ]  # fmt: skip
    numeric_rows(ingest, 1)
    metrics = t["/metrics time and RSS by span-metric label sets"]
    assert [r[0] for r in metrics[1:]] == ["100", "1,000", "5,000"]
    numeric_rows(metrics, 0)
    footprint = t["The sidecar's footprint: what a pod's requests and limits come from"]
    assert [r[0] for r in footprint[1:]] == ["idle", "100", "1,000", "10,000"]
    numeric_rows(footprint, 1)
    imports = t["Where the default-config RSS goes"]
    assert imports[0] == ["imported", "RSS MiB"] and imports[1][0] == "Python 3 interpreter"
    assert len(imports) == 11
    numeric_rows(imports, 1)
    shim = t["The engine side: shim overhead with 1 and 8 threads, and export encoding"]
    assert [(r[0], r[1]) for r in shim[1:]] == [
        (n, v) for n in ("1", "8") for v in ("uninstrumented", "shim", "bare SDK span")
    ]
    numeric_rows(shim, 2)
    goals = t["Goals (issue 15), measured in this run"]
    assert len(goals) == 9
    for row in goals[1:]:
        assert re.search(r"\d", row[2]), row
        assert row[3] in ("yes", "**no**"), row
    for plot in PLOTS:
        assert f"(img/performance/{plot})" in text


@pytest.mark.system
def test_plots_are_pngs(report: Path) -> None:
    for plot in PLOTS:
        data = (report / "img" / "performance" / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", plot
        assert len(data) > 5000, plot


@pytest.mark.system
def test_results_json(report: Path) -> None:
    results = json.loads((report / "img" / "performance" / "results.json").read_text())
    assert results["quick"] is True
    assert [r["label_sets"] for r in results["metrics"]] == [100, 1000, 5000]
    for r in results["metrics"]:
        assert r["lines"] >= 20 * r["label_sets"]
        assert math.isfinite(r["us_per_line"]) and r["us_per_line"] > 0
        # The label sets' lines cost less each than the whole render's average, which
        # carries the fixed ~2 ms of host, process and sidecar metrics.
        assert 0 < r["us_per_added_line"] < r["us_per_line"]
        assert r["lines"] - r["empty_lines"] >= 20 * r["label_sets"]
    rec = results["ingest"]["reconcile"]
    assert rec["accepted"] > 0
    assert rec["accepted"] == rec["processed"] == rec["calls_total"] == rec["duration_count"]
    assert [p["rate"] for p in results["footprint"]["points"]] == [0, 100, 1000, 10000]
    foot = results["footprint"]
    labels = [label for label, _ in foot["imports"]]
    assert labels[0] == "Python 3 interpreter" and labels[-1] == "h2 (the gRPC receiver)"
    assert len(labels) == 10 and all(math.isfinite(mib) for _, mib in foot["imports"])
    kinds = foot["default_rss_kinds_mib"]
    # Anonymous and file-backed pages are the RSS, to /proc's kB rounding and the
    # moment between the two readings.
    assert abs(kinds["anonymous"] + kinds["file"] - foot["default_rss_mib"]) < 1.0
    for p in results["footprint"]["points"]:
        assert math.isfinite(p["millicores"]) and p["rss_mib"] > 0
    assert sorted(results["shim"]["threads"]) == ["1", "8"]
    assert results["shim"]["export"]["stock_us_per_span"] > 0


@pytest.mark.system
def test_from_json_writes_the_same_report(report: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "report.py"), "--out", str(tmp_path),
         "--from-json", str(report / "img" / "performance" / "results.json")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "performance.md").read_text() == (report / "performance.md").read_text()
    for plot in PLOTS:
        assert (tmp_path / "img" / "performance" / plot).read_bytes()[:4] == b"\x89PNG"
